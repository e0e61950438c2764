/**
 * Check an id (user or item): a non-empty string of at most 128 characters, no control chars.
 * Integers are accepted and read as their decimal string, as the server reads files.
 * @param {string} field
 * @param {unknown} id
 * @returns {string}
 */
export function checkId(field: string, id: unknown): string;
/**
 * Check a context: at most 64 entries of name -> string | number | boolean, names of 1..100
 * characters and string values of at most 99, so that "name=value" fits a feature name, numbers
 * within MAX_FEATURE_VALUE, and no key that would make a `user=` or `item=` feature. These are
 * the server's limits (fedlearn/api/schemas.py): an event outside them would be refused.
 * @param {string} field
 * @param {unknown} context
 * @returns {Record<string, string | number | boolean>}
 */
export function checkContext(field: string, context: unknown): Record<string, string | number | boolean>;
/**
 * The features of one (user, item, context) as the server builds them.
 * @param {string} user
 * @param {string} item
 * @param {Record<string, number> | undefined} itemFeatures the item's catalog features
 * @param {Record<string, string | number | boolean> | undefined} context
 * @param {Record<string, number>} [userFeatures] the user's table features, when known
 * @returns {Record<string, number>}
 */
export function eventFeatures(user: string, item: string, itemFeatures: Record<string, number> | undefined, context: Record<string, string | number | boolean> | undefined, userFeatures?: Record<string, number>): Record<string, number>;
/** Numbers are scaled to about [-1, 1]; beyond this the server refuses them (MAX_FEATURE_VALUE). */
export const MAX_FEATURE_VALUE: 10;
