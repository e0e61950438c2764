// The exploration policies: parity with the Python server (test/policy_vectors.json, written by
// `fedlearn vectors`), and the properties a propensity must have whatever the vectors hold.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkPolicy, GREEDY, mulberry32, rankWithPolicy, slotProbabilities } from '../src/fedlearn.js';

const path = process.env.FEDLEARN_POLICY_VECTORS ?? fileURLToPath(new URL('./policy_vectors.json', import.meta.url));
const missing = existsSync(path) ? false : `${path} is missing: run \`fedlearn vectors\` to write it`;

/** A seeded uniform source. @param {number} seed */
function seeded(seed) {
  let state = seed >>> 0;
  return () => {
    let u;
    [u, state] = mulberry32(state);
    return u;
  };
}

test('slot probabilities and seeded draws equal the Python policy (shared vectors)', { skip: missing }, () => {
  const vectors = JSON.parse(readFileSync(path, 'utf8'));
  const tol = vectors.tolerance;
  assert.ok(vectors.cases.length >= 20 && vectors.draws.length >= 10);
  for (const [c, { scores, available, policy, expected }] of vectors.cases.entries()) {
    const p = slotProbabilities(scores, available, checkPolicy('policy', policy));
    expected.forEach((e, i) => assert.ok(Math.abs(p[i] - e) <= tol, `case ${c} item ${i}: ${p[i]} != ${e}`));
  }
  for (const [d, draw] of vectors.draws.entries()) {
    let j = 0;
    const random = () => draw.uniforms[j++];
    const { order, propensities } = rankWithPolicy(draw.scores, draw.k, checkPolicy('policy', draw.policy), random);
    assert.deepEqual(order, draw.expected_order, `draw ${d}`);
    assert.equal(j, draw.uniforms.length, `draw ${d} used every uniform, and no more`);
    propensities.forEach((p, i) => assert.ok(Math.abs(p - draw.expected_propensities[i]) <= tol, `draw ${d} slot ${i}`));
  }
});

const POLICIES = [GREEDY, { kind: 'epsilon', epsilon: 0.3 }, { kind: 'softmax', temperature: 0.1 }];

test('every slot distribution sums to 1 over the available items, and propensities are in (0, 1]', () => {
  const random = seeded(7);
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + Math.floor(random() * 10);
    const scores = Array.from({ length: n }, () => Math.round(random() * 5) / 5); // with ties
    const available = scores.map(() => random() < 0.6);
    available[Math.floor(random() * n)] = true;
    for (const policy of POLICIES) {
      const p = slotProbabilities(scores, available, policy);
      const sum = p.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - 1) < 1e-12, `sums to ${sum}`);
      available.forEach((open, i) => open || assert.equal(p[i], 0));
      const { order, propensities } = rankWithPolicy(scores, n, policy, random);
      assert.deepEqual([...order].sort((a, b) => a - b), scores.map((_, i) => i));
      assert.ok(propensities.every((q) => q > 0 && q <= 1));
    }
  }
});

test('greedy is the stable descending sort and draws nothing', () => {
  const scores = [0.2, 0.7, 0.7, 0.9, 0.1];
  const random = () => assert.fail('greedy must not draw');
  assert.deepEqual(rankWithPolicy(scores, 5, GREEDY, random), { order: [3, 1, 2, 0, 4], propensities: [1, 1, 1, 1, 1] });
  assert.deepEqual(rankWithPolicy(scores, 2, { kind: 'epsilon', epsilon: 0 }, random).order, [3, 1]);
});

test('a bad policy is refused naming the field and the value', () => {
  assert.throws(() => checkPolicy('policy', { kind: 'thompson' }), /policy.kind must be 'greedy', 'epsilon' or 'softmax', got "thompson"/);
  assert.throws(() => checkPolicy('policy', { kind: 'epsilon', epsilon: 1.5 }), /policy.epsilon must be a number in \[0, 1\], got 1.5/);
  assert.throws(() => checkPolicy('policy', { kind: 'softmax', temperature: 0 }), /policy.temperature must be a finite number > 0, got 0/);
  assert.throws(() => checkPolicy('policy', { kind: 'greedy', epsilon: 0.1 }), /policy.epsilon is not a parameter of kind 'greedy'/);
  assert.deepEqual(checkPolicy('policy', { kind: 'softmax', temperature: 0.5 }), { kind: 'softmax', temperature: 0.5 });
});
