/**
 * The outgoing events of one user: batched, persisted, retried, never double counted.
 *
 * - Batches go to `POST /v1/events` as `{"events": [...]}` when `batchSize` events wait, or
 *   `flushMs` after the first one arrived, whichever comes first. One batch is in flight at a
 *   time, so the server receives a user's events in the order they happened.
 * - Network errors, 408 and 5xx are retried with exponential backoff and jitter; a 429 waits
 *   what `Retry-After` says. A retry resends the same events with the same `event_id`s, which
 *   the server deduplicates, so a retry never counts an event twice.
 * - A 401 is handled by the transport (one token refresh); if it persists the events are kept
 *   and retried later. Any other 4xx means the server judged the batch invalid: it is dropped
 *   and reported through `onError` with the server's problem+json `detail`, never retried.
 * - The queue is bounded (`capacity`, oldest dropped with an `onError` notice) and mirrored in
 *   `storage` (localStorage) so events survive a reload and are sent at the next start.
 */
import { FedError, safe } from './errors.js';
import { httpError, retryAfterMs } from './transport.js';

/** Keepalive requests share a 64 KiB body budget in browsers; stay under it. */
const KEEPALIVE_BUDGET = 60_000;
const UTF8 = new TextEncoder();

/**
 * @typedef {object} FedEvent
 * @property {string} event_id
 * @property {string} user
 * @property {string} item
 * @property {'click' | 'skip'} signal
 * @property {number} ts seconds since the epoch
 * @property {Record<string, string | number | boolean>} context
 * @property {string} [prediction_id]
 * @property {number} [propensity] the probability that the local ranking's policy showed the
 *   item in its slot (sent with `slot` and `policy`)
 * @property {number} [slot] the item's position in that ranking, from 0
 * @property {import('./policy.js').Policy} [policy] that ranking's policy
 */

/**
 * @typedef {object} QueueStats
 * @property {number} queued events waiting, including those in flight
 * @property {number} inFlight events in a request that has not answered yet
 * @property {number} sent events the server accepted
 * @property {number} dropped events dropped (rejected by the server, or queue overflow)
 * @property {number} retries requests retried
 */

/**
 * @typedef {object} Timers
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(id: unknown) => void} clearTimeout
 */

/** @type {Timers} */
const REAL_TIMERS = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(/** @type {any} */ (id)),
};

export class EventQueue {
  /**
   * @param {object} o
   * @param {string} o.url the events endpoint
   * @param {import('./transport.js').Transport} o.transport
   * @param {Pick<Storage, 'getItem' | 'setItem'> | null} [o.storage] where the queue persists
   * @param {string} [o.storageKey]
   * @param {number} [o.batchSize] events per request (default 20)
   * @param {number} [o.flushMs] the longest an event waits before a request (default 2000)
   * @param {number} [o.capacity] the most events kept (default 1000)
   * @param {number} [o.retryBaseMs] first backoff (default 500)
   * @param {number} [o.retryMaxMs] longest backoff (default 30000)
   * @param {Timers} [o.timers] the clock, a seam for tests
   * @param {() => number} [o.random] jitter source in [0, 1)
   * @param {(error: FedError) => void} [o.onError]
   * @param {(stats: QueueStats) => void} [o.onChange]
   */
  constructor(o) {
    this.url = o.url;
    this.transport = o.transport;
    this.storage = o.storage ?? null;
    this.storageKey = o.storageKey ?? 'fedlearn:queue';
    this.batchSize = positive('batchSize', o.batchSize ?? 20);
    this.flushMs = positive('flushMs', o.flushMs ?? 2000, true);
    this.capacity = positive('capacity', o.capacity ?? 1000);
    this.retryBaseMs = positive('retryBaseMs', o.retryBaseMs ?? 500, true);
    this.retryMaxMs = positive('retryMaxMs', o.retryMaxMs ?? 30_000, true);
    this.timers = o.timers ?? REAL_TIMERS;
    this.random = o.random ?? Math.random;
    this.onError = safe(o.onError);
    this.onChange = safe(o.onChange);
    /** @type {FedEvent[]} oldest first */
    this.events = [];
    /** @type {Set<string>} event_ids of requests that have not answered yet */
    this.inFlight = new Set();
    this.sent = 0;
    this.dropped = 0;
    this.retries = 0;
    this.attempt = 0;
    /** @type {unknown} the armed flush or retry timer */
    this.timer = null;
    this.backingOff = false;
    this.wantAll = false;
    this.closed = false;
    /** @type {Promise<void> | null} the running send loop */
    this.loop = null;
    this.restore();
  }

