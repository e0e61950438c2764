/**
 * A user's delta (clone minus base), kept in an efficient form: a Map name -> row and growable
 * Float64Arrays. Rows grow with the distinct features this user touched, up to a cap beyond
 * which the least recently used rows are evicted (as the server's `fedlearn.model.delta`).
 * The Map's order is the recency order, least recent first, and so is the JSON form of
 * docs/CONTRACTS.md: `{w0, features, w, v}` with `v` a list of k-long rows.
 */
import { invalid } from './errors.js';

/** The server's default cap on a delta's rows (FEDLEARN_CLONE_MAX_ROWS). */
export const DEFAULT_MAX_ROWS = 4096;

const UTF8 = new TextEncoder();

export class Delta {
  /** @param {number} k the number of latent factors, as in the base */
  constructor(k) {
    if (!Number.isInteger(k) || k < 1) invalid('k', k, 'must be a positive integer');
    /** @type {number} */
    this.k = k;
    /** @type {number} d_w0 */
    this.w0 = 0;
    /** @type {Map<string, number>} feature name -> row */
    this.index = new Map();
    /** @type {string[]} feature names in row order */
    this.names = [];
    /** @type {Float64Array} d_w, capacity >= size */
    this.w = new Float64Array(8);
    /** @type {Float64Array} d_v, row-major, capacity >= size * k */
    this.v = new Float64Array(8 * k);
  }

  /** @returns {number} the number of rows (distinct features this user touched) */
  get size() {
    return this.names.length;
  }

  /** @returns {number} the size of this delta in its binary form (FLDL), as the server stores it */
  get byteLength() {
    const names = UTF8.encode(this.names.join('\n')).length + this.size; // each name + "\n"
    return 36 + Math.ceil(names / 4) * 4 + 4 * this.size * (1 + this.k) + 4; // + CRC-32
  }

  /**
   * The row of a feature, created (zero) when absent.
   * @param {string} name
   * @returns {number}
   */
  ensureRow(name) {
    let row = this.index.get(name);
    if (row !== undefined) return row;
    row = this.names.length;
    if (row === this.w.length) {
      // Doubling keeps appends amortized O(1) without per-row allocations.
      const w = new Float64Array(2 * row);
      w.set(this.w);
      const v = new Float64Array(2 * row * this.k);
      v.set(this.v);
      this.w = w;
      this.v = v;
    }
    this.index.set(name, row);
    this.names.push(name);
    return row;
  }

  /**
   * Mark a row as used now: it becomes the most recent (the last evicted).
   * @param {string} name a feature this delta holds
   */
  touch(name) {
    const row = this.index.get(name);
    if (row === undefined) return;
    this.index.delete(name);
    this.index.set(name, row);
  }

  /**
   * Drop the least recently used rows beyond `maxRows`; a dropped row reads the base's value.
   * @param {number} maxRows
   * @returns {number} how many rows went
   */
  evict(maxRows) {
    const excess = this.size - maxRows;
    if (excess <= 0) return 0;
    const { k } = this;
    const keep = [...this.index].slice(excess);
    const w = new Float64Array(Math.max(8, keep.length));
    const v = new Float64Array(w.length * k);
    keep.forEach(([, row], i) => {
      w[i] = this.w[row];
      v.set(this.v.subarray(row * k, row * k + k), i * k);
    });
    this.w = w;
    this.v = v;
    this.names = keep.map(([name]) => name);
    this.index = new Map(this.names.map((name, i) => [name, i]));
    return excess;
  }

  /**
   * Build a delta from its JSON form; `k` comes from the base (an empty delta cannot tell it).
   * @param {{w0: number, features: string[], w: number[], v: number[][]} | null | undefined} json
   * @param {number} k
   * @returns {Delta}
   */
  static fromJSON(json, k) {
    const delta = new Delta(k);
    if (json === null || json === undefined) return delta;
    if (typeof json !== 'object') invalid('delta', json, 'must be an object {w0, features, w, v}');
    const { w0 = 0, features = [], w = [], v = [] } = json;
    if (!Number.isFinite(w0)) invalid('delta.w0', w0, 'must be a finite number');
    if (!Array.isArray(features)) invalid('delta.features', features, 'must be a list of names');
    const m = features.length;
    if (!Array.isArray(w) || w.length !== m) {
      invalid('delta.w', w, `must be a list of ${m} numbers (one per feature)`);
    }
    if (!Array.isArray(v) || v.length !== m) {
      invalid('delta.v', v, `must be a list of ${m} rows (one per feature)`);
    }
    delta.w0 = w0;
    features.forEach((name, i) => {
      if (typeof name !== 'string' || !name || delta.index.has(name)) {
        invalid(`delta.features[${i}]`, name, 'must be a non-empty string that appears once');
      }
      if (!Number.isFinite(w[i])) invalid(`delta.w[${i}]`, w[i], 'must be a finite number');
      const vi = v[i];
      if (!Array.isArray(vi) || vi.length !== k || !vi.every(Number.isFinite)) {
        invalid(`delta.v[${i}]`, vi, `must be a list of ${k} finite numbers (n_factors of the base)`);
      }
      const row = delta.ensureRow(name);
      delta.w[row] = w[i];
      delta.v.set(vi, row * k);
    });
    return delta;
  }

  /** @returns {{w0: number, features: string[], w: number[], v: number[][]}} the JSON form, rows least recently used first */
  toJSON() {
    const { k } = this;
    const rows = [...this.index];
    return {
      w0: this.w0,
      features: rows.map(([name]) => name),
      w: rows.map(([, r]) => this.w[r]),
      v: rows.map(([, r]) => Array.from(this.v.subarray(r * k, r * k + k))),
    };
  }
}
