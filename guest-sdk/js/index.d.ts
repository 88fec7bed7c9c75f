/**
 * Write Warden agents in JavaScript.
 *
 * An agent is a WebAssembly component of the `warden:agent/agent` world.
 * With this SDK it is an async function over JSON values, the default
 * export of `app.js`:
 *
 * ```js
 * import { agent, log } from 'warden';
 *
 * export default agent(async (input) => {
 *   log.info(`greeting ${input.name}`);
 *   return { greeting: `hello, ${input.name}` };
 * });
 * ```
 *
 * Build it with `node guest-sdk/js/build.mjs AGENT_DIR agent.wasm` and run
 * it with `warden run agent.wasm`.
 *
 * The agent reaches the world only through what the run was granted:
 * {@link llm} (chat with tools, embeddings), {@link http} (requests over
 * `wasi:http`), {@link kv} (key-value storage in the agent's own
 * namespace), {@link config}, {@link log} (also `console.*`) and
 * {@link context}. Every call that reaches the host returns a promise
 * (logging excepted); anything not granted rejects with an error the agent
 * can catch.
 *
 * @module warden
 */
declare module 'warden' {
  /** Any value `JSON.parse` can give. */
  export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

  /**
   * Makes `fn` the agent: `export default agent(async (input) => output)`
   * (an export named `run` works too).
   *
   * `fn` takes the run's input as a parsed JSON value (`null` when the
   * input is empty or `null`; its shape is the agent's to check) and
   * returns, or resolves to, any JSON-serialisable value: the run's output
   * (`undefined` is `null`; BigInt that fits a double, Map, Set and typed
   * arrays are converted). An uncaught error ends the run as `guest_error`:
   * an {@link AgentError} (or one of the SDK's own: {@link LlmError},
   * {@link KvError}, {@link HttpError}) with its message as is, a thrown
   * string as is, any other error as `ErrorName: message` (its stack goes
   * to stderr, in the run's log). It never traps.
   *
   * The top level of `app.js` runs while the component is built, when
   * there is no host: call no capability there, only inside `fn`.
   */
  export function agent<I = any, O = unknown>(fn: (input: I) => O | Promise<O>): (input: I) => O | Promise<O>;

  // ----- errors -------------------------------------------------------------

  /**
   * Ends the run as `guest_error` with exactly this message (other
   * uncaught errors read `ErrorName: message`).
   */
  export class AgentError extends Error {
    constructor(message?: string);
  }

  /** What went wrong with key-value storage. */
  export type KvErrorKind = 'access_denied' | 'no_such_bucket' | 'decode' | 'other';

  // ----- llm ----------------------------------------------------------------

  /**
   * Chat and embeddings with the LLM the host provides, metered against the
   * run's token and cost budget. The host holds the provider's endpoint and
   * key; the agent names a model (or takes the host's default).
   *
   * ```js
   * const answer = await llm.chat([
   *   Message.system('Be brief.'),
   *   { role: 'user', content: 'What is WebAssembly?' },
   * ], { model: 'gpt-4o-mini', maxTokens: 200 });
   * ```
   *
   * When the budget runs out, calls reject with {@link BudgetExhausted}
   * and the run goes on: finish with what you have.
   */
  export namespace llm {
    /** Why an LLM call failed: one subclass per case of the WIT `error`. */
    export class LlmError extends Error {}

    /** The model is not on the run's allow-list (or no LLM was granted): `model not allowed: MODEL`. */
    export class ModelNotAllowed extends LlmError {
      constructor(model: string);
      /** The model that was refused. */
      readonly model: string;
    }

    /**
     * The run's token or cost budget is spent (`the run's LLM budget is
     * exhausted`): finish with what you have.
     */
    export class BudgetExhausted extends LlmError {
      constructor();
    }

    /** `the LLM provider is rate limiting`. */
    export class RateLimited extends LlmError {
      constructor();
    }

    /** `invalid LLM request: DETAIL`. */
    export class InvalidRequest extends LlmError {
      constructor(detail: string);
      readonly detail: string;
    }

    /** `LLM provider error: DETAIL`. */
    export class ProviderError extends LlmError {
      constructor(detail: string);
      readonly detail: string;
    }

