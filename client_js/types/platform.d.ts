/**
 * What the page may or may not offer: storage that can be blocked, and UUIDs outside secure
 * contexts.
 */
/** @returns {Pick<Storage, 'getItem' | 'setItem'> | null} */
export function localStorageOrNull(): Pick<Storage, "getItem" | "setItem"> | null;
/**
 * A random v4 UUID. crypto.randomUUID exists only in secure contexts (https, localhost), so a
 * demo opened over plain http on a LAN address falls back to getRandomValues.
 * @returns {string}
 */
export function uuid(): string;
