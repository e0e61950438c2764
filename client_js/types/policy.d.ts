/**
 * A valid policy, as the server logs it: `kind` and the one parameter that kind reads.
 * @param {string} field the argument's name, for the error
 * @param {unknown} policy
 * @returns {Policy}
 */
export function checkPolicy(field: string, policy: unknown): Policy;
/**
 * The probability of each item taking the next slot, given which are still available: zero for
 * the others, summing to 1 over the available ones.
 * @param {ArrayLike<number>} scores finite
 * @param {ArrayLike<boolean>} available at least one true
 * @param {Policy} policy a checked policy
 * @returns {Float64Array}
 */
export function slotProbabilities(scores: ArrayLike<number>, available: ArrayLike<boolean>, policy: Policy): Float64Array;
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
export function rankWithPolicy(scores: ArrayLike<number>, k: number, policy: Policy, random?: () => number): {
    order: number[];
    propensities: number[];
};
/** @type {Policy} */
export const GREEDY: Policy;
export type Policy = {
    kind: "greedy";
} | {
    kind: "epsilon";
    epsilon: number;
} | {
    kind: "softmax";
    temperature: number;
};
