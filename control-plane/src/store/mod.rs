//! [`Store`]: the control plane's state in one SQLite file (WAL), which
//! survives restarts and `kill -9`. Every state change is one transaction.
//!
//! Tables: `runs` (one row per run, with its current lease), `attempts`
//! (every attempt's history), `nodes`, `components` (blobs by digest),
//! `versions` (immutable name@version -> digest) and `counters` (the
//! monotonic fencing token).

mod leases;
mod nodes;
mod registry;
mod runs;
#[cfg(test)]
mod tests;

pub use leases::{LeaseCheck, Outcome, RunReport};
pub use registry::Published;
pub use runs::{NewRun, RunFilter};

use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

/// A failure of the store itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot open database {path}: {message}")]
    Open { path: String, message: String },
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Migrations, in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    digest TEXT NOT NULL,
    input TEXT NOT NULL,
    budget BLOB NOT NULL,
    grant_ BLOB NOT NULL,
    selector TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    lease_node TEXT,
    lease_token INTEGER,
    lease_expires INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    error_kind INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    usage BLOB,
    traceparent TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE INDEX runs_by_state ON runs (state, not_before, created);
CREATE INDEX runs_by_node ON runs (lease_node, state);
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    token INTEGER NOT NULL,
    started INTEGER NOT NULL,
    ended INTEGER,
    outcome TEXT NOT NULL,
    error_kind INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    usage BLOB,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    labels TEXT NOT NULL,
    capacity BLOB NOT NULL,
    state TEXT NOT NULL,
    active_runs INTEGER NOT NULL DEFAULT 0,
    free_slots INTEGER NOT NULL DEFAULT 0,
    last_heartbeat INTEGER NOT NULL
);
CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES components (digest),
    created INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('fencing_token', 0);
"#,
    r#"
ALTER TABLE versions ADD COLUMN capabilities TEXT NOT NULL DEFAULT '';
"#,
];

/// The control plane's database.
pub struct Store {
    conn: Mutex<Connection>,
    /// Dropping this stops the checkpoint thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// Copies the WAL back into the database every 250 ms (a passive
/// checkpoint never blocks writers), until the store is dropped; then once
/// more, truncating the WAL.
fn checkpoint_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| {
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    };
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(250))
    {
        checkpoint("PASSIVE");
    }
    checkpoint("TRUNCATE");
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub use warden_core::now_ms;

/// Column `idx` of `row`, parsed from its stored name (a state enum).
fn parse_column<T>(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| open_err(&e))?;
        }
        let mut conn = Connection::open(path).map_err(|e| open_err(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every hot statement stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| open_err(&e))?;
        let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(open_err(&format!(
                "the database is at schema version {version}, newer than this warden ({}); upgrade warden",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        // Checkpoints run on their own thread and connection, so no request
        // waits for one while holding the store.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Connection::open(path).map_err(|e| open_err(&e))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("warden-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(|e| open_err(&e))?;
        Ok(Store {
            conn: Mutex::new(conn),
            _checkpointer: stop,
        })
    }

    fn with_tx<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.conn.lock().unwrap();
        f(&conn)
    }
}

/// The next fencing token (monotonic, durable).
fn next_token(tx: &rusqlite::Transaction<'_>) -> StoreResult<u64> {
    let token: i64 = tx
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'fencing_token' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(token as u64)
}

fn optional<T>(r: rusqlite::Result<T>) -> StoreResult<Option<T>> {
    Ok(r.optional()?)
}
