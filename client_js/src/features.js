/**
 * Build one event's named features exactly like the server's
 * `fedlearn.model.features.event_features`: `user=<user>`, `item=<item>`, the item's catalog
 * features, the user's table features, then the context, one-hot encoding strings. A score on
 * the device and a score on the server therefore see the same dict.
 */
import { invalid } from './errors.js';

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** Numbers are scaled to about [-1, 1]; beyond this the server refuses them (MAX_FEATURE_VALUE). */
export const MAX_FEATURE_VALUE = 10;
/** Context keys that would make the model's own `user=` / `item=` features. */
const RESERVED = /^(user|item)(=|$)/;

/**
 * Check an id (user or item): a non-empty string of at most 128 characters, no control chars.
 * Integers are accepted and read as their decimal string, as the server reads files.
 * @param {string} field
 * @param {unknown} id
 * @returns {string}
 */
export function checkId(field, id) {
  if (Number.isSafeInteger(id)) id = String(id);
  if (typeof id !== 'string' || !id || id.length > 128 || CONTROL.test(id)) {
    invalid(field, id, 'must be a non-empty string of at most 128 characters, no control characters');
  }
  return /** @type {string} */ (id);
}

/**
 * Check a feature name: 1..200 characters, no control characters.
 * @param {string} field
 * @param {string} name
 * @returns {string}
 */
function checkName(field, name) {
  if (!name || name.length > 200 || CONTROL.test(name)) {
    invalid(field, name, 'must be a feature name of 1..200 characters, no control characters');
  }
  return name;
}

/**
 * Check a context: at most 64 entries of name -> string | number | boolean, names of 1..100
 * characters and string values of at most 99, so that "name=value" fits a feature name, numbers
 * within MAX_FEATURE_VALUE, and no key that would make a `user=` or `item=` feature. These are
 * the server's limits (fedlearn/api/schemas.py): an event outside them would be refused.
 * @param {string} field
 * @param {unknown} context
 * @returns {Record<string, string | number | boolean>}
 */
export function checkContext(field, context) {
  if (context === undefined || context === null) return {};
  if (typeof context !== 'object' || Array.isArray(context)) {
    invalid(field, context, 'must be an object of name -> string | number | boolean');
  }
  const entries = Object.entries(context);
  if (entries.length > 64) invalid(field, `${entries.length} entries`, 'must have at most 64 entries');
  for (const [name, value] of entries) {
    const t = typeof value;
    if (!(t === 'string' || t === 'boolean' || (t === 'number' && Number.isFinite(value)))) {
      invalid(`${field}[${JSON.stringify(name)}]`, value, 'must be a string, a finite number or a boolean');
    }
    if (!name || name.length > 100 || CONTROL.test(name)) {
      invalid(`${field} name`, name, 'must be 1..100 characters, no control characters');
    }
    if (RESERVED.test(name)) {
      invalid(`${field} name`, name, "is reserved: 'user' and 'item' (alone or before '=') name the model's own features");
    }
    if (t === 'number' && Math.abs(value) > MAX_FEATURE_VALUE) {
      invalid(`${field}[${JSON.stringify(name)}]`, value, `must be within [-${MAX_FEATURE_VALUE}, ${MAX_FEATURE_VALUE}] (scale numbers to about [-1, 1])`);
    }
    if (t === 'string' && (value.length > 99 || CONTROL.test(value))) {
      invalid(`${field}[${JSON.stringify(name)}]`, value, 'must be at most 99 characters, no control characters');
    }
  }
  return /** @type {Record<string, string | number | boolean>} */ (context);
}

/**
 * Add already-named features (an item's or a user's) to `out`.
 * @param {Record<string, number>} out
 * @param {string} field
 * @param {unknown} features
 */
function addNamed(out, field, features) {
  if (features === undefined || features === null) return;
  if (typeof features !== 'object' || Array.isArray(features)) {
    invalid(field, features, 'must be an object of name -> number');
  }
  for (const [name, value] of Object.entries(features)) {
    const x = typeof value === 'boolean' ? +value : value;
    if (typeof x !== 'number' || !Number.isFinite(x)) {
      invalid(`${field}[${JSON.stringify(name)}]`, value, 'must be a finite number');
    }
    out[checkName(`${field} name`, name)] = x;
  }
}

/**
 * The features of one (user, item, context) as the server builds them.
 * @param {string} user
 * @param {string} item
 * @param {Record<string, number> | undefined} itemFeatures the item's catalog features
 * @param {Record<string, string | number | boolean> | undefined} context
 * @param {Record<string, number>} [userFeatures] the user's table features, when known
 * @returns {Record<string, number>}
 */
export function eventFeatures(user, item, itemFeatures, context, userFeatures) {
  /** @type {Record<string, number>} */
  const out = { [`user=${user}`]: 1, [`item=${item}`]: 1 };
  addNamed(out, 'item features', itemFeatures);
  addNamed(out, 'user features', userFeatures);
  for (const [name, value] of Object.entries(checkContext('context', context))) {
    if (typeof value === 'string') out[`${name}=${value}`] = 1;
    else out[name] = +value; // numbers stay as they are; booleans become 1 / 0
  }
  return out;
}
