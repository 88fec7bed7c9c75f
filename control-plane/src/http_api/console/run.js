// One run: its state (polled until it ends), what it was given and gave
// back, its attempts on a timeline, its usage, webhook deliveries, and its
// log followed live over Server-Sent Events.

import * as api from './api.js';
import { timeline } from './charts.js';
import {
  h, replace, badge, card, chips, copyButton, emptyState, facts, fmtAgo, fmtBytes, fmtClock, fmtDuration, fmtInt,
  fmtTime, fmtUsd, isEnded, jsonView, runDuration, shortDigest, shortId, spinner, stat, timeAgo, agentName, maySubmit,
  refreshTimes, setText, totalTokens,
} from './ui.js';

const POLL_MS = 2000;
const MAX_LOG_LINES = 5000;

export async function runPage(ctx, id) {
  ctx.title(`Run ${shortId(id)}`);
  const head = h('div', { class: 'run-head' });
  const callouts = h('div', { class: 'callouts' });
  const overview = h('div', {});
  const usage = h('div', {});
  const attempts = h('div', {});
  const io = h('div', { class: 'grid-2' });
  const webhook = h('div', {});
  const logs = logPanel(ctx, id);
  logs.element.hidden = true; // until the run is found
  const sections = [overview, usage, attempts, io, webhook];
  ctx.main.append(
    h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/runs' }, 'Runs'), h('span', {}, '/'),
      h('span', { class: 'mono' }, shortId(id))),
    head, callouts, ...sections, logs.element);
  replace(overview, spinner('Loading run…'));

  let run = null;
  const seen = new Map(); // section → what it last showed, to redraw only on change
  const update = (el, key, draw) => {
    if (seen.get(el) === key) return;
    seen.set(el, key);
    replace(el, draw());
  };

  const render = () => {
    // Redrawn only on change, so a poll does not reset a Cancel half confirmed.
    update(head, JSON.stringify([run.state, run.cancel_requested, run.agent]),
      () => header(ctx, run, (next) => { run = next; render(); }));
    tick();
    replace(callouts, ...callout(run));
    update(overview, JSON.stringify([run.state, run.updated_unix_ms, run.labels, run.trace_id]), () => overviewCard(run));
    update(usage, JSON.stringify([run.usage, isEnded(run)]), () => usageCard(run.usage, isEnded(run)));
    // The timeline grows with time while an attempt runs: redraw each poll.
    replace(attempts, attemptsCard(run));
    update(io, JSON.stringify([run.state, run.input, run.output]), () => [
      card('Input', jsonView(run.input), { aside: copyButton(JSON.stringify(run.input, null, 2)), class: 'json-card' }),
      outputCard(run),
    ]);
    update(webhook, JSON.stringify(run.webhook || null), () => webhookCard(run.webhook));
  };

  // Relative times ("5 s ago", "in 12 s") move on between polls, and after them.
  const tick = () => {
    if (!run) return;
    setText(head.querySelector('.elapsed'), elapsed(run));
    refreshTimes(ctx.main);
    for (const el of ctx.main.querySelectorAll('[data-until]')) setText(el, untilText(Number(el.dataset.until)));
  };
  ctx.every(1000, tick);

  ctx.every(POLL_MS, async () => {
    try {
      // Exact: the input and output may hold integers past 2^53.
      run = await api.getExact(`/v1/runs/${encodeURIComponent(id)}`, { signal: ctx.signal });
    } catch (e) {
      if (e.status === 404 && !run) {
        sections.forEach((el) => replace(el));
        replace(overview, emptyState('No such run', `There is no run ${id} in this tenant.`,
          h('a', { href: '#/runs', class: 'btn' }, 'Back to runs')));
        return false;
      }
      throw e;
    }
    if (logs.element.hidden) {
      logs.element.hidden = false;
      logs.start();
    }
    render();
    // Poll until the run has ended and its webhook (if any) is settled.
    return !isEnded(run) || ['waiting', 'pending'].includes(run.webhook?.state);
  });
}

function outputCard(run) {
  const opts = { class: 'json-card', id: 'run-output' };
  if (run.output == null && run.state !== 'succeeded') {
    return card('Output', isEnded(run)
      ? emptyState('No output', `The run ${run.state === 'cancelled' ? 'was cancelled' : 'failed'} before giving one.`)
      : emptyState('No output yet', 'It appears when the run succeeds.'), opts);
  }
  return card('Output', jsonView(run.output), { ...opts, aside: copyButton(JSON.stringify(run.output, null, 2)) });
}

