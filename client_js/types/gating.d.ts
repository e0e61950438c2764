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
/**
 * The clone's weight in a served score (the server's `GateSettings.weight`): Hedge's
 * `sigmoid(eta (L_base - L_clone))` when blending, else 1 or 0 for the likelier model.
 * @param {GateState} gate
 * @returns {number}
 */
export function gateWeight(gate: GateState): number;
/**
 * Add one event's evidence to the gate (the server's `Gate.update`): both models' predictions
 * made before learning from it, and its label. A non-finite prediction is no evidence.
 * @param {GateState} gate mutated in place
 * @param {number} cloneP
 * @param {number} baseP
 * @param {0 | 1} y
 */
export function updateGate(gate: GateState, cloneP: number, baseP: number, y: 0 | 1): void;
export type Base = import("./format.js").Base;
export type Delta = import("./delta.js").Delta;
export type Features = import("./fm.js").Features;
/**
 * the `gate` of the user's model (the server's `Gate` and settings)
 */
export type GateState = {
    /**
     * the clone's discounted log loss
     */
    loss_clone: number;
    /**
     * the base's discounted log loss
     */
    loss_base: number;
    decay: number;
    eta: number;
    /**
     * serve the mixture (else 1 or 0 for the likelier model)
     */
    blend: boolean;
};
