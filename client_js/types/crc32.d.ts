/**
 * The CRC-32 of `bytes`, as zlib.crc32 computes it.
 * @param {Uint8Array} bytes
 * @returns {number} uint32
 */
export function crc32(bytes: Uint8Array): number;
