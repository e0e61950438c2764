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

export const CACHE_NAME = 'fedlearn-bases';

/** @type {Map<string, ArrayBuffer>} the last resort, alive as long as the page */
const pageMemory = new Map();

/**
 * The best cache this environment offers.
 * @returns {BaseCache}
 */
export function defaultBaseCache() {
  if (globalThis.caches?.open) return cacheApi(globalThis.caches);
  if (globalThis.indexedDB?.open) return indexedDb(globalThis.indexedDB);
  return memoryCache(pageMemory);
}

/**
 * @param {Map<string, ArrayBuffer>} [memory] where to keep the bytes (default: a new Map)
 * @returns {BaseCache} a cache in memory
 */
export function memoryCache(memory = new Map()) {
  return {
    get: async (key) => memory.get(key),
    put: async (key, bytes) => {
      memory.clear();
      memory.set(key, bytes);
    },
  };
}

/**
 * @param {CacheStorage} storage
 * @returns {BaseCache}
 */
function cacheApi(storage) {
  return {
    async get(key) {
      const hit = await (await storage.open(CACHE_NAME)).match(key);
      return hit ? hit.arrayBuffer() : undefined;
    },
    async put(key, bytes) {
      const cache = await storage.open(CACHE_NAME);
      await cache.put(key, new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }));
      for (const request of await cache.keys()) {
        if (request.url !== key) await cache.delete(request);
      }
    },
  };
}

/**
 * @param {IDBFactory} idb
 * @returns {BaseCache}
 */
function indexedDb(idb) {
  /**
   * Run one request in one transaction and resolve with its result when the transaction ends.
   * @param {IDBTransactionMode} mode
   * @param {(store: IDBObjectStore) => IDBRequest} op
   */
  const run = (mode, op) =>
    new Promise((resolve, reject) => {
      const opening = idb.open(CACHE_NAME, 1);
      opening.onupgradeneeded = () => opening.result.createObjectStore('bases');
      opening.onerror = () => reject(opening.error);
      opening.onsuccess = () => {
        const db = opening.result;
        const tx = db.transaction('bases', mode);
        const request = op(tx.objectStore('bases'));
        tx.oncomplete = () => {
          db.close();
          resolve(request.result);
        };
        tx.onerror = tx.onabort = () => {
          db.close();
          reject(tx.error);
        };
      };
    });
  return {
    get: (key) => run('readonly', (store) => store.get(key)),
    put: (key, bytes) =>
      run('readwrite', (store) => {
        store.clear();
        return store.put(bytes, key);
      }).then(() => undefined),
  };
}
