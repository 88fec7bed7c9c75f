// Usage: runs per minute by state over the last hour (from the runs list),
// and tokens, cost and attempts per agent per day (from GET /v1/usage).

import * as api from './api.js';
import { barChart } from './charts.js';
import {
  h, replace, card, emptyState, fmtClock, fmtCompact, fmtDuration, fmtInt, fmtUsd, isEnded, pageHeader, RUN_STATES, spinner,
  stat, stateLabel, totalTokens,
} from './ui.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
const DAYS = 7;
const MAX_PAGES = 10;
const REFRESH_MS = 30_000;

const clock = (ms) => fmtClock(ms).slice(0, 5); // HH:MM
const utcDay = (ms) => new Date(ms).toISOString().slice(0, 10);
const dayLabel = (day) => new Date(`${day}T00:00:00Z`).toLocaleDateString(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });

export async function usagePage(ctx) {
  ctx.title('Usage');
  const totals = h('div', { class: 'stats stats-row' });
  const perMinute = h('div', {}, card('Runs per minute, last hour', spinner('Loading runs…')));
  const perDay = h('div', {}, card('Per agent per day, last 7 days', spinner('Loading usage…')));
  const table = h('div', {});
  ctx.main.append(
    pageHeader('Usage', 'What this tenant’s agents ran and spent. Times are local; days are UTC.'),
    totals, perMinute, perDay, table);

  let metric = null; // the per-day chart's measure, kept across refreshes
  const runs = new Map(); // the last hour's runs by id, kept across refreshes
  let gapBefore = 0; // runs made before this time may be missing (a fetch hit MAX_PAGES)

  ctx.every(REFRESH_MS, async () => {
    const now = Date.now();
    const hourAgo = now - HOUR_MS;
    const todayStart = Date.parse(`${utcDay(now)}T00:00:00Z`);
    const usageSince = todayStart - (DAYS - 1) * DAY_MS;
    // Only the runs made since the newest one seen, and since the oldest
    // one seen that had not ended (it may have since).
    const known = [...runs.values()];
    const newest = Math.max(hourAgo, ...known.map((r) => r.created_unix_ms));
    const since = Math.min(newest, ...known.filter((r) => !isEnded(r)).map((r) => r.created_unix_ms));
    const [fetched, report] = await Promise.all([
      api.allPages('/v1/runs', { since_unix_ms: since, limit: 1000 }, 'runs', { signal: ctx.signal, maxPages: MAX_PAGES }),
      api.get('/v1/usage', { since_unix_ms: usageSince }, { signal: ctx.signal }),
    ]);
    for (const r of fetched.items) runs.set(r.run_id, r);
    for (const [id, r] of runs) if (r.created_unix_ms < hourAgo) runs.delete(id);
    if (!fetched.complete) gapBefore = Math.max(gapBefore, fetched.items.at(-1)?.created_unix_ms || 0);
    const recent = { runs: [...runs.values()], partial: gapBefore > hourAgo };
    const rows = report.usage || [];
    drawTotals(totals, recent, rows);
    replace(perMinute, minuteChart(recent, now));
    const days = Array.from({ length: DAYS }, (_, i) => utcDay(usageSince + i * DAY_MS));
    if (!metric) metric = rows.some((r) => totalTokens(r) > 0) ? 'tokens' : 'attempts';
    const redraw = () => replace(perDay, dayChart(rows, days, metric, (m) => { metric = m; redraw(); }));
    redraw();
    replace(table, usageTable(rows));
  });
}

function drawTotals(el, { runs, partial }, rows) {
  const ended = runs.filter(isEnded);
  const ok = ended.filter((r) => r.state === 'succeeded').length;
  const sum = (f) => rows.reduce((a, r) => a + f(r), 0);
  const tokens = sum(totalTokens);
  replace(el,
    stat('Runs, last hour', `${partial ? 'at least ' : ''}${fmtInt(runs.length)}`,
      ended.length ? `${Math.round((ok / ended.length) * 100)}% of ended runs succeeded` : 'none ended yet'),
    stat('Attempts, 7 days', fmtInt(sum((r) => r.attempts)), `${fmtInt(sum((r) => r.succeeded))} succeeded`),
    stat('Tokens, 7 days', fmtInt(tokens), `${fmtInt(sum((r) => r.prompt_tokens))} in · ${fmtInt(sum((r) => r.completion_tokens))} out`),
    stat('Cost, 7 days', fmtUsd(sum((r) => r.cost_usd)), `${fmtDuration(sum((r) => r.wall_time_ms))} of wall time`));
}

function minuteChart({ runs, partial }, now) {
  const end = Math.floor(now / 60_000) * 60_000; // the current minute's start
  const start = end - 59 * 60_000;
  const counts = Array.from({ length: 60 }, () => ({}));
  for (const r of runs) {
    const i = Math.floor((r.created_unix_ms - start) / 60_000);
    if (i >= 0 && i < 60) counts[i][r.state] = (counts[i][r.state] || 0) + 1;
  }
  const states = RUN_STATES.filter((st) => counts.some((c) => c[st]));
  const categories = counts.map((_, i) => {
    const t = start + i * 60_000;
    return { label: clock(t), tick: new Date(t).getMinutes() % 10 === 0 };
  });
  const aside = partial ? h('span', { class: 'muted small' }, 'busier than the console pages through: some minutes are partial') : null;
  if (!runs.length) {
    return card('Runs per minute, last hour', emptyState('No runs in the last hour', 'Submit one from the Runs page.'), { aside });
  }
  const chart = barChart({
    label: 'Runs per minute by state, last hour',
    categories,
    series: states.map((st) => ({ name: stateLabel(st), cls: `st-${st}` })),
    value: (si, ci) => counts[ci][states[si]] || 0,
    stacked: true,
    integer: true,
    format: fmtCompact,
    title: (ci) => {
      const c = counts[ci];
      const total = states.reduce((a, st) => a + (c[st] || 0), 0);
      const parts = states.filter((st) => c[st]).map((st) => `${stateLabel(st)} ${c[st]}`);
      return `${categories[ci].label}–${clock(start + (ci + 1) * 60_000)}\n${total} run${total === 1 ? '' : 's'}${parts.length ? `: ${parts.join(', ')}` : ''}`;
    },
  });
  chart.id = 'chart-runs';
  return card('Runs per minute, last hour', chart, { aside });
}

