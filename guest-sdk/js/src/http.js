// Outgoing HTTP over wasi:http. The host decides which hosts the run may
// reach (`--allow-http`); a refused request rejects with HttpError, its
// `denied` set. Redirects are not followed: a 3xx comes back as a Response,
// and following it (a new request, checked by the host again) is up to you.

import { handle } from 'wasi:http/outgoing-handler';
import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingRequest,
  httpErrorCode,
} from 'wasi:http/types';
import { HttpError } from './errors.js';
import { dispose, needRun, payload, toBytes, toJson } from './runtime.js';

export { HttpError };

/** A complete response. */
export class Response {
  constructor(status, headers, body) {
    /** The status code. */
    this.status = status;
    /** `[name, value]` pairs, in order (values as text, invalid UTF-8 replaced). */
    this.headers = headers;
    /** The body's bytes. */
    this.body = body;
  }

  /** Whether the status is 2xx. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** The body as text (invalid UTF-8 replaced). */
  text() {
    return new TextDecoder().decode(this.body);
  }

  /** The body decoded from JSON; throws HttpError if it is not JSON. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new HttpError(`response body is not the expected JSON: ${e && e.message}`);
    }
  }

  /** The first value of header `name` (case-insensitive), or `null`. */
  header(name) {
    const lower = String(name).toLowerCase();
    const found = this.headers.find(([k]) => k.toLowerCase() === lower);
    return found ? found[1] : null;
  }
}

/** `GET url`. */
export function get(url, { headers } = {}) {
  return request(url, { method: 'GET', headers });
}

/**
 * `POST url`. `body` as text or bytes is sent as is; any other value is
 * sent as JSON (with `content-type: application/json` unless `headers` sets
 * one).
 */
export function post(url, body, { headers } = {}) {
  if (isRaw(body)) return request(url, { method: 'POST', headers, body });
  const pairs = headerPairs(headers);
  if (!pairs.some(([k]) => k.toLowerCase() === 'content-type')) {
    pairs.push(['content-type', 'application/json']);
  }
  return request(url, { method: 'POST', headers: pairs, body: toJson(body) });
}

function isRaw(body) {
  return typeof body === 'string' || body instanceof ArrayBuffer || ArrayBuffer.isView(body);
}

const DESCRIBE = {
  'HTTP-request-denied': "denied: the URL is not on the run's HTTP allow-list",
  'connection-limit-reached': "denied: the run's HTTP request budget is spent",
  'destination-IP-prohibited':
    'denied: the destination resolves to an address agents may not reach ' +
    '(loopback, private, link-local or metadata)',
  'HTTP-response-body-size': "the run's HTTP response byte budget is spent",
  'DNS-timeout': 'the host name did not resolve in time',
  'DNS-error': 'the host name does not resolve',
  'destination-not-found': 'the host name does not resolve',
  'connection-refused': 'the server refused the connection',
  'connection-timeout': 'the connection timed out',
  'connection-terminated': 'the server closed the connection',
  'HTTP-response-timeout': 'the server did not answer in time',
  'TLS-certificate-error': "the server's TLS certificate is not valid for its name",
  'TLS-protocol-error': 'the TLS handshake with the server failed',
  'TLS-alert-received': 'the TLS handshake with the server failed',
  'HTTP-request-URI-invalid': 'the URL is not valid',
};

/** An error-code in words: `HTTP-response-incomplete` is "http response incomplete". */
export function describeErrorCode(code) {
  const tag = String(code && code.tag);
  if (tag === 'internal-error' && code.val) return `the host failed: ${code.val}`;
  return DESCRIBE[tag] ?? words(tag);
}

function words(tag) {
  return tag.replace(/-/g, ' ').toLowerCase();
}

/** Header pairs from an object, an array of pairs, or any iterable of pairs (a Headers). */
function headerPairs(headers) {
  if (headers == null) return [];
  if (typeof headers[Symbol.iterator] === 'function') {
    return Array.from(headers, ([k, v]) => [String(k), String(v)]);
  }
  if (typeof headers === 'object') {
    return Object.entries(headers).map(([k, v]) => [k, String(v)]);
  }
  throw new TypeError('headers must be an object or a list of [name, value] pairs');
}

