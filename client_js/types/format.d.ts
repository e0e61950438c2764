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
/**
 * The checked preamble and JSON header shared by the base and the row set formats: 4-byte
 * magic, uint32 format, uint32 header length H (a multiple of 8), uint32 CRC-32 of bytes 16..
 * (format 1 of the base: none), then H bytes of UTF-8 JSON.
 * @param {ArrayBuffer | ArrayBufferView} data
 * @param {{magic: string, formats: number[], what: string, checksummed?: (format: number) => boolean}} kind
 * @returns {{buf: ArrayBuffer, bytes: Uint8Array, format: number, h: number, header: any}}
 */
export function readBlob(data: ArrayBuffer | ArrayBufferView, { magic, formats, what, checksummed }: {
    magic: string;
    formats: number[];
    what: string;
    checksummed?: (format: number) => boolean;
}): {
    buf: ArrayBuffer;
    bytes: Uint8Array;
    format: number;
    h: number;
    header: any;
};
/**
 * A little-endian float32 array: a view when the platform is little-endian (all current ones).
 * @param {ArrayBuffer} buf
 * @param {number} offset
 * @param {number} length
 * @returns {Float32Array}
 */
export function floats(buf: ArrayBuffer, offset: number, length: number): Float32Array;
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
