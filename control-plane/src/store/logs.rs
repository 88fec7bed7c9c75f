//! Run logs: the lines nodes stream while agents run (`run_logs`), kept
//! per attempt up to a bound of bytes. Where lines are missing (the node
//! dropped them, or the attempt's log passed the bound) a `warden` line
//! says so, in their place.

use super::sql::{MAX_VALUES, Param, Tx, p, values};
use super::{Store, StoreResult};
use std::collections::HashMap;
use warden_core::cut_text;
use warden_proto::v1::{LogChunk, LogLine, LogSource};

/// An attempt's log as appends find it.
struct AttemptLog {
    token: String,
    node_id: String,
    /// The seq the next line should have.
    next: u64,
    bytes: u64,
    truncated: bool,
    changed: bool,
}

/// A line to store.
struct Row {
    run_id: String,
    attempt: i64,
    seq: i64,
    at: i64,
    source: &'static str,
    level: String,
    context: String,
    message: String,
}

impl Store {
    /// Appends `chunks` of log lines, each to its attempt if its lease
    /// token is that attempt's (and, when `node` is given, the attempt is
    /// that node's), keeping at most `max_bytes` of each attempt's lines.
    /// Returns how many chunks were refused (no such attempt, or not
    /// theirs).
    pub fn append_logs(
        &self,
        node: Option<&str>,
        chunks: &[LogChunk],
        max_bytes: u64,
    ) -> StoreResult<usize> {
        let mut keys: Vec<(&str, i64)> = chunks
            .iter()
            .filter_map(|c| c.lease.as_ref())
            .map(|l| (l.run_id.as_str(), i64::from(l.attempt)))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(chunks.len());
        }
        let now = super::now_ms();
        self.with_tx(|tx| {
            let mut logs = read_attempts(tx, &keys)?;
            let mut rows = Vec::new();
            let mut refused = 0;
            for chunk in chunks {
                let Some(lease) = &chunk.lease else {
                    refused += 1;
                    continue;
                };
                let key = (lease.run_id.clone(), i64::from(lease.attempt));
                let Some(log) = logs.get_mut(&key) else {
                    refused += 1;
                    continue;
                };
                if log.token != lease.token || node.is_some_and(|n| n != log.node_id) {
                    refused += 1;
                    continue;
                }
                let mut add = |log: &mut AttemptLog, seq: u64, line: Option<&LogLine>| {
                    log.changed = true;
                    if seq > log.next && !log.truncated {
                        let (first, last) = (log.next, seq - 1);
                        rows.push(marker(
                            &key,
                            first,
                            now,
                            if first == last {
                                format!("line {first} is missing: the node dropped it (its log buffer was full)")
                            } else {
                                format!("lines {first} to {last} are missing: the node dropped them (its log buffer was full)")
                            },
                        ));
                    }
                    log.next = seq + u64::from(line.is_some());
                    let Some(line) = line else { return };
                    if log.truncated {
                        return;
                    }
                    let context = cut_text(&line.context, warden_core::wire::MAX_LOG_CONTEXT_BYTES).into_owned();
                    let message = cut_text(&line.message, warden_core::wire::MAX_LOG_LINE_BYTES).into_owned();
                    let size = (context.len() + message.len()) as u64;
                    if log.bytes + size > max_bytes {
                        log.truncated = true;
                        rows.push(marker(
                            &key,
                            seq,
                            now,
                            format!(
                                "the log is truncated here: this attempt's lines passed the control plane's bound of {max_bytes} bytes (--max-log-bytes); later lines are dropped"
                            ),
                        ));
                        return;
                    }
                    log.bytes += size;
                    rows.push(Row {
                        run_id: key.0.clone(),
                        attempt: key.1,
                        seq: seq as i64,
                        at: line.unix_ms,
                        source: source_name(line.source),
                        level: cut_text(&line.level, 16).into_owned(),
                        context,
                        message,
                    });
                };
                for line in &chunk.lines {
                    // A repeat of lines already stored (a retried call).
                    if line.seq < log.next || line.seq > i64::MAX as u64 {
                        continue;
                    }
                    add(log, line.seq, Some(line));
                }
                if chunk.end > log.next && chunk.end <= i64::MAX as u64 {
                    add(log, chunk.end, None);
                }
            }
            insert_rows(tx, &rows)?;
            write_attempts(tx, &logs)?;
            Ok(refused)
        })
    }

    /// Lines of run `run_id` (of `tenant`, if given) after `after` (attempt,
    /// seq), oldest first, at most `limit`; only attempt `attempt` unless 0.
    /// `None`: no such run. Also says whether the run has ended.
    pub fn run_logs(
        &self,
        tenant: Option<&str>,
        run_id: &str,
        attempt: u32,
        after: (u32, i64),
        limit: u32,
    ) -> StoreResult<Option<(Vec<LogLine>, bool)>> {
        self.with_conn(|c| {
            let Some(state) = c.query_opt(
                "SELECT state FROM runs WHERE id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR tenant = ?2)",
                p![run_id, tenant],
                |r| r.parse::<warden_core::RunState>(0),
            )?
            else {
                return Ok(None);
            };
            let lines = c.query_map(
                "SELECT attempt, seq, at, source, level, context, message FROM run_logs
                 WHERE run_id = ?1 AND (CAST(?2 AS BIGINT) = 0 OR attempt = ?2)
                   AND (attempt > ?3 OR (attempt = ?3 AND seq > ?4))
                 ORDER BY attempt, seq LIMIT ?5",
                p![
                    run_id,
                    i64::from(attempt),
                    i64::from(after.0),
                    after.1,
                    i64::from(limit)
                ],
                |r| {
                    Ok(LogLine {
                        attempt: r.get(0)?,
                        seq: r.get(1)?,
                        unix_ms: r.get(2)?,
                        source: warden_core::proto::log_source_named(&r.get::<String>(3)?) as i32,
                        level: r.get(4)?,
                        context: r.get(5)?,
                        message: r.get(6)?,
                    })
                },
            )?;
            Ok(Some((lines, state.is_terminal())))
        })
    }
}

