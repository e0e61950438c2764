/**
 * The FLFM base model format (docs/CONTRACTS.md, "Base model file"): a fixed 16-byte preamble,
 * a JSON header, then float32 weights and latents. The arrays are viewed in place, not copied,
 * so a base of a million features costs its download and nothing more. Format 2 carries the
 * CRC-32 of bytes 16.. at bytes 12..15; format 1 (no checksum) is still read.
 */
import { crc32 } from './crc32.js';
import { FedError, invalid, show } from './errors.js';

const FORMATS = [1, 2];
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

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
export function parseBase(data) {
  const { buf, bytes, h, header } = readBlob(data, { magic: 'FLFM', formats: FORMATS, what: 'base' });
  const k = header.n_factors;
  const names = header.features;
  if (typeof header.version !== 'string' || !header.version) {
    fail('header.version', header.version, 'must be a non-empty string');
  }
  if (!Number.isInteger(k) || k < 1) fail('header.n_factors', k, 'must be a positive integer');
  if (!Array.isArray(names)) fail('header.features', names, 'must be a list of names');
  const n = names.length;
  if (header.n_features !== n) {
    fail('header.n_features', header.n_features, `must equal the ${n} names in header.features`);
  }
  for (const key of ['w0', 'init_scale']) {
    if (!Number.isFinite(header[key])) fail(`header.${key}`, header[key], 'must be a finite number');
  }
  if (!Number.isSafeInteger(header.init_seed)) {
    fail('header.init_seed', header.init_seed, 'must be an integer');
  }
  const expected = 16 + h + 4 * n + 4 * n * k;
  if (bytes.length !== expected) {
    fail('length', bytes.length, `must be ${expected} for ${n} features x ${k} factors`);
  }
  const index = new Map();
  names.forEach((name, row) => {
    if (typeof name !== 'string' || index.has(name)) {
      fail(`header.features[${row}]`, name, 'must be a string that appears once');
    }
    index.set(name, row);
  });
  const at = 16 + h;
  const w = floats(buf, at, n);
  const v = floats(buf, at + 4 * n, n * k);
  // The server never publishes a non-finite base; one would turn every score into NaN.
  if (!w.every(Number.isFinite) || !v.every(Number.isFinite)) {
    fail('weights', 'NaN or infinity', 'must all be finite numbers');
  }
  return {
    version: header.version,
    nFactors: k,
    nFeatures: n,
    w0: header.w0,
    features: names,
    index,
    w,
    v,
    initSeed: ((header.init_seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
    initScale: header.init_scale,
    header,
  };
}

/**
 * The checked preamble and JSON header shared by the base and the row set formats: 4-byte
 * magic, uint32 format, uint32 header length H (a multiple of 8), uint32 CRC-32 of bytes 16..
 * (format 1 of the base: none), then H bytes of UTF-8 JSON.
 * @param {ArrayBuffer | ArrayBufferView} data
 * @param {{magic: string, formats: number[], what: string, checksummed?: (format: number) => boolean}} kind
 * @returns {{buf: ArrayBuffer, bytes: Uint8Array, format: number, h: number, header: any}}
 */
export function readBlob(data, { magic, formats, what, checksummed = (f) => f >= 2 }) {
  const fail = (field, value, rule) => {
    throw new FedError(`${what} ${field} ${rule}, got ${show(value)}`, { field, value });
  };
  /** @type {ArrayBuffer} */
  let buf;
  if (data instanceof ArrayBuffer) buf = data;
  else if (ArrayBuffer.isView(data)) {
    // Copied: a view need not start on the 4-byte boundary a Float32Array view requires.
    buf = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice().buffer;
  } else invalid(what, data, `must be an ArrayBuffer of ${magic} bytes`);
  const bytes = new Uint8Array(buf);
  if (bytes.length < 16) fail('length', bytes.length, 'must be at least 16 bytes');
  const found = String.fromCharCode(...bytes.subarray(0, 4));
  if (found !== magic) fail('magic', found, `must be "${magic}"; is this a ${what}?`);
  const view = new DataView(buf);
  const format = view.getUint32(4, true);
  if (!formats.includes(format)) {
    fail('format version', format, `must be one of ${formats.join(', ')}; upgrade the client`);
  }
  const h = view.getUint32(8, true);
  if (h % 8 !== 0 || 16 + h > bytes.length) {
    fail('header length', h, `must be a multiple of 8 within the ${bytes.length} bytes`);
  }
  if (checksummed(format)) {
    const stored = view.getUint32(12, true);
    const actual = crc32(bytes.subarray(16));
    if (stored !== actual) {
      fail('checksum', `0x${stored.toString(16)}`, `must be the CRC-32 0x${actual.toString(16)} of bytes 16..; the download is corrupt`);
    }
  }
  let header;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(16, 16 + h)));
  } catch (e) {
    throw new FedError(`${what} header is not UTF-8 JSON: ${e.message}`, { field: 'header', cause: e });
  }
  if (header === null || typeof header !== 'object') fail('header', header, 'must be a JSON object');
  if (header.format !== format) fail('header.format', header.format, `must be ${format}, as the preamble`);
  return { buf, bytes, format, h, header };
}

/**
 * A little-endian float32 array: a view when the platform is little-endian (all current ones).
 * @param {ArrayBuffer} buf
 * @param {number} offset
 * @param {number} length
 * @returns {Float32Array}
 */
export function floats(buf, offset, length) {
  if (LITTLE_ENDIAN) return new Float32Array(buf, offset, length);
  const view = new DataView(buf, offset);
  return Float32Array.from({ length }, (_, i) => view.getFloat32(4 * i, true));
}

/**
 * @param {string} field
 * @param {unknown} value
 * @param {string} rule
 * @returns {never}
 */
function fail(field, value, rule) {
  throw new FedError(`base ${field} ${rule}, got ${show(value)}`, { field, value });
}
