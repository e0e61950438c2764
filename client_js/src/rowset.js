/**
 * Partial bases: only the rows a session scores, fetched bucket by bucket (docs/CONTRACTS.md,
 * "Row set"). A base's rows are grouped in buckets by `fnv1a32(utf8(name)) % n_buckets` (the
 * hash unseen latents already use); each bucket of a version is an immutable `.flrs` blob, so
 * the browser's HTTP cache and any CDN share it between sessions and users, and a session
 * moves the same kilobytes for a catalog of a thousand items or a million.
 *
 * A `PartialBase` looks like a whole `Base` to `score` and `learnOne`, with one difference that
 * keeps scores right: asking its index for a feature whose bucket was never fetched throws
 * (kind "missing_rows") instead of scoring the feature as one the base never saw.
 */
import { FedError, invalid } from './errors.js';
import { fnv1a32 } from './fm.js';
import { floats, readBlob } from './format.js';

const UTF8 = new TextEncoder();

/**
 * @param {Float32Array} a
 * @param {number} size
 * @returns {Float32Array} `a`, or a copy with room for twice `size` when it is smaller
 */
function grow(a, size) {
  if (a.length >= size) return a;
  const b = new Float32Array(2 * size);
  b.set(a);
  return b;
}

/**
 * @typedef {object} RowSet one `.flrs` blob
 * @property {string} version the base version its rows belong to
 * @property {number} nFactors
 * @property {number} nBuckets the bucket count it was cut with (0: an exact row list)
 * @property {number[]} buckets the buckets it holds whole
 * @property {string[]} features its rows' names
 * @property {Float32Array} w
 * @property {Float32Array} v row-major
 */

/**
 * @typedef {object} BaseRows the `base_rows` object of the user's model answer
 * @property {string} url a bucket's URL, `{bucket}` standing for its number
 * @property {number} n_buckets
 * @property {number} n_factors
 * @property {number} w0
 * @property {number} init_seed
 * @property {number} init_scale
 */

/**
 * The bucket holding a feature's row (whether or not the base has that row).
 * @param {string} name
 * @param {number} nBuckets
 * @returns {number}
 */
export function bucketOf(name, nBuckets) {
  return fnv1a32(UTF8.encode(name)) % nBuckets;
}

/**
 * Parse `.flrs` bytes, checking them as the server does: checksum, fields, sizes, values.
 * @param {ArrayBuffer | ArrayBufferView} data
 * @returns {RowSet}
 */
export function parseRowSet(data) {
  const { buf, bytes, h, header } = readBlob(data, { magic: 'FLRS', formats: [1], what: 'row set', checksummed: () => true });
  const { version, n_factors: k, n_rows: m, n_buckets: nBuckets, buckets, features } = header;
  // The checksum caught corruption; these catch a header that lies about its rows.
  const rules = [
    ['version', typeof version === 'string' && version, 'must be a non-empty string'],
    ['buckets', Array.isArray(buckets) && buckets.every((b) => b >= 0 && b < nBuckets), 'must list buckets below n_buckets'],
    // A row filed under the wrong bucket would hide that bucket's real row behind a guess.
    ['features', Array.isArray(features) && features.length === m && features.every((f) => !nBuckets || buckets.includes(bucketOf(f, nBuckets))),
      'must list n_rows names of the listed buckets'],
    ['length', bytes.length === 16 + h + 4 * m * (1 + k), `must fit n_rows x n_factors`],
  ];
  for (const [field, ok, rule] of rules) if (!ok) invalid(`row set ${field}`, header[field] ?? bytes.length, rule);
  const w = floats(buf, 16 + h, m);
  const v = floats(buf, 16 + h + 4 * m, m * k);
  if (!w.every(Number.isFinite) || !v.every(Number.isFinite)) invalid('row set weights', 'NaN', 'must be finite');
  return { version, nFactors: k, nBuckets, buckets, features, w, v };
}

/**
 * The rows a session fetched, bucket by bucket, with the base's scalars; usable wherever a
 * `Base` is (`score`, `learnOne`). Its `index` throws for a feature of an unfetched bucket.
 */
