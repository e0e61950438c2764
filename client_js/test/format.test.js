import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FedError, parseBase } from '../src/fedlearn.js';
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
  assert.throws(() => parseBase(corrupted((_, dv) => dv.setUint32(4, 2, true))), /base format version must be 1.*got 2/);
  assert.throws(() => parseBase(corrupted((_, dv) => dv.setUint32(8, 12, true))), /base header length must be a multiple of 8.*got 12/);
  assert.throws(() => parseBase(buildBase(spec).slice(0, -4)), /base length must be \d+ for 2 features x 3 factors/);
  assert.throws(() => parseBase(new ArrayBuffer(4)), /base length must be at least 16 bytes, got 4/);
  assert.throws(() => parseBase('FLFM'), FedError);
  assert.throws(() => parseBase(buildBase({ ...spec, features: ['a', 'a'] })), /header.features\[1\] must be a string that appears once, got "a"/);
});
