// The HTTP API client: JSON calls with the signed-in token, problem
// documents as errors, and Server-Sent Events read through fetch (an
// EventSource cannot send an Authorization header).

let token = null;
let onUnauthorized = () => {};

/** The token to send from now on (null: none) and what to do on a 401. */
export function configure({ bearer, unauthorized }) {
  token = bearer || null;
  if (unauthorized) onUnauthorized = unauthorized;
}

/** An error answer: the problem document's fields, or a network failure. */
class ApiError extends Error {
  constructor(status, problem = {}) {
    super(problem.detail || problem.title || (status ? `HTTP ${status}` : 'Network error'));
    this.name = 'ApiError';
    this.status = status;
    this.code = problem.code || '';
    this.title = problem.title || '';
    this.detail = problem.detail || this.message;
  }
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

function headersFor(bearer, extra) {
  const headers = { Accept: 'application/json', ...extra };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  return headers;
}

async function problemOf(res) {
  try {
    const text = await res.text();
    const doc = JSON.parse(text);
    if (doc && typeof doc === 'object') return doc;
  } catch { /* not a problem document */ }
  return { title: res.statusText, detail: `${res.status} ${res.statusText || 'error'} from ${new URL(res.url).pathname}` };
}

async function send(method, path, { query, body, json, signal, bearer = token, quiet401 = false, headers } = {}) {
  const init = { method, signal, cache: 'no-store', headers: headersFor(bearer, headers) };
  if (body !== undefined || json !== undefined) {
    // `json`: a body already written as JSON text (to pass numbers as typed).
    init.body = json !== undefined ? json : JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(url(path, query), init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { detail: 'Cannot reach the control plane. Check that it is running and that this page is served by it.' });
  }
  if (!res.ok) {
    const err = new ApiError(res.status, await problemOf(res));
    if (res.status === 401 && !quiet401) onUnauthorized(err);
    throw err;
  }
  return res;
}

/** A JSON call: resolves with the answer's document. */
export async function call(method, path, opts) {
  const res = await send(method, path, opts);
  return res.status === 204 ? null : res.json();
}

export const get = (path, query, opts = {}) => call('GET', path, { ...opts, query });
export const post = (path, body, opts = {}) => call('POST', path, { ...opts, body });

/**
 * A GET whose integers keep every digit: one a float64 would round (past
 * 2^53) becomes a JSON.rawJSON of its text, which JSON.stringify writes back
 * as it was and jsonView shows as it is. (Browsers without JSON.rawJSON round it.)
 */
export async function getExact(path, opts = {}) {
  const res = await send('GET', path, opts);
  return JSON.parse(await res.text(), (key, value, context) =>
    (JSON.rawJSON && context?.source && !Number.isSafeInteger(value) && /^-?\d+$/.test(context.source)
      ? JSON.rawJSON(context.source) : value));
}

/**
 * The `key` items of a list paged by `next_cursor`, at most `maxPages`
 * pages of them: {items, complete} (complete: it got to the last page).
 */
export async function allPages(path, query, key, { signal, maxPages }) {
  const items = [];
  let cursor;
  for (let i = 0; i < maxPages; i += 1) {
    const page = await get(path, { ...query, cursor }, { signal });
    items.push(...page[key]);
    cursor = page.next_cursor;
    if (!cursor) return { items, complete: true };
  }
  return { items, complete: false };
}

/** Who `bearer` is (null: no token); a 401 rejects without signing out. */
export function whoami(bearer) {
  return call('GET', '/v1/whoami', { bearer, quiet401: true });
}

/**
 * Reads one Server-Sent Events response to its end, calling onOpen() once
 * it has answered with a stream and onEvent({event, data, id}) for each
 * event. Resolves when the server closes the stream; rejects with an
 * ApiError if it answers with an error, or on a network drop.
 */
async function readEvents(path, { query, lastEventId, signal, onOpen, onEvent }) {
  const headers = { Accept: 'text/event-stream' };
  if (lastEventId) headers['Last-Event-ID'] = lastEventId;
  const res = await send('GET', path, { query, signal, headers });
  const type = res.headers.get('content-type') || '';
  if (!type.startsWith('text/event-stream')) {
    res.body?.cancel().catch(() => {});
    throw new ApiError(res.status, { detail: `expected an event stream, got ${type || 'no content type'}` });
  }
  onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = sseParser(onEvent);
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        return;
      }
      parser.push(value);
    }
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { detail: 'The event stream was cut off.' });
  } finally {
    // Left early (onEvent threw, a drop): close the response, or it keeps
    // the server's stream open.
    if (!finished) reader.cancel().catch(() => {});
  }
}

/**
 * The event-stream format (HTML Living Standard, "Parsing an event
 * stream"): fields `event`, `data` (lines joined with \n), `id`; lines
 * starting with ':' are comments (keep-alives); a blank line dispatches.
 */
function sseParser(onEvent) {
  let buffer = '';
  let event = '';
  let data = [];
  let id = null;
  const line = (text) => {
    if (text === '') {
      if (data.length) onEvent({ event: event || 'message', data: data.join('\n'), id });
      event = '';
      data = [];
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) id = value;
  };
  return {
    push(chunk) {
      buffer += chunk;
      let m;
      while ((m = /\r\n|\n|\r/.exec(buffer))) {
        // A lone \r at the end may be half of a \r\n: wait for more.
        if (m[0] === '\r' && m.index === buffer.length - 1) break;
        line(buffer.slice(0, m.index));
        buffer = buffer.slice(m.index + m[0].length);
      }
    },
  };
}

/**
 * Follows an event stream across drops: reconnects (1 s, doubling to 15 s)
 * sending the last event id seen, until an `end` event, a refusal (4xx other
 * than 429), or `signal` aborts. onStatus gets 'live' (once the server
 * answers with a stream) | 'reconnecting' | 'ended' | 'failed' (with the
 * error: a refusal, or the `problem` event the server sent before `end`).
 */
export async function follow(path, { query, signal, onEvent, onStatus = () => {} }) {
  let lastEventId = null;
  let delay = 1000;
  while (!signal.aborted) {
    let ended = false;
    let problem = null;
    try {
      await readEvents(path, {
        query,
        signal,
        lastEventId,
        onOpen: () => onStatus('live'),
        onEvent(ev) {
          if (ev.id) lastEventId = ev.id;
          if (ev.event === 'end') ended = true;
          else if (ev.event === 'problem') {
            const doc = JSON.parse(ev.data);
            problem = new ApiError(doc.status, doc);
          } else onEvent(ev);
          delay = 1000;
        },
      });
    } catch (e) {
      if (signal.aborted || e.name === 'AbortError') return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 429) {
        onStatus('failed', e);
        return;
      }
    }
    if (ended) {
      onStatus(problem ? 'failed' : 'ended', problem);
      return;
    }
    onStatus('reconnecting');
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 15000);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done);
  });
}
