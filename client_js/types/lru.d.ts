/**
 * A least-recently-used map with a fixed capacity: a Map keeps insertion order, so re-inserting
 * on access makes the first key the least recently used one.
 * @template K, V
 */
export class Lru<K, V> {
    /** @param {number} capacity */
    constructor(capacity: number);
    capacity: number;
    /** @type {Map<K, V>} */
    map: Map<K, V>;
    /**
     * @param {K} key
     * @returns {V | undefined}
     */
    get(key: K): V | undefined;
    /**
     * @param {K} key
     * @param {V} value
     */
    set(key: K, value: V): void;
    /** @returns {number} */
    get size(): number;
}
