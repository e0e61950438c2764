/** The server's default cap on a delta's rows (FEDLEARN_CLONE_MAX_ROWS). */
export const DEFAULT_MAX_ROWS: 4096;
export class Delta {
    /**
     * Build a delta from its JSON form; `k` comes from the base (an empty delta cannot tell it).
     * @param {{w0: number, features: string[], w: number[], v: number[][]} | null | undefined} json
     * @param {number} k
     * @returns {Delta}
     */
    static fromJSON(json: {
        w0: number;
        features: string[];
        w: number[];
        v: number[][];
    } | null | undefined, k: number): Delta;
    /** @param {number} k the number of latent factors, as in the base */
    constructor(k: number);
    /** @type {number} */
    k: number;
    /** @type {number} d_w0 */
    w0: number;
    /** @type {Map<string, number>} feature name -> row */
    index: Map<string, number>;
    /** @type {string[]} feature names in row order */
    names: string[];
    /** @type {Float64Array} d_w, capacity >= size */
    w: Float64Array;
    /** @type {Float64Array} d_v, row-major, capacity >= size * k */
    v: Float64Array;
    /** @returns {number} the number of rows (distinct features this user touched) */
    get size(): number;
    /** @returns {number} the size of this delta in its binary form (FLDL), as the server stores it */
    get byteLength(): number;
    /**
     * The row of a feature, created (zero) when absent.
     * @param {string} name
     * @returns {number}
     */
    ensureRow(name: string): number;
    /**
     * Mark a row as used now: it becomes the most recent (the last evicted).
     * @param {string} name a feature this delta holds
     */
    touch(name: string): void;
    /**
     * Drop the least recently used rows beyond `maxRows`; a dropped row reads the base's value.
     * @param {number} maxRows
     * @returns {number} how many rows went
     */
    evict(maxRows: number): number;
    /** @returns {{w0: number, features: string[], w: number[], v: number[][]}} the JSON form, rows least recently used first */
    toJSON(): {
        w0: number;
        features: string[];
        w: number[];
        v: number[][];
    };
}
