// `sdk-tour`: calls every function of the JavaScript SDK once, error paths
// included, and returns what each gave as a JSON report. Input:
// `{"web": "http://127.0.0.1:PORT"}` (the mock LLM's origin, which serves
// `/docs/wasm`), or `{"fail": "agent" | "exception" | "output" | "string"}`
// to end the run in each of the ways a run can fail.

import {
  agent,
  AgentError,
  BudgetExhausted,
  HttpError,
  LlmError,
  Message,
  Tool,
  config,
  context,
  http,
  kv,
  llm,
  log,
} from 'warden';

/** `fn()`'s value, or the error it threw as `Name: message`. */
async function attempt(fn) {
  try {
    return await fn();
  } catch (e) {
    return `${e.name}: ${e.message}`;
  }
}

async function tourContext() {
  const r = await context.remaining();
  return {
    run_id_len: (await context.runId()).length,
    attempt: await context.attempt(),
    remaining: { tokens: r.tokens, cost_usd: r.costUsd, time_ms_positive: r.timeMs > 0 },
  };
}

async function tourConfig() {
  return {
    greeting: await config.get('greeting'),
    missing: await config.get('missing'),
    all: await config.getAll(),
  };
}

function tourLog() {
  log.trace('trace line');
  log.debug('debug line');
  log.info('info line');
  log.warn('warn line');
  log.error('error line');
  log.info('formatted: %s has %d items', 'cart', 3, { more: [1, 2] });
  console.log('console.log goes to the log at level info');
  console.warn('console.warn at level warn');
  console.error('console.error at level error');
  console.debug('console.debug at level debug');
  log.stderr('log.stderr goes to stderr');
  return 'see logs';
}

async function tourKv() {
  const out = {};
  const b = await kv.Bucket.open(); // "default"
  out.get_missing = await b.get('nope');
  out.get_text_missing = await b.getText('nope');
  out.get_json_missing = await b.getJson('nope');
  out.exists_missing = await b.exists('nope');
  await b.set('bytes', new Uint8Array([0xff, 0x00]));
  await b.set('text', 'héllo');
  await b.setJson('json', { a: [1, 2] });
  out.get_bytes = Array.from(await b.get('bytes'));
  out.get_text = await b.getText('text');
  out.get_json = await b.getJson('json');
  out.get_json_not_json = await attempt(() => b.getJson('text'));
  out.get_text_not_utf8 = await attempt(() => b.getText('bytes'));
  out.exists = await b.exists('text');
  out.increment = [await b.increment('n'), await b.increment('n', 5)];
  out.increment_negative = await attempt(() => b.increment('n', -1));
  out.cas_absent = await b.compareAndSwap('cas', null, new TextEncoder().encode('v1'));
  out.cas_stale = await b.compareAndSwap('cas', 'v0', 'v2');
  out.cas_current = await b.compareAndSwap('cas', 'v1', 'v2');
  out.cas_value = await b.getText('cas');
  out.keys = await b.keys();
  for (const key of await b.keys()) await b.delete(key);
  out.keys_after_delete = await b.keys();
  await b.delete('never-there');
  b.close();
  const other = await kv.open('other');
  await other.set('k', 'v');
  out.other_bucket_keys = await other.keys();
  await other.delete('k');
  other.close();
  return out;
}

async function tourHttp(web) {
  const page = await http.get(`${web}/docs/wasm`);
  const posted = await http.post(`${web}/v1/embeddings`, { model: 'm', input: ['abc'] });
  const raw = await http.post(`${web}/v1/embeddings`, '{"input":["abcd"]}', {
    headers: { 'content-type': 'application/json' },
  });
  const missing = await http.request(`${web}/nope`, { headers: [['accept', 'text/plain']] });

  async function denied() {
    try {
      await http.get('https://example.com/');
    } catch (e) {
      if (e instanceof HttpError) return { denied: e.denied, message: e.message };
      throw e;
    }
  }

  return {
    get: {
      status: page.status,
      text: page.text().slice(0, 40),
      content_type: page.header('Content-Type'),
    },
    post_json: { status: posted.status, dims: posted.json().data[0].embedding.length },
    post_text: { status: raw.status, dims: raw.json().data[0].embedding.length },
    request_404: { status: missing.status, body: missing.text() },
    json_of_text: await attempt(() => page.json()),
    denied: await denied(),
    bad_url: await attempt(() => http.get('ftp://example.com/')),
    bad_header: await attempt(() => http.get(`${web}/docs/wasm`, { headers: { 'bad name': 'x' } })),
    headers_are_pairs: page.headers.every(
      ([k, v]) => typeof k === 'string' && typeof v === 'string',
    ),
  };
}

