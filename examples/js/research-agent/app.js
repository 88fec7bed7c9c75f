// `research-agent`, in JavaScript: a real tool-calling loop. The LLM
// chooses tools — `fetch_url` (HTTP GET of an allowed URL) and `save_note` /
// `read_notes` (notes in the agent's key-value namespace) — until it
// answers. When the token budget runs out it stops cleanly and returns what
// it has, marked `"stopped": "budget_exhausted"`.
//
//     warden run research_agent.wasm --allow-model gpt-4o-mini --max-tokens 20000 \
//         --allow-http 'https://*.wikipedia.org' \
//         --input '{"question":"What is WASI? Start at https://en.wikipedia.org/wiki/WebAssembly"}'

import { agent, AgentError, HttpError, KvError, context, http, kv, llm, log } from 'warden';
import { Message, Tool } from 'warden';

// Longest page text handed back to the model (in characters, not UTF-16 units).
const MAX_PAGE_CHARS = 4000;

const TOOLS = [
  new Tool('fetch_url', 'Fetch a web page (HTTP GET) and return the start of its text.', {
    type: 'object',
    properties: { url: { type: 'string' } },
    required: ['url'],
  }),
  new Tool('save_note', 'Save a short note under a key, to remember a finding.', {
    type: 'object',
    properties: { key: { type: 'string' }, text: { type: 'string' } },
    required: ['key', 'text'],
  }),
  new Tool('read_notes', 'Read every note saved so far.', { type: 'object', properties: {} }),
];

/**
 * Runs one tool call; its result (or error) as text for the model.
 * @param {import('warden').ToolCall} call
 * @param {import('warden').Bucket} notes
 * @returns {Promise<string>}
 */
async function callTool(call, notes) {
  const args = call.args();
  try {
    switch (call.name) {
      case 'fetch_url': {
        if (typeof args.url !== 'string') return 'error: fetch_url needs a url';
        const r = await http.get(args.url);
        const text = Array.from(r.text()).slice(0, MAX_PAGE_CHARS).join('');
        return `HTTP ${r.status}\n${text}`;
      }
      case 'save_note': {
        if (typeof args.key !== 'string' || typeof args.text !== 'string') {
          return 'error: save_note needs key and text';
        }
        await notes.set(args.key, args.text);
        return `saved note ${args.key}`;
      }
      case 'read_notes':
        return (await readNotes(notes)).join('\n');
      default:
        return `error: no tool named ${call.name}`;
    }
  } catch (e) {
    if (e instanceof HttpError || e instanceof KvError) return `error: ${e.message}`;
    throw e;
  }
}

/**
 * Every note, as `key: text`.
 * @param {import('warden').Bucket} notes
 * @returns {Promise<string[]>}
 */
async function readNotes(notes) {
  const out = [];
  for (const key of await notes.keys()) {
    const value = await notes.get(key);
    if (value !== null) out.push(`${key}: ${new TextDecoder().decode(value)}`);
  }
  return out;
}

export default agent(async (input) => {
  if (input === null || typeof input !== 'object' || typeof input.question !== 'string') {
    throw new AgentError('invalid input: missing field `question`');
  }
  const maxSteps = 'max_steps' in input ? input.max_steps : 8;
  const model = input.model ?? null;
  if (!Number.isInteger(maxSteps) || maxSteps < 0) {
    throw new AgentError('invalid input: `max_steps` must be a whole number');
  }
  if (model !== null && typeof model !== 'string') {
    throw new AgentError('invalid input: `model` must be a string');
  }

  const notes = await kv.Bucket.open(`notes-${await context.runId()}`);
  const messages = [
    Message.system(
      'You are a careful research agent. Use the tools to fetch sources and keep notes, ' +
        'then answer the question concisely, citing what you fetched.',
    ),
    Message.user(input.question),
  ];
  /** @type {{answer: string, stopped: string, steps: number, tools_used: string[], notes: string[]}} */
  const out = { answer: '', stopped: 'max_steps', steps: 0, tools_used: [], notes: [] };
  while (out.steps < maxSteps) {
    out.steps += 1;
    let reply;
    try {
      reply = await llm.chat(messages, { model, tools: TOOLS, maxTokens: 800 });
    } catch (e) {
      if (!(e instanceof llm.BudgetExhausted)) throw e;
      log.warn('token budget exhausted; stopping with what we have');
      out.stopped = 'budget_exhausted';
      break;
    }
    if (reply.toolCalls.length === 0) {
      out.answer = reply.content;
      out.stopped = 'answered';
      break;
    }
    messages.push(reply.message());
    for (const call of reply.toolCalls) {
      log.info(`tool ${call.name} ${call.arguments}`);
      out.tools_used.push(call.name);
      messages.push(Message.toolResult(call.id, await callTool(call, notes)));
    }
  }
  out.notes = await readNotes(notes);
  if (!out.answer && out.notes.length > 0) {
    out.answer = `No final answer; notes so far: ${out.notes.join('; ')}`;
  }
  for (const key of await notes.keys()) await notes.delete(key);
  return out;
});
