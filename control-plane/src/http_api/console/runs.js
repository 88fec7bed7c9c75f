// The runs page: a live table of runs with filters and cursor paging, and
// the form that submits (or dry-runs) a new one.

import * as api from './api.js';
import {
  h, replace, badge, chips, emptyState, fmtDuration, fmtInt, fmtUsd, pageHeader, RUN_STATES, runDuration,
  shortId, spinner, stateLabel, timeAgo, totalTokens, fmtClock, maySubmit, isEnded, refreshTimes, setText, syncRows,
} from './ui.js';

const PAGE_SIZE = 50;
const MAX_LIMIT = 1000; // the most runs the API gives in a page
const POLL_MS = 2000;

export async function runsPage(ctx) {
  ctx.title('Runs');
  const filter = { state: ctx.params.get('state') || '', agent: ctx.params.get('agent') || '' };
  // The newest `limit` runs, polled as one page: "Older" makes it longer.
  let limit = PAGE_SIZE;
  let page = null;
  let generation = 0;

  const submit = submitPanel(ctx, maySubmit(ctx.who) ? ctx.params.get('submit') : null);
  const toggle = h('button', { type: 'button', class: 'btn btn-primary', 'aria-expanded': String(!submit.hidden) }, 'Submit run');
  toggle.hidden = !maySubmit(ctx.who);
  toggle.addEventListener('click', () => {
    submit.hidden = !submit.hidden;
    toggle.setAttribute('aria-expanded', String(!submit.hidden));
    if (!submit.hidden) submit.querySelector('input')?.focus();
  });

  const stateSelect = h('select', { id: 'filter-state', 'aria-label': 'State' },
    h('option', { value: '' }, 'All states'),
    RUN_STATES.map((st) => h('option', { value: st, selected: st === filter.state }, stateLabel(st))));
  const agentInput = h('input', {
    id: 'filter-agent', type: 'search', placeholder: 'Agent name', value: filter.agent, 'aria-label': 'Agent', list: 'agent-names',
  });
  const live = h('span', { class: 'live' }, h('span', { class: 'live-dot' }), h('span', { class: 'live-text' }, 'Live'));
  const tbody = h('tbody', {});
  const body = h('div', { class: 'table-wrap' });
  const more = h('div', { class: 'table-footer' });

  const table = h('table', { class: 'table runs-table' },
    h('thead', {}, h('tr', {},
      h('th', {}, 'Run'), h('th', {}, 'Agent'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Attempts'),
      h('th', {}, 'Created'), h('th', { class: 'num' }, 'Duration'), h('th', { class: 'num' }, 'Tokens'),
      h('th', { class: 'num' }, 'Cost'))),
    tbody);
  tbody.addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-run]');
    if (row && !e.target.closest('a')) ctx.go(runHref(row.dataset.run));
  });

  ctx.main.append(
    pageHeader('Runs', 'Every run of this tenant, newest first. Updates live while this page is open.', toggle),
    submit,
    h('section', { class: 'card' },
      h('div', { class: 'toolbar' },
        h('label', { class: 'field-inline' }, h('span', {}, 'State'), stateSelect),
        h('label', { class: 'field-inline' }, h('span', {}, 'Agent'), agentInput),
        h('span', { class: 'spacer' }),
        live),
      body, more));
  replace(body, spinner('Loading runs…'));

  const render = () => {
    const list = page.runs;
    if (!list.length) {
      const filtered = filter.state || filter.agent;
      replace(body, filtered
        ? emptyState('No runs match these filters', 'Try another state or agent.')
        : emptyState(maySubmit(ctx.who) ? 'No runs yet — submit one above' : 'No runs yet',
          'Runs submitted here, with the CLI or over the API show up at once.',
          maySubmit(ctx.who) ? h('button', { type: 'button', class: 'btn', onclick: () => { if (submit.hidden) toggle.click(); } }, 'Submit a run') : null));
    } else {
      // Rows are kept while their run is unchanged, so a poll leaves focus and selection be.
      syncRows(tbody, list, { id: (run) => run.run_id, build: runRow, refresh: refreshRow });
      if (body.firstChild !== table) replace(body, table);
    }
    let footer = null;
    if (page.next_cursor && limit < MAX_LIMIT) footer = h('button', { type: 'button', class: 'btn', onclick: loadOlder }, 'Older');
    else if (page.next_cursor) footer = h('span', { class: 'muted' }, `The newest ${fmtInt(list.length)} runs: filter to see older ones.`);
    else if (list.length) footer = h('span', { class: 'muted' }, `${fmtInt(list.length)} run${list.length === 1 ? '' : 's'} — that's all of them`);
    // Left alone while it says the same, or a poll would drop a click on it.
    if (more.dataset.footer !== (footer?.textContent || '')) {
      more.dataset.footer = footer?.textContent || '';
      replace(more, footer);
    }
  };

  const refresh = async () => {
    const gen = generation;
    const agent = filter.agent.trim();
    const answer = await api.get('/v1/runs', { state: filter.state, agent, limit }, { signal: ctx.signal });
    if (gen !== generation) return;
    page = answer;
    render();
    live.title = `Updated ${fmtClock(Date.now())}`;
  };

  async function loadOlder(e) {
    const btn = e.currentTarget;
    btn.disabled = true;
    btn.textContent = 'Loading…';
    limit = Math.min(limit + PAGE_SIZE, MAX_LIMIT);
    generation += 1; // a poll under way for fewer runs is stale
    more.dataset.footer = ''; // redrawn by the refresh
    await refresh().catch(ctx.error);
  }

  const onFilter = () => {
    filter.state = stateSelect.value;
    filter.agent = agentInput.value.trim();
    ctx.setParams({ state: filter.state, agent: filter.agent });
    generation += 1;
    limit = PAGE_SIZE;
    replace(body, spinner('Loading runs…'));
    refresh().catch(ctx.error);
  };
  stateSelect.addEventListener('change', onFilter);
  let typing = null;
  agentInput.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(onFilter, 350);
  });
  ctx.signal.addEventListener('abort', () => clearTimeout(typing));
  document.addEventListener('visibilitychange', () => {
    live.classList.toggle('paused', document.visibilityState !== 'visible');
    live.querySelector('.live-text').textContent = document.visibilityState === 'visible' ? 'Live' : 'Paused';
  }, { signal: ctx.signal });

  ctx.every(POLL_MS, refresh);
}

