/**
 * What a user is served: the gate's mix of their clone and the plain base, as the server's
 * `fedlearn.model.gating.served` makes it. The server's gate (Hedge over both models' losses
 * on the user's events) sends its weight with the user's model (`clone_weight`); the client
 * only mixes. Held to the server's numbers by the shared parity vectors.
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
