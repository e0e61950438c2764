/**
 * The one error type of the client. Like the server's errors, it carries the offending field
 * and value as data so a caller can react without parsing the message.
 */
export class FedError extends Error {
  /**
   * @param {string} message what went wrong, naming the field and the value, and what to do
   * @param {{field?: string, value?: unknown, status?: number, detail?: string,
   *   kind?: string, events?: object[], cause?: unknown}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = 'FedError';
    /** @type {string | undefined} the field (or option) at fault */
    this.field = info.field;
    /** @type {unknown} the value that was rejected */
    this.value = info.value;
    /** @type {number | undefined} the HTTP status, for errors that came from the server */
    this.status = info.status;
    /** @type {string | undefined} the server's problem+json `detail` */
    this.detail = info.detail;
    /** @type {string} 'invalid' | 'http' | 'rejected' | 'overflow' | 'auth' | 'storage' */
    this.kind = info.kind ?? 'invalid';
    /** @type {object[] | undefined} the events concerned (dropped or rejected) */
    this.events = info.events;
  }
}

/**
 * Show a value inside an error message: strings quoted, long values cut.
 * @param {unknown} value
 * @returns {string}
 */
export function show(value) {
  let s;
  try {
    s = typeof value === 'string' ? JSON.stringify(value) : String(JSON.stringify(value) ?? value);
  } catch {
    s = String(value);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Throw a FedError for an invalid argument.
 * @param {string} field
 * @param {unknown} value
 * @param {string} rule what the value must be, e.g. "must be a non-empty string"
 * @returns {never}
 */
export function invalid(field, value, rule) {
  throw new FedError(`${field} ${rule}, got ${show(value)}`, { field, value, kind: 'invalid' });
}

/**
 * Wrap an application callback so that an exception thrown by it cannot break the client's
 * own bookkeeping: it is rethrown on its own (visible in the console), like an event listener's.
 * @template {(...args: any[]) => any} F
 * @param {F | undefined} fn
 * @returns {(...args: Parameters<F>) => void}
 */
export function safe(fn) {
  if (typeof fn !== 'function') return () => {};
  return (...args) => {
    try {
      fn(...args);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  };
}