const runHref = (id) => `#/runs/${encodeURIComponent(id)}`;

function runRow(run) {
  const tokens = totalTokens(run.usage);
  const cost = run.usage?.cost_usd || 0;
  return h('tr', { 'data-run': run.run_id, class: 'clickable' },
    h('td', { class: 'mono', 'data-col': 'run' }, h('a', { href: runHref(run.run_id), title: run.run_id }, shortId(run.run_id))),
    h('td', { 'data-col': 'agent' }, h('span', { class: 'agent-ref' }, run.agent), Object.keys(run.labels || {}).length ? chips(run.labels) : null),
    h('td', { 'data-col': 'state' }, badge(run.state), run.cancel_requested && !isEnded(run) ? h('span', { class: 'muted small' }, ' cancelling') : null),
    h('td', { class: 'num', 'data-col': 'attempts' }, `${run.attempt}/${run.max_attempts}`),
    h('td', { class: 'nowrap', 'data-col': 'created' }, timeAgo(run.created_unix_ms)),
    h('td', { class: 'num', 'data-col': 'duration' }, fmtDuration(runDuration(run))),
    h('td', { class: ['num', tokens ? null : 'zero'], 'data-col': 'tokens' }, fmtInt(tokens)),
    h('td', { class: ['num', cost ? null : 'zero'], 'data-col': 'cost' }, fmtUsd(cost)));
}

/** A kept row's text that changes with time. */
function refreshRow(tr, run) {
  refreshTimes(tr);
  setText(tr.querySelector('[data-col="duration"]'), fmtDuration(runDuration(run)));
}

// ---- submit -----------------------------------------------------------------

/** `k=v` lines as labels, or the first problem found. */
function parseLabels(text) {
  const labels = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i].trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) return { error: `Line ${i + 1}: write labels as key=value` };
    const key = line.slice(0, eq).trim();
    if (key in labels) return { error: `Line ${i + 1}: ${key} is given twice` };
    labels[key] = line.slice(eq + 1).trim();
  }
  return { labels };
}

