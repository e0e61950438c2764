/**
 * The answer of `GET /v1/users/{user}/model`, checked before any of it is used, and where the
 * base it names lives. Kept apart from the client so the client reads as its verbs.
 */
import { DEFAULT_MAX_ROWS } from './delta.js';
import { invalid } from './errors.js';

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
export function checkModel(m) {
  if (!m || typeof m !== 'object') invalid('model', m, 'must be a JSON object');
  for (const key of ['user', 'base_version', 'base_url']) {
    if (typeof m[key] !== 'string' || !m[key]) invalid(`model.${key}`, m[key], 'must be a non-empty string');
  }
  m.bias_lr ??= m.lr;
  for (const key of ['lr', 'l2', 'bias_lr']) {
    if (!Number.isFinite(m[key]) || m[key] < 0) invalid(`model.${key}`, m[key], 'must be a finite number >= 0');
  }
  m.max_rows ??= DEFAULT_MAX_ROWS;
  if (!Number.isSafeInteger(m.max_rows) || m.max_rows < 1) invalid('model.max_rows', m.max_rows, 'must be an integer >= 1');
  m.serve ??= 'clone';
  if (m.serve !== 'clone' && m.serve !== 'base') invalid('model.serve', m.serve, 'must be "clone" or "base"');
  m.clone_weight ??= m.serve === 'base' ? 0 : 1;
  if (!Number.isFinite(m.clone_weight) || m.clone_weight < 0 || m.clone_weight > 1) {
    invalid('model.clone_weight', m.clone_weight, 'must be a number between 0 and 1');
  }
  if (m.gate !== undefined) checkGate(m.gate);
  m.events_applied ??= 0;
  if (!Number.isSafeInteger(m.events_applied) || m.events_applied < 0) {
    invalid('model.events_applied', m.events_applied, 'must be an integer >= 0');
  }
  return m;
}

/** @param {any} g the model's `gate` */
function checkGate(g) {
  if (!g || typeof g !== 'object') invalid('model.gate', g, 'must be an object');
  for (const key of ['loss_clone', 'loss_base', 'decay', 'eta']) {
    if (!Number.isFinite(g[key]) || g[key] < 0) invalid(`model.gate.${key}`, g[key], 'must be a finite number >= 0');
  }
  if (typeof g.blend !== 'boolean') invalid('model.gate.blend', g.blend, 'must be true or false');
}

/**
 * @param {Base} base
 * @param {UserModel} model
 * @returns {Base}
 */
export function checkVersion(base, model) {
  if (base.version !== model.base_version) {
    invalid('base version', base.version, `must be ${JSON.stringify(model.base_version)} (model.base_version)`);
  }
  return base;
}

/**
 * A URL the server gave (relative to the API root, or absolute: a CDN), resolved, and whether
 * it is on the API's own origin (only then may it see the token).
 * @param {string} root
 * @param {string} given
 */
export function resolveUrl(root, given) {
  const page = globalThis.location?.href;
  let api;
  let url = given;
  try {
    api = new URL(`${root}/`, page);
    url = new URL(given, api).href;
  } catch {
    // A relative root outside a page (e.g. tests): keep the URL as given.
  }
  const sameOrigin = !api || new URL(url, api).origin === api.origin;
  return { url, api, sameOrigin };
}

/**
 * Where the base is, under which cache key, and whether it is on the API's own origin.
 * @param {string} root
 * @param {UserModel} model
 */
export function baseLocation(root, model) {
  const { url, api, sameOrigin } = resolveUrl(root, model.base_url);
  const origin = api?.origin && api.origin !== 'null' ? api.origin : 'https://fedlearn.invalid';
  // Keyed by the immutable version, not the URL: the same version is the same bytes.
  return { url, key: `${origin}/__fedlearn__/bases/${encodeURIComponent(model.base_version)}`, sameOrigin };
}