    /** `the LLM request timed out`. */
    export class LlmTimeout extends LlmError {
      constructor();
    }

    export type Role = 'system' | 'user' | 'assistant' | 'tool';

    /** A tool call the model asked for. */
    export class ToolCall {
      constructor(id: string, name: string, args: string);
      readonly id: string;
      readonly name: string;
      /** JSON text of the arguments, as the model produced it. */
      readonly arguments: string;
      /**
       * The arguments parsed: an object, empty when they are not a JSON
       * object (models do send broken arguments).
       */
      args(): { [key: string]: any };
    }

    /** A tool call as a plain object; `arguments` may be an object (sent as JSON). */
    export interface ToolCallLike {
      id: string;
      name: string;
      arguments?: string | object;
    }

    /**
     * One turn of the conversation, as a plain object (OpenAI's
     * `tool_call_id` and `tool_calls` are taken too).
     */
    export interface MessageLike {
      role: Role;
      content?: string | null;
      /** For `tool` messages: the id of the call this answers. */
      toolCallId?: string | null;
      tool_call_id?: string | null;
      /** For `assistant` messages: the calls the model made. */
      toolCalls?: Iterable<ToolCallLike>;
      tool_calls?: Iterable<ToolCallLike>;
    }

    /** One turn of the conversation. */
    export class Message implements MessageLike {
      constructor(role: Role, content: string, options?: { toolCallId?: string | null; toolCalls?: ToolCallLike[] });
      role: Role;
      content: string;
      toolCallId: string | null;
      toolCalls: ToolCallLike[];
      static system(content: string): Message;
      static user(content: string): Message;
      /**
       * An assistant turn; with `toolCalls`, the turn that asked for them
       * (send it back before the tool results).
       */
      static assistant(content: string, toolCalls?: Iterable<ToolCallLike>): Message;
      /** The result of the tool call `callId`. */
      static toolResult(callId: string, content: string): Message;
    }

    /** A function the model may call, as a plain object. */
    export interface ToolLike {
      name: string;
      description?: string;
      /** JSON Schema of the arguments: an object or JSON text (default: an object with no properties). */
      parameters?: object | string;
    }

    /** A function the model may call; `parameters` is a JSON Schema. */
    export class Tool implements ToolLike {
      constructor(name: string, description: string, parameters: object | string);
      name: string;
      description: string;
      parameters: object | string;
    }

    export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'other';

    export interface Usage {
      promptTokens: number;
      completionTokens: number;
    }

    /** One chat completion's answer. */
    export class ChatResponse {
      content: string;
      toolCalls: ToolCall[];
      finishReason: FinishReason;
      usage: Usage;
      /** The model that answered. */
      model: string;
      /** This answer as the assistant turn to append to the conversation. */
      message(): Message;
    }

    export interface ChatOptions {
      /** The model; left out (or `null`), the host's default. */
      model?: string | null;
      tools?: Iterable<ToolLike>;
      /** At most this many completion tokens; the host clamps it to what is left of the budget. */
      maxTokens?: number | null;
      temperature?: number | null;
      /** Ask the model for a JSON object. */
      jsonOutput?: boolean;
    }

    /**
     * One chat completion. Rejects with a subclass of {@link LlmError}, or
     * a `TypeError` for an unknown option or a malformed message.
     */
    export function chat(messages: Iterable<MessageLike>, options?: ChatOptions): Promise<ChatResponse>;
    /** Embeddings of `inputs`, one vector each. Rejects with {@link LlmError}. */
    export function embed(inputs: Iterable<string>, options?: { model?: string | null }): Promise<number[][]>;
  }

  // ----- kv -----------------------------------------------------------------

  /** A value to store: text (stored as UTF-8) or bytes. */
  export type Bytes = string | Uint8Array | ArrayBuffer | ArrayBufferView;

