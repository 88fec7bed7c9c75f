// Agents: every published agent (its versions grouped by name), and one
// agent's versions with their capability manifests.

import * as api from './api.js';
import {
  h, replace, card, copyButton, emptyState, facts, fmtBytes, fmtInt, fmtTime, maySubmit, pageHeader, shortDigest, spinner,
  timeAgo,
} from './ui.js';

const MAX_PAGES = 20;

const newestFirst = (a, b) => b.published_unix_ms - a.published_unix_ms;

export async function agentsPage(ctx) {
  ctx.title('Agents');
  const body = h('div', { class: 'table-wrap' }, spinner('Loading agents…'));
  ctx.main.append(
    pageHeader('Agents', 'Published agents and their versions. Publish with warden publish FILE.wasm NAME@VERSION.'),
    h('section', { class: 'card' }, body));

  const { items: versions, complete } = await api.allPages('/v1/agents', { limit: 1000 }, 'agents',
    { signal: ctx.signal, maxPages: MAX_PAGES });
  const groups = new Map();
  for (const v of versions) {
    const key = `${v.tenant}/${v.name}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(v);
  }
  const agents = [...groups.values()].map((list) => list.sort(newestFirst))
    .sort((a, b) => b[0].published_unix_ms - a[0].published_unix_ms);
  if (!agents.length) {
    replace(body, emptyState('No agents published yet',
      h('span', {}, 'Publish one with ', h('code', {}, 'warden publish agent.wasm hello@1.0.0 --manifest warden.toml'), '.')));
    return;
  }
  const tenants = new Set(agents.map((list) => list[0].tenant));
  const showTenant = tenants.size > 1;
  const tbody = h('tbody', {}, agents.map((list) => {
    const newest = list[0];
    const href = `#/agents/${encodeURIComponent(newest.name)}${showTenant ? `?tenant=${encodeURIComponent(newest.tenant)}` : ''}`;
    return h('tr', { class: 'clickable', 'data-href': href, 'data-agent': newest.name },
      h('td', { 'data-col': 'agent' }, h('a', { href, class: 'strong' }, newest.name), toolLine(newest.manifest)),
      showTenant ? h('td', { 'data-col': 'tenant' }, newest.tenant) : null,
      h('td', { class: 'mono', 'data-col': 'newest' }, newest.version),
      h('td', { class: 'num', 'data-col': 'versions' }, fmtInt(list.length)),
      h('td', { class: 'num', 'data-col': 'size' }, fmtBytes(newest.size)),
      h('td', { class: 'mono', title: newest.digest, 'data-col': 'digest' }, shortDigest(newest.digest)),
      h('td', { class: 'nowrap', 'data-col': 'published' }, timeAgo(newest.published_unix_ms)));
  }));
  tbody.addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-href]');
    if (row && !e.target.closest('a')) ctx.go(row.dataset.href);
  });
  replace(body, h('table', { class: 'table agents-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Agent'), showTenant ? h('th', {}, 'Tenant') : null, h('th', {}, 'Newest'),
      h('th', { class: 'num' }, 'Versions'), h('th', { class: 'num' }, 'Size'), h('th', {}, 'Digest'), h('th', {}, 'Last published'))),
    tbody),
  complete ? null : h('div', { class: 'table-footer muted' }, `Showing the first ${fmtInt(versions.length)} versions.`));
}

/** The `description` of a manifest's [tool] section, if it has one. */
function toolDescription(manifest) {
  if (!manifest) return null;
  const section = /^\s*\[tool\]\s*$([\s\S]*?)(?=^\s*\[|(?![\s\S]))/m.exec(manifest);
  if (!section) return null;
  const m = /^\s*description\s*=\s*("(?:[^"\\]|\\.)*"|'[^']*')/m.exec(section[1]);
  if (!m) return '';
  if (m[1].startsWith("'")) return m[1].slice(1, -1);
  // A TOML basic string is nearly JSON; where it is not (a literal tab, \U0001F600), its raw text.
  try {
    return JSON.parse(m[1]);
  } catch {
    return m[1].slice(1, -1);
  }
}

