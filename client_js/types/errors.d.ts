/**
 * Show a value inside an error message: strings quoted, long values cut.
 * @param {unknown} value
 * @returns {string}
 */
export function show(value: unknown): string;
/**
 * Throw a FedError for an invalid argument.
 * @param {string} field
 * @param {unknown} value
 * @param {string} rule what the value must be, e.g. "must be a non-empty string"
 * @returns {never}
 */
export function invalid(field: string, value: unknown, rule: string): never;
/**
 * Wrap an application callback so that an exception thrown by it cannot break the client's
 * own bookkeeping: it is rethrown on its own (visible in the console), like an event listener's.
 * @template {(...args: any[]) => any} F
 * @param {F | undefined} fn
 * @returns {(...args: Parameters<F>) => void}
 */
export function safe<F extends (...args: any[]) => any>(fn: F | undefined): (...args: Parameters<F>) => void;
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
    constructor(message: string, info?: {
        field?: string;
        value?: unknown;
        status?: number;
        detail?: string;
        kind?: string;
        events?: object[];
        cause?: unknown;
    });
    /** @type {string | undefined} the field (or option) at fault */
    field: string | undefined;
    /** @type {unknown} the value that was rejected */
    value: unknown;
    /** @type {number | undefined} the HTTP status, for errors that came from the server */
    status: number | undefined;
    /** @type {string | undefined} the server's problem+json `detail` */
    detail: string | undefined;
    /** @type {string} 'invalid' | 'http' | 'rejected' | 'overflow' | 'auth' | 'storage' */
    kind: string;
    /** @type {object[] | undefined} the events concerned (dropped or rejected) */
    events: object[] | undefined;
}
