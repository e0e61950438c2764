import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Delta, learnOne, parseBase, score, sigmoid } from '../src/fedlearn.js';
import { buildBase } from './helpers.js';

// A 2-factor base whose numbers are exact in float32, so hand arithmetic is exact too.
const base = parseBase(
  buildBase({
    k: 2,
    w0: 0.1,
    features: ['a', 'b'],
    w: [0.5, -0.25],
    v: [
      [0.5, 1],
      [1, 0.5],
    ],
  }),
);
const close = (actual, expected, tol = 1e-12) =>
  assert.ok(Math.abs(actual - expected) <= tol, `expected ${expected}, got ${actual}`);

test('score of the base: w0 + sum w x + pairwise interactions', () => {
  // 0.1 + 0.5*1 - 0.25*2 + <(0.5,1),(1,0.5)> * 1 * 2 = 0.1 + 2 = 2.1
  close(score(base, null, { a: 1, b: 2 }), 1 / (1 + Math.exp(-2.1)));
  // An empty delta scores like no delta.
  close(score(base, new Delta(2), { a: 1, b: 2 }), 1 / (1 + Math.exp(-2.1)));
});

test('score of a clone adds the delta to the base', () => {
  const delta = Delta.fromJSON({ w0: -0.1, features: ['a'], w: [0.5], v: [[0, -1]] }, 2);
  // w0 = 0, w_a = 1, v_a = (0.5, 0): 0 + 1 - 0.5 + <(0.5,0),(1,0.5)> * 2 = 1.5
  close(score(base, delta, { a: 1, b: 2 }), 1 / (1 + Math.exp(-1.5)));
});

test('score never mutates the delta, even for features it does not hold', () => {
  const delta = Delta.fromJSON({ w0: 0.3, features: ['a'], w: [0.1], v: [[0.2, 0.3]] }, 2);
  const before = JSON.stringify(delta.toJSON());
  score(base, delta, { a: 1, b: 1, unseen: 1 });
  assert.equal(JSON.stringify(delta.toJSON()), before);
});

test('learnOne from the base, l2 = 0: the gradients of the contract, by hand', () => {
  const delta = new Delta(2);
  const p = learnOne(base, delta, { a: 1, b: 2 }, 0, { lr: 0.1, l2: 0 });
  const g = 1 / (1 + Math.exp(-2.1)); // p - y with y = 0
  close(p, g);
  const d = delta.toJSON();
  assert.deepEqual(d.features, ['a', 'b']);
  close(d.w0, -0.1 * g);
  close(d.w[0], -0.1 * g * 1);
  close(d.w[1], -0.1 * g * 2);
  // s = (0.5*1 + 1*2, 1*1 + 0.5*2) = (2.5, 2); v_a update: g*1*(s - v_a*1) = g*(2, 1)
  close(d.v[0][0], -0.1 * g * 2);
  close(d.v[0][1], -0.1 * g * 1);
  // v_b update: g*2*(s - v_b*2) = g*2*(0.5, 1)
  close(d.v[1][0], -0.1 * g * 1);
  close(d.v[1][1], -0.1 * g * 2);
});

test('learnOne with l2 pulls the delta toward the base', () => {
  const zero = parseBase(buildBase({ k: 2, features: ['a'], w: [0], v: [[0, 0]] }));
  const delta = Delta.fromJSON({ w0: 0.2, features: ['a'], w: [0.4], v: [[0.1, -0.2]] }, 2);
  const p = learnOne(zero, delta, { a: 1 }, 1, { lr: 0.5, l2: 0.1 });
  close(p, sigmoid(0.6)); // one feature: no interaction term
  const g = p - 1;
  const d = delta.toJSON();
  close(d.w0, 0.2 - 0.5 * (g + 0.1 * 0.2));
  close(d.w[0], 0.4 - 0.5 * (g + 0.1 * 0.4));
  // With one feature s_f = v_f, so the data term of v vanishes: only the pull remains.
  close(d.v[0][0], 0.1 * (1 - 0.05));
  close(d.v[0][1], -0.2 * (1 - 0.05));
});

test('the intercept takes its own step biasLr', () => {
  const zero = parseBase(buildBase({ k: 2, features: ['a'], w: [0], v: [[0, 0]] }));
  const delta = new Delta(2);
  learnOne(zero, delta, { a: 1 }, 1, { lr: 0.1, l2: 0, biasLr: 0.3 });
  const g = 0.5 - 1; // f = 0 at the start
  close(delta.w0, -0.3 * g);
  close(delta.toJSON().w[0], -0.1 * g);
});

test('an unseen feature scores with weight 0 and its deterministic latent', () => {
  // Latent of "item=999999" with init_seed 42, init_scale 0.1, k 4; computed independently in
  // Python (see init.test.js for the command).
  const latent = [0.05714621637016535, -0.0010607481002807618, 0.07984911524690688, -0.020047341054305435];
  const b = parseBase(
    buildBase({ k: 4, w0: 0.25, features: ['a'], w: [0.5], v: [[1, 0, 0, 0]], initSeed: 42, initScale: 0.1 }),
  );
  close(score(b, null, { 'item=999999': 1 }), sigmoid(0.25));
  close(score(b, null, { a: 1, 'item=999999': 1 }), sigmoid(0.75 + latent[0]));
  // Learning adds a row for it whose latent moves relative to that deterministic start.
  const delta = new Delta(4);
  learnOne(b, delta, { a: 1, 'item=999999': 1 }, 1, { lr: 0.1, l2: 0 });
  const row = delta.toJSON().features.indexOf('item=999999');
  const g = sigmoid(0.75 + latent[0]) - 1;
  close(delta.toJSON().v[row][0], -0.1 * g * 1); // g*x*(s_0 - v_0) with s_0 - v_0 = v_a0 = 1
  close(delta.toJSON().v[row][1], 0); // v_a1 = 0
});

test('sigmoid does not overflow', () => {
  assert.equal(sigmoid(1000), 1);
  assert.equal(sigmoid(-1000), 0);
  close(sigmoid(0), 0.5);
});

test('errors name the field and the value', () => {
  assert.throws(() => score(base, null, { a: 'x' }), /features\["a"\] must be a finite number, got "x"/);
  assert.throws(() => learnOne(base, new Delta(2), { a: 1 }, 2, { lr: 0.1, l2: 0 }), /y must be 1 \(click\) or 0 \(skip\), got 2/);
  assert.throws(() => learnOne(base, new Delta(2), { a: 1 }, 1, { lr: -1, l2: 0 }), /lr must be a finite number >= 0, got -1/);
  assert.throws(() => score(base, new Delta(3), { a: 1 }), /delta.k must equal the base's n_factors 2, got 3/);
});
