/**
 * What the page may or may not offer: storage that can be blocked, and UUIDs outside secure
 * contexts.
 */

/** @returns {Pick<Storage, 'getItem' | 'setItem'> | null} */
export function localStorageOrNull() {
  try {
    return globalThis.localStorage ?? null; // reading it throws where storage is blocked
  } catch {
    return null;
  }
}

/**
 * A random v4 UUID. crypto.randomUUID exists only in secure contexts (https, localhost), so a
 * demo opened over plain http on a LAN address falls back to getRandomValues.
 * @returns {string}
 */
export function uuid() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
