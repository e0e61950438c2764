/**
 * fedlearn's browser client: the public names, re-exported from one small module per idea.
 * @module fedlearn
 */
export { FedClient } from './client.js';
export { Delta } from './delta.js';
export { FedError } from './errors.js';
export { eventFeatures } from './features.js';
export { fnv1a32, learnOne, mulberry32, score, sigmoid, unseenLatent } from './fm.js';
export { parseBase } from './format.js';
