// Chat and embeddings with the LLM the host provides, metered against the
// run's token and cost budget. The host holds the provider's endpoint and
// key; the agent names a model (or takes the host's default).

import * as wit from 'warden:agent/llm';
import {
  BudgetExhausted,
  InvalidRequest,
  LlmError,
  LlmTimeout,
  ModelNotAllowed,
  ProviderError,
  RateLimited,
} from './errors.js';
import { needRun, payload, typeName } from './runtime.js';

export {
  BudgetExhausted,
  InvalidRequest,
  LlmError,
  LlmTimeout,
  ModelNotAllowed,
  ProviderError,
  RateLimited,
};

const ROLES = new Set(['system', 'user', 'assistant', 'tool']);

/** A tool call the model asked for. */
export class ToolCall {
  constructor(id, name, args) {
    this.id = id;
    this.name = name;
    /** JSON text of the arguments, as the model produced it. */
    this.arguments = args;
  }

  /**
   * The arguments parsed: an object, empty when they are not a JSON object
   * (models do send broken arguments).
   */
  args() {
    try {
      const value = JSON.parse(this.arguments);
      return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
    } catch {
      return {};
    }
  }
}

/**
 * One turn of the conversation. Plain objects with the same keys work as
 * well (`tool_call_id` and `tool_calls` too).
 */
export class Message {
  constructor(role, content, { toolCallId = null, toolCalls = [] } = {}) {
    /** `system`, `user`, `assistant` or `tool`. */
    this.role = role;
    this.content = content;
    /** For `tool` messages: the id of the call this answers. */
    this.toolCallId = toolCallId;
    /** For `assistant` messages: the calls the model made. */
    this.toolCalls = toolCalls;
  }

  static system(content) {
    return new Message('system', content);
  }

  static user(content) {
    return new Message('user', content);
  }

  /**
   * An assistant turn; with `toolCalls`, the turn that asked for them (send
   * it back before the tool results).
   */
  static assistant(content, toolCalls = []) {
    return new Message('assistant', content, { toolCalls: [...toolCalls] });
  }

  /** The result of the tool call `callId`. */
  static toolResult(callId, content) {
    return new Message('tool', content, { toolCallId: callId });
  }
}

/** A function the model may call; `parameters` is a JSON Schema (an object or JSON text). */
export class Tool {
  constructor(name, description, parameters) {
    this.name = name;
    this.description = description;
    this.parameters = parameters;
  }
}

/** One chat completion's answer. */
export class ChatResponse {
  constructor(content, toolCalls, finishReason, usage, model) {
    this.content = content;
    /** @type {ToolCall[]} */
    this.toolCalls = toolCalls;
    /** `stop`, `length`, `tool_calls`, `content_filter` or `other`. */
    this.finishReason = finishReason;
    /** `{promptTokens, completionTokens}`. */
    this.usage = usage;
    this.model = model;
  }

  /** This answer as the assistant turn to append to the conversation. */
  message() {
    return Message.assistant(this.content, this.toolCalls);
  }
}

const CHAT_OPTIONS = {
  model: 'model',
  tools: 'tools',
  maxTokens: 'maxTokens',
  temperature: 'temperature',
  jsonOutput: 'jsonOutput',
};
const SNAKE = { max_tokens: 'maxTokens', json_output: 'jsonOutput' };

function checkOptions(options, known, fn) {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`${fn}: options must be an object`);
  }
  for (const key of Object.keys(options)) {
    if (!(key in known)) {
      const hint = SNAKE[key] ? ` (did you mean ${SNAKE[key]}?)` : '';
      throw new TypeError(`${fn}: unknown option ${key}${hint}`);
    }
  }
}

/**
 * One chat completion.
 *
 * `model` left out takes the host's default; `maxTokens` is clamped by the
 * host to what is left of the budget; `jsonOutput: true` asks for a JSON
 * object. Rejects with a subclass of LlmError.
 */
export async function chat(messages, options = {}) {
  needRun('llm.chat()');
  checkOptions(options, CHAT_OPTIONS, 'llm.chat');
  const { model = null, tools = [], maxTokens = null, temperature = null, jsonOutput = false } = options;
  if (!messages || typeof messages[Symbol.iterator] !== 'function') {
    throw new TypeError('llm.chat: messages must be an array of messages');
  }
  const req = {
    model: model ?? undefined,
    messages: Array.from(messages, toWitMessage),
    tools: Array.from(tools ?? [], toWitTool),
    maxTokens: maxTokens ?? undefined,
    temperature: temperature ?? undefined,
    jsonOutput: Boolean(jsonOutput),
  };
  let reply;
  try {
    reply = wit.chat(req);
  } catch (e) {
    throw llmError(payload(e));
  }
  return new ChatResponse(
    reply.content,
    reply.toolCalls.map((c) => new ToolCall(c.id, c.name, c.arguments)),
    reply.finishReason.replace(/-/g, '_'),
    { promptTokens: reply.usage.promptTokens, completionTokens: reply.usage.completionTokens },
    reply.model,
  );
}

/**
 * Embeddings of `inputs`, one vector (an array of numbers) each. Rejects
 * with LlmError.
 */
export async function embed(inputs, options = {}) {
  needRun('llm.embed()');
  checkOptions(options, { model: 'model' }, 'llm.embed');
  const list = Array.from(inputs ?? []);
  for (const s of list) {
    if (typeof s !== 'string') throw new TypeError(`llm.embed: inputs must be strings, not ${typeName(s)}`);
  }
  let vectors;
  try {
    vectors = wit.embed(options.model ?? undefined, list);
  } catch (e) {
    throw llmError(payload(e));
  }
  return vectors.map((v) => Array.from(v));
}

function toWitMessage(m) {
  if (m === null || typeof m !== 'object') {
    throw new TypeError(`a message must be an object like {role, content}, not ${typeName(m)}`);
  }
  const role = m.role;
  if (!ROLES.has(role)) throw new TypeError(`unknown message role ${JSON.stringify(role)}`);
  const content = m.content ?? '';
  if (typeof content !== 'string') throw new TypeError('a message content must be a string');
  const callId = m.toolCallId ?? m.tool_call_id ?? undefined;
  const calls = m.toolCalls ?? m.tool_calls ?? [];
  return {
    role,
    content,
    toolCallId: callId === null ? undefined : callId,
    toolCalls: Array.from(calls, toWitToolCall),
  };
}

function toWitToolCall(c) {
  const args = c.arguments ?? '{}';
  return {
    id: c.id,
    name: c.name,
    arguments: typeof args === 'string' ? args : JSON.stringify(args),
  };
}

function toWitTool(t) {
  if (t === null || typeof t !== 'object') throw new TypeError('a tool must be an object like {name, description, parameters}');
  const params = t.parameters ?? t.parametersJsonSchema ?? { type: 'object', properties: {} };
  return {
    name: t.name,
    description: t.description ?? '',
    parametersJsonSchema: typeof params === 'string' ? params : JSON.stringify(params),
  };
}

function llmError(e) {
  switch (e && e.tag) {
    case 'model-not-allowed':
      return new ModelNotAllowed(e.val);
    case 'budget-exhausted':
      return new BudgetExhausted();
    case 'rate-limited':
      return new RateLimited();
    case 'invalid-request':
      return new InvalidRequest(e.val);
    case 'provider':
      return new ProviderError(e.val);
    case 'timeout':
      return new LlmTimeout();
    default:
      return new LlmError(String(e && e.tag));
  }
}
