/**
 * fedlearn's browser client: the public names, re-exported from one small module per idea.
 * @module fedlearn
 */
export { FedClient } from './client.js';
export { crc32 } from './crc32.js';
export { DEFAULT_MAX_ROWS, Delta } from './delta.js';
export { FedError } from './errors.js';
export { eventFeatures, MAX_FEATURE_VALUE } from './features.js';
export { fnv1a32, learnOne, MAX_DELTA, MAX_STEP, mulberry32, score, sigmoid, unseenLatent } from './fm.js';
export { parseBase } from './format.js';
export { checkPolicy, GREEDY, rankWithPolicy, slotProbabilities } from './policy.js';

// The public types, for TypeScript users (types/fedlearn.d.ts is generated from these).
/** @typedef {import('./client.js').StartOptions} StartOptions */
/** @typedef {import('./client.js').SignalOptions} SignalOptions */
/** @typedef {import('./client.js').Context} Context */
/** @typedef {import('./client.js').RankOptions} RankOptions */
/** @typedef {import('./policy.js').Policy} Policy */
/** @typedef {import('./queue.js').FedEvent} FedEvent */
/** @typedef {import('./format.js').Base} Base */
/** @typedef {import('./usermodel.js').UserModel} UserModel */
