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
export function bucketOf(name: string, nBuckets: number): number;
/**
 * Parse `.flrs` bytes, checking them as the server does: checksum, fields, sizes, values.
 * @param {ArrayBuffer | ArrayBufferView} data
 * @returns {RowSet}
 */
export function parseRowSet(data: ArrayBuffer | ArrayBufferView): RowSet;
/**
 * The rows a session fetched, bucket by bucket, with the base's scalars; usable wherever a
 * `Base` is (`score`, `learnOne`). Its `index` throws for a feature of an unfetched bucket.
 */
export class PartialBase {
    /**
     * @param {string} version
     * @param {BaseRows} rows the model answer's `base_rows`
     */
    constructor(version: string, rows: BaseRows);
    /** @type {Set<number>} */ buckets: Set<number>;
    /** @type {string[]} */ features: string[];
    /** @type {Set<string>} names whose rows were asked for (a new version fetches them again) */ wanted: Set<string>;
    w: Float32Array<ArrayBuffer>;
    /** @type {Float32Array} */ v: Float32Array;
    version: string;
    url: string;
    nBuckets: number;
    nFactors: number;
    w0: number;
    initSeed: number;
    initScale: number;
    header: BaseRows;
    index: RowIndex;
    /** @returns {number} rows held */
    get nFeatures(): number;
    /**
     * Buckets still to fetch before `names` can be scored, in ascending order.
     * @param {Iterable<string>} names
     * @returns {number[]}
     */
    missing(names: Iterable<string>): number[];
    /**
     * Take a fetched bucket's rows.
     * @param {RowSet} rows
     */
    add(rows: RowSet): void;
}
/**
 * one `.flrs` blob
 */
export type RowSet = {
    /**
     * the base version its rows belong to
     */
    version: string;
    nFactors: number;
    /**
     * the bucket count it was cut with (0: an exact row list)
     */
    nBuckets: number;
    /**
     * the buckets it holds whole
     */
    buckets: number[];
    /**
     * its rows' names
     */
    features: string[];
    w: Float32Array;
    /**
     * row-major
     */
    v: Float32Array;
};
/**
 * the `base_rows` object of the user's model answer
 */
export type BaseRows = {
    /**
     * a bucket's URL, `{bucket}` standing for its number
     */
    url: string;
    n_buckets: number;
    n_factors: number;
    w0: number;
    init_seed: number;
    init_scale: number;
};
/**
 * A partial base's name -> row map. `get` answers a row, `undefined` for a feature the base
 * never saw (its bucket was fetched and does not hold it), and throws for a feature whose
 * bucket was never fetched: that one cannot be told from a new feature, so no score may use it.
 * @extends {Map<string, number>}
 */
declare class RowIndex extends Map<string, number> {
    /** @param {PartialBase} base */
    constructor(base: PartialBase);
    #private;
}
export {};