  /**
   * Key-value storage in the agent's own namespace, through
   * `wasi:keyvalue`. The host picks the namespace (the agent's name); a
   * bucket is a named area within it. Values persist across runs on the
   * node's store.
   *
   * ```js
   * const notes = await kv.Bucket.open('notes');
   * await notes.set('last', 'hello');
   * const visits = await notes.increment('visits');
   * ```
   */
  export namespace kv {
    /**
     * A key-value error (`key-value storage was not granted to this run`,
     * `no such bucket`, `stored value is not …`, `key-value error: …`).
     */
    export class KvError extends Error {
      constructor(kind: KvErrorKind, message: string);
      /**
       * `access_denied` (this run was not granted key-value storage),
       * `no_such_bucket`, `decode` (the value is not what `getText`/`getJson`
       * expected) or `other`.
       */
      readonly kind: KvErrorKind;
    }

    /**
     * An open bucket. Every method rejects with {@link KvError} when the
     * store fails.
     */
    export class Bucket {
      /** Use {@link Bucket.open}. */
      private constructor();
      /** Opens the bucket `name` (default `default`), created on first write. */
      static open(name?: string): Promise<Bucket>;
      /** The bucket's name. */
      readonly name: string;
      /** The value at `key`, `null` when absent. */
      get(key: string): Promise<Uint8Array | null>;
      /** The value at `key` as UTF-8 text, `null` when absent (KvError `decode` if not UTF-8). */
      getText(key: string): Promise<string | null>;
      /** The value at `key` decoded from JSON, `null` when absent (KvError `decode` if not JSON). */
      getJson<T = any>(key: string): Promise<T | null>;
      /** Stores `value` (bytes, or text as UTF-8) at `key`. */
      set(key: string, value: Bytes): Promise<void>;
      /** Stores `value` at `key` as JSON. */
      setJson(key: string, value: unknown): Promise<void>;
      /** Removes `key`; nothing happens when it is absent. */
      delete(key: string): Promise<void>;
      exists(key: string): Promise<boolean>;
      /** Every key in the bucket, in order. */
      keys(): Promise<string[]>;
      /**
       * Adds `delta` (a whole number, 0 or more; default 1) to the counter at
       * `key` (0 when absent) atomically and returns the new value (exact up
       * to 2^53).
       */
      increment(key: string, delta?: number | bigint): Promise<number>;
      /**
       * Sets `key` to `newValue` if its value is `expected` now (`null`: the
       * key is absent), atomically, across every node sharing the store;
       * resolves to whether it did. Read, compute, then swap, and try again
       * when another writer came first.
       */
      compareAndSwap(key: string, expected: Bytes | null, newValue: Bytes): Promise<boolean>;
      /** Releases the bucket now rather than when it is collected. */
      close(): void;
    }

    /** `Bucket.open(name)`. */
    export function open(name?: string): Promise<Bucket>;
  }

  // ----- http ---------------------------------------------------------------

  /** Request headers: an object, `[name, value]` pairs, or any iterable of pairs (a `Headers`). */
  export type HeadersLike = Record<string, string> | Iterable<readonly [string, string]>;

  export interface RequestInit {
    /** `GET` unless given. */
    method?: string;
    headers?: HeadersLike;
    /** Text (sent as UTF-8) or bytes. */
    body?: Bytes | null;
  }

  /**
   * Outgoing HTTP over `wasi:http`. The host decides which hosts the run
   * may reach (`--allow-http`); a refused request rejects with
   * {@link HttpError}, `denied` set. Redirects are not followed: a 3xx
   * comes back as a {@link Response}, and following it (a new request,
   * checked by the host again) is up to you. An HTTP error status is a
   * Response like any other.
   *
   * ```js
   * const page = await http.get('https://example.com/');
   * console.log(page.status, page.text());
   * const created = (await http.post('https://api.example.com/items', { a: 1 })).json();
   * ```
   *
   * The engine's global `fetch` works too, but a refused request is a bare
   * `TypeError: NetworkError when attempting to fetch resource` there.
   */
  export namespace http {
    /**
     * Why a request failed, in words (`denied: the URL is not on the run's
     * HTTP allow-list`, `the server refused the connection`, …).
     */
    export class HttpError extends Error {
      /**
       * The host refused the request: not on the allow-list, a forbidden
       * address, or over the request budget.
       */
      readonly denied: boolean;
    }

