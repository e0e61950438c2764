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
export function servedScore(base: Base, delta: Delta | null, weight: number, features: Features): number;
export type Base = import("./format.js").Base;
export type Delta = import("./delta.js").Delta;
export type Features = import("./fm.js").Features;
