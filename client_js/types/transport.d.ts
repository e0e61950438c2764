/**
 * The server's explanation of a failed request: problem+json `detail` (or `title`), else text.
 * @param {Response} res
 * @returns {Promise<string>}
 */
export function problemDetail(res: Response): Promise<string>;
/**
 * How long a 429 (or 503) asks us to wait: `Retry-After` in seconds or as an HTTP date.
 * @param {Response} res
 * @param {number} now ms since the epoch
 * @returns {number | undefined} milliseconds, at most one hour; undefined when absent
 */
export function retryAfterMs(res: Response, now: number): number | undefined;
/**
 * Throw a FedError for a non-2xx answer of a request that cannot be retried by itself.
 * @param {string} what e.g. "GET /v1/users/42/model"
 * @param {Response} res
 * @returns {Promise<never>}
 */
export function httpError(what: string, res: Response): Promise<never>;
export class Transport {
    /**
     * @param {{fetch: typeof fetch, token: string,
     *   onTokenExpired?: () => string | Promise<string>}} options
     */
    constructor({ fetch, token, onTokenExpired }: {
        fetch: typeof globalThis.fetch;
        token: string;
        onTokenExpired?: () => string | Promise<string>;
    });
    fetch: typeof fetch;
    /** @type {string} the current bearer token */
    token: string;
    onTokenExpired: (() => string | Promise<string>) | undefined;
    /** @type {Promise<string> | null} */
    refreshing: Promise<string> | null;
    /**
     * Fetch with `Authorization: Bearer <token>`; a 401 refreshes the token once and retries.
     * Network errors propagate (the caller decides whether to retry).
     * @param {string} url
     * @param {RequestInit} [init]
     * @param {{auth?: boolean}} [options] auth: false sends no token (e.g. a CDN-hosted base)
     * @returns {Promise<Response>}
     */
    request(url: string, init?: RequestInit, { auth }?: {
        auth?: boolean;
    }): Promise<Response>;
    /** @returns {Promise<string>} the new token, from the application's onTokenExpired */
    refresh(): Promise<string>;
}