function parseUrl(url) {
  const text = String(url);
  const sep = text.indexOf('://');
  const scheme = sep < 0 ? '' : text.slice(0, sep).toLowerCase();
  const rest = sep < 0 ? '' : text.slice(sep + 3);
  const cuts = [rest.indexOf('/'), rest.indexOf('?')].filter((i) => i >= 0);
  const split = cuts.length ? Math.min(...cuts) : rest.length;
  const authority = rest.slice(0, split);
  const path = rest.slice(split);
  if ((scheme !== 'http' && scheme !== 'https') || !authority) {
    throw new HttpError(`\`${text}\` is not an http(s) URL`);
  }
  return { scheme: { tag: scheme === 'http' ? 'HTTP' : 'HTTPS' }, authority, path: path || '/' };
}

const METHODS = {
  GET: 'get',
  HEAD: 'head',
  POST: 'post',
  PUT: 'put',
  DELETE: 'delete',
  CONNECT: 'connect',
  OPTIONS: 'options',
  TRACE: 'trace',
  PATCH: 'patch',
};

/**
 * Sends one request and reads the whole response: `request(url, {method,
 * headers, body})`, like `fetch`'s arguments. Rejects with HttpError when it
 * cannot be sent or is refused; an HTTP error status is a Response like any
 * other.
 */
export async function request(url, { method = 'GET', headers, body } = {}) {
  needRun('http.request()');
  const target = parseUrl(url);
  const upper = String(method).toUpperCase();
  const witMethod = METHODS[upper] ? { tag: METHODS[upper] } : { tag: 'other', val: upper };
  const data = body == null ? null : toBytes(body, 'a request body');
  const encoder = new TextEncoder();

  const fields = new Fields();
  for (const [k, v] of headerPairs(headers)) {
    try {
      fields.append(k, encoder.encode(v));
    } catch (e) {
      dispose(fields);
      const why = payload(e);
      throw new HttpError(`bad header ${k}: ${words(String(why && why.tag))}`);
    }
  }
  const req = new OutgoingRequest(fields);
  let what = 'method';
  try {
    req.setMethod(witMethod);
    what = 'scheme';
    req.setScheme(target.scheme);
    what = 'host';
    req.setAuthority(target.authority);
    what = 'path';
    req.setPathWithQuery(target.path);
  } catch (e) {
    dispose(req);
    payload(e);
    throw new HttpError(`invalid ${what}`);
  }
  const outBody = req.body();

  let pending;
  try {
    pending = handle(req, undefined);
  } catch (e) {
    dispose(outBody);
    throw new HttpError(describeErrorCode(payload(e)));
  }
  let result;
  try {
    if (data && data.length) {
      const stream = outBody.write();
      try {
        for (let i = 0; i < data.length; i += 4096) {
          try {
            stream.blockingWriteAndFlush(data.subarray(i, i + 4096));
          } catch (e) {
            const err = payload(e);
            throw new HttpError(`cannot send the body: ${streamError(err)}`);
          }
        }
      } finally {
        dispose(stream);
      }
    }
    try {
      OutgoingBody.finish(outBody, undefined);
    } catch (e) {
      throw new HttpError(describeErrorCode(payload(e)));
    }
    while ((result = pending.get()) === undefined) {
      const ready = pending.subscribe();
      ready.block();
      dispose(ready);
    }
  } finally {
    dispose(pending);
  }
  if (result.tag === 'err') throw new HttpError('the response was already taken');
  if (result.val.tag === 'err') throw new HttpError(describeErrorCode(result.val.val));

  const response = result.val.val;
  try {
    const status = response.status();
    const fieldsIn = response.headers();
    const decoder = new TextDecoder();
    const headersOut = fieldsIn.entries().map(([k, v]) => [k, decoder.decode(v)]);
    dispose(fieldsIn);
    const incoming = response.consume();
    const chunks = [];
    let size = 0;
    let finished = false;
    try {
      const stream = incoming.stream();
      try {
        for (;;) {
          let chunk;
          try {
            chunk = stream.blockingRead(65536n);
          } catch (e) {
            const err = payload(e);
            if (err && err.tag === 'closed') break;
            throw new HttpError(`reading the response failed: ${streamError(err)}`);
          }
          chunks.push(chunk);
          size += chunk.length;
        }
      } finally {
        dispose(stream);
      }
      dispose(IncomingBody.finish(incoming));
      finished = true;
    } finally {
      if (!finished) dispose(incoming);
    }
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      bytes.set(c, at);
      at += c.length;
    }
    return new Response(status, headersOut, bytes);
  } finally {
    dispose(response);
  }
}

/** A stream-error in words: the HTTP error code behind it, else the host's text. */
function streamError(err) {
  if (!err || err.tag !== 'last-operation-failed') return String(err && err.tag);
  const io = err.val;
  try {
    const code = httpErrorCode(io);
    return code ? describeErrorCode(code) : io.toDebugString();
  } finally {
    dispose(io);
  }
}
