// Logs that go to the run's log (bounded by the run's log budget), through
// wasi:logging. Importing `warden` also routes `console.log` and friends
// there, with the context `agent`.

import { log as wasiLog } from 'wasi:logging/logging';
import { isLive } from './runtime.js';

const CONTEXT = 'agent';

/** The console's own methods, as the engine provides them (stdout/stderr). */
const original = {};
for (const name of ['log', 'info', 'debug', 'warn', 'error', 'trace']) {
  original[name] = typeof console[name] === 'function' ? console[name].bind(console) : () => {};
}

/** Writes to stderr, not to wasi:logging (e.g. a stack trace). */
export function stderr(...args) {
  original.error(...args);
}

function emit(level, args) {
  const message = format(args);
  if (!isLive()) {
    // The component is being built: no host to log to.
    original.error(`[${level}] ${message}`);
    return;
  }
  wasiLog(level, CONTEXT, message);
}

/** Logs at level `trace`; arguments are formatted like `console.log`'s. */
export function trace(...args) {
  emit('trace', args);
}
/** Logs at level `debug`. */
export function debug(...args) {
  emit('debug', args);
}
/** Logs at level `info`. */
export function info(...args) {
  emit('info', args);
}
/** Logs at level `warn`. */
export function warn(...args) {
  emit('warn', args);
}
/** Logs at level `error`. */
export function error(...args) {
  emit('error', args);
}

const ROUTES = { log: 'info', info: 'info', debug: 'debug', warn: 'warn', error: 'error', trace: 'trace' };
let routed = false;

/**
 * Sends `console.log`/`info` (level info), `console.debug`, `console.warn`,
 * `console.error` and `console.trace` to wasi:logging. Done when `warden`
 * is imported.
 */
export function routeConsole() {
  if (routed) return;
  for (const [name, level] of Object.entries(ROUTES)) {
    console[name] = (...args) => emit(level, args);
  }
  routed = true;
}

/** Gives `console` back its own methods (stdout and stderr). */
export function restoreConsole() {
  for (const name of Object.keys(ROUTES)) console[name] = original[name];
  routed = false;
}

/** `console.log`'s formatting: `%s %d %i %f %j %o %O %c %%`, then the rest spaced. */
export function format(args) {
  if (args.length === 0) return '';
  let rest = args;
  let head = '';
  if (typeof args[0] === 'string') {
    rest = args.slice(1);
    head = rest.length === 0 ? args[0] : args[0].replace(/%([sdifjoOc%])/g, (m, c) => {
      if (c === '%') return '%';
      if (rest.length === 0) return m;
      const v = rest.shift();
      switch (c) {
        case 's':
          return typeof v === 'string' ? v : inspect(v);
        case 'd':
        case 'i': {
          if (typeof v === 'bigint') return `${v}n`;
          const n = Number(v);
          return String(c === 'i' ? Math.trunc(n) : n);
        }
        case 'f':
          return String(Number(v));
        case 'c':
          return '';
        default:
          return inspect(v);
      }
    });
  }
  const parts = rest.map((v) => (typeof v === 'string' ? v : inspect(v)));
  return typeof args[0] === 'string' ? [head, ...parts].join(' ') : parts.join(' ');
}

/** A value as text for a log line. */
export function inspect(value) {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'bigint':
      return `${value}n`;
    case 'function':
      return `[Function: ${value.name || '(anonymous)'}]`;
    case 'undefined':
    case 'number':
    case 'boolean':
    case 'symbol':
      return String(value);
  }
  if (value === null) return 'null';
  if (value instanceof Error) {
    const head = value.message ? `${value.name}: ${value.message}` : String(value.name);
    return value.stack ? `${head}\n${String(value.stack).trimEnd()}` : head;
  }
  try {
    const seen = new WeakSet();
    const text = JSON.stringify(value, (_k, v) => {
      if (typeof v === 'bigint') return `${v}n`;
      if (typeof v === 'function') return `[Function: ${v.name || '(anonymous)'}]`;
      if (v === undefined) return 'undefined';
      if (v instanceof Map) return { [`Map(${v.size})`]: Object.fromEntries(v) };
      if (v instanceof Set) return { [`Set(${v.size})`]: [...v] };
      if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v);
      if (v instanceof Error) return String(v);
      if (v !== null && typeof v === 'object') {
        if (seen.has(v)) return '[Circular]';
        seen.add(v);
      }
      return v;
    });
    return text === undefined ? String(value) : text;
  } catch {
    return String(value);
  }
}

routeConsole();
