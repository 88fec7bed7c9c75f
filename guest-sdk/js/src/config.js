// Config values the run was given (`--config KEY=VALUE`, the agent's
// manifest), through wasi:config/store.

import * as store from 'wasi:config/store';
import { needRun } from './runtime.js';

/** The value of `key`, or `null` if the run has none. */
export async function get(key) {
  needRun('config.get()');
  if (typeof key !== 'string') throw new TypeError('config.get(key): key must be a string');
  try {
    return store.get(key) ?? null;
  } catch {
    return null;
  }
}

/** Every config value of the run, as an object. */
export async function getAll() {
  needRun('config.getAll()');
  try {
    return Object.fromEntries(store.getAll());
  } catch {
    return {};
  }
}
