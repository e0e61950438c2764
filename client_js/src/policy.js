/**
 * Exploration policies for ranking on the device: a port of fedlearn/model/policy.py, held to
 * its numbers by test/policy_vectors.json (written by `fedlearn vectors`).
 *
 * A ranking is drawn one slot at a time: every item still available gets a probability of the
 * next slot, one is drawn, it leaves the pool. An item's propensity is the probability it had
 * in the slot it took; the server logs it with the event, so rankings made here can be
 * evaluated off-policy like the server's own.
 * - greedy: the best available item (ties to the earlier one); every propensity 1.
 * - epsilon: the best with probability 1 - epsilon, else any available item uniformly.
 * - softmax: each available item in proportion to exp(score / temperature).
 */
import { invalid } from './errors.js';

/**
 * @typedef {{kind: 'greedy'} | {kind: 'epsilon', epsilon: number}
 *   | {kind: 'softmax', temperature: number}} Policy
 */

/** @type {Record<string, 'epsilon' | 'temperature' | null>} the parameter each kind reads */
const PARAMETER = { greedy: null, epsilon: 'epsilon', softmax: 'temperature' };

/** @type {Policy} */
export const GREEDY = Object.freeze({ kind: 'greedy' });

/**
 * A valid policy, as the server logs it: `kind` and the one parameter that kind reads.
 * @param {string} field the argument's name, for the error
 * @param {unknown} policy
 * @returns {Policy}
 */
export function checkPolicy(field, policy) {
  if (!policy || typeof policy !== 'object') invalid(field, policy, "must be an object {kind: 'greedy' | 'epsilon' | 'softmax', ...}");
  const { kind, ...rest } = /** @type {Record<string, unknown>} */ (policy);
  if (typeof kind !== 'string' || !(kind in PARAMETER)) invalid(`${field}.kind`, kind, "must be 'greedy', 'epsilon' or 'softmax'");
  const wanted = PARAMETER[kind];
  for (const name of Object.keys(rest)) {
    if (name !== wanted) invalid(`${field}.${name}`, rest[name], `is not a parameter of kind '${kind}'; leave it out`);
  }
  if (wanted === 'epsilon') {
    const e = rest.epsilon;
    if (typeof e !== 'number' || !(e >= 0 && e <= 1)) invalid(`${field}.epsilon`, e, 'must be a number in [0, 1]');
    return { kind: 'epsilon', epsilon: e };
  }
  if (wanted === 'temperature') {
    const t = rest.temperature;
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) invalid(`${field}.temperature`, t, 'must be a finite number > 0');
    return { kind: 'softmax', temperature: t };
  }
  return GREEDY;
}

/**
 * The probability of each item taking the next slot, given which are still available: zero for
 * the others, summing to 1 over the available ones.
 * @param {ArrayLike<number>} scores finite
 * @param {ArrayLike<boolean>} available at least one true
 * @param {Policy} policy a checked policy
 * @returns {Float64Array}
 */
export function slotProbabilities(scores, available, policy) {
  const n = scores.length;
  const p = new Float64Array(n);
  let best = -1;
  let open = 0;
  for (let i = 0; i < n; i++) {
    if (!available[i]) continue;
    open += 1;
    if (best < 0 || scores[i] > scores[best]) best = i; // '>' keeps the first of equal maxima
  }
  if (best < 0) invalid('available', available, 'must leave at least one item for the next slot');
  if (policy.kind === 'greedy') {
    p[best] = 1;
  } else if (policy.kind === 'epsilon') {
    for (let i = 0; i < n; i++) if (available[i]) p[i] = policy.epsilon / open;
    p[best] += 1 - policy.epsilon;
  } else {
    // Shifted by the maximum, every exp() is in (0, 1]: no overflow at any temperature.
    let sum = 0;
    for (let i = 0; i < n; i++) {
      if (!available[i]) continue;
      p[i] = Math.exp((scores[i] - scores[best]) / policy.temperature);
      sum += p[i];
    }
    for (let i = 0; i < n; i++) p[i] /= sum;
  }
  return p;
}

/**
 * Item indices best first, ties to the lower index: the greedy ranking.
 * @param {ArrayLike<number>} scores
 */
function bestFirst(scores) {
  return Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
}

/**
 * Draw `k` slots (at most all items) in order under `policy`, as the server does: epsilon
 * draws one uniform a slot (below epsilon it also picks which of the items left, best first,
 * takes the slot); softmax draws one per item and sorts log-weights plus Gumbel noise, which
 * follows the law of drawing slot after slot.
 * @param {ArrayLike<number>} scores
 * @param {number} k
 * @param {Policy} policy a checked policy
 * @param {() => number} [random] uniform in [0, 1); pass a seeded one in tests
 * @returns {{order: number[], propensities: number[]}} item indices in slot order, and each
 *   one's propensity in its slot (the probability it had there), in (0, 1]
 */
export function rankWithPolicy(scores, k, policy, random = Math.random) {
  const n = scores.length;
  const slots = Math.min(k, n);
  if (policy.kind === 'epsilon' && policy.epsilon > 0) {
    const e = policy.epsilon;
    const left = bestFirst(scores);
    const order = [];
    const propensities = [];
    for (let slot = 0; slot < slots; slot++) {
      const u = random();
      const m = left.length;
      const r = u < e ? Math.min(Math.floor((u / e) * m), m - 1) : 0;
      order.push(left.splice(r, 1)[0]);
      propensities.push(e / m + (r === 0 ? 1 - e : 0));
    }
    return { order, propensities };
  }
  if (policy.kind === 'softmax') {
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, scores[i]);
    // Held at -1e300 past huge score gaps, as the server does, so the sums stay finite.
    const logW = Array.from(scores, (s) => Math.max((s - max) / policy.temperature, -1e300));
    const keys = logW.map((w) => w - Math.log(-Math.log1p(-random())));
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => keys[b] - keys[a] || a - b);
    // The weight still left at each slot, summed from the end in log space.
    const logLeft = new Array(n);
    let acc = -Infinity;
    for (let s = n - 1; s >= 0; s--) {
      const x = logW[order[s]];
      const hi = Math.max(acc, x);
      acc = hi + Math.log1p(Math.exp(Math.min(acc, x) - hi));
      logLeft[s] = acc;
    }
    return {
      order: order.slice(0, slots),
      propensities: order.slice(0, slots).map((i, s) => Math.exp(logW[i] - logLeft[s])),
    };
  }
  return { order: bestFirst(scores).slice(0, slots), propensities: new Array(slots).fill(1) };
}
