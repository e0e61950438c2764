/**
 * FedClient: one user's model in the browser. It fetches the user's delta (kilobytes) and the
 * shared base (once per immutable version, then cached), ranks candidates locally, learns from
 * the user's clicks and skips on the device so the ranking reacts at once, and streams the
 * signals to the server, which trains the authoritative clone.
 */
import { defaultBaseCache } from './basecache.js';
import { Delta } from './delta.js';
import { FedError, invalid, safe } from './errors.js';
import { checkContext, checkId, eventFeatures } from './features.js';
import { learnOne, score } from './fm.js';
import { parseBase } from './format.js';
import { checkPolicy, GREEDY, rankWithPolicy } from './policy.js';
import { PartialBase, parseRowSet } from './rowset.js';
import { gateWeight, servedScore, updateGate } from './gating.js';
import { Lru } from './lru.js';
import { EventQueue } from './queue.js';
import { localStorageOrNull, uuid } from './platform.js';
import { Transport, httpError } from './transport.js';
import { baseLocation, checkModel, checkVersion, resolveUrl } from './usermodel.js';

/** @typedef {import('./format.js').Base} Base */
/** @typedef {import('./queue.js').FedEvent} FedEvent */
/** @typedef {Record<string, string | number | boolean>} Context */
/**
 * @typedef {object} SignalOptions
 * @property {string} [predictionId] the `prediction_id` of a server-side ranking
 *   (`POST /v1/users/{user}/rank`) that showed the item, so the server trains on exactly what it
 *   scored; local rankings have none (the server keeps no record of them)
 */
/** @typedef {import('./policy.js').Policy} Policy */
/**
 * @typedef {object} RankOptions
 * @property {Policy} [policy] how this ranking explores (default: the client's `policy`)
 * @property {() => number} [random] uniform draws in [0, 1) (default Math.random); seed it in tests
 */
/**
 * @template T
 * @typedef {object} RankedItem
 * @property {string} id
 * @property {number} score click probability under the user's clone
 * @property {number} propensity the probability that the policy put the item in this slot
 * @property {T} item the candidate as given
 */

/** @typedef {import('./usermodel.js').UserModel} UserModel */

/**
 * @typedef {object} StartOptions
 * @property {string} baseUrl the API root, e.g. "https://reco.example.com" ("" for this origin)
 * @property {string} user
 * @property {string} token bearer token for this user
 * @property {typeof fetch} [fetch] the HTTP seam (default: the global fetch)
 * @property {Pick<Storage, 'getItem' | 'setItem'> | null} [storage] persists the offline queue
 *   (default: localStorage when available; null keeps it in memory only)
 * @property {import('./basecache.js').BaseCache} [baseCache] where bases are kept
 *   (default: Cache API, else IndexedDB, else memory)
 * @property {() => string | Promise<string>} [onTokenExpired] returns a fresh token after a 401
 * @property {(error: FedError) => void} [onError] dropped/rejected events and other notices
 * @property {(stats: FedClient['stats']) => void} [onChange] queue or model changed
 * @property {boolean} [learnOnDevice] apply each signal's SGD step locally (default true)
 * @property {'whole' | 'partial'} [baseRows] 'partial' fetches only the base rows the session
 *   scores (the user's own at start, the candidates' in `prepare`), in immutable buckets the HTTP
 *   cache keeps: kilobytes whatever the catalog's size; 'whole' (the default) downloads the base
 * @property {number} [batchSize] events per request (default 20)
 * @property {number} [flushMs] the longest an event waits before being sent (default 2000)
 * @property {number} [capacity] the most events kept offline (default 1000)
 * @property {number} [retryBaseMs] first retry backoff (default 500)
 * @property {number} [retryMaxMs] longest retry backoff (default 30000)
 * @property {number} [predictionMemory] ranked items whose features are remembered (default 1000)
 * @property {Policy} [policy] how `rank` explores by default (default greedy); each event on a
 *   ranked item reports its policy, slot and propensity
 * @property {import('./queue.js').Timers} [timers] the clock, a seam for tests
 * @property {() => number} [random] jitter source, a seam for tests
 */