function header(ctx, run, onChange) {
  const actions = [];
  if (!isEnded(run) && maySubmit(ctx.who)) {
    const cancel = h('button', { type: 'button', class: 'btn btn-danger', id: 'cancel-run' },
      run.cancel_requested ? 'Cancelling…' : 'Cancel run');
    cancel.disabled = !!run.cancel_requested;
    let armed = null;
    cancel.addEventListener('click', async () => {
      if (!armed) {
        cancel.textContent = 'Confirm cancel';
        cancel.classList.add('armed');
        armed = setTimeout(() => { armed = null; cancel.textContent = 'Cancel run'; cancel.classList.remove('armed'); }, 4000);
        return;
      }
      clearTimeout(armed);
      cancel.disabled = true;
      cancel.textContent = 'Cancelling…';
      try {
        onChange(await api.post(`/v1/runs/${encodeURIComponent(run.run_id)}/cancel`, {}, { signal: ctx.signal }));
      } catch (e) {
        ctx.error(e);
        cancel.disabled = false;
        cancel.textContent = 'Cancel run';
      }
    });
    actions.push(cancel);
  }
  return h('div', { class: 'page-header' },
    h('div', {},
      h('div', { class: 'title-row' },
        h('h1', { class: 'mono run-id', title: run.run_id }, run.run_id),
        copyButton(run.run_id, 'Copy id'),
        badge(run.state)),
      h('p', { class: 'subtitle' },
        h('a', { href: `#/agents/${encodeURIComponent(agentName(run.agent))}` }, run.agent),
        ' · ', h('span', { class: 'elapsed', title: fmtTime(run.created_unix_ms) }))),
    h('div', { class: 'actions' }, actions));
}

/** "created 5 s ago · running for 4.4 s", "created 2 min ago · took 19 ms". */
function elapsed(run) {
  const took = fmtDuration(runDuration(run));
  const state = isEnded(run) ? `took ${took}` : `${run.state === 'queued' ? 'queued' : 'running'} for ${took}`;
  return `created ${fmtAgo(run.created_unix_ms)} · ${state}`;
}

function callout(run) {
  const out = [];
  if (run.error) {
    const cls = run.state === 'cancelled' ? 'callout-neutral' : 'callout-error';
    out.push(h('div', { class: ['callout', cls], id: 'run-error' },
      h('div', { class: 'callout-title' }, h('code', {}, run.error.kind),
        run.error.retryable ? h('span', { class: 'muted small' }, ' retryable') : null),
      h('div', { class: 'callout-body' }, run.error.message)));
  }
  if (run.state === 'queued' && run.waiting) {
    out.push(h('div', { class: 'callout callout-wait' }, h('div', { class: 'callout-title' }, 'Waiting'),
      h('div', { class: 'callout-body' }, run.waiting)));
  }
  if (run.cancel_requested && !isEnded(run)) {
    out.push(h('div', { class: 'callout callout-wait' }, 'A cancel was asked for; it takes effect at the run’s next check.'));
  }
  return out;
}

function overviewCard(run) {
  return card('Overview', facts([
    ['Agent', h('span', {}, h('a', { href: `#/agents/${encodeURIComponent(agentName(run.agent))}` }, run.agent))],
    ['Digest', h('span', { class: 'mono', title: run.digest }, shortDigest(run.digest))],
    ['Tenant', run.tenant],
    ['Attempts', `${run.attempt} of ${run.max_attempts}`],
    ['Created', h('span', { title: fmtTime(run.created_unix_ms) }, fmtTime(run.created_unix_ms))],
    ['Updated', timeAgo(run.updated_unix_ms)],
    ['Input', fmtBytes(run.input_bytes)],
    ['Output', fmtBytes(run.output_bytes)],
    ['Labels', chips(run.labels)],
    run.trace_id ? ['Trace', h('span', { class: 'mono' }, run.trace_id)] : null,
  ]));
}

