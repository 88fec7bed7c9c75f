// What the run knows about itself: id, attempt, remaining budget.

import * as wit from 'warden:agent/context';
import { needRun, toNumber } from './runtime.js';

/** This run's id. */
export async function runId() {
  needRun('context.runId()');
  return wit.runId();
}

/** The attempt number, from 1. */
export async function attempt() {
  needRun('context.attempt()');
  return wit.attempt();
}

/**
 * Tokens, USD and milliseconds left: `{tokens, costUsd, timeMs}`; `tokens`
 * and `costUsd` are `null` when the run has no such budget.
 */
export async function remaining() {
  needRun('context.remaining()');
  const r = wit.remaining();
  return {
    tokens: r.tokens == null ? null : toNumber(r.tokens),
    costUsd: r.costUsd == null ? null : r.costUsd,
    timeMs: toNumber(r.timeMs),
  };
}