async function tourLlm() {
  const plain = await llm.chat(
    [Message.system('Be brief.'), { role: 'user', content: 'What is WebAssembly, in short?' }],
    { model: 'tour-model', maxTokens: 30, temperature: 0.2, jsonOutput: true },
  );
  const tools = [
    new Tool('fetch_url', 'Fetch a page.', {
      type: 'object',
      properties: { url: { type: 'string' } },
    }),
  ];
  const asked = await llm.chat([Message.user('Read http://example.com/a please')], { tools });
  const call = asked.toolCalls[0];
  const followup = await llm.chat(
    [
      Message.user('Read http://example.com/a please'),
      asked.message(),
      Message.toolResult(call.id, 'a page'),
    ],
    { tools },
  );
  const vectors = await llm.embed(['one', 'three'], { model: 'tour-embed' });

  async function notAllowed() {
    try {
      await llm.chat([Message.user('hi')], { model: 'forbidden-model' });
    } catch (e) {
      if (!(e instanceof llm.ModelNotAllowed)) throw e;
      return { is_llm_error: e instanceof LlmError, message: e.message, model: e.model };
    }
  }

  async function exhaust() {
    for (let n = 1; n < 50; n++) {
      try {
        await llm.chat([Message.user('spend tokens '.repeat(20))], { model: 'tour-model' });
      } catch (e) {
        if (!(e instanceof BudgetExhausted)) throw e;
        return { after_calls: n, message: e.message, tokens_left: (await context.remaining()).tokens };
      }
    }
    return 'never exhausted';
  }

  return {
    plain: {
      content: plain.content,
      finish_reason: plain.finishReason,
      usage: { prompt_tokens: plain.usage.promptTokens, completion_tokens: plain.usage.completionTokens },
      model: plain.model,
      tool_calls: plain.toolCalls,
    },
    tool_call: { name: call.name, args: call.args(), finish_reason: asked.finishReason },
    after_tool: { content: followup.content, tool_calls: followup.toolCalls.length },
    embed: { count: vectors.length, dims: vectors[0].length },
    model_not_allowed: await notAllowed(),
    embed_not_allowed: await attempt(() => llm.embed(['x'], { model: 'forbidden-model' })),
    // @ts-expect-error: the option is maxTokens; the SDK says so at run time too
    bad_option: await attempt(() => llm.chat([Message.user('hi')], { max_tokens: 5 })),
    budget_exhausted: await exhaust(),
  };
}

export default agent(async (input) => {
  const fail = input?.fail;
  if (fail === 'agent') throw new AgentError('the agent gave up');
  // @ts-expect-error: a TypeError on purpose
  if (fail === 'exception') return { x: null.y };
  if (fail === 'output') return { x: 10n ** 30n };
  if (fail === 'string') throw 'a thrown string';
  if (fail === 'timer') {
    // The event loop runs while the agent awaits: timers fire.
    const t0 = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 50));
    return { waited_ms_at_least_50: Date.now() - t0 >= 50 };
  }
  if (fail === 'never') return new Promise(() => {});
  const web = input?.web ?? 'http://127.0.0.1:8080';
  return {
    context: await tourContext(),
    config: await tourConfig(),
    log: tourLog(),
    kv: await tourKv(),
    http: await tourHttp(web),
    llm: await tourLlm(),
  };
});