export class PartialBase {
  /** @type {Set<number>} */ buckets = new Set();
  /** @type {string[]} */ features = [];
  /** @type {Set<string>} names whose rows were asked for (a new version fetches them again) */ wanted = new Set();
  w = new Float32Array(16);
  /** @type {Float32Array} */ v;

  /**
   * @param {string} version
   * @param {BaseRows} rows the model answer's `base_rows`
   */
  constructor(version, rows) {
    const { url, n_buckets: nBuckets, n_factors: k, w0, init_seed: seed, init_scale: scale } = rows ?? {};
    const rules = [
      ['url', typeof url === 'string' && url.includes('{bucket}'), 'must hold "{bucket}"'],
      ['n_buckets', Number.isSafeInteger(nBuckets) && nBuckets > 0, 'must be an integer >= 1'],
      ['n_factors', Number.isSafeInteger(k) && k > 0, 'must be an integer >= 1'],
      ['init_seed', Number.isSafeInteger(seed) && Number.isFinite(w0 + scale), 'must be an integer (w0, init_scale finite)'],
    ];
    for (const [field, ok, rule] of rules) if (!ok) invalid(`model.base_rows.${field}`, rows?.[field], rule);
    this.version = version;
    this.url = url;
    this.nBuckets = nBuckets;
    this.nFactors = k;
    this.w0 = w0;
    this.initSeed = ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
    this.initScale = scale;
    this.header = rows;
    this.v = new Float32Array(16 * k);
    this.index = new RowIndex(this);
  }

  /** @returns {number} rows held */
  get nFeatures() {
    return this.features.length;
  }

  /**
   * Buckets still to fetch before `names` can be scored, in ascending order.
   * @param {Iterable<string>} names
   * @returns {number[]}
   */
  missing(names) {
    const out = new Set();
    for (const name of names) {
      const b = bucketOf(name, this.nBuckets);
      if (!this.buckets.has(b)) out.add(b);
    }
    return [...out].sort((a, b) => a - b);
  }

  /**
   * Take a fetched bucket's rows.
   * @param {RowSet} rows
   */
  add(rows) {
    if (rows.version !== this.version || rows.nBuckets !== this.nBuckets || rows.nFactors !== this.nFactors) {
      invalid('row set', rows.version, `must belong to base ${JSON.stringify(this.version)} (${this.nBuckets} buckets, k=${this.nFactors})`);
    }
    const k = this.nFactors;
    const fresh = rows.features.map((name, i) => [name, i]).filter(([name]) => !Map.prototype.has.call(this.index, name));
    const n = this.features.length;
    this.w = grow(this.w, n + fresh.length);
    this.v = grow(this.v, (n + fresh.length) * k);
    fresh.forEach(([name, i], j) => {
      Map.prototype.set.call(this.index, name, n + j);
      this.features.push(name);
      this.w[n + j] = rows.w[i];
      this.v.set(rows.v.subarray(i * k, i * k + k), (n + j) * k);
    });
    for (const b of rows.buckets) this.buckets.add(b);
  }
}

/**
 * A partial base's name -> row map. `get` answers a row, `undefined` for a feature the base
 * never saw (its bucket was fetched and does not hold it), and throws for a feature whose
 * bucket was never fetched: that one cannot be told from a new feature, so no score may use it.
 * @extends {Map<string, number>}
 */
class RowIndex extends Map {
  #base;

  /** @param {PartialBase} base */
  constructor(base) {
    super();
    this.#base = base;
  }

  /**
   * @param {string} name
   * @returns {number | undefined}
   */
  get(name) {
    const row = super.get(name);
    if (row !== undefined) return row;
    const bucket = bucketOf(name, this.#base.nBuckets);
    if (this.#base.buckets.has(bucket)) return undefined;
    throw new FedError(`row ${JSON.stringify(name)} not fetched: await client.prepare(items) first`, {
      kind: 'missing_rows',
      value: name,
    });
  }

}
