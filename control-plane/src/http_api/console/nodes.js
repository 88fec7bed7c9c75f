// Nodes: every node the control plane knows, its state, slots, capacity
// and heartbeat (system role only).

import * as api from './api.js';
import {
  h, s, replace, badge, chips, emptyState, fmtBytes, fmtDuration, fmtInt, fmtTime, pageHeader, setText, spinner, stat, syncRows,
} from './ui.js';

const POLL_MS = 3000;

export async function nodesPage(ctx) {
  ctx.title('Nodes');
  const summary = h('div', { class: 'stats stats-row' });
  const body = h('div', { class: 'table-wrap' }, spinner('Loading nodes…'));
  ctx.main.append(
    pageHeader('Nodes', 'The machines that run agents: their state, free slots and last heartbeat.'),
    summary,
    h('section', { class: 'card' }, body));
  const tbody = h('tbody', {});
  const table = h('table', { class: 'table nodes-table' },
    h('thead', {}, h('tr', {},
      h('th', {}, 'Node'), h('th', {}, 'State'), h('th', {}, 'Slots'), h('th', { class: 'num' }, 'CPUs'),
      h('th', { class: 'num' }, 'Memory'), h('th', { class: 'num' }, 'Disk free'), h('th', {}, 'Platform'),
      h('th', { class: 'num' }, 'Heartbeat'), h('th', {}, 'Labels'))),
    tbody);

  ctx.every(POLL_MS, async () => {
    let answer;
    try {
      answer = await api.get('/v1/nodes', null, { signal: ctx.signal });
    } catch (e) {
      if (e.status !== 403) throw e;
      replace(body, emptyState('Nodes are visible to the system role',
        `This token has the ${ctx.who.role || 'unknown'} role in tenant ${ctx.who.tenant}: it sees its tenant’s runs, agents and usage, not the cluster’s machines.`));
      return false;
    }
    const nodes = answer.nodes.slice().sort((a, b) => rank(a) - rank(b) || a.node_id.localeCompare(b.node_id));
    drawSummary(summary, nodes);
    if (!nodes.length) {
      replace(body, emptyState('No nodes have joined', 'Start one with warden node --control-plane URL --join-token TOKEN.'));
      return true;
    }
    // Rows are kept while their node is unchanged (but for its heartbeat's age), so a
    // poll leaves focus and selection be.
    syncRows(tbody, nodes, { id: (n) => n.node_id, key: nodeKey, build: nodeRow, refresh: refreshHeartbeat });
    if (body.firstChild !== table) replace(body, table);
    return true;
  });
}

const ORDER = ['ready', 'draining', 'lost', 'gone'];
const rank = (n) => { const i = ORDER.indexOf(n.state); return i < 0 ? ORDER.length : i; };

function drawSummary(el, nodes) {
  const ready = nodes.filter((n) => n.state === 'ready');
  const slots = ready.reduce((sum, n) => sum + n.slots, 0);
  const free = ready.reduce((sum, n) => sum + n.free_slots, 0);
  const active = nodes.reduce((sum, n) => sum + n.active_runs, 0);
  const key = JSON.stringify([ready.length, nodes.length, slots, free, active]);
  if (el.dataset.key === key) return; // unchanged: leave any selection be
  el.dataset.key = key;
  replace(el,
    stat('Nodes ready', `${fmtInt(ready.length)} / ${fmtInt(nodes.length)}`, nodes.length - ready.length ? `${nodes.length - ready.length} not ready` : 'all ready'),
    stat('Slots free', `${fmtInt(free)} / ${fmtInt(slots)}`, 'on ready nodes'),
    stat('Active runs', fmtInt(active), 'leased or running'));
}

/** Slots in use as a small bar with the numbers beside it. */
function slotBar(node) {
  const used = Math.max(0, node.slots - node.free_slots);
  const width = 96;
  const fill = node.slots ? Math.round((used / node.slots) * width) : 0;
  return h('span', { class: 'slots', title: `${used} of ${node.slots} slots in use, ${node.free_slots} free; ${node.active_runs} active runs` },
    s('svg', { class: 'slot-bar', width, height: 8, viewBox: `0 0 ${width} 8`, 'aria-hidden': 'true' },
      s('rect', { class: 'slot-track', x: 0, y: 0, width, height: 8, rx: 4 }),
      fill ? s('rect', { class: ['slot-used', used >= node.slots ? 'full' : null], x: 0, y: 0, width: Math.max(fill, 8), height: 8, rx: 4 }) : null),
    h('span', { class: 'slot-text' }, `${fmtInt(used)} used · ${fmtInt(node.free_slots)} free`));
}

/** "0.4 s ago", "12 s ago", "3 min ago". */
function heartbeatAge(ms) {
  return ms < 1000 ? `${(ms / 1000).toFixed(1)} s ago` : `${fmtDuration(ms)} ago`;
}

const isStale = (n) => n.heartbeat_age_ms > 15000;

/** What a node's row shows but for the heartbeat's age (refreshHeartbeat's). */
const nodeKey = (n) => JSON.stringify({
  ...n, heartbeat_age_ms: null, last_heartbeat_unix_ms: null, stale: isStale(n), disk_free_bytes: fmtBytes(n.disk_free_bytes),
});

function refreshHeartbeat(tr, n) {
  const cell = tr.querySelector('[data-col="heartbeat"]');
  setText(cell, heartbeatAge(n.heartbeat_age_ms));
  cell.title = `last heartbeat ${fmtTime(n.last_heartbeat_unix_ms)}`;
}

function nodeRow(n) {
  const accel = (n.accelerators || []).map((a) => `${a.kind} ${a.name}`).join(', ');
  return h('tr', { 'data-node': n.node_id },
    h('td', { class: 'nowrap' }, h('div', { class: 'strong mono' }, n.node_id), n.hostname && n.hostname !== n.node_id
      ? h('div', { class: 'muted small' }, n.hostname) : null),
    h('td', {}, badge(n.state)),
    h('td', {}, slotBar(n)),
    h('td', { class: 'num' }, fmtInt(n.cpu_cores)),
    h('td', { class: 'num' }, fmtBytes(n.memory_bytes)),
    h('td', { class: 'num' }, fmtBytes(n.disk_free_bytes)),
    h('td', { class: 'nowrap' }, [n.os, n.arch].filter(Boolean).join('/') || '—', accel ? h('div', { class: 'muted small' }, accel) : null),
    h('td', { class: ['num', 'nowrap', isStale(n) ? 'warn-text' : null], 'data-col': 'heartbeat',
      title: `last heartbeat ${fmtTime(n.last_heartbeat_unix_ms)}` }, heartbeatAge(n.heartbeat_age_ms)),
    h('td', {}, chips(n.labels)));
}
