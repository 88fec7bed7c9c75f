// DOM building and formatting helpers shared by every page.
//
// Nothing here touches innerHTML: every piece of text from the API goes in
// through textContent, so a run's output or a log line cannot inject markup.
// No element gets a `style` attribute (the console's CSP forbids it): looks
// come from classes, and chart geometry from SVG attributes.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Appends children (nodes, strings, numbers, arrays; null/false skipped). */
function append(parent, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
  return parent;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    // Never an inline handler: `onclick: someText` is a bug, not markup to set.
    else if (key.startsWith('on') && typeof value !== 'function') throw new TypeError(`${key} must be a function`);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'value' || key === 'checked' || key === 'selected' || key === 'disabled') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/runs', class: 'link'}, 'Runs'). */
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

/** An SVG element, with its geometry as attributes. */
export function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// ---- numbers, sizes, durations, times ------------------------------------

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export function fmtInt(n) {
  return n == null || Number.isNaN(n) ? '—' : integer.format(n);
}

/** 1234 → "1.2k", for axis ticks and tight spots. */
export function fmtCompact(n) {
  const a = Math.abs(n);
  if (a >= 1e9) return `${trim(n / 1e9)}G`;
  if (a >= 1e6) return `${trim(n / 1e6)}M`;
  if (a >= 1e3) return `${trim(n / 1e3)}k`;
  return trim(n);
}

function trim(n) {
  return String(Number(n.toFixed(Math.abs(n) < 10 ? 1 : 0)));
}

/** US dollars: cents from a dollar up, four places below (LLM calls cost fractions of a cent). */
export function fmtUsd(n) {
  if (n == null || Number.isNaN(n)) return '—';
  if (n === 0) return '$0.00';
  if (Math.abs(n) < 0.0001) return n > 0 ? '<$0.0001' : '>-$0.0001';
  const digits = Math.abs(n) >= 1 ? 2 : 4;
  return new Intl.NumberFormat(undefined, {
    style: 'currency', currency: 'USD', minimumFractionDigits: digits, maximumFractionDigits: digits,
  }).format(n);
}

