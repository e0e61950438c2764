/**
 * CRC-32 (IEEE 802.3, the polynomial of zlib.crc32 and PNG), which the FLFM base carries at
 * bytes 12..15 since format 2 (docs/CONTRACTS.md). A table of 256 words, built on first use.
 */

/** @type {Uint32Array | null} */
let table = null;

function makeTable() {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

/**
 * The CRC-32 of `bytes`, as zlib.crc32 computes it.
 * @param {Uint8Array} bytes
 * @returns {number} uint32
 */
export function crc32(bytes) {
  table ??= makeTable();
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = table[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
