/** @typedef {import('./format.js').Base} Base */
/**
 * @typedef {object} UserModel the body of `GET /v1/users/{user}/model`
 * @property {string} user
 * @property {string} base_version
 * @property {string} base_url
 * @property {{w0: number, features: string[], w: number[], v: number[][]}} delta
 * @property {number} lr
 * @property {number} l2
 * @property {number} [bias_lr] the intercept's step (`lr` when absent)
 * @property {number} [max_rows] the cap on the delta's rows (the server's default when absent)
 * @property {number} events_applied
 * @property {'clone' | 'base'} serve the likelier of the two by the user's gate
 * @property {number} clone_weight the clone's weight in a served score (1: the clone, 0: the
 *   base, between: their mixture); from `serve` when absent (an older server)
 * @property {import('./gating.js').GateState} [gate] the gate's state, moved by on-device
 *   learning (absent from an older server: the weight then stays as sent)
 * @property {Record<string, number>} [user_features] the user's table features, if the server sends them
 * @property {import('./rowset.js').BaseRows} [base_rows] where the base's buckets of rows are
 */
/**
 * Validate the model endpoint's answer before using any of it.
 * @param {any} m
 * @returns {UserModel}
 */
export function checkModel(m: any): UserModel;
/**
 * @param {Base} base
 * @param {UserModel} model
 * @returns {Base}
 */
export function checkVersion(base: Base, model: UserModel): Base;
/**
 * A URL the server gave (relative to the API root, or absolute: a CDN), resolved, and whether
 * it is on the API's own origin (only then may it see the token).
 * @param {string} root
 * @param {string} given
 */
export function resolveUrl(root: string, given: string): {
    url: string;
    api: URL | undefined;
    sameOrigin: boolean;
};
/**
 * Where the base is, under which cache key, and whether it is on the API's own origin.
 * @param {string} root
 * @param {UserModel} model
 */
export function baseLocation(root: string, model: UserModel): {
    url: string;
    key: string;
    sameOrigin: boolean;
};
export type Base = import("./format.js").Base;
/**
 * the body of `GET /v1/users/{user}/model`
 */
export type UserModel = {
    user: string;
    base_version: string;
    base_url: string;
    delta: {
        w0: number;
        features: string[];
        w: number[];
        v: number[][];
    };
    lr: number;
    l2: number;
    /**
     * the intercept's step (`lr` when absent)
     */
    bias_lr?: number | undefined;
    /**
     * the cap on the delta's rows (the server's default when absent)
     */
    max_rows?: number | undefined;
    events_applied: number;
    /**
     * the likelier of the two by the user's gate
     */
    serve: "clone" | "base";
    /**
     * the clone's weight in a served score (1: the clone, 0: the
     * base, between: their mixture); from `serve` when absent (an older server)
     */
    clone_weight: number;
    /**
     * the gate's state, moved by on-device
     * learning (absent from an older server: the weight then stays as sent)
     */
    gate?: import("./gating.js").GateState | undefined;
    /**
     * the user's table features, if the server sends them
     */
    user_features?: Record<string, number> | undefined;
    /**
     * where the base's buckets of rows are
     */
    base_rows?: import("./rowset.js").BaseRows | undefined;
};
