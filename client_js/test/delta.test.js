import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Delta } from '../src/fedlearn.js';

test('JSON form round trip', () => {
  const json = { w0: 0.5, features: ['item=1', 'hour=21'], w: [0.25, -1], v: [[1, 2], [3, 4]] };
  assert.deepEqual(Delta.fromJSON(json, 2).toJSON(), json);
  assert.deepEqual(Delta.fromJSON(null, 2).toJSON(), { w0: 0, features: [], w: [], v: [] });
});

test('rows grow past the initial capacity and keep their values', () => {
  const delta = new Delta(3);
  for (let i = 0; i < 100; i++) {
    const r = delta.ensureRow(`f${i}`);
    delta.w[r] = i;
    delta.v[r * 3 + 2] = -i;
  }
  assert.equal(delta.ensureRow('f7'), 7);
  const json = delta.toJSON();
  assert.equal(json.features.length, 100);
  assert.equal(json.w[99], 99);
  assert.deepEqual(json.v[42], [0, 0, -42]);
});

test('fromJSON names the field and value at fault', () => {
  const ok = { w0: 0, features: ['a'], w: [1], v: [[1, 2]] };
  assert.throws(() => Delta.fromJSON({ ...ok, v: [[1, 2, 3]] }, 2), /delta.v\[0\] must be a list of 2 finite numbers.*got \[1,2,3\]/);
  assert.throws(() => Delta.fromJSON({ ...ok, w: [] }, 2), /delta.w must be a list of 1 numbers/);
  assert.throws(() => Delta.fromJSON({ ...ok, w0: 'x' }, 2), /delta.w0 must be a finite number, got "x"/);
  assert.throws(() => Delta.fromJSON({ ...ok, features: ['a', 'a'], w: [1, 1], v: [[1, 2], [1, 2]] }, 2), /delta.features\[1\]/);
});

test('byteLength is the FLDL size: 36-byte header, names padded to 4, float32 rows, CRC-32', () => {
  assert.equal(new Delta(4).byteLength, 36 + 4);
  // names "ab\n" + "é\n" = 3 + 3 bytes -> padded to 8; 2 rows x (1 + 4) floats x 4 bytes = 40
  const delta = Delta.fromJSON({ w0: 0, features: ['ab', 'é'], w: [0, 0], v: [[0, 0, 0, 0], [0, 0, 0, 0]] }, 4);
  assert.equal(delta.byteLength, 36 + 8 + 40 + 4);
});

test('rows are kept in recency order and the least recently used are evicted first', () => {
  const delta = Delta.fromJSON({ w0: 0, features: ['a', 'b', 'c'], w: [1, 2, 3], v: [[1], [2], [3]] }, 1);
  delta.touch('a');
  assert.deepEqual(delta.toJSON().features, ['b', 'c', 'a']);
  assert.equal(delta.evict(2), 1);
  assert.deepEqual(delta.toJSON(), { w0: 0, features: ['c', 'a'], w: [3, 1], v: [[3], [1]] });
  assert.equal(delta.evict(2), 0);
  assert.equal(delta.ensureRow('d'), 2, 'rows grow again after an eviction');
});
