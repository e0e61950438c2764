/**
 * The best cache this environment offers.
 * @returns {BaseCache}
 */
export function defaultBaseCache(): BaseCache;
/**
 * @param {Map<string, ArrayBuffer>} [memory] where to keep the bytes (default: a new Map)
 * @returns {BaseCache} a cache in memory
 */
export function memoryCache(memory?: Map<string, ArrayBuffer>): BaseCache;
/**
 * Where downloaded bases are kept between sessions. A base version is immutable, so once its
 * bytes are stored under its version they never need to be fetched again: a returning session
 * downloads only the user's delta. Cache API first, then IndexedDB, then page memory. Only the
 * latest version is kept: bases are large and a rollback merely costs one download.
 */
/**
 * @typedef {object} BaseCache
 * @property {(key: string) => Promise<ArrayBuffer | undefined>} get
 * @property {(key: string, bytes: ArrayBuffer) => Promise<void>} put
 */
export const CACHE_NAME: "fedlearn-bases";
export type BaseCache = {
    get: (key: string) => Promise<ArrayBuffer | undefined>;
    put: (key: string, bytes: ArrayBuffer) => Promise<void>;
};