/** What the run used: counted as its attempts end, so "—" until one has. */
function usageCard(u = {}, ended = false) {
  const tokens = totalTokens(u);
  const counted = ended || u.wall_time_ms > 0;
  const show = (text) => (counted ? text : '—');
  return card('Usage', h('div', { class: 'stats' },
    stat('Tokens', show(fmtInt(tokens)), `${fmtInt(u.prompt_tokens || 0)} in · ${fmtInt(u.completion_tokens || 0)} out`),
    stat('Cost', show(fmtUsd(u.cost_usd || 0)), `${fmtInt(u.llm_calls || 0)} LLM call${u.llm_calls === 1 ? '' : 's'}`),
    stat('Wall time', show(fmtDuration(u.wall_time_ms)), 'in the sandbox'),
    stat('Fuel', show(u.fuel_used == null ? 'off' : fmtInt(u.fuel_used)), `${fmtInt(u.host_calls || 0)} host calls`),
    stat('Memory', show(fmtBytes(u.peak_memory_bytes || 0)), 'peak'),
    stat('HTTP', show(fmtInt(u.http_requests || 0)), `${fmtBytes(u.http_response_bytes || 0)} received`)),
  { aside: counted ? null : h('span', { class: 'muted small' }, 'Counted when an attempt ends') });
}

function attemptsCard(run) {
  const list = run.attempts || [];
  if (!list.length) {
    return card('Attempts', emptyState('No attempt yet', run.waiting || 'The run is waiting for a node to lease it.'));
  }
  const now = Date.now();
  const ends = list.map((a) => a.ended_unix_ms || now);
  const to = Math.max(...ends, isEnded(run) ? run.updated_unix_ms : now);
  // An attempt not started yet has started_unix_ms 0.
  const took = (a) => (a.started_unix_ms ? fmtDuration((a.ended_unix_ms || now) - a.started_unix_ms) : '—');
  const rows = list.map((a) => {
    const outcome = a.outcome || 'running';
    const end = a.ended_unix_ms || now;
    return {
      label: `Attempt ${a.attempt} · ${outcome}`,
      sublabel: a.node_id ? `on ${a.node_id}` : '',
      start: a.started_unix_ms || run.created_unix_ms,
      end,
      cls: `oc-${outcome}`,
      title: [`Attempt ${a.attempt} on ${a.node_id || 'no node'}`, `${outcome} · ${took(a)}`,
        `started ${fmtTime(a.started_unix_ms)}`, a.error ? `${a.error.kind}: ${a.error.message}` : null]
        .filter(Boolean).join('\n'),
    };
  });
  const table = h('table', { class: 'table compact' },
    h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'Node'), h('th', {}, 'Outcome'), h('th', {}, 'Started'),
      h('th', { class: 'num' }, 'Took'), h('th', {}, 'Error'))),
    h('tbody', {}, list.map((a) => h('tr', {},
      h('td', { class: 'num' }, a.attempt),
      h('td', { class: 'mono' }, a.node_id || '—'),
      h('td', {}, h('span', { class: ['outcome', `oc-${a.outcome || 'running'}`] }, a.outcome || 'running')),
      h('td', {}, h('span', { title: fmtTime(a.started_unix_ms) }, a.started_unix_ms ? fmtClock(a.started_unix_ms) : '—')),
      h('td', { class: 'num' }, took(a)),
      h('td', { class: 'error-cell' }, a.error ? [h('code', {}, a.error.kind), ' ', a.error.message] : '')))));
  // Nodes' clocks may run a little ahead of the control plane's.
  const from = Math.min(run.created_unix_ms, ...rows.map((r) => r.start));
  return card('Attempts', [timeline({ rows, from, to }), table], { class: 'attempts-card' });
}

const HOOK_STATES = { waiting: 'queued', pending: 'running', delivered: 'succeeded', failed: 'failed' };

