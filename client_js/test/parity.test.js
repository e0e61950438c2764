// Parity with the Python server: the same model and features give the same scores and the same
// learning steps, to 1e-6. The vectors are written by the Python side:
//   fedlearn vectors --out client_js/test/vectors.json
// Shape: {"bases": {"<name>": "<base64 FLFM>"}, "cases": [{"base", "delta", "lr", "l2", "bias_lr"?,
// "features", "expected_score", "updates": [{"features", "y", "expected_prediction"}],
// "max_rows", "expected_delta_after"}], "refused_contexts": [{...}]}. FEDLEARN_VECTORS overrides
// the path.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_MAX_ROWS,
  Delta,
  eventFeatures,
  learnOne,
  MAX_DELTA,
  MAX_FEATURE_VALUE,
  MAX_STEP,
  parseBase,
  score,
  gateWeight,
  servedScore,
  updateGate,
} from '../src/fedlearn.js';

const path = process.env.FEDLEARN_VECTORS ?? fileURLToPath(new URL('./vectors.json', import.meta.url));
const TOL = 1e-6;
const missing = existsSync(path)
  ? false
  : `${path} is missing: run \`fedlearn vectors --out client_js/test/vectors.json\` to write the shared parity vectors`;

/**
 * @param {number} actual
 * @param {number} expected
 * @param {string} what
 */
function near(actual, expected, what) {
  const ok = Math.abs(actual - expected) <= TOL * Math.max(1, Math.abs(expected));
  assert.ok(ok, `${what}: expected ${expected}, got ${actual} (diff ${Math.abs(actual - expected)})`);
}

/**
 * Compare two JSON deltas; a feature missing on one side counts as a row of zeros (a row that a
 * zero-valued feature created holds no change).
 */
function sameDelta(actual, expected, k, what) {
  near(actual.w0, expected.w0, `${what} w0`);
  const rows = (d) => new Map(d.features.map((name, i) => [name, [d.w[i], ...d.v[i]]]));
  const a = rows(actual);
  const e = rows(expected);
  const zero = new Array(k + 1).fill(0);
  for (const name of new Set([...a.keys(), ...e.keys()])) {
    const ra = a.get(name) ?? zero;
    const re = e.get(name) ?? zero;
    re.forEach((x, j) => near(ra[j], x, `${what} ${j ? `v[${JSON.stringify(name)}][${j - 1}]` : `w[${JSON.stringify(name)}]`}`));
  }
}

test('parity with the Python server (shared vectors)', { skip: missing }, () => {
  const vectors = JSON.parse(readFileSync(path, 'utf8'));
  const bases = new Map(
    Object.entries(vectors.bases).map(([name, b64]) => [name, parseBase(new Uint8Array(Buffer.from(b64, 'base64')))]),
  );
  assert.ok(vectors.cases.length > 0, 'the vectors file holds no cases');
  assert.ok(vectors.cases.some((c) => c.served?.length), 'the vectors hold no served (gate) scores');
  vectors.cases.forEach((c, i) => {
    const what = `case ${i} (base ${c.base})`;
    const base = bases.get(c.base);
    assert.ok(base, `${what}: no base named ${JSON.stringify(c.base)} in "bases"`);
    const delta = Delta.fromJSON(c.delta, base.nFactors);
    near(score(base, delta, c.features), c.expected_score, `${what} score`);
    (c.served ?? []).forEach((s) => {
      const served = servedScore(base, delta, s.clone_weight, c.features);
      near(served, s.expected_served_score, `${what} served score at clone weight ${s.clone_weight}`);
    });
    (c.updates ?? []).forEach((u, j) => {
      const hyper = { lr: c.lr, l2: c.l2, biasLr: c.bias_lr ?? c.lr, maxRows: c.max_rows };
      const p = learnOne(base, delta, u.features, u.y, hyper);
      near(p, u.expected_prediction, `${what} update ${j} prediction`);
    });
    if (c.expected_delta_after) {
      sameDelta(delta.toJSON(), c.expected_delta_after, base.nFactors, `${what} delta after`);
      // Same rows in the same recency order: the next eviction drops the same ones.
      assert.deepEqual(delta.toJSON().features, c.expected_delta_after.features, `${what} rows in recency order`);
    }
  });
  assert.deepEqual(
    { max_feature_value: MAX_FEATURE_VALUE, max_step: MAX_STEP, max_delta: MAX_DELTA, default_max_rows: DEFAULT_MAX_ROWS },
    vectors.bounds,
    'the client applies the server\'s bounds',
  );
  for (const context of vectors.refused_contexts ?? []) {
    assert.throws(() => eventFeatures('u', '1', {}, context), /context/, `refused context ${JSON.stringify(context)}`);
  }
});

test('the gate moves as the Python gate does (shared vectors)', { skip: missing }, () => {
  const vectors = JSON.parse(readFileSync(path, 'utf8'));
  assert.ok(vectors.gates?.length, 'the vectors file holds no gate cases');
  vectors.gates.forEach((c, i) => {
    const gate = { ...c.gate };
    c.updates.forEach((u, j) => {
      updateGate(gate, u.clone_p, u.base_p, u.y);
      near(gateWeight(gate), u.expected_weight, `gate ${i} update ${j} weight`);
    });
  });
});