function toolLine(manifest) {
  const description = toolDescription(manifest);
  return description ? h('div', { class: 'muted small' }, description) : null;
}

export async function agentPage(ctx, name) {
  ctx.title(name);
  const tenant = ctx.params.get('tenant') || undefined;
  const body = h('div', {}, spinner('Loading agent…'));
  ctx.main.append(
    h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/agents' }, 'Agents'), h('span', {}, '/'), h('span', {}, name)),
    body);

  // One name's versions, newest first.
  let versions;
  try {
    ({ versions } = await api.get(`/v1/agents/${encodeURIComponent(name)}`, { tenant }, { signal: ctx.signal }));
  } catch (e) {
    // No such agent (in this tenant): the empty state below.
    if (e.status !== 404) throw e;
    versions = [];
  }
  if (!versions.length) {
    replace(body, emptyState(`No agent named ${name}`, 'It has no published version in this tenant.',
      h('a', { href: '#/agents', class: 'btn' }, 'All agents')));
    return;
  }
  const newest = versions[0];
  const description = toolDescription(newest.manifest);
  replace(body,
    pageHeader(name, description || `${versions.length} version${versions.length === 1 ? '' : 's'} published`,
      h('a', { href: `#/runs?agent=${encodeURIComponent(name)}`, class: 'btn' }, 'Runs'),
      maySubmit(ctx.who)
        ? h('a', { href: `#/runs?submit=${encodeURIComponent(`${name}@${newest.version}`)}`, class: 'btn btn-primary' }, 'Submit run')
        : null),
    card('Newest version', facts([
      ['Version', h('span', { class: 'mono' }, newest.version)],
      ['Tenant', newest.tenant],
      ['Published', h('span', { title: fmtTime(newest.published_unix_ms) }, timeAgo(newest.published_unix_ms))],
      ['Size', fmtBytes(newest.size)],
      ['Digest', h('span', { class: 'mono digest' }, newest.digest), 'wide'],
      ['As an MCP tool', description != null ? 'yes ([tool] in its manifest)' : 'any JSON object (no [tool] section)'],
    ])),
    h('h2', { class: 'section-title' }, 'Versions'),
    versions.map((v, i) => versionCard(v, i === 0)));
}

/** Manifest text with comments, [sections] and keys marked (line by line; not a parser). */
function tomlView(text) {
  return text.split('\n').map((line, i, lines) => {
    const end = i < lines.length - 1 ? '\n' : '';
    if (/^\s*#/.test(line)) return [h('span', { class: 't-comment' }, line), end];
    if (/^\s*\[[^\]]+\]\s*(#.*)?$/.test(line)) return [h('span', { class: 't-section' }, line), end];
    const m = /^(\s*[A-Za-z0-9_.-]+)(\s*=)(.*)$/.exec(line);
    if (m) return [h('span', { class: 't-key' }, m[1]), m[2], m[3], end];
    return [line, end];
  });
}

function versionCard(v, open) {
  const manifest = v.manifest
    ? h('pre', { class: 'manifest' }, tomlView(v.manifest))
    : h('p', { class: 'muted' }, 'No capability manifest: runs get only what each submit grants.');
  const details = h('details', { class: 'version', open, 'data-version': v.version },
    h('summary', {},
      h('span', { class: 'version-name mono' }, `${v.name}@${v.version}`),
      h('span', { class: 'muted mono', title: v.digest }, shortDigest(v.digest)),
      h('span', { class: 'muted' }, fmtBytes(v.size)),
      h('span', { class: 'spacer' }),
      h('span', { class: 'muted', title: fmtTime(v.published_unix_ms) }, `published ${timeAgo(v.published_unix_ms).textContent}`)),
    h('div', { class: 'version-body' },
      h('div', { class: 'version-tools' }, h('span', { class: 'muted small' }, 'Capability manifest (warden.toml)'),
        v.manifest ? copyButton(v.manifest) : null),
      manifest));
  return details;
}
