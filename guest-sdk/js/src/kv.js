// Key-value storage in the agent's own namespace, through wasi:keyvalue.
// The host picks the namespace (the agent's name); a bucket is a named area
// within it. Values persist across runs on the node's store.

import * as store from 'wasi:keyvalue/store';
import * as atomics from 'wasi:keyvalue/atomics';
import * as kvCas from 'warden:agent/kv-cas';
import { KvError } from './errors.js';
import { DISPOSE_SYMBOL, dispose, needRun, payload, toBytes, toJson, toNumber } from './runtime.js';

export { KvError };

/** A KvError for a failed store call (anything else is rethrown). */
function kvError(e) {
  const v = payload(e);
  switch (v && v.tag) {
    case 'access-denied':
      return new KvError('access_denied', 'key-value storage was not granted to this run');
    case 'no-such-store':
      return new KvError('no_such_bucket', 'no such bucket');
    default:
      return new KvError('other', `key-value error: ${v && 'val' in v ? v.val : v}`);
  }
}

/** Calls `f`, turning the store's errors into KvError. */
function call(f) {
  try {
    return f();
  } catch (e) {
    throw kvError(e);
  }
}

function checkKey(key) {
  if (typeof key !== 'string') throw new TypeError(`a key must be a string, not ${typeof key}`);
}

/** An open bucket. Every method returns a promise and fails with KvError. */
export class Bucket {
  #inner;

  /** Use `Bucket.open(name)`. */
  constructor(inner, name) {
    this.#inner = inner;
    /** The bucket's name. */
    this.name = name;
  }

  /** Opens the bucket `name` (created on first write). */
  static async open(name = 'default') {
    needRun('kv.Bucket.open()');
    if (typeof name !== 'string') throw new TypeError('a bucket name must be a string');
    return new Bucket(call(() => store.open(name)), name);
  }

  #handle() {
    if (this.#inner === undefined) throw new KvError('other', `key-value error: bucket ${this.name} is closed`);
    return this.#inner;
  }

  /** The value at `key` (bytes), `null` when absent. */
  async get(key) {
    checkKey(key);
    const v = call(() => this.#handle().get(key));
    return v == null ? null : v;
  }

  /** The value at `key` as UTF-8 text, `null` when absent. */
  async getText(key) {
    const raw = await this.get(key);
    if (raw === null) return null;
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch (e) {
      throw new KvError('decode', `stored value is not UTF-8 text: ${e && e.message}`);
    }
  }

  /** The value at `key` decoded from JSON, `null` when absent. */
  async getJson(key) {
    const raw = await this.get(key);
    if (raw === null) return null;
    try {
      return JSON.parse(new TextDecoder().decode(raw));
    } catch (e) {
      throw new KvError('decode', `stored value is not the expected JSON: ${e && e.message}`);
    }
  }

  /** Stores `value` (bytes, or text as UTF-8) at `key`. */
  async set(key, value) {
    checkKey(key);
    const bytes = toBytes(value, 'a value');
    call(() => this.#handle().set(key, bytes));
  }

  /** Stores `value` at `key` as JSON. */
  async setJson(key, value) {
    let text;
    try {
      text = toJson(value);
    } catch (e) {
      throw new KvError('decode', `value is not JSON-serialisable: ${e && e.message}`);
    }
    if (text === undefined) {
      throw new KvError('decode', `value is not JSON-serialisable: a ${typeof value} is not JSON`);
    }
    await this.set(key, text);
  }

  /** Removes `key`; nothing happens when it is absent. */
  async delete(key) {
    checkKey(key);
    call(() => this.#handle().delete(key));
  }

  /** Whether `key` has a value. */
  async exists(key) {
    checkKey(key);
    return call(() => this.#handle().exists(key));
  }

  /** Every key in the bucket, in order. */
  async keys() {
    const keys = [];
    let cursor;
    for (;;) {
      const page = call(() => this.#handle().listKeys(cursor));
      keys.push(...page.keys);
      if (page.cursor == null) return keys;
      cursor = page.cursor;
    }
  }

  /**
   * Adds `delta` (a whole number, 0 or more) to the counter at `key` (0
   * when absent) atomically and returns the new value.
   */
  async increment(key, delta = 1) {
    checkKey(key);
    if (typeof delta === 'number' && !Number.isInteger(delta)) {
      throw new RangeError('delta must be a whole number');
    }
    if (typeof delta !== 'number' && typeof delta !== 'bigint') {
      throw new TypeError('delta must be a number');
    }
    if (delta < 0) throw new RangeError('delta must not be negative');
    const inner = this.#handle();
    return toNumber(call(() => atomics.increment(inner, key, BigInt(delta))));
  }

  /**
   * Sets `key` to `newValue` if its value is `expected` now (`null`: the
   * key is absent), atomically, across every node sharing the store;
   * returns whether it did. Read, compute, then swap, and try again when
   * another writer came first.
   */
  async compareAndSwap(key, expected, newValue) {
    checkKey(key);
    const old = expected == null ? undefined : toBytes(expected, 'expected');
    const bytes = toBytes(newValue, 'the new value');
    const inner = this.#handle();
    return call(() => kvCas.compareAndSwap(inner, key, old, bytes));
  }

  /** Releases the bucket now rather than when it is collected. */
  close() {
    const inner = this.#inner;
    this.#inner = undefined;
    dispose(inner);
  }

  [DISPOSE_SYMBOL]() {
    this.close();
  }
}

/** Opens the bucket `name` (created on first write): `Bucket.open(name)`. */
export function open(name = 'default') {
  return Bucket.open(name);
}
