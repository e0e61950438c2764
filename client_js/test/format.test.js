import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32, FedError, parseBase } from '../src/fedlearn.js';
import { buildBase } from './helpers.js';

const spec = {
  version: 'b-7',
  k: 3,
  w0: -0.5,
  features: ['item=1', 'genre=Drama'],
  w: [0.25, -1.5],
  v: [
    [1, 2, 3],
    [-4, 0.5, 0],
  ],
  initSeed: 7,
  initScale: 0.01,
};

test('parseBase reads the header and views the arrays', () => {
  const base = parseBase(buildBase(spec));
  assert.equal(base.version, 'b-7');
  assert.equal(base.nFactors, 3);
  assert.equal(base.nFeatures, 2);
  assert.equal(base.w0, -0.5);
  assert.equal(base.index.get('genre=Drama'), 1);
  assert.deepEqual(Array.from(base.w), [0.25, -1.5]);
  assert.deepEqual(Array.from(base.v), [1, 2, 3, -4, 0.5, 0]);
  assert.ok(base.w instanceof Float32Array);
  assert.equal(base.initSeed, 7);
  assert.equal(base.initScale, 0.01);
});

test('parseBase accepts a view that starts at an odd offset', () => {
  const bytes = new Uint8Array(buildBase(spec));
  const shifted = new Uint8Array(bytes.length + 3);
  shifted.set(bytes, 3);
  assert.deepEqual(Array.from(parseBase(shifted.subarray(3)).v), [1, 2, 3, -4, 0.5, 0]);
});

test('a negative init_seed is taken mod 2^32', () => {
  assert.equal(parseBase(buildBase({ ...spec, initSeed: -5 })).initSeed, 2 ** 32 - 5);
});

/** @param {(b: Uint8Array, dv: DataView) => void} edit */
function corrupted(edit, buf = buildBase(spec)) {
  edit(new Uint8Array(buf), new DataView(buf));
  return buf;
}

test('parseBase rejects what is not an FLFM base, naming the field and value', () => {
  assert.throws(() => parseBase(corrupted((b) => b.set([0x50, 0x4b, 3, 4]))), /base magic must be "FLFM".*got "PK/);
  assert.throws(() => parseBase(corrupted((_, dv) => dv.setUint32(4, 9, true))), /base format version must be one of 1, 2.*got 9/);
  assert.throws(() => parseBase(corrupted((_, dv) => dv.setUint32(8, 12, true))), /base header length must be a multiple of 8.*got 12/);
  assert.throws(() => parseBase(buildBase(spec).slice(0, -4)), /base length must be \d+ for 2 features x 3 factors/);
  assert.throws(() => parseBase(new ArrayBuffer(4)), /base length must be at least 16 bytes, got 4/);
  assert.throws(() => parseBase('FLFM'), FedError);
  assert.throws(() => parseBase(buildBase({ ...spec, features: ['a', 'a'] })), /header.features\[1\] must be a string that appears once, got "a"/);
});

test('crc32 is zlib\'s CRC-32', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

test('a format-2 base is checked against its CRC-32: one flipped bit is refused', () => {
  const good = buildBase({ ...spec, format: 2 });
  assert.deepEqual(Array.from(parseBase(good).w), [0.25, -1.5]);
  const flipped = corrupted((b) => (b[b.length - 1] ^= 0x01), buildBase({ ...spec, format: 2 }));
  assert.throws(() => parseBase(flipped), /base checksum must be the CRC-32 0x[0-9a-f]+ of bytes 16\.\.; the download is corrupt/);
});

test('a base holding NaN is refused', () => {
  assert.throws(() => parseBase(buildBase({ ...spec, w: [NaN, 1] })), /base weights must all be finite numbers/);
});