export class FedClient {
  /** @type {Base | PartialBase} */ #base;
  /** @type {Delta} */ #delta;
  /** @type {UserModel} */ #model;
  /** @type {Transport} */ #transport;
  /** @type {EventQueue} */ #queue;
  /** @type {Lru<string, {features: Record<string, number>, context: Context,
   *   itemFeatures?: Record<string, number>,
   *   shown: {propensity: number, slot: number, policy: Policy}}>} */ #seen;
  /** @type {Policy} */ #policy;
  #root;
  #user;
  #learnOnDevice;
  #partial;
  #learned = 0;
  #baseCache;
  #onError;
  #onChange;
  /** @type {(() => void) | null} */ #unlisten = null;

  /** Use `await FedClient.start(options)`. @param {symbol} key @param {StartOptions} o */
  constructor(key, o) {
    if (key !== START) throw new FedError('use `await FedClient.start(options)` to create a FedClient');
    if (typeof o.baseUrl !== 'string') invalid('baseUrl', o.baseUrl, 'must be a string (the API root, "" for this origin)');
    if (typeof o.token !== 'string' || !o.token) invalid('token', o.token, 'must be a non-empty bearer token');
    const fetchFn = o.fetch ?? globalThis.fetch?.bind(globalThis);
    if (typeof fetchFn !== 'function') invalid('fetch', o.fetch, 'must be a function (no global fetch here)');
    if (o.onTokenExpired !== undefined && typeof o.onTokenExpired !== 'function') {
      invalid('onTokenExpired', o.onTokenExpired, 'must be a function returning a new token');
    }
    this.#root = o.baseUrl.replace(/\/+$/, '');
    this.#user = checkId('user', o.user);
    // The user is a URL path segment: the server refuses '/', which no router can tell apart.
    if (this.#user.includes('/')) invalid('user', o.user, "must not contain '/'");
    this.#learnOnDevice = o.learnOnDevice ?? true;
    if (typeof this.#learnOnDevice !== 'boolean') invalid('learnOnDevice', o.learnOnDevice, 'must be true or false');
    const rows = o.baseRows ?? 'whole';
    if (rows !== 'whole' && rows !== 'partial') invalid('baseRows', o.baseRows, 'must be "whole" or "partial"');
    this.#partial = rows === 'partial';
    const memory = o.predictionMemory ?? 1000;
    if (!Number.isSafeInteger(memory) || memory < 1) invalid('predictionMemory', memory, 'must be an integer >= 1');
    this.#baseCache = o.baseCache ?? defaultBaseCache();
    this.#onError = safe(o.onError);
    this.#onChange = safe(o.onChange);
    this.#seen = new Lru(memory);
    this.#policy = o.policy === undefined ? GREEDY : checkPolicy('policy', o.policy);
    this.#transport = new Transport({ fetch: fetchFn, token: o.token, onTokenExpired: o.onTokenExpired });
    this.#queue = new EventQueue({
      url: `${this.#root}/v1/events`,
      transport: this.#transport,
      storage: o.storage === undefined ? localStorageOrNull() : o.storage,
      storageKey: `fedlearn:queue:${this.#root}:${this.#user}`,
      batchSize: o.batchSize,
      flushMs: o.flushMs,
      capacity: o.capacity,
      retryBaseMs: o.retryBaseMs,
      retryMaxMs: o.retryMaxMs,
      timers: o.timers,
      random: o.random,
      onError: this.#onError,
      onChange: () => this.#onChange(this.stats),
    });
  }