  /** @returns {QueueStats} */
  get stats() {
    const { sent, dropped, retries } = this;
    return { queued: this.events.length, inFlight: this.inFlight.size, sent, dropped, retries };
  }

  /**
   * Queue one event; sends when a batch is full, else arms the time bound.
   * @param {FedEvent} event
   */
  enqueue(event) {
    if (this.closed) throw new FedError('the client is closed: start a new one to send events', { kind: 'invalid' });
    this.events.push(event);
    if (this.events.length > this.capacity) {
      const lost = this.events.splice(0, this.events.length - this.capacity);
      this.dropped += lost.length;
      this.onError(
        new FedError(`offline queue full (capacity ${this.capacity}): dropped the ${lost.length} oldest event(s)`, {
          kind: 'overflow',
          events: lost,
        }),
      );
    }
    this.persist();
    if (this.waiting().length >= this.batchSize && !this.backingOff) this.kick();
    else this.arm(this.flushMs);
  }

  /**
   * Send everything queued now (one pass: a failure schedules a retry and resolves).
   * @returns {Promise<void>}
   */
  flush() {
    this.disarm();
    this.backingOff = false;
    this.wantAll = true;
    return this.kick();
  }

  /**
   * The page is going away: start keepalive requests for every waiting event (within the
   * browser's 64 KiB keepalive budget). They are not awaited by the page; the events stay
   * persisted until a response confirms them, so at worst they are resent at the next start,
   * where their event_ids make the resend harmless.
   * @returns {Promise<void>}
   */
  flushKeepalive() {
    const waiting = this.waiting();
    const sends = [];
    let budget = KEEPALIVE_BUDGET;
    for (let i = 0; i < waiting.length; i += this.batchSize) {
      const batch = waiting.slice(i, i + this.batchSize);
      const size = UTF8.encode(JSON.stringify({ events: batch })).length;
      if (size > budget) break;
      budget -= size;
      sends.push(this.send(batch, true));
    }
    return Promise.all(sends).then(() => undefined);
  }

  /** Stop timers and send what is queued; what cannot be sent stays persisted. */
  async close() {
    const last = this.flush();
    this.closed = true; // after flush(): no retry timer is armed from here on
    await last;
    this.disarm();
  }

  /** @returns {FedEvent[]} queued events not in a pending request */
  waiting() {
    return this.events.filter((e) => !this.inFlight.has(e.event_id));
  }

  /** @returns {Promise<void>} the send loop, started if not running */
  kick() {
    if (this.loop) return this.loop;
    const loop = (async () => {
      await undefined; // let `this.loop` be assigned before the loop can finish
      try {
        for (;;) {
          const waiting = this.waiting();
          if (!waiting.length || (!this.wantAll && waiting.length < this.batchSize)) break;
          if ((await this.send(waiting.slice(0, this.batchSize), false)) === 'retry') return;
        }
        this.wantAll = false;
        if (this.waiting().length) this.arm(this.flushMs);
      } finally {
        this.loop = null; // synchronous with the loop's end: a later kick starts a new loop
      }
    })();
    this.loop = loop;
    return loop;
  }