export function fmtBytes(n) {
  if (n == null) return '—';
  if (n < 1024) return `${fmtInt(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** 0.4 → "0.4 ms", 850 → "850 ms", 3200 → "3.2 s", 125000 → "2 min 5 s". */
export function fmtDuration(ms) {
  if (ms == null || Number.isNaN(ms) || ms < 0) return '—';
  if (ms < 0.95) return `${ms.toFixed(1)} ms`;
  if (ms < 999.5) return `${Math.round(ms)} ms`;
  if (ms < 9950) return `${(ms / 1000).toFixed(1)} s`;
  // Whole seconds first, so 59.6 s is "1 min", not "60 s".
  const secs = Math.round(ms / 1000);
  if (secs < 60) return `${secs} s`;
  const min = Math.floor(secs / 60);
  if (min < 60) {
    const sec = secs % 60;
    return sec && min < 10 ? `${min} min ${sec} s` : `${min} min`;
  }
  const hours = Math.floor(min / 60);
  if (hours < 48) return min % 60 ? `${hours} h ${min % 60} min` : `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function fmtAgo(unixMs, now = Date.now()) {
  if (!unixMs) return '—';
  const ms = now - unixMs;
  if (ms < 1500) return 'just now';
  if (ms < 60_000) return `${Math.round(ms / 1000)} s ago`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ago`;
  if (ms < 172_800_000) return `${Math.floor(ms / 3_600_000)} h ago`;
  return `${Math.floor(ms / 86_400_000)} d ago`;
}

const absolute = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

export function fmtTime(unixMs) {
  return unixMs ? absolute.format(new Date(unixMs)) : '—';
}

/** HH:MM:SS.mmm in local time, for log lines (slice(0, 5) for HH:MM). */
export function fmtClock(unixMs) {
  const d = new Date(unixMs);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A relative time with the absolute one on hover (`refreshTimes` keeps it current). */
export function timeAgo(unixMs) {
  return h('time', { datetime: unixMs ? new Date(unixMs).toISOString() : null, title: fmtTime(unixMs) }, fmtAgo(unixMs));
}

/** Sets an element's text, leaving it alone (and any selection in it) when it is already that. */
export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

/** Brings every `timeAgo` under `root` up to now. */
export function refreshTimes(root) {
  for (const el of root.querySelectorAll('time[datetime]')) setText(el, fmtAgo(Date.parse(el.dateTime)));
}

// ---- runs -----------------------------------------------------------------

export const RUN_STATES = ['queued', 'leased', 'running', 'succeeded', 'failed', 'dead_lettered', 'cancelled'];
const ENDED = new Set(['succeeded', 'failed', 'dead_lettered', 'cancelled']);

export function isEnded(run) {
  return ENDED.has(run?.state);
}

export function stateLabel(state) {
  return state ? state.replace('_', ' ') : 'unknown';
}

/** A coloured state badge; live states get a pulsing dot. */
export function badge(state) {
  const live = state === 'running' || state === 'leased' || state === 'queued';
  return h('span', { class: ['badge', `badge-${state || 'unknown'}`], 'data-state': state || 'unknown' },
    live ? h('span', { class: 'badge-dot', 'aria-hidden': 'true' }) : null,
    stateLabel(state));
}

export function shortId(id) {
  return id && id.length > 12 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id || '';
}

export function shortDigest(digest) {
  if (!digest) return '—';
  const [algo, hex] = digest.includes(':') ? digest.split(':', 2) : ['', digest];
  return `${algo ? `${algo}:` : ''}${hex.slice(0, 12)}`;
}

export function totalTokens(usage) {
  return (usage?.prompt_tokens || 0) + (usage?.completion_tokens || 0);
}

/** How long a run has taken: to its last change once ended, else to now. */
export function runDuration(run, now = Date.now()) {
  if (!run.created_unix_ms) return null;
  return (isEnded(run) ? run.updated_unix_ms : now) - run.created_unix_ms;
}

/** Whether the signed-in role may submit and cancel runs (viewers may not). */
export function maySubmit(who) {
  return who?.role !== 'viewer';
}

export function agentName(ref) {
  return (ref || '').split('@')[0];
}

// ---- small building blocks ------------------------------------------------

export function chips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return h('span', { class: 'muted' }, '—');
  return h('span', { class: 'chips' }, entries.map(([k, v]) => h('span', { class: 'chip', title: `${k}=${v}` },
    h('span', { class: 'chip-key' }, k), h('span', { class: 'chip-value' }, v))));
}

export function emptyState(title, detail, action) {
  return h('div', { class: 'empty' }, h('div', { class: 'empty-title' }, title),
    detail ? h('div', { class: 'empty-detail' }, detail) : null, action || null);
}

export function spinner(text = 'Loading…') {
  return h('div', { class: 'loading', role: 'status' }, h('span', { class: 'spin', 'aria-hidden': 'true' }), text);
}

/** A page's heading row: title, optional subtitle and actions on the right. */
export function pageHeader(title, subtitle, ...actions) {
  return h('div', { class: 'page-header' },
    h('div', {}, h('h1', {}, title), subtitle ? h('p', { class: 'subtitle' }, subtitle) : null),
    h('div', { class: 'actions' }, actions));
}

export function card(title, body, opts = {}) {
  return h('section', { class: ['card', opts.class], id: opts.id },
    title ? h('header', { class: 'card-header' }, h('h2', {}, title), opts.aside || null) : null,
    h('div', { class: ['card-body', opts.flush ? 'flush' : null] }, body));
}

/** A button that copies `text`, saying so for a moment. */
export function copyButton(text, label = 'Copy') {
  const btn = h('button', { type: 'button', class: 'btn btn-ghost btn-xs', title: 'Copy to clipboard' }, label);
  btn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      btn.textContent = 'Copied';
    } catch {
      btn.textContent = 'Copy failed';
    }
    setTimeout(() => { btn.textContent = label; }, 1200);
  });
  return btn;
}

const synced = new WeakMap(); // a row syncRows made → [its item's id, key]

/**
 * Makes `tbody` show a row per item, in order. A row whose item's `key`
 * (default: its JSON) is unchanged is kept, with any focus or selection in
 * it, and given to `refresh` for its text that changes with time; others
 * are made anew by `build`.
 */
export function syncRows(tbody, items, { id, key = JSON.stringify, build, refresh }) {
  const old = new Map([...tbody.rows].map((tr) => [synced.get(tr)?.[0], tr]));
  const rows = items.map((item) => {
    const k = key(item);
    let tr = old.get(id(item));
    if (tr && synced.get(tr)[1] === k) refresh?.(tr, item);
    else {
      tr = build(item);
      synced.set(tr, [id(item), k]);
    }
    return tr;
  });
  const keep = new Set(rows);
  for (const tr of [...tbody.rows]) if (!keep.has(tr)) tr.remove();
  rows.forEach((tr, i) => { if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null); });
}

/** A definition list from [label, value, 'wide'?] (null values are skipped). */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter((p) => p && p[1] != null).map(([k, v, wide]) =>
    h('div', { class: ['fact', wide ? 'fact-wide' : null] }, h('dt', {}, k), h('dd', {}, v))));
}

/** A stat tile: big number, small label, optional note. */
export function stat(label, value, note) {
  return h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value' }, value), note ? h('div', { class: 'stat-note' }, note) : null);
}

// ---- JSON -----------------------------------------------------------------

/** Pretty-printed JSON with classes for keys, strings, numbers and literals. */
export function jsonView(value) {
  const pre = h('pre', { class: 'json' });
  const out = [];
  const tok = (cls, text) => out.push(h('span', { class: cls }, text));
  const walk = (v, indent) => {
    const pad = '  '.repeat(indent + 1);
    const end = '  '.repeat(indent);
    if (v === null) tok('j-null', 'null');
    else if (typeof v === 'string') tok('j-str', JSON.stringify(v));
    else if (typeof v === 'number') tok('j-num', String(v));
    else if (JSON.isRawJSON?.(v)) tok('j-num', v.rawJSON); // a number kept as written (api.getExact)
    else if (typeof v === 'boolean') tok('j-bool', String(v));
    else if (Array.isArray(v)) {
      if (!v.length) { out.push('[]'); return; }
      out.push('[\n');
      v.forEach((item, i) => {
        out.push(pad);
        walk(item, indent + 1);
        out.push(i < v.length - 1 ? ',\n' : '\n');
      });
      out.push(`${end}]`);
    } else {
      const keys = Object.keys(v);
      if (!keys.length) { out.push('{}'); return; }
      out.push('{\n');
      keys.forEach((k, i) => {
        out.push(pad);
        tok('j-key', JSON.stringify(k));
        out.push(': ');
        walk(v[k], indent + 1);
        out.push(i < keys.length - 1 ? ',\n' : '\n');
      });
      out.push(`${end}}`);
    }
  };
  walk(value === undefined ? null : value, 0);
  return append(pre, out);
}
