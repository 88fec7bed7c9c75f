// Internals shared by the SDK's modules. Not API.

let live = false;

/** Called as a run starts: from now on the host is there. */
export function setLive() {
  live = true;
}

/** Whether a run is under way (false while the component is built). */
export function isLive() {
  return live;
}

/**
 * Throws unless a run is under way: componentize-js runs the top level of
 * app.js while it builds the component, when there is no host to call.
 */
export function needRun(what) {
  if (!live) {
    throw new Error(
      `warden: ${what} cannot be called while the component is being built ` +
        '(at the top level of a module): call it from the agent function',
    );
  }
}

/**
 * The error value of a failed import call: the generated bindings throw
 * an Error whose `payload` is the WIT error; anything else is rethrown.
 */
export function payload(e) {
  if (e !== null && typeof e === 'object' && 'payload' in e) return e.payload;
  throw e;
}

const DISPOSE = Symbol.dispose || Symbol.for('dispose');

/** Drops a resource handle now rather than when it is collected. */
export function dispose(resource) {
  if (resource != null && typeof resource[DISPOSE] === 'function') {
    resource[DISPOSE]();
  }
}

export const DISPOSE_SYMBOL = DISPOSE;

const encoder = new TextEncoder();

/** Bytes of a value given as text (UTF-8) or bytes. */
export function toBytes(value, what) {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new TypeError(`${what} must be a string or bytes (Uint8Array), not ${typeName(value)}`);
}

/** A number from a WIT u64/s64 (a BigInt in the bindings). */
export function toNumber(value) {
  return typeof value === 'bigint' ? Number(value) : value;
}

export function typeName(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const t = typeof value;
  if (t === 'object') return value.constructor?.name ? `a ${value.constructor.name}` : 'an object';
  return `a ${t}`;
}

/**
 * `JSON.stringify` that also takes what JavaScript code tends to hold:
 * BigInt (exactly, when it fits a double), Map, Set and typed arrays.
 */
export function toJson(value) {
  return JSON.stringify(value, jsonReplacer);
}

function jsonReplacer(_key, value) {
  if (typeof value === 'bigint') {
    if (value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) {
      return Number(value);
    }
    throw new TypeError(`BigInt ${value} does not fit a JSON number exactly`);
  }
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) return Array.from(value);
  return value;
}
