/**
 * The factorization machine of docs/CONTRACTS.md, on a clone = base + delta, in float64.
 * `score` never mutates anything; `learnOne` is one SGD step on the delta, with gradients
 * taken at the old parameters and an L2 pull of the delta toward the base, exactly like the
 * server, so a click reorders the ranking on the device the way it will on the server. The
 * step is clipped, the delta kept in a box and its rows capped, with the server's bounds.
 */
import { DEFAULT_MAX_ROWS } from './delta.js';
import { invalid } from './errors.js';

/** Largest change of one parameter in one step (the server's `fm.MAX_STEP`). */
export const MAX_STEP = 1;
/** Bound on every delta parameter (the server's `fm.MAX_DELTA`). */
export const MAX_DELTA = 16;

/** @typedef {import('./format.js').Base} Base */
/** @typedef {import('./delta.js').Delta} Delta */
/** @typedef {Record<string, number>} Features named features, River style: name -> value */

const UTF8 = new TextEncoder();
const UNSEEN_CACHE_ROWS = 4096;
/** @type {WeakMap<Base, Map<string, Float64Array>>} */
const unseenCache = new WeakMap();

/**
 * FNV-1a, 32 bits, over bytes.
 * @param {Uint8Array} bytes
 * @returns {number} uint32
 */
export function fnv1a32(bytes) {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/**
 * One mulberry32 draw.
 * @param {number} state uint32
 * @returns {[number, number]} [u in [0, 1), the new state]
 */
export function mulberry32(state) {
  const a = (state + 0x6d2b79f5) >>> 0;
  let t = Math.imul(a ^ (a >>> 15), a | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return [((t ^ (t >>> 14)) >>> 0) / 4294967296, a];
}

/**
 * The base latent of a feature the base never saw: deterministic from its name and the base's
 * seed, so every client and the server start an unseen feature from the same point.
 * @param {string} name
 * @param {number} seed init_seed (any integer; taken mod 2^32)
 * @param {number} scale init_scale
 * @param {number} k
 * @returns {Float64Array}
 */
export function unseenLatent(name, seed, scale, k) {
  let state = (fnv1a32(UTF8.encode(name)) ^ seed) >>> 0;
  const out = new Float64Array(k);
  for (let f = 0; f < k; f++) {
    let u;
    [u, state] = mulberry32(state);
    out[f] = scale * (2 * u - 1);
  }
  return out;
}

/**
 * The clone's parameters for the features of one sample, gathered into dense arrays.
 * @param {Base} base
 * @param {Delta | null | undefined} delta
 * @param {Features} features
 */
function gather(base, delta, features) {
  if (features === null || typeof features !== 'object' || Array.isArray(features)) {
    invalid('features', features, 'must be an object of name -> number');
  }
  const k = base.nFactors;
  if (delta && delta.k !== k) invalid('delta.k', delta.k, `must equal the base's n_factors ${k}`);
  const names = Object.keys(features);
  const n = names.length;
  const x = new Float64Array(n);
  const w = new Float64Array(n);
  const v = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    const name = names[i];
    const value = features[name];
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      invalid(`features[${JSON.stringify(name)}]`, value, 'must be a finite number');
    }
    x[i] = value;
    const b = base.index.get(name);
    if (b === undefined) {
      v.set(baseLatentOfUnseen(base, name), i * k);
    } else {
      w[i] = base.w[b];
      for (let f = 0; f < k; f++) v[i * k + f] = base.v[b * k + f];
    }
    const d = delta ? delta.index.get(name) : undefined;
    if (d !== undefined) {
      w[i] += delta.w[d];
      for (let f = 0; f < k; f++) v[i * k + f] += delta.v[d * k + f];
    }
  }
  return { names, n, k, x, w, v };
}

/**
 * @param {Base} base
 * @param {string} name
 * @returns {Float64Array}
 */
function baseLatentOfUnseen(base, name) {
  let cache = unseenCache.get(base);
  if (!cache) unseenCache.set(base, (cache = new Map()));
  let latent = cache.get(name);
  if (!latent) {
    // Bounded: a long session scoring many distinct unseen names must not grow memory.
    if (cache.size >= UNSEEN_CACHE_ROWS) cache.clear();
    latent = unseenLatent(name, base.initSeed, base.initScale, base.nFactors);
    cache.set(name, latent);
  }
  return latent;
}

