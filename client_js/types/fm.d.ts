/**
 * FNV-1a, 32 bits, over bytes.
 * @param {Uint8Array} bytes
 * @returns {number} uint32
 */
export function fnv1a32(bytes: Uint8Array): number;
/**
 * One mulberry32 draw.
 * @param {number} state uint32
 * @returns {[number, number]} [u in [0, 1), the new state]
 */
export function mulberry32(state: number): [number, number];
/**
 * The base latent of a feature the base never saw: deterministic from its name and the base's
 * seed, so every client and the server start an unseen feature from the same point.
 * @param {string} name
 * @param {number} seed init_seed (any integer; taken mod 2^32)
 * @param {number} scale init_scale
 * @param {number} k
 * @returns {Float64Array}
 */
export function unseenLatent(name: string, seed: number, scale: number, k: number): Float64Array;
/**
 * The logistic function, without overflow for large |z|.
 * @param {number} z
 * @returns {number}
 */
export function sigmoid(z: number): number;
/**
 * The clone's click probability for one sample. Never mutates the base or the delta.
 * @param {Base} base
 * @param {Delta | null | undefined} delta null scores the base alone
 * @param {Features} features
 * @returns {number}
 */
export function score(base: Base, delta: Delta | null | undefined, features: Features): number;
/**
 * One SGD step on the delta for one sample with label y (1 click, 0 skip). The intercept takes
 * its own step `biasLr`, as the server's clone does (`bias_lr` of the user's model).
 * @param {Base} base
 * @param {Delta} delta mutated in place (rows are added for features it did not hold)
 * @param {Features} features
 * @param {0 | 1} y
 * @param {{lr: number, l2: number, biasLr?: number, maxRows?: number}} hyper learning rate,
 *   L2 pull toward the base, the intercept's own step (River's intercept_lr; `lr` when not
 *   given), and the cap on the delta's rows (least recently used evicted beyond it)
 * @returns {number} the prediction made before learning (progressive validation)
 */
export function learnOne(base: Base, delta: Delta, features: Features, y: 0 | 1, { lr, l2, biasLr, maxRows }: {
    lr: number;
    l2: number;
    biasLr?: number;
    maxRows?: number;
}): number;
/** Largest change of one parameter in one step (the server's `fm.MAX_STEP`). */
export const MAX_STEP: 1;
/** Bound on every delta parameter (the server's `fm.MAX_DELTA`). */
export const MAX_DELTA: 16;
export type Base = import("./format.js").Base;
export type Delta = import("./delta.js").Delta;
/**
 * named features, River style: name -> value
 */
export type Features = Record<string, number>;
