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
    constructor(o: {
        url: string;
        transport: import("./transport.js").Transport;
        storage?: Pick<Storage, "getItem" | "setItem"> | null | undefined;
        storageKey?: string | undefined;
        batchSize?: number | undefined;
        flushMs?: number | undefined;
        capacity?: number | undefined;
        retryBaseMs?: number | undefined;
        retryMaxMs?: number | undefined;
        timers?: Timers | undefined;
        random?: (() => number) | undefined;
        onError?: ((error: FedError) => void) | undefined;
        onChange?: ((stats: QueueStats) => void) | undefined;
    });
    url: string;
    transport: import("./transport.js").Transport;
    storage: Pick<Storage, "getItem" | "setItem"> | null;
    storageKey: string;
    batchSize: number;
    flushMs: number;
    capacity: number;
    retryBaseMs: number;
    retryMaxMs: number;
    timers: Timers;
    random: () => number;
    onError: (error: FedError) => void;
    onChange: (stats: QueueStats) => void;
    /** @type {FedEvent[]} oldest first */
    events: FedEvent[];
    /** @type {Set<string>} event_ids of requests that have not answered yet */
    inFlight: Set<string>;
    sent: number;
    dropped: number;
    retries: number;
    attempt: number;
    /** @type {unknown} the armed flush or retry timer */
    timer: unknown;
    backingOff: boolean;
    wantAll: boolean;
    closed: boolean;
    /** @type {Promise<void> | null} the running send loop */
    loop: Promise<void> | null;
    /** @returns {QueueStats} */
    get stats(): QueueStats;
    /**
     * Queue one event; sends when a batch is full, else arms the time bound.
     * @param {FedEvent} event
     */
    enqueue(event: FedEvent): void;
    /**
     * Send everything queued now (one pass: a failure schedules a retry and resolves).
     * @returns {Promise<void>}
     */
    flush(): Promise<void>;
    /**
     * The page is going away: start keepalive requests for every waiting event (within the
     * browser's 64 KiB keepalive budget). They are not awaited by the page; the events stay
     * persisted until a response confirms them, so at worst they are resent at the next start,
     * where their event_ids make the resend harmless.
     * @returns {Promise<void>}
     */
    flushKeepalive(): Promise<void>;
    /** Stop timers and send what is queued; what cannot be sent stays persisted. */
    close(): Promise<void>;
    /** @returns {FedEvent[]} queued events not in a pending request */
    waiting(): FedEvent[];
    /** @returns {Promise<void>} the send loop, started if not running */
    kick(): Promise<void>;
    /**
     * POST one batch and settle its events.
     * @param {FedEvent[]} batch
     * @param {boolean} keepalive
     * @returns {Promise<'ok' | 'dropped' | 'retry' | 'kept'>}
     */
    send(batch: FedEvent[], keepalive: boolean): Promise<"ok" | "dropped" | "retry" | "kept">;
    /**
     * Remove answered events from the queue.
     * @param {Set<string>} ids
     */
    settle(ids: Set<string>): void;
    /**
     * Schedule the next attempt: what the server asked for, else exponential backoff with
     * jitter (half fixed, half random) so many clients do not retry in lockstep.
     * @param {number} [askedMs]
     */
    retry(askedMs?: number): void;
    /** @param {number} ms arm the time-bound flush unless a timer is already armed */
    arm(ms: number): void;
    disarm(): void;
    /** Mirror the queue into storage, so a reload does not lose it. */
    persist(): void;
    /** Load the events a previous page left behind. */
    restore(): void;
}
export type FedEvent = {
    event_id: string;
    user: string;
    item: string;
    signal: "click" | "skip";
    /**
     * seconds since the epoch
     */
    ts: number;
    context: Record<string, string | number | boolean>;
    prediction_id?: string | undefined;
    /**
     * the probability that the local ranking's policy showed the
     * item in its slot (sent with `slot` and `policy`)
     */
    propensity?: number | undefined;
    /**
     * the item's position in that ranking, from 0
     */
    slot?: number | undefined;
    /**
     * that ranking's policy
     */
    policy?: import("./policy.js").Policy | undefined;
};
export type QueueStats = {
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
};
export type Timers = {
    setTimeout: (fn: () => void, ms: number) => unknown;
    clearTimeout: (id: unknown) => void;
};
import { FedError } from './errors.js';
