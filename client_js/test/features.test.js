import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventFeatures } from '../src/fedlearn.js';

test('features are built like the server: user, item, item features, user features, context', () => {
  const x = eventFeatures('42', '318', { 'genre=Drama': 1 }, { hour: '21', age: 0.3, mobile: true, ad: false }, {
    'gender=F': 1,
  });
  assert.deepEqual(x, {
    'user=42': 1,
    'item=318': 1,
    'genre=Drama': 1,
    'gender=F': 1,
    'hour=21': 1,
    age: 0.3,
    mobile: 1,
    ad: 0,
  });
  assert.deepEqual(Object.keys(x).slice(0, 2), ['user=42', 'item=318']);
});

test('invalid context and features name the field and the value', () => {
  assert.throws(() => eventFeatures('1', '2', {}, { hour: null }), /context\["hour"\] must be a string, a finite number or a boolean, got null/);
  assert.throws(() => eventFeatures('1', '2', {}, { x: Number.NaN }), /context\["x"\]/);
  assert.throws(() => eventFeatures('1', '2', {}, ['hour']), /context must be an object/);
  assert.throws(() => eventFeatures('1', '2', { 'genre=Drama': 'yes' }, {}), /item features\["genre=Drama"\] must be a finite number, got "yes"/);
  assert.throws(() => eventFeatures('1', '2', {}, { ['n'.repeat(101)]: 1 }), /context name must be 1..100 characters/);
  assert.throws(() => eventFeatures('1', '2', {}, { q: 'x'.repeat(100) }), /context\["q"\] must be at most 99 characters/);
  assert.throws(() => eventFeatures('1', '2', { 'a\u0007': 1 }, {}), /item features name must be a feature name of 1..200 characters, no control characters/);
});

test('context numbers beyond the bound and keys that would make user=/item= features are refused', () => {
  assert.throws(() => eventFeatures('1', '2', {}, { a: 1e6 }), /context\["a"\] must be within \[-10, 10\].*got 1000000/);
  assert.deepEqual(eventFeatures('1', '2', {}, { a: 10, b: -10 }), { 'user=1': 1, 'item=2': 1, a: 10, b: -10 });
  for (const key of ['user', 'item', 'user=victim', 'item=42']) {
    assert.throws(() => eventFeatures('1', '2', {}, { [key]: 'victim' }), /context name is reserved/, key);
  }
  assert.equal(eventFeatures('1', '2', {}, { username: 'x' })['username=x'], 1);
});