  /**
   * POST one batch and settle its events.
   * @param {FedEvent[]} batch
   * @param {boolean} keepalive
   * @returns {Promise<'ok' | 'dropped' | 'retry' | 'kept'>}
   */
  async send(batch, keepalive) {
    const ids = new Set(batch.map((e) => e.event_id));
    for (const id of ids) this.inFlight.add(id);
    this.onChange(this.stats);
    /** @type {Response | undefined} */
    let res;
    try {
      res = await this.transport.request(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ events: batch }),
        keepalive,
      });
    } catch (e) {
      // A network error, retried below; a failed token refresh is also worth telling.
      if (e instanceof FedError) this.onError(e);
      res = undefined;
    } finally {
      for (const id of ids) this.inFlight.delete(id);
    }
    const status = res ? res.status : 0;
    if (res && res.ok) {
      res.body?.cancel().catch(() => {});
      this.sent += ids.size;
      this.attempt = 0;
      this.settle(ids);
      return 'ok';
    }
    if (res && status >= 400 && status < 500 && ![401, 408, 429].includes(status)) {
      // The server judged this batch invalid: resending it can only fail the same way.
      const error = await httpError(`POST ${this.url}`, res).catch((e) => e);
      this.dropped += ids.size;
      this.settle(ids);
      error.kind = 'rejected';
      error.events = batch;
      this.onError(error);
      return 'dropped';
    }
    if (status === 401 && res) this.onError(await httpError(`POST ${this.url}`, res).catch((e) => e));
    this.onChange(this.stats);
    if (keepalive) return 'kept';
    this.retry(res && status === 429 ? retryAfterMs(res, Date.now()) : undefined);
    return 'retry';
  }

  /**
   * Remove answered events from the queue.
   * @param {Set<string>} ids
   */
  settle(ids) {
    this.events = this.events.filter((e) => !ids.has(e.event_id));
    this.persist();
  }

  /**
   * Schedule the next attempt: what the server asked for, else exponential backoff with
   * jitter (half fixed, half random) so many clients do not retry in lockstep.
   * @param {number} [askedMs]
   */
  retry(askedMs) {
    this.retries += 1;
    const cap = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** this.attempt);
    this.attempt += 1;
    const delay = askedMs ?? cap / 2 + (this.random() * cap) / 2;
    this.disarm();
    if (this.closed) return;
    this.backingOff = true;
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.flush();
    }, delay);
  }

  /** @param {number} ms arm the time-bound flush unless a timer is already armed */
  arm(ms) {
    if (this.timer !== null || this.closed) return;
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.flush();
    }, ms);
  }

  disarm() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  /** Mirror the queue into storage, so a reload does not lose it. */
  persist() {
    this.onChange(this.stats);
    if (!this.storage) return;
    try {
      this.storage.setItem(this.storageKey, JSON.stringify(this.events));
    } catch (e) {
      this.onError(
        new FedError(`could not persist the event queue under ${this.storageKey}: ${e}`, { kind: 'storage', cause: e }),
      );
    }
  }

  /** Load the events a previous page left behind. */
  restore() {
    if (!this.storage) return;
    let saved;
    try {
      saved = JSON.parse(this.storage.getItem(this.storageKey) ?? '[]');
    } catch (e) {
      this.onError(new FedError(`ignored the unreadable saved queue ${this.storageKey}: ${e}`, { kind: 'storage' }));
      return;
    }
    if (!Array.isArray(saved)) return;
    const valid = saved.filter((e) => e && typeof e.event_id === 'string' && typeof e.item === 'string');
    this.events = valid.slice(-this.capacity);
  }
}

/**
 * @param {string} field
 * @param {unknown} value
 * @param {boolean} [zero] whether 0 is allowed
 * @returns {number}
 */
function positive(field, value, zero = false) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < (zero ? 0 : 1)) {
    throw new FedError(`${field} must be a number ${zero ? '>= 0' : '>= 1'}, got ${JSON.stringify(value)}`, {
      field,
      value,
    });
  }
  return value;
}
