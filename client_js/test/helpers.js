import { crc32 } from '../src/crc32.js';

// Test helpers: an independent FLFM writer (from docs/CONTRACTS.md), an in-memory localStorage,
// a hand-driven clock, and a scripted fetch (the client's own HTTP seam, not a server mock).

/**
 * Write FLFM bytes.
 * @param {{version?: string, k: number, w0?: number, features: string[], w: number[],
 *   v: number[][], initSeed?: number, initScale?: number, format?: 1 | 2}} spec format 2 adds
 *   the CRC-32 of bytes 16.. at bytes 12..15
 * @returns {ArrayBuffer}
 */
export function buildBase({ version = 'v1', k, w0 = 0, features, w, v, initSeed = 42, initScale = 0.1, format = 1 }) {
  const header = {
    format,
    version,
    n_factors: k,
    n_features: features.length,
    w0,
    features,
    init_seed: initSeed,
    init_scale: initScale,
    hyper: {},
    meta: {},
  };
  let json = new TextEncoder().encode(JSON.stringify(header));
  const h = Math.ceil(json.length / 8) * 8;
  const padded = new Uint8Array(h).fill(0x20);
  padded.set(json);
  json = padded;
  const n = features.length;
  const buf = new ArrayBuffer(16 + h + 4 * n + 4 * n * k);
  const bytes = new Uint8Array(buf);
  bytes.set([0x46, 0x4c, 0x46, 0x4d]);
  const dv = new DataView(buf);
  dv.setUint32(4, format, true);
  dv.setUint32(8, h, true);
  bytes.set(json, 16);
  let at = 16 + h;
  for (const x of w) (dv.setFloat32(at, x, true), (at += 4));
  for (const row of v) for (const x of row) (dv.setFloat32(at, x, true), (at += 4));
  if (format === 2) dv.setUint32(12, crc32(bytes.subarray(16)), true);
  return buf;
}

/** @returns {Storage-like} a Map-backed localStorage */
export function memoryStorage() {
  const map = new Map();
  return {
    getItem: (key) => (map.has(key) ? map.get(key) : null),
    setItem: (key, value) => map.set(key, String(value)),
    removeItem: (key) => map.delete(key),
    map,
  };
}

/** A clock the test advances by hand: timers run only when `fire()` is called. */
export function manualTimers() {
  const pending = new Map();
  let next = 1;
  return {
    setTimeout(fn, ms) {
      pending.set(next, { fn, ms });
      return next++;
    },
    clearTimeout(id) {
      pending.delete(id);
    },
    /** @returns {number[]} the delays of the armed timers */
    delays: () => [...pending.values()].map((t) => t.ms),
    /** Run every armed timer once. */
    fire() {
      const due = [...pending.values()];
      pending.clear();
      for (const t of due) t.fn();
    },
    pending,
  };
}

/**
 * A fetch whose answers the test writes. Each call is recorded as {url, method, headers, body,
 * keepalive}. `handler(call)` returns a Response, or throws to simulate a network error.
 * @param {(call: object) => Response | Promise<Response>} handler
 */
export function scriptedFetch(handler) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const headers = Object.fromEntries(Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    const call = {
      url: String(url),
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.parse(init.body),
      keepalive: init.keepalive ?? false,
    };
    calls.push(call);
    return handler(call);
  };
  return { fetch, calls };
}

/** @returns {Response} */
export function json(body, status = 200, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

/** Let pending promise chains run (the client's send loop is asynchronous). */
export async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}