/// The attempts `keys` name, locked, with their logs' state.
fn read_attempts(
    tx: &mut Tx<'_>,
    keys: &[(&str, i64)],
) -> StoreResult<HashMap<(String, i64), AttemptLog>> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(MAX_VALUES) {
        let rows: Vec<Vec<&dyn Param>> = chunk
            .iter()
            .map(|(run, attempt)| vec![run as &dyn Param, attempt])
            .collect();
        let mut params = Vec::new();
        let list = values(&["TEXT", "BIGINT"], &rows, &mut params);
        tx.query_while(
            &format!(
                "SELECT a.run_id, a.attempt, a.token, a.node_id, a.log_next, a.log_bytes, a.log_truncated
                 FROM attempts a JOIN {list} AS l ON a.run_id = l.column1 AND a.attempt = l.column2
                 ORDER BY a.run_id, a.attempt /*pg: FOR UPDATE OF a*/"
            ),
            &params,
            |r| {
                out.insert(
                    (r.get(0)?, r.get(1)?),
                    AttemptLog {
                        token: r.get(2)?,
                        node_id: r.get(3)?,
                        next: r.get(4)?,
                        bytes: r.get(5)?,
                        truncated: r.get(6)?,
                        changed: false,
                    },
                );
                Ok(true)
            },
        )?;
    }
    Ok(out)
}

fn insert_rows(tx: &mut Tx<'_>, rows: &[Row]) -> StoreResult<()> {
    for chunk in rows.chunks(MAX_VALUES) {
        let values_of: Vec<Vec<&dyn Param>> = chunk
            .iter()
            .map(|r| {
                vec![
                    &r.run_id as &dyn Param,
                    &r.attempt,
                    &r.seq,
                    &r.at,
                    &r.source,
                    &r.level,
                    &r.context,
                    &r.message,
                ]
            })
            .collect();
        let mut params = Vec::new();
        let list = values(
            &[
                "TEXT", "BIGINT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT",
            ],
            &values_of,
            &mut params,
        );
        tx.execute(
            &format!(
                "INSERT INTO run_logs (run_id, attempt, seq, at, source, level, context, message)
                 SELECT l.column1, l.column2, l.column3, l.column4, l.column5, l.column6,
                        l.column7, l.column8
                 FROM {list} AS l WHERE l.column1 IS NOT NULL
                 ON CONFLICT (run_id, attempt, seq) DO NOTHING"
            ),
            &params,
        )?;
    }
    Ok(())
}

fn write_attempts(tx: &mut Tx<'_>, logs: &HashMap<(String, i64), AttemptLog>) -> StoreResult<()> {
    let changed: Vec<_> = logs
        .iter()
        .filter(|(_, l)| l.changed)
        .map(|((run, attempt), l)| {
            (
                run,
                *attempt,
                l.next as i64,
                l.bytes as i64,
                i64::from(l.truncated),
            )
        })
        .collect();
    for chunk in changed.chunks(MAX_VALUES) {
        let rows: Vec<Vec<&dyn Param>> = chunk
            .iter()
            .map(|(run, attempt, next, bytes, truncated)| {
                vec![run as &dyn Param, attempt, next, bytes, truncated]
            })
            .collect();
        let mut params = Vec::new();
        let list = values(
            &["TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT"],
            &rows,
            &mut params,
        );
        tx.execute(
            &format!(
                "UPDATE attempts SET log_next = l.column3, log_bytes = l.column4,
                    log_truncated = l.column5
                 FROM {list} AS l
                 WHERE attempts.run_id = l.column1 AND attempts.attempt = l.column2"
            ),
            &params,
        )?;
    }
    Ok(())
}

/// A line Warden writes into an attempt's log at `seq`.
fn marker(key: &(String, i64), seq: u64, at: i64, message: String) -> Row {
    Row {
        run_id: key.0.clone(),
        attempt: key.1,
        seq: seq as i64,
        at,
        source: "warden",
        level: String::new(),
        context: String::new(),
        message,
    }
}

/// Where a node's line came from, as stored: a node cannot write
/// `warden` lines (only the control plane marks gaps and truncation).
fn source_name(source: i32) -> &'static str {
    if source == LogSource::Warden as i32 {
        "log"
    } else {
        warden_core::proto::log_source_name(source)
    }
}
