/**
 * A least-recently-used map with a fixed capacity: a Map keeps insertion order, so re-inserting
 * on access makes the first key the least recently used one.
 * @template K, V
 */
export class Lru {
  /** @param {number} capacity */
  constructor(capacity) {
    this.capacity = capacity;
    /** @type {Map<K, V>} */
    this.map = new Map();
  }

  /**
   * @param {K} key
   * @returns {V | undefined}
   */
  get(key) {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }

  /**
   * @param {K} key
   * @param {V} value
   */
  set(key, value) {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value);
  }

  /** @returns {number} */
  get size() {
    return this.map.size;
  }
}
