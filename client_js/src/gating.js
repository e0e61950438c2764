/**
 * What a user is served: the gate's mix of their clone and the plain base, as the server's
 * `fedlearn.model.gating` makes it. The server's gate (Hedge over both models' discounted log
 * losses on the user's events) sends its weight with the user's model (`clone_weight`) and its
 * state (`gate`); a client that learns on the device moves both as the trainer does. Held to
 * the server's numbers by the shared parity vectors.
 */
import { score } from './fm.js';

/** @typedef {import('./format.js').Base} Base */
/** @typedef {import('./delta.js').Delta} Delta */
/** @typedef {import('./fm.js').Features} Features */

/**
 * `weight * p_clone + (1 - weight) * p_base`, scoring only the models the weight needs: a
 * weight of 1 gives exactly the clone's score, 0 exactly the base's.
 * @param {Base} base
 * @param {Delta | null} delta the user's delta
 * @param {number} weight the clone's weight, in [0, 1]
 * @param {Features} features
 * @returns {number}
 */
export function servedScore(base, delta, weight, features) {
  const clone = weight > 0 ? score(base, delta, features) : 0;
  const plain = weight < 1 ? score(base, null, features) : 0;
  return weight * clone + (1 - weight) * plain;
}

/**
 * @typedef {object} GateState the `gate` of the user's model (the server's `Gate` and settings)
 * @property {number} loss_clone the clone's discounted log loss
 * @property {number} loss_base the base's discounted log loss
 * @property {number} decay
 * @property {number} eta
 * @property {boolean} blend serve the mixture (else 1 or 0 for the likelier model)
 */

/**
 * The log loss of one event as the server's `log_loss_one` clips it.
 * @param {0 | 1} y
 * @param {number} p
 * @returns {number}
 */
function logLoss(y, p) {
  const q = Math.min(Math.max(p, 1e-12), 1 - 1e-12);
  return y ? -Math.log(q) : -Math.log(1 - q);
}

/**
 * The clone's weight in a served score (the server's `GateSettings.weight`): Hedge's
 * `sigmoid(eta (L_base - L_clone))` when blending, else 1 or 0 for the likelier model.
 * @param {GateState} gate
 * @returns {number}
 */
export function gateWeight(gate) {
  const z = gate.eta * (gate.loss_base - gate.loss_clone);
  const p = z > -700 ? 1 / (1 + Math.exp(-z)) : 0;
  if (gate.blend) return p;
  return p >= 0.5 ? 1 : 0;
}

/**
 * Add one event's evidence to the gate (the server's `Gate.update`): both models' predictions
 * made before learning from it, and its label. A non-finite prediction is no evidence.
 * @param {GateState} gate mutated in place
 * @param {number} cloneP
 * @param {number} baseP
 * @param {0 | 1} y
 */
export function updateGate(gate, cloneP, baseP, y) {
  const lc = logLoss(y, cloneP);
  const lb = logLoss(y, baseP);
  if (!Number.isFinite(lc) || !Number.isFinite(lb)) return;
  gate.loss_clone = gate.decay * gate.loss_clone + lc;
  gate.loss_base = gate.decay * gate.loss_base + lb;
}