    /** A complete response. */
    export class Response {
      /** The status code. */
      readonly status: number;
      /** `[name, value]` pairs, in order (values as text, invalid UTF-8 replaced). */
      readonly headers: [string, string][];
      /** The body's bytes. */
      readonly body: Uint8Array;
      /** Whether the status is 2xx. */
      readonly ok: boolean;
      /** The body as text (invalid UTF-8 replaced). */
      text(): string;
      /** The body decoded from JSON; throws {@link HttpError} if it is not JSON. */
      json<T = any>(): T;
      /** The first value of header `name` (case-insensitive), or `null`. */
      header(name: string): string | null;
    }

    /** `GET url`. */
    export function get(url: string, options?: { headers?: HeadersLike }): Promise<Response>;
    /**
     * `POST url`. `body` as text or bytes is sent as is; any other value is
     * sent as JSON (with `content-type: application/json` unless `headers`
     * sets one).
     */
    export function post(url: string, body: unknown, options?: { headers?: HeadersLike }): Promise<Response>;
    /** One request, `fetch`'s arguments: `request(url, {method, headers, body})`. */
    export function request(url: string, init?: RequestInit): Promise<Response>;
    /** A `wasi:http` error-code in words (`HTTP-response-incomplete`: "http response incomplete"). */
    export function describeErrorCode(code: { tag: string; val?: unknown }): string;
  }

  // ----- config, context, log -------------------------------------------------

  /**
   * Config values the run was given (`--config KEY=VALUE`, the agent's
   * manifest), through `wasi:config/store`.
   */
  export namespace config {
    /** The value of `key`, or `null` if the run has none (or config fails). */
    export function get(key: string): Promise<string | null>;
    /** Every config value of the run. */
    export function getAll(): Promise<Record<string, string>>;
  }

  export interface BudgetRemaining {
    /** LLM tokens left; `null` when the run has no token budget. */
    tokens: number | null;
    /** USD left; `null` when the run has no cost budget. */
    costUsd: number | null;
    /** Milliseconds of wall time left. */
    timeMs: number;
  }

  /** What the run knows about itself: id, attempt, remaining budget. */
  export namespace context {
    /** This run's id. */
    export function runId(): Promise<string>;
    /** The attempt number, from 1. */
    export function attempt(): Promise<number>;
    /** Tokens, USD and milliseconds left. */
    export function remaining(): Promise<BudgetRemaining>;
  }

  /**
   * Logs that go to the run's log (bounded by the run's log budget),
   * through `wasi:logging`, with the context `agent`. Arguments are
   * formatted like `console.log`'s (`%s %d %i %f %j %o %O`). Importing
   * `warden` also routes `console.log`/`info` (level info), `console.debug`,
   * `console.warn`, `console.error` and `console.trace` here. These are
   * synchronous.
   */
  export namespace log {
    export function trace(...args: unknown[]): void;
    export function debug(...args: unknown[]): void;
    export function info(...args: unknown[]): void;
    export function warn(...args: unknown[]): void;
    export function error(...args: unknown[]): void;
    /** Writes to stderr (also in the run's log, as `stderr`), not to `wasi:logging`. */
    export function stderr(...args: unknown[]): void;
    /** Routes `console.*` to `wasi:logging` (done on import). */
    export function routeConsole(): void;
    /** Gives `console` back its own methods: stdout and stderr. */
    export function restoreConsole(): void;
    /** `console.log`'s formatting of `args`, as one line. */
    export function format(args: unknown[]): string;
    /** A value as log text. */
    export function inspect(value: unknown): string;
  }

  // ----- the same classes at the top level --------------------------------------

  export import LlmError = llm.LlmError;
  export import ModelNotAllowed = llm.ModelNotAllowed;
  export import BudgetExhausted = llm.BudgetExhausted;
  export import RateLimited = llm.RateLimited;
  export import InvalidRequest = llm.InvalidRequest;
  export import ProviderError = llm.ProviderError;
  export import LlmTimeout = llm.LlmTimeout;
  export import Message = llm.Message;
  export import Tool = llm.Tool;
  export import ToolCall = llm.ToolCall;
  export import KvError = kv.KvError;
  export import Bucket = kv.Bucket;
  export import HttpError = http.HttpError;
}
