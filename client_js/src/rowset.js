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
  const fail = (field, value, rule) => invalid(`row set header.${field}`, value, rule);
  if (typeof version !== 'string' || !version) fail('version', version, 'must be a non-empty string');
  if (!Number.isInteger(k) || k < 1) fail('n_factors', k, 'must be a positive integer');
  if (!Number.isInteger(nBuckets) || nBuckets < 0) fail('n_buckets', nBuckets, 'must be an integer >= 0');
  if (!Array.isArray(features) || features.length !== m) fail('features', features, `must list n_rows (${m}) names`);
  if (new Set(features).size !== m || !features.every((f) => typeof f === 'string')) {
    fail('features', features, 'must hold distinct strings');
  }
  if (!Array.isArray(buckets) || !buckets.every((b) => Number.isInteger(b) && b >= 0 && b < nBuckets)) {
    fail('buckets', buckets, `must list buckets below n_buckets ${nBuckets}`);
  }
  if (nBuckets && !features.every((f) => buckets.includes(bucketOf(f, nBuckets)))) {
    fail('features', features, 'must all hash to the buckets the header lists');
  }
  const expected = 16 + h + 4 * m * (1 + k);
  if (bytes.length !== expected) invalid('row set length', bytes.length, `must be ${expected} for ${m} rows x ${k} factors`);
  const w = floats(buf, 16 + h, m);
  const v = floats(buf, 16 + h + 4 * m, m * k);
  if (!w.every(Number.isFinite) || !v.every(Number.isFinite)) invalid('row set weights', 'NaN or infinity', 'must all be finite numbers');
  return { version, nFactors: k, nBuckets, buckets, features, w, v };
}

/**
 * The rows a session fetched, bucket by bucket, with the base's scalars; usable wherever a
 * `Base` is (`score`, `learnOne`). Its `index` throws for a feature of an unfetched bucket.
 */
export class PartialBase {
  /** @type {Set<number>} */ buckets = new Set();
  /** @type {string[]} */ features = [];
  w = new Float32Array(16);
  /** @type {Float32Array} */ v;

  /**
   * @param {string} version
   * @param {BaseRows} rows the model answer's `base_rows`
   */
  constructor(version, rows) {
    if (!rows || typeof rows !== 'object') invalid('model.base_rows', rows, 'must be an object (a server without partial bases?)');
    const { url, n_buckets: nBuckets, n_factors: k, w0, init_seed: seed, init_scale: scale } = rows;
    if (typeof url !== 'string' || !url.includes('{bucket}')) invalid('model.base_rows.url', url, 'must hold "{bucket}"');
    if (!Number.isSafeInteger(nBuckets) || nBuckets < 1) invalid('model.base_rows.n_buckets', nBuckets, 'must be an integer >= 1');
    if (!Number.isSafeInteger(k) || k < 1) invalid('model.base_rows.n_factors', k, 'must be an integer >= 1');
    if (!Number.isFinite(w0)) invalid('model.base_rows.w0', w0, 'must be a finite number');
    if (!Number.isFinite(scale)) invalid('model.base_rows.init_scale', scale, 'must be a finite number');
    if (!Number.isSafeInteger(seed)) invalid('model.base_rows.init_seed', seed, 'must be an integer');
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
   * @param {number} bucket
   * @returns {string} the bucket's URL (relative as the server gave it)
   */
  bucketUrl(bucket) {
    return this.url.replace('{bucket}', String(bucket));
  }

  /**
   * Take a fetched bucket's rows.
   * @param {RowSet} rows
   */
  add(rows) {
    if (rows.version !== this.version || rows.nBuckets !== this.nBuckets || rows.nFactors !== this.nFactors) {
      invalid('row set', `${rows.version} (${rows.nBuckets} buckets, k=${rows.nFactors})`,
        `must belong to base ${JSON.stringify(this.version)} (${this.nBuckets} buckets, k=${this.nFactors})`);
    }
    const k = this.nFactors;
    const fresh = rows.features.map((name, i) => [name, i]).filter(([name]) => !Map.prototype.has.call(this.index, name));
    this.#reserve(this.features.length + fresh.length);
    for (const [name, i] of fresh) {
      const row = this.features.length;
      this.features.push(name);
      Map.prototype.set.call(this.index, name, row);
      this.w[row] = rows.w[i];
      this.v.set(rows.v.subarray(i * k, i * k + k), row * k);
    }
    for (const b of rows.buckets) this.buckets.add(b);
  }

  /** @param {number} rows grow the arrays (doubling) to hold this many rows */
  #reserve(rows) {
    if (rows <= this.w.length) return;
    const size = Math.max(rows, 2 * this.w.length);
    const w = new Float32Array(size);
    const v = new Float32Array(size * this.nFactors);
    w.set(this.w);
    v.set(this.v);
    this.w = w;
    this.v = v;
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
    throw new FedError(
      `the row of feature ${JSON.stringify(name)} (bucket ${bucket}) is not fetched: await client.prepare(items, context) before ranking or learning on it`,
      { kind: 'missing_rows', field: 'features', value: name },
    );
  }

  /** @param {string} name @returns {boolean} whether the base holds the row (throws like get) */
  has(name) {
    return this.get(name) !== undefined;
  }
}