function submitPanel(ctx, preset) {
  const agent = h('input', {
    id: 'submit-agent', name: 'agent', required: true, placeholder: 'hello or hello@1.0.0', list: 'agent-names',
    autocomplete: 'off', spellcheck: 'false', value: preset || '',
  });
  const names = h('datalist', { id: 'agent-names' });
  const input = h('textarea', { id: 'submit-input', name: 'input', rows: 6, spellcheck: 'false', class: 'mono' });
  input.value = '{\n  \n}';
  const labels = h('textarea', { id: 'submit-labels', name: 'labels', rows: 6, spellcheck: 'false', class: 'mono', placeholder: 'team=search\npriority=low' });
  const inputNote = h('p', { class: 'field-note', id: 'submit-input-note' });
  const labelsNote = h('p', { class: 'field-note', id: 'submit-labels-note' }, 'Optional: one key=value per line.');
  const agentNote = h('p', { class: 'field-note', id: 'submit-agent-note' },
    'A published agent: name (its newest version) or name@version.');
  const dry = h('button', { type: 'button', class: 'btn', id: 'submit-dry' }, 'Dry run');
  const go = h('button', { type: 'submit', class: 'btn btn-primary', id: 'submit-go' }, 'Submit run');
  const result = h('div', { class: 'submit-result', id: 'submit-result', 'aria-live': 'polite' });

  const checkInput = () => {
    const text = input.value.trim();
    if (!text) {
      inputNote.textContent = 'Empty: the agent gets null.';
      inputNote.className = 'field-note';
      return true;
    }
    try {
      JSON.parse(text);
      inputNote.textContent = 'Valid JSON.';
      inputNote.className = 'field-note ok';
      return true;
    } catch (e) {
      inputNote.textContent = `Not valid JSON: ${e.message}`;
      inputNote.className = 'field-note bad';
      return false;
    }
  };
  const checkLabels = () => {
    const parsed = parseLabels(labels.value);
    labelsNote.textContent = parsed.error || 'Optional: one key=value per line.';
    labelsNote.className = parsed.error ? 'field-note bad' : 'field-note';
    return parsed;
  };
  input.addEventListener('input', checkInput);
  labels.addEventListener('input', checkLabels);

  /** The request body as JSON text (the input as typed, so numbers keep their digits). */
  const bodyOf = (ref, dryRun) => {
    const fields = JSON.stringify({ agent: ref, labels: checkLabels().labels, ...(dryRun ? { dry_run: true } : {}) });
    return `{"input":${input.value.trim() || 'null'},${fields.slice(1)}`;
  };

  /** What is wrong with the form, checked before anything is sent. */
  const problem = () => {
    if (!agent.value.trim()) return 'Name the agent to run (name, or name@version).';
    if (!checkInput()) return 'Fix the input: it must be JSON.';
    return checkLabels().error || null;
  };

  const busy = (on) => { dry.disabled = on; go.disabled = on; };

  /** Validates and POSTs: a dry run shows its findings, a submit opens the run. */
  const send = async (dryRun) => {
    const bad = problem();
    if (bad) return replace(result, notice('bad', bad));
    busy(true);
    replace(result, spinner(dryRun ? 'Checking…' : 'Submitting…'));
    try {
      // A name alone runs its newest version: the server resolves it.
      const ref = agent.value.trim();
      const answer = await api.call('POST', '/v1/runs', { json: bodyOf(ref, dryRun), signal: ctx.signal });
      if (dryRun) replace(result, dryRunResult(answer));
      else ctx.go(runHref(answer.run_id));
    } catch (err) {
      replace(result);
      ctx.error(err);
    } finally {
      busy(false);
    }
  };
  dry.addEventListener('click', () => send(true));

  const form = h('form', { class: 'submit-form', novalidate: true },
    h('div', { class: 'form-grid' },
      h('div', { class: 'field field-wide' }, h('label', { for: 'submit-agent' }, 'Agent'), agent, names, agentNote),
      h('div', { class: 'field' }, h('label', { for: 'submit-input' }, 'Input (JSON)'), input, inputNote),
      h('div', { class: 'field' }, h('label', { for: 'submit-labels' }, 'Labels'), labels, labelsNote)),
    h('div', { class: 'form-actions' }, dry, go),
    result);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    send(false);
  });

  // Offer the published agents' names as suggestions.
  api.get('/v1/agents', { limit: 1000 }, { signal: ctx.signal }).then((page) => {
    const seen = new Set();
    for (const a of page.agents) {
      for (const v of [a.name, `${a.name}@${a.version}`]) {
        if (!seen.has(v)) { seen.add(v); names.append(h('option', { value: v })); }
      }
    }
  }, () => {});

  checkInput();
  const panel = h('section', { class: 'card submit-card', id: 'submit-panel' },
    h('header', { class: 'card-header' }, h('h2', {}, 'Submit a run'),
      h('span', { class: 'muted small' }, 'Grant and budget are the agent manifest’s.')),
    h('div', { class: 'card-body' }, form));
  panel.hidden = !preset;
  return panel;
}

function notice(kind, text) {
  return h('div', { class: ['notice', `notice-${kind}`] }, text);
}

function dryRunResult(answer) {
  const problems = answer.problems || [];
  const warnings = answer.warnings || [];
  const item = (p) => h('li', {}, h('code', {}, p.code), ' ', p.message);
  return h('div', { class: 'dry-run', id: 'dry-run-result' },
    answer.ok && !warnings.length ? notice('ok', 'Dry run passed: this submit would be taken.') : null,
    answer.ok && warnings.length ? notice('warn', 'Dry run passed, with warnings: the run would be taken but held back.') : null,
    !answer.ok ? notice('bad', `Dry run found ${problems.length} problem${problems.length === 1 ? '' : 's'}: this submit would be refused.`) : null,
    problems.length ? h('ul', { class: 'problems' }, problems.map(item)) : null,
    warnings.length ? h('ul', { class: 'warnings' }, warnings.map(item)) : null);
}
