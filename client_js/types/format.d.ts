/**
 * @typedef {object} Base
 * @property {string} version the immutable base version id
 * @property {number} nFactors k, the number of latent factors
 * @property {number} nFeatures n, the number of features the base knows
 * @property {number} w0 the intercept
 * @property {string[]} features feature names in row order
 * @property {Map<string, number>} index feature name -> row
 * @property {Float32Array} w weights, one per row
 * @property {Float32Array} v latents, row-major (row r at r*k .. r*k+k)
 * @property {number} initSeed seed of the deterministic latent of unseen features (uint32)
 * @property {number} initScale scale of that latent
 * @property {object} header the whole JSON header (hyper, meta, ...)
 */
/**
 * Parse a base model from its FLFM bytes.
 * @param {ArrayBuffer | ArrayBufferView} data the body of `GET /v1/base/{version}` or a .flfm file
 * @returns {Base}
 */
export function parseBase(data: ArrayBuffer | ArrayBufferView): Base;
export type Base = {
    /**
     * the immutable base version id
     */
    version: string;
    /**
     * k, the number of latent factors
     */
    nFactors: number;
    /**
     * n, the number of features the base knows
     */
    nFeatures: number;
    /**
     * the intercept
     */
    w0: number;
    /**
     * feature names in row order
     */
    features: string[];
    /**
     * feature name -> row
     */
    index: Map<string, number>;
    /**
     * weights, one per row
     */
    w: Float32Array;
    /**
     * latents, row-major (row r at r*k .. r*k+k)
     */
    v: Float32Array;
    /**
     * seed of the deterministic latent of unseen features (uint32)
     */
    initSeed: number;
    /**
     * scale of that latent
     */
    initScale: number;
    /**
     * the whole JSON header (hyper, meta, ...)
     */
    header: object;
};
