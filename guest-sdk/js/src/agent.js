// The entry point: `agent(fn)` marks the function the world's `run` export
// calls; `serve` (used by build.mjs's generated entry, not API) adapts it to
// the export: JSON text in, `{tag: 'ok' | 'err', val: string}` out, and
// never a trap.

import { AgentError, HttpError, KvError, LlmError } from './errors.js';
import { setLive, toJson } from './runtime.js';
import { stderr } from './log.js';

const AGENT = Symbol.for('warden.agent');

/**
 * Makes `fn` the agent: `export default agent(async (input) => output)`.
 *
 * `fn` takes the run's input as a parsed JSON value (`null` when the input
 * is empty or `null`) and returns (or resolves to) any JSON-serialisable
 * value, the run's output. An uncaught error ends the run as
 * `guest_error`: an `AgentError` (or one of the SDK's own: `LlmError`,
 * `KvError`, `HttpError`) with its message as is, any other as
 * `ErrorName: message` (its stack goes to stderr, in the run's log).
 */
export function agent(fn) {
  if (typeof fn !== 'function') {
    throw new TypeError('agent(fn): fn must be a function of the parsed input');
  }
  fn[AGENT] = true;
  return fn;
}

const PLAIN = [AgentError, LlmError, KvError, HttpError];

/** The world's `run` export for app module `app` (its default export or `run`). */
export function serve(app) {
  const fn = typeof app.default === 'function' ? app.default : app.run;
  if (typeof fn !== 'function') {
    throw new Error(
      'app.js exports no agent: write `export default agent(async (input) => { ... })`',
    );
  }
  return async function run(text) {
    setLive();
    try {
      return { tag: 'ok', val: await invoke(fn, text) };
    } catch (e) {
      if (e instanceof Failed) return { tag: 'err', val: e.message };
      return { tag: 'err', val: describe(e) };
    }
  };
}

/** The run's error message, as is. */
class Failed extends Error {}

async function invoke(fn, text) {
  let input;
  try {
    input = text.trim() === '' ? null : JSON.parse(text);
  } catch (e) {
    throw new Failed(`invalid input: ${e && e.message}`);
  }
  let output;
  try {
    output = await fn(input);
  } catch (e) {
    if (PLAIN.some((cls) => e instanceof cls)) throw new Failed(e.message);
    throw new Failed(describe(e));
  }
  let json;
  try {
    json = toJson(output === undefined ? null : output);
  } catch (e) {
    throw new Failed(`cannot encode the output as JSON: ${e && e.message}`);
  }
  if (json === undefined) {
    throw new Failed(`cannot encode the output as JSON: a ${typeof output} is not JSON`);
  }
  return json;
}

/**
 * An uncaught error as the run's message: `ErrorName: message`, its stack
 * to stderr; a thrown string as is.
 */
function describe(e) {
  if (typeof e === 'string') return e;
  if (e instanceof Error) {
    let name = e.name;
    if (!name || name === 'Error') name = e.constructor?.name || 'Error';
    const head = e.message ? `${name}: ${e.message}` : name;
    try {
      stderr(e.stack ? `${head}\n${String(e.stack).trimEnd()}` : head);
    } catch {
      // the stack is a courtesy
    }
    return head;
  }
  let text;
  try {
    text = typeof e === 'object' && e !== null ? JSON.stringify(e) : String(e);
  } catch {
    text = Object.prototype.toString.call(e);
  }
  return `uncaught ${text}`;
}
