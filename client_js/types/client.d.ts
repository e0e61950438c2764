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
    /**
     * Fetch the user's model (and the base, unless cached), resend events a previous page left.
     * @param {StartOptions} options
     * @returns {Promise<FedClient>}
     */
    static start(options: StartOptions): Promise<FedClient>;
    /** Use `await FedClient.start(options)`. @param {symbol} key @param {StartOptions} o */
    constructor(key: symbol, o: StartOptions);
    /** @returns {string} */
    get user(): string;
    /** @returns {string} the current bearer token (it changes after onTokenExpired) */
    get token(): string;
    /** @returns {Base | PartialBase} the base this client scores with (partial: the rows fetched) */
    get base(): Base | PartialBase;
    /** What a status panel shows: queue, model size, versions. */
    get stats(): {
        /**
         * events waiting, including those in flight
         */
        queued: number;
        /**
         * events in a request that has not answered yet
         */
        inFlight: number;
        /**
         * events the server accepted
         */
        sent: number;
        /**
         * events dropped (rejected by the server, or queue overflow)
         */
        dropped: number;
        /**
         * requests retried
         */
        retries: number;
        user: any;
        baseVersion: string;
        serve: "clone" | "base";
        cloneWeight: number;
        nFactors: number;
        baseFeatures: number;
        deltaRows: number;
        deltaBytes: number;
        eventsApplied: number;
        learnedOnDevice: number;
    };
    /** @returns {{w0: number, features: string[], w: number[], v: number[][]}} the local delta */
    deltaJSON(): {
        w0: number;
        features: string[];
        w: number[];
        v: number[][];
    };
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
    rank<T extends {
        id: string;
        features?: Record<string, number>;
    }>(items: T[], context?: Context, options?: RankOptions): RankedItem<T>[];
    /**
     * The user clicked (liked) an item.
     * @param {string} itemId
     * @param {Context} [context] defaults to the context of the ranking that showed the item
     * @param {SignalOptions} [options]
     * @returns {{event: FedEvent, prediction?: number}}
     */
    click(itemId: string, context?: Context, options?: SignalOptions): {
        event: FedEvent;
        prediction?: number;
    };
    /**
     * The user skipped an item.
     * @param {string} itemId
     * @param {Context} [context] defaults to the context of the ranking that showed the item
     * @param {SignalOptions} [options]
     * @returns {{event: FedEvent, prediction?: number}}
     */
    skip(itemId: string, context?: Context, options?: SignalOptions): {
        event: FedEvent;
        prediction?: number;
    };
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
    prepare(items: {
        id: string;
        features?: Record<string, number>;
    }[], context?: Context): Promise<number>;
    /** @returns {Promise<void>} send every queued event now */
    flush(): Promise<void>;
    /**
     * Re-fetch the user's model and adopt it (and its base, when the version changed). Local
     * on-device steps for events the server has not applied yet are replaced by its state.
     * @returns {Promise<UserModel>}
     */
    refresh(): Promise<UserModel>;
    /**
     * The server's current view of this user's model, without changing the client.
     * @returns {Promise<UserModel>}
     */
    serverModel(): Promise<UserModel>;
    /** Stop listening to the page and flush; events that cannot be sent stay persisted. */
    close(): Promise<void>;
    #private;
}
export type Base = import("./format.js").Base;
export type FedEvent = import("./queue.js").FedEvent;
export type Context = Record<string, string | number | boolean>;
export type SignalOptions = {
    /**
     * the `prediction_id` of a server-side ranking
     * (`POST /v1/users/{user}/rank`) that showed the item, so the server trains on exactly what it
     * scored; local rankings have none (the server keeps no record of them)
     */
    predictionId?: string | undefined;
};
export type Policy = import("./policy.js").Policy;
export type RankOptions = {
    /**
     * how this ranking explores (default: the client's `policy`)
     */
    policy?: import("./policy.js").Policy | undefined;
    /**
     * uniform draws in [0, 1) (default Math.random); seed it in tests
     */
    random?: (() => number) | undefined;
};
export type RankedItem<T> = {
    id: string;
    /**
     * click probability under the user's clone
     */
    score: number;
    /**
     * the probability that the policy put the item in this slot
     */
    propensity: number;
    /**
     * the candidate as given
     */
    item: T;
};
export type UserModel = import("./usermodel.js").UserModel;
export type StartOptions = {
    /**
     * the API root, e.g. "https://reco.example.com" ("" for this origin)
     */
    baseUrl: string;
    user: string;
    /**
     * bearer token for this user
     */
    token: string;
    /**
     * the HTTP seam (default: the global fetch)
     */
    fetch?: typeof fetch | undefined;
    /**
     * persists the offline queue
     * (default: localStorage when available; null keeps it in memory only)
     */
    storage?: Pick<Storage, "getItem" | "setItem"> | null | undefined;
    /**
     * where bases are kept
     * (default: Cache API, else IndexedDB, else memory)
     */
    baseCache?: import("./basecache.js").BaseCache | undefined;
    /**
     * returns a fresh token after a 401
     */
    onTokenExpired?: (() => string | Promise<string>) | undefined;
    /**
     * dropped/rejected events and other notices
     */
    onError?: ((error: FedError) => void) | undefined;
    /**
     * queue or model changed
     */
    onChange?: ((stats: FedClient["stats"]) => void) | undefined;
    /**
     * apply each signal's SGD step locally (default true)
     */
    learnOnDevice?: boolean | undefined;
    /**
     * 'partial' fetches only the base rows the session
     * scores (the user's own at start, the candidates' in `prepare`), in immutable buckets the HTTP
     * cache keeps: kilobytes whatever the catalog's size; 'whole' (the default) downloads the base
     */
    baseRows?: "whole" | "partial" | undefined;
    /**
     * events per request (default 20)
     */
    batchSize?: number | undefined;
    /**
     * the longest an event waits before being sent (default 2000)
     */
    flushMs?: number | undefined;
    /**
     * the most events kept offline (default 1000)
     */
    capacity?: number | undefined;
    /**
     * first retry backoff (default 500)
     */
    retryBaseMs?: number | undefined;
    /**
     * longest retry backoff (default 30000)
     */
    retryMaxMs?: number | undefined;
    /**
     * ranked items whose features are remembered (default 1000)
     */
    predictionMemory?: number | undefined;
    /**
     * how `rank` explores by default (default greedy); each event on a
     * ranked item reports its policy, slot and propensity
     */
    policy?: import("./policy.js").Policy | undefined;
    /**
     * the clock, a seam for tests
     */
    timers?: import("./queue.js").Timers | undefined;
    /**
     * jitter source, a seam for tests
     */
    random?: (() => number) | undefined;
};
import { PartialBase } from './rowset.js';
import { FedError } from './errors.js';