/**
 * The raw FM output and the per-factor sums s_f = sum_j v[j,f] x_j.
 * @param {number} w0
 * @param {ReturnType<typeof gather>} p
 * @returns {[number, Float64Array]}
 */
function forward(w0, { n, k, x, w, v }) {
  let out = w0;
  for (let i = 0; i < n; i++) out += w[i] * x[i];
  const s = new Float64Array(k);
  for (let f = 0; f < k; f++) {
    let sum = 0;
    let squares = 0;
    for (let i = 0; i < n; i++) {
      const t = v[i * k + f] * x[i];
      sum += t;
      squares += t * t;
    }
    s[f] = sum;
    out += 0.5 * (sum * sum - squares);
  }
  return [out, s];
}

/**
 * @param {number} x
 * @param {number} limit
 * @returns {number} x clipped to [-limit, limit] (NaN stays NaN)
 */
function clip(x, limit) {
  return x > limit ? limit : x < -limit ? -limit : x;
}

/**
 * The logistic function, without overflow for large |z|.
 * @param {number} z
 * @returns {number}
 */
export function sigmoid(z) {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

/**
 * The clone's click probability for one sample. Never mutates the base or the delta.
 * @param {Base} base
 * @param {Delta | null | undefined} delta null scores the base alone
 * @param {Features} features
 * @returns {number}
 */
export function score(base, delta, features) {
  const params = gather(base, delta, features);
  return sigmoid(forward(base.w0 + (delta ? delta.w0 : 0), params)[0]);
}

/**
 * One SGD step on the delta for one sample with label y (1 click, 0 skip). The intercept takes
 * its own step `biasLr`, as the server's clone does (`bias_lr` of the user's model).
 * @param {Base} base
 * @param {Delta} delta mutated in place (rows are added for features it did not hold)
 * @param {Features} features
 * @param {0 | 1} y
 * @param {{lr: number, l2: number, biasLr?: number, maxRows?: number}} hyper learning rate,
 *   L2 pull toward the base, the intercept's own step (River's intercept_lr; `lr` when not
 *   given), and the cap on the delta's rows (least recently used evicted beyond it)
 * @returns {number} the prediction made before learning (progressive validation)
 */
export function learnOne(base, delta, features, y, { lr, l2, biasLr = lr, maxRows = DEFAULT_MAX_ROWS }) {
  if (y !== 0 && y !== 1) invalid('y', y, 'must be 1 (click) or 0 (skip)');
  if (!Number.isFinite(lr) || lr < 0) invalid('lr', lr, 'must be a finite number >= 0');
  if (!Number.isFinite(l2) || l2 < 0) invalid('l2', l2, 'must be a finite number >= 0');
  if (!Number.isFinite(biasLr) || biasLr < 0) invalid('biasLr', biasLr, 'must be a finite number >= 0');
  if (!Number.isSafeInteger(maxRows) || maxRows < 1) invalid('maxRows', maxRows, 'must be an integer >= 1');
  if (!delta) invalid('delta', delta, 'must be a Delta to learn into');
  const params = gather(base, delta, features);
  const [out, s] = forward(base.w0 + delta.w0, params);
  const p = sigmoid(out);
  const g = p - y;
  const { names, n, k, x, v } = params;
  // d <- d (1 - lr l2) - clip(lr * gradient), then d kept within MAX_DELTA: the server's order.
  const decay = 1 - lr * l2;
  delta.w0 = clip(delta.w0 * (1 - biasLr * l2) - clip(biasLr * g, MAX_STEP), MAX_DELTA);
  for (let i = 0; i < n; i++) {
    const r = delta.ensureRow(names[i]); // may reallocate delta.w / delta.v: read them after
    delta.touch(names[i]); // used now, in the sample's order, as the server's batch does
    const xi = x[i];
    delta.w[r] = clip(delta.w[r] * decay - clip(lr * g * xi, MAX_STEP), MAX_DELTA);
    for (let f = 0; f < k; f++) {
      const old = v[i * k + f]; // the clone's latent before this step (base + delta)
      const at = r * k + f;
      delta.v[at] = clip(delta.v[at] * decay - clip(lr * g * xi * (s[f] - old * xi), MAX_STEP), MAX_DELTA);
    }
  }
  delta.evict(maxRows);
  return p;
}