const METRICS = {
  tokens: { name: 'Tokens', of: totalTokens, format: fmtCompact, integer: true },
  cost: { name: 'Cost', of: (r) => r.cost_usd, format: (v) => fmtUsd(v), integer: false },
  attempts: { name: 'Attempts', of: (r) => r.attempts, format: fmtCompact, integer: true },
};

function dayChart(rows, days, metric, onMetric) {
  const m = METRICS[metric];
  const total = (agent) => rows.filter((r) => r.agent === agent).reduce((a, r) => a + m.of(r), 0);
  // The agents with something to show under this measure, biggest first.
  const agents = [...new Set(rows.map((r) => r.agent))].filter((a) => total(a) > 0)
    .sort((a, b) => total(b) - total(a) || a.localeCompare(b));
  const cell = new Map(rows.map((r) => [`${r.day}|${r.agent}`, r]));
  const toggle = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Measure' },
    Object.entries(METRICS).map(([key, def]) => h('button', {
      type: 'button', class: key === metric ? 'active' : null, 'aria-pressed': String(key === metric), onclick: () => onMetric(key),
    }, def.name)));
  if (!agents.length) {
    const what = rows.length ? `No ${m.name.toLowerCase()} in the last 7 days` : 'No usage in the last 7 days';
    return card('Per agent per day, last 7 days', emptyState(what, 'Usage is counted as attempts end.'), { aside: toggle });
  }
  const chart = barChart({
    label: `${m.name} per agent per day`,
    categories: days.map((d) => ({ label: dayLabel(d) })),
    series: agents.map((a, i) => ({ name: a, cls: `pal-${i % 8}` })),
    value: (si, ci) => { const r = cell.get(`${days[ci]}|${agents[si]}`); return r ? m.of(r) : 0; },
    stacked: false,
    integer: m.integer,
    format: m.format,
    title: (ci) => {
      const lines = agents.map((a) => cell.get(`${days[ci]}|${a}`)).filter(Boolean)
        .map((r) => `${r.agent}: ${fmtInt(totalTokens(r))} tokens · ${fmtUsd(r.cost_usd)} · ${fmtInt(r.attempts)} attempts`);
      return [days[ci], ...(lines.length ? lines : ['nothing ran'])].join('\n');
    },
  });
  chart.id = 'chart-usage';
  return card('Per agent per day, last 7 days', chart, { aside: toggle });
}

function usageTable(rows) {
  if (!rows.length) return [];
  const sorted = rows.slice().sort((a, b) => b.day.localeCompare(a.day) || a.agent.localeCompare(b.agent));
  const sum = (f) => rows.reduce((a, r) => a + f(r), 0);
  const showTenant = new Set(rows.map((r) => r.tenant)).size > 1;
  const num = (v, text = fmtInt(v)) => h('td', { class: ['num', v ? null : 'zero'] }, text);
  return card('By day and agent', h('div', { class: 'table-wrap' }, h('table', { class: 'table usage-table' },
    h('thead', {}, h('tr', {},
      h('th', {}, 'Day'), showTenant ? h('th', {}, 'Tenant') : null, h('th', {}, 'Agent'), h('th', { class: 'num' }, 'Attempts'),
      h('th', { class: 'num' }, 'Succeeded'), h('th', { class: 'num' }, 'Tokens in'), h('th', { class: 'num' }, 'Tokens out'),
      h('th', { class: 'num' }, 'Cost'), h('th', { class: 'num' }, 'Fuel'), h('th', { class: 'num' }, 'Wall time'))),
    h('tbody', {}, sorted.map((r) => h('tr', {},
      h('td', { class: 'nowrap' }, r.day), showTenant ? h('td', {}, r.tenant) : null,
      h('td', {}, h('a', { href: `#/agents/${encodeURIComponent(r.agent)}` }, r.agent)),
      num(r.attempts), num(r.succeeded), num(r.prompt_tokens), num(r.completion_tokens),
      num(r.cost_usd, fmtUsd(r.cost_usd)),
      h('td', { class: 'num' }, fmtCompact(r.fuel)),
      h('td', { class: 'num' }, fmtDuration(r.wall_time_ms))))),
    h('tfoot', {}, h('tr', {},
      h('th', { colspan: showTenant ? 3 : 2 }, 'Total'),
      h('td', { class: 'num' }, fmtInt(sum((r) => r.attempts))),
      h('td', { class: 'num' }, fmtInt(sum((r) => r.succeeded))),
      h('td', { class: 'num' }, fmtInt(sum((r) => r.prompt_tokens))),
      h('td', { class: 'num' }, fmtInt(sum((r) => r.completion_tokens))),
      h('td', { class: 'num' }, fmtUsd(sum((r) => r.cost_usd))),
      h('td', { class: 'num' }, fmtCompact(sum((r) => r.fuel))),
      h('td', { class: 'num' }, fmtDuration(sum((r) => r.wall_time_ms))))))), { flush: true });
}
