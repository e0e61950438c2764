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
import { Lru } from './lru.js';
import { EventQueue } from './queue.js';
import { localStorageOrNull, uuid } from './platform.js';
import { Transport, httpError } from './transport.js';
import { baseLocation, checkModel, checkVersion } from './usermodel.js';

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
  /** @type {Base} */ #base;
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

  /** @returns {Base} the base this client scores with */
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
    const delta = this.#servedDelta();
    const userFeatures = this.#model.user_features;
    const scored = items.map((item, i) => {
      if (!item || typeof item !== 'object') invalid(`items[${i}]`, item, 'must be an object {id, features?}');
      const id = checkId(`items[${i}].id`, item.id);
      const features = eventFeatures(this.#user, id, item.features, ctx, userFeatures);
      return { id, score: score(this.#base, delta, features), item, features, i };
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
    const base = this.#base?.version === model.base_version ? this.#base : await this.#loadBase(model);
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

  /** @returns {Delta | null} the delta used to score: none when the server serves the base */
  #servedDelta() {
    return this.#model.serve === 'base' ? null : this.#delta;
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
    if (this.#learnOnDevice && this.#servedDelta()) {
      const { lr, l2, bias_lr: biasLr = lr, max_rows: maxRows } = this.#model;
      prediction = learnOne(this.#base, this.#delta, features, signal === 'click' ? 1 : 0, { lr, l2, biasLr, maxRows });
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