/** Where the run's result is POSTed, and each try so far. */
function webhookCard(hook) {
  if (!hook) return [];
  const deliveries = hook.deliveries || [];
  const next = hook.next_attempt_unix_ms;
  return card('Webhook', [
    facts([
      ['URL', h('span', { class: 'mono' }, hook.url || '—'), 'wide'],
      ['State', hook.state ? h('span', { class: ['badge', `badge-${HOOK_STATES[hook.state] || 'unknown'}`] }, hook.state) : null],
      ['Next try', next ? h('span', { title: fmtTime(next), 'data-until': next }, untilText(next)) : null],
      ['Tries', fmtInt(deliveries.length)],
    ]),
    deliveries.length
      ? h('table', { class: 'table compact' },
        h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'Try'), h('th', {}, 'When'), h('th', {}, 'Result'),
          h('th', { class: 'num' }, 'HTTP'), h('th', { class: 'num' }, 'Took'), h('th', {}, 'Error'))),
        h('tbody', {}, deliveries.map((d) => h('tr', {},
          h('td', { class: 'num' }, d.attempt),
          h('td', {}, timeAgo(d.unix_ms)),
          h('td', {}, h('span', { class: ['outcome', d.ok ? 'oc-succeeded' : 'oc-failed'] }, d.ok ? 'delivered' : 'failed')),
          h('td', { class: 'num' }, d.http_status ?? '—'),
          h('td', { class: 'num' }, d.duration_ms == null ? '—' : fmtDuration(d.duration_ms)),
          h('td', { class: 'error-cell' }, d.error || '')))))
      : emptyState('No tries yet', hook.state === 'waiting' ? 'The result is posted once the run ends.' : null),
  ]);
}

/** "in 12 s", or "due now" once that time has come. */
function untilText(unixMs) {
  const ms = unixMs - Date.now();
  return ms > 0 ? `in ${fmtDuration(ms)}` : 'due now';
}

// ---- logs -----------------------------------------------------------------------

/** The log, followed live: lines as they come, resuming after drops. */
function logPanel(ctx, id) {
  const status = h('span', { class: 'stream-status', id: 'log-status', 'data-status': 'connecting' }, 'Connecting…');
  const count = h('span', { class: 'muted small', id: 'log-count' });
  const box = h('div', { class: 'log', id: 'log', tabindex: '0', role: 'log', 'aria-label': 'Run log' });
  const empty = h('div', { class: 'log-empty' }, 'No log lines yet.');
  box.append(empty);
  let lines = 0;
  let atBottom = null; // whether the chunk being added found the box scrolled to its end

  const setStatus = (kind, text) => {
    status.dataset.status = kind;
    status.textContent = text;
  };

  // The lines of one chunk of the stream come in one task: layout is read
  // once before them and the box settled once after (a microtask).
  const add = (line) => {
    if (atBottom === null) {
      atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      queueMicrotask(settle);
    }
    if (empty.isConnected) empty.remove();
    const level = line.level || line.source;
    box.append(h('div', { class: ['log-line', `lv-${level}`], 'data-attempt': line.attempt },
      h('span', { class: 'log-time', title: fmtTime(line.unix_ms) }, fmtClock(line.unix_ms)),
      h('span', { class: 'log-attempt', title: `attempt ${line.attempt}` }, `#${line.attempt}`),
      h('span', { class: 'log-level' }, level),
      line.context ? h('span', { class: 'log-context' }, `${line.context}:`) : null,
      h('span', { class: 'log-msg' }, line.message)));
    lines += 1;
  };
  const settle = () => {
    while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
    count.textContent = lines > MAX_LOG_LINES
      ? `showing the last ${fmtInt(MAX_LOG_LINES)} of ${fmtInt(lines)} lines`
      : `${fmtInt(lines)} line${lines === 1 ? '' : 's'}`;
    if (atBottom) box.scrollTop = box.scrollHeight;
    atBottom = null;
  };

  const element = card('Logs', box, {
    class: 'log-card',
    aside: h('div', { class: 'log-meta' }, count, status),
    flush: true,
  });
  element.id = 'logs';

  const start = () => api.follow(`/v1/runs/${encodeURIComponent(id)}/logs`, {
    query: { follow: true },
    signal: ctx.signal,
    onEvent(ev) {
      if (ev.event === 'line') add(JSON.parse(ev.data));
    },
    onStatus(kind, err) {
      if (kind === 'live') setStatus('live', 'Following');
      else if (kind === 'reconnecting') setStatus('reconnecting', 'Reconnecting…');
      else if (kind === 'ended') {
        setStatus('ended', 'Complete');
        if (!lines) empty.textContent = 'This run wrote no log lines.';
      } else if (kind === 'failed') {
        setStatus('failed', 'Stopped');
        if (err?.status !== 404) ctx.error(err);
      }
    },
  }).catch((e) => ctx.error(e));

  return { element, start };
}