  /**
   * Fetch the user's model (and the base, unless cached), resend events a previous page left.
   * @param {StartOptions} options
   * @returns {Promise<FedClient>}
   */
  static async start(options) {
    if (!options || typeof options !== 'object') invalid('options', options, 'must be an object');
    const client = new FedClient(START, options);
    await client.refresh();
    client.#listen();
    if (client.#queue.events.length) client.#queue.flush();
    return client;
  }

  /** @returns {string} */
  get user() {
    return this.#user;
  }

  /** @returns {string} the current bearer token (it changes after onTokenExpired) */
  get token() {
    return this.#transport.token;
  }

  /** @returns {Base | PartialBase} the base this client scores with (partial: the rows fetched) */
  get base() {
    return this.#base;
  }

  /** What a status panel shows: queue, model size, versions. */
  get stats() {
    const m = this.#model;
    return {
      user: this.#user,
      baseVersion: m?.base_version,
      serve: m?.serve,
      cloneWeight: m?.clone_weight,
      nFactors: this.#base?.nFactors,
      baseFeatures: this.#base?.nFeatures,
      deltaRows: this.#delta?.size ?? 0,
      deltaBytes: this.#delta?.byteLength ?? 0,
      eventsApplied: m?.events_applied ?? 0,
      learnedOnDevice: this.#learned,
      ...this.#queue.stats,
    };
  }

  /** @returns {{w0: number, features: string[], w: number[], v: number[][]}} the local delta */
  deltaJSON() {
    return this.#delta.toJSON();
  }

  /**
   * Score the candidates and rank them in slot order under the policy (greedy: best first).
   * Each item's features, the context and how it was shown are remembered, so a later
   * click/skip on it learns from, and reports, what this ranking saw.
   * @template {{id: string, features?: Record<string, number>}} T
   * @param {T[]} items
   * @param {Context} [context] e.g. {hour: "21", device: "mobile"}
   * @param {RankOptions} [options]
   * @returns {RankedItem<T>[]}
   */
  rank(items, context, options = {}) {
    if (!Array.isArray(items)) invalid('items', items, 'must be a list of {id, features?}');
    const policy = options.policy === undefined ? this.#policy : checkPolicy('options.policy', options.policy);
    const random = options.random ?? Math.random;
    if (typeof random !== 'function') invalid('options.random', random, 'must be a function returning [0, 1)');
    const ctx = { ...checkContext('context', context) };
    const weight = this.#model.clone_weight;
    const userFeatures = this.#model.user_features;
    const scored = items.map((item, i) => {
      if (!item || typeof item !== 'object') invalid(`items[${i}]`, item, 'must be an object {id, features?}');
      const id = checkId(`items[${i}].id`, item.id);
      const features = eventFeatures(this.#user, id, item.features, ctx, userFeatures);
      return { id, score: servedScore(this.#base, this.#delta, weight, features), item, features, i };
    });
    const scores = scored.map((c) => c.score);
    const { order, propensities } = rankWithPolicy(scores, scored.length, policy, random);
    return order.map((i, slot) => {
      const { id, score: s, item, features } = scored[i];
      const propensity = propensities[slot];
      this.#seen.set(id, { features, context: ctx, itemFeatures: item.features, shown: { propensity, slot, policy } });
      return { id, score: s, propensity, item };
    });
  }

  /**
   * The user clicked (liked) an item.
   * @param {string} itemId
   * @param {Context} [context] defaults to the context of the ranking that showed the item
   * @param {SignalOptions} [options]
   * @returns {{event: FedEvent, prediction?: number}}
   */
  click(itemId, context, options) {
    return this.#signal(itemId, 'click', context, options);
  }

  /**
   * The user skipped an item.
   * @param {string} itemId
   * @param {Context} [context] defaults to the context of the ranking that showed the item
   * @param {SignalOptions} [options]
   * @returns {{event: FedEvent, prediction?: number}}
   */
  skip(itemId, context, options) {
    return this.#signal(itemId, 'skip', context, options);
  }

  /**
   * Fetch the base rows that ranking `items` in `context` reads and the session lacks (with
   * `baseRows: 'partial'`; a whole base holds them all). Call it before `rank`: ranking or
   * learning on a row never fetched throws a FedError of kind "missing_rows". When the
   * session's base version was pruned meanwhile (410), the session moves to the current model
   * and base (as `refresh`) and fetches the rows there.
   * @param {{id: string, features?: Record<string, number>}[]} items
   * @param {Context} [context]
   * @returns {Promise<number>} the buckets fetched (after a move: all the new base's)
   */
  async prepare(items, context) {
    if (!Array.isArray(items)) invalid('items', items, 'must be a list of {id, features?}');
    if (!(this.#base instanceof PartialBase)) return 0;
    const ctx = checkContext('context', context);
    const names = items.flatMap((item, i) =>
      Object.keys(eventFeatures(this.#user, checkId(`items[${i}].id`, item?.id), item?.features, ctx, this.#model.user_features)),
    );
    try {
      return await this.#fetchRows(this.#base, names);
    } catch (e) {
      // 410: the session's base version was pruned (the page outlived the server's
      // FEDLEARN_BASE_KEEP_VERSIONS promotions). Its buckets are gone for good, so adopt the
      // current model and base once; refresh fetches the rows the session wanted, these too.
      if (!(e instanceof FedError) || e.status !== 410) throw e;
      await this.refresh();
      await this.#fetchRows(this.#base, names);
      return this.#base instanceof PartialBase ? this.#base.buckets.size : 0;
    }
  }

  /** @returns {Promise<void>} send every queued event now */
  flush() {
    return this.#queue.flush();
  }

  /**
   * Re-fetch the user's model and adopt it (and its base, when the version changed). Local
   * on-device steps for events the server has not applied yet are replaced by its state.
   * @returns {Promise<UserModel>}
   */
  async refresh() {
    const model = await this.serverModel();
    // A partial base is also replaced when its buckets moved (another FEDLEARN_BASE_BUCKET_ROWS).
    const same = this.#base?.version === model.base_version && (this.#base?.url ?? '') === (this.#partial ? model.base_rows?.url : '');
    const base = same ? this.#base : await this.#loadBase(model);
    if (base instanceof PartialBase) {
      // The user's own rows, and on a new version those the session had already fetched.
      await this.#fetchRows(base, [`user=${this.#user}`, ...Object.keys(model.user_features ?? {}), ...(this.#base instanceof PartialBase ? this.#base.wanted : [])]);
    }
    const delta = Delta.fromJSON(model.delta, base.nFactors);
    this.#base = base;
    this.#delta = delta;
    this.#model = model;
    this.#onChange(this.stats);
    return model;
  }

  /**
   * The server's current view of this user's model, without changing the client.
   * @returns {Promise<UserModel>}
   */
  async serverModel() {
    const url = `${this.#root}/v1/users/${encodeURIComponent(this.#user)}/model`;
    const res = await this.#transport.request(url, { headers: { accept: 'application/json' } });
    if (!res.ok) await httpError(`GET ${url}`, res);
    const model = checkModel(await res.json());
    if (model.user !== this.#user) invalid('model.user', model.user, `must be the requested user ${JSON.stringify(this.#user)}`);
    return model;
  }

  /** Stop listening to the page and flush; events that cannot be sent stay persisted. */
  async close() {
    this.#unlisten?.();
    this.#unlisten = null;
    await this.#queue.close();
  }

  /** @returns {Delta | null} the delta the served score uses: none when the base alone is served */
  #servedDelta() {
    return this.#model.clone_weight > 0 ? this.#delta : null;
  }

  /**
   * @param {string} itemId
   * @param {'click' | 'skip'} signal
   * @param {Context | undefined} context
   * @param {SignalOptions} [options]
   */
  #signal(itemId, signal, context, { predictionId } = {}) {
    const item = checkId('itemId', itemId);
    const seen = this.#seen.get(item);
    let ctx = seen?.context ?? {};
    let features = seen?.features;
    if (context !== undefined || !features) {
      ctx = { ...checkContext('context', context ?? {}) };
      features = eventFeatures(this.#user, item, seen?.itemFeatures, ctx, this.#model.user_features);
    }
    /** @type {FedEvent} */
    const event = { event_id: uuid(), user: this.#user, item, signal, ts: Date.now() / 1000, context: ctx };
    if (predictionId !== undefined) event.prediction_id = checkId('predictionId', predictionId);
    else if (seen) Object.assign(event, seen.shown); // ranked here: say how it was shown
    /** @type {number | undefined} */
    let prediction;
    if (this.#learnOnDevice && this.#servedDelta() && this.#holdsRows(features)) {
      const { lr, l2, bias_lr: biasLr = lr, max_rows: maxRows, gate } = this.#model;
      const y = signal === 'click' ? 1 : 0;
      const baseP = gate ? score(this.#base, null, features) : 0;
      prediction = learnOne(this.#base, this.#delta, features, y, { lr, l2, biasLr, maxRows });
      if (gate) {
        // As the trainer does: both models' predictions before the step move the gate.
        updateGate(gate, prediction, baseP, y);
        this.#model.clone_weight = gateWeight(gate);
      }
      this.#learned += 1;
    }
    this.#queue.enqueue(event);
    return { event, prediction };
  }

  /**
   * The base of `model`, from the cache when this version was downloaded before.
   * @param {UserModel} model
   * @returns {Promise<Base>}
   */
  async #loadBase(model) {
    if (this.#partial) return new PartialBase(model.base_version, model.base_rows);
    const { url, key, sameOrigin } = baseLocation(this.#root, model);
    let bytes;
    try {
      bytes = await this.#baseCache.get(key);
    } catch (e) {
      this.#onError(new FedError(`could not read the base cache: ${e}`, { kind: 'storage', cause: e }));
    }
    if (bytes) {
      try {
        return checkVersion(parseBase(bytes), model);
      } catch (e) {
        this.#onError(new FedError(`ignored a bad cached base ${key}: ${e.message}`, { kind: 'storage', cause: e }));
      }
    }
    // The token only goes to our own API: a base on a CDN needs none and must not see it.
    const res = await this.#transport.request(url, {}, { auth: sameOrigin });
    if (!res.ok) await httpError(`GET ${url}`, res);
    bytes = await res.arrayBuffer();
    const base = checkVersion(parseBase(bytes), model);
    try {
      await this.#baseCache.put(key, bytes);
    } catch (e) {
      this.#onError(new FedError(`could not cache base ${model.base_version}: ${e}`, { kind: 'storage', cause: e }));
    }
    return base;
  }

  /**
   * Whether a partial base holds every row of `features`: an item signalled without being
   * prepared is still sent (the server trains on it) but not learned on the device.
   * @param {Record<string, number>} features
   */
  #holdsRows(features) {
    const base = this.#base;
    if (!(base instanceof PartialBase) || base.missing(Object.keys(features)).length === 0) return true;
    this.#onError(new FedError('rows not fetched: sent, not learned', { kind: 'missing_rows' }));
    return false;
  }

  /**
   * Fetch the buckets of `names` that `base` lacks, a few at a time. Buckets are immutable:
   * the browser's HTTP cache (and any CDN) answers a repeated one without the API.
   * @param {PartialBase} base
   * @param {string[]} names
   * @returns {Promise<number>} the buckets fetched
   */
  async #fetchRows(base, names) {
    for (const name of names) base.wanted.add(name);
    const queue = base.missing(names);
    const fetchOne = async (bucket) => {
      const { url, sameOrigin } = resolveUrl(this.#root, base.url.replace('{bucket}', bucket));
      const res = await this.#transport.request(url, {}, { auth: sameOrigin });
      if (!res.ok) await httpError(`GET ${url}`, res);
      base.add(parseRowSet(await res.arrayBuffer()));
    };
    const worker = async () => {
      for (let b = queue.shift(); b !== undefined; b = queue.shift()) await fetchOne(b);
    };
    const total = queue.length;
    await Promise.all(Array.from({ length: Math.min(ROW_FETCHES, total) }, worker));
    this.#onChange(this.stats);
    return total;
  }

  /**
   * Flush with keepalive when the page is hidden or unloaded. Why fetch keepalive rather than
   * navigator.sendBeacon: a beacon cannot carry the Authorization header (the token would have
   * to travel in the URL or body, where logs keep it), and it gives no response, so events
   * could never be confirmed; a keepalive fetch outlives the page like a beacon, with headers.
   */
  #listen() {
    const doc = globalThis.document;
    const win = globalThis.window;
    if (!doc?.addEventListener || !win?.addEventListener) return;
    const hidden = () => {
      if (doc.visibilityState === 'hidden') this.#queue.flushKeepalive();
    };
    const leaving = () => this.#queue.flushKeepalive();
    const online = () => this.#queue.flush();
    doc.addEventListener('visibilitychange', hidden);
    win.addEventListener('pagehide', leaving);
    win.addEventListener('online', online);
    this.#unlisten = () => {
      doc.removeEventListener('visibilitychange', hidden);
      win.removeEventListener('pagehide', leaving);
      win.removeEventListener('online', online);
    };
  }
}

const START = Symbol('FedClient.start');
/** Buckets fetched at once: a browser opens about six connections per origin on HTTP/1.1. */
const ROW_FETCHES = 6;
