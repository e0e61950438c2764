/**
 * The one seam for all HTTP: every request the client makes goes through `Transport.request`,
 * which adds the bearer token and, on a 401, asks the application for a new token once
 * (`onTokenExpired`) and repeats the request. Concurrent 401s share one refresh.
 */
import { FedError } from './errors.js';

export class Transport {
  /**
   * @param {{fetch: typeof fetch, token: string,
   *   onTokenExpired?: () => string | Promise<string>}} options
   */
  constructor({ fetch, token, onTokenExpired }) {
    this.fetch = fetch;
    /** @type {string} the current bearer token */
    this.token = token;
    this.onTokenExpired = onTokenExpired;
    /** @type {Promise<string> | null} */
    this.refreshing = null;
  }

  /**
   * Fetch with `Authorization: Bearer <token>`; a 401 refreshes the token once and retries.
   * Network errors propagate (the caller decides whether to retry).
   * @param {string} url
   * @param {RequestInit} [init]
   * @param {{auth?: boolean}} [options] auth: false sends no token (e.g. a CDN-hosted base)
   * @returns {Promise<Response>}
   */
  async request(url, init = {}, { auth = true } = {}) {
    if (!auth) return this.fetch(url, init);
    const used = this.token;
    const res = await this.fetch(url, withAuth(init, used));
    if (res.status !== 401 || !this.onTokenExpired) return res;
    await discard(res);
    // Another request may already have refreshed the token meanwhile: then just use it.
    if (this.token === used) await this.refresh();
    return this.fetch(url, withAuth(init, this.token));
  }

  /** @returns {Promise<string>} the new token, from the application's onTokenExpired */
  refresh() {
    this.refreshing ??= (async () => {
      try {
        const token = await /** @type {() => string | Promise<string>} */ (this.onTokenExpired)();
        if (typeof token !== 'string' || !token) {
          throw new FedError(`onTokenExpired() must return a non-empty token string, got ${typeof token}`, {
            field: 'onTokenExpired',
            kind: 'auth',
          });
        }
        this.token = token;
        return token;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }
}

/**
 * @param {RequestInit} init
 * @param {string} token
 * @returns {RequestInit}
 */
function withAuth(init, token) {
  return { ...init, headers: { ...init.headers, authorization: `Bearer ${token}` } };
}

/**
 * Release a response body we will not read, so the connection can be reused.
 * @param {Response} res
 */
async function discard(res) {
  try {
    await res.body?.cancel();
  } catch {
    // Nothing to release.
  }
}

/**
 * The server's explanation of a failed request: problem+json `detail` (or `title`), else text.
 * @param {Response} res
 * @returns {Promise<string>}
 */
export async function problemDetail(res) {
  let text = '';
  try {
    text = await res.text();
    const problem = JSON.parse(text);
    if (problem && (problem.detail || problem.title)) return String(problem.detail || problem.title);
  } catch {
    // Not JSON: fall back to the text.
  }
  return text.trim().slice(0, 300) || `HTTP ${res.status}`;
}

/**
 * How long a 429 (or 503) asks us to wait: `Retry-After` in seconds or as an HTTP date.
 * @param {Response} res
 * @param {number} now ms since the epoch
 * @returns {number | undefined} milliseconds, at most one hour; undefined when absent
 */
export function retryAfterMs(res, now) {
  const value = res.headers.get('retry-after');
  if (!value) return undefined;
  const ms = /^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) * 1000 : Date.parse(value) - now;
  return Number.isNaN(ms) ? undefined : Math.min(Math.max(ms, 0), 3_600_000);
}

/**
 * Throw a FedError for a non-2xx answer of a request that cannot be retried by itself.
 * @param {string} what e.g. "GET /v1/users/42/model"
 * @param {Response} res
 * @returns {Promise<never>}
 */
export async function httpError(what, res) {
  const detail = await problemDetail(res);
  throw new FedError(`${what} answered ${res.status}: ${detail}`, {
    status: res.status,
    detail,
    kind: res.status === 401 ? 'auth' : 'http',
  });
}
