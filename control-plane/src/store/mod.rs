//! [`Store`]: the control plane's state, in one SQLite file (WAL) or in a
//! PostgreSQL database that several replicas share; either survives
//! restarts and `kill -9`. Every state change is one transaction. The logic
//! is written once ([`sql`]); what differs between the backends is how a
//! transaction is held: SQLite's one writer at a time, PostgreSQL's row
//! locks (claims skip rows another replica holds: `FOR UPDATE SKIP
//! LOCKED`).
//!
//! Tables: `runs` (one row per run, with its current lease), `attempts`
//! (every attempt's history), `nodes`, `components` (blobs by digest),
//! `versions` (immutable name@version -> digest), and for authentication
//! `tokens`, `join_tokens` and `node_identities` (`auth.rs`).

mod audit;
mod auth;
mod credentials;
mod leases;
mod logs;
mod nodes;
mod pg;
mod quotas;
mod registry;
mod runs;
pub(crate) mod sql;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_conformance;
#[cfg(test)]
mod tests_connection;
#[cfg(test)]
mod tests_logs;
#[cfg(test)]
mod tests_quotas;
mod usage;
mod webhooks;

pub use audit::AuditEntry;
pub use auth::{EnrollError, JOIN_TOKEN_PREFIX, JoinTokenRefusal, TOKEN_PREFIX, TokenInfo};
pub use credentials::RegistryCredential;
pub use leases::{LeaseCheck, Outcome, RunReport};
pub use quotas::{Limit, Quotas, Scope};
pub use registry::Published;
pub use runs::{MAX_PAGE, NewRun, RunFilter, Stats};
pub use usage::AgentUsage;
pub use webhooks::{DueWebhook, WebhookConfig};

use rusqlite::Connection;
use sql::Tx;
use std::path::Path;
use std::sync::Mutex;

/// A failure of the store itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database: {}", pg_message(.0))]
    Pg(#[from] postgres::Error),
    #[error("cannot open database {path}: {message}")]
    Open { path: String, message: String },
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A newer warden migrated the database.
    #[error(
        "the database is at schema version {found}, newer than this warden ({known}); upgrade warden"
    )]
    TooNew { found: i64, known: usize },
    /// PostgreSQL stayed away (down, restarting, or ending every session)
    /// through every try.
    #[error("cannot reach the database {database} ({tries} tries in {waited:.1?}): {cause}")]
    Unreachable {
        database: String,
        tries: usize,
        waited: std::time::Duration,
        cause: String,
    },
    /// Not a failure: undoes a transaction that found the request invalid.
    #[error("{0}")]
    Rollback(EnrollError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What PostgreSQL said, or what went wrong on the way to it.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

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
    // Lease tokens become 128 random bits (text); leases in flight while
    // upgrading expire and are re-queued. Client tokens, join tokens and
    // node identities (certificate fingerprints), all stored hashed.
    r#"
ALTER TABLE runs DROP COLUMN lease_token;
ALTER TABLE runs ADD COLUMN lease_token TEXT;
ALTER TABLE attempts DROP COLUMN token;
ALTER TABLE attempts ADD COLUMN token TEXT NOT NULL DEFAULT '';
DELETE FROM counters WHERE name = 'fencing_token';
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL,
    expires INTEGER,
    revoked INTEGER
);
CREATE TABLE join_tokens (
    hash TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    used_by TEXT
);
CREATE TABLE node_identities (
    fingerprint TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER
);
CREATE INDEX node_identities_by_node ON node_identities (node_id);
"#,
    // Tenants: every run and every published name belongs to one.
    r#"
ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX runs_by_tenant ON runs (tenant, created);
CREATE TABLE versions_t (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES components (digest),
    created INTEGER NOT NULL,
    capabilities TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, name, version)
);
INSERT INTO versions_t SELECT 'default', name, version, digest, created, capabilities FROM versions;
DROP TABLE versions;
ALTER TABLE versions_t RENAME TO versions;
CREATE INDEX versions_by_digest ON versions (digest, tenant);
"#,
    // The audit log.
    r#"
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant, id);
"#,
    // Quotas per tenant; NULL: no limit.
    r#"
CREATE TABLE quotas (
    tenant TEXT PRIMARY KEY,
    max_running INTEGER,
    max_queued INTEGER,
    max_input_bytes INTEGER
);
"#,
    // Run labels; concurrency limits per agent or label; daily budgets and
    // what each tenant spent per (UTC) day; the queue by tenant, for fair
    // leasing.
    r#"
ALTER TABLE runs ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
CREATE INDEX runs_by_state_tenant ON runs (state, tenant, not_before, created);
ALTER TABLE quotas ADD COLUMN max_cost_usd_per_day REAL;
ALTER TABLE quotas ADD COLUMN max_tokens_per_day INTEGER;
CREATE TABLE concurrency_limits (
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    max_running INTEGER NOT NULL,
    PRIMARY KEY (tenant, scope)
);
CREATE TABLE usage_daily (
    tenant TEXT NOT NULL,
    day INTEGER NOT NULL,
    cost_usd REAL NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);
"#,
    // Registry credentials per tenant, the password sealed.
    r#"
CREATE TABLE registry_credentials (
    tenant TEXT NOT NULL,
    registry TEXT NOT NULL,
    username TEXT NOT NULL,
    secret BLOB NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (tenant, registry)
);
"#,
    // Idempotency keys of submits: at most one run per key and tenant.
    IDEMPOTENCY_KEYS,
    RUN_LOGS,
    USAGE_BY_AGENT,
    RUNS_BY_STATE,
    webhooks::MIGRATION,
];

/// Runs in one state, newest first: a list by state (`runs list --state
/// queued` with none queued) reads a page of the index, not every run. The
/// other reads by state need only its first column. (A migration both
/// backends run as it is.)
const RUNS_BY_STATE: &str = r#"
DROP INDEX runs_by_state;
CREATE INDEX runs_by_state ON runs (state, created, id);
"#;

/// A migration both backends run as it is.
const IDEMPOTENCY_KEYS: &str = r#"
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX runs_by_idempotency_key ON runs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
"#;

/// Agents' log lines, per attempt, and how much of each attempt's log is
/// kept (a migration both backends run as it is).
const RUN_LOGS: &str = r#"
CREATE TABLE run_logs (
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    level TEXT NOT NULL,
    context TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (run_id, attempt, seq)
);
ALTER TABLE attempts ADD COLUMN log_next BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_truncated BIGINT NOT NULL DEFAULT 0;
"#;

/// What each tenant's agents used per (UTC) day, from every recorded
/// result (a migration both backends run as it is).
const USAGE_BY_AGENT: &str = r#"
CREATE TABLE usage_by_agent (
    tenant TEXT NOT NULL,
    day BIGINT NOT NULL,
    agent TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    succeeded BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    fuel BIGINT NOT NULL DEFAULT 0,
    wall_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day, agent)
);
"#;

/// The control plane's database.
pub struct Store {
    db: Db,
    /// The file, or the URL without its password.
    name: String,
    /// Seals secrets kept in the database (registry passwords).
    key: ring::aead::LessSafeKey,
}

enum Db {
    Sqlite {
        conn: Mutex<Connection>,
        /// Dropping this stops the checkpoint thread.
        _checkpointer: std::sync::mpsc::Sender<()>,
    },
    Postgres(Box<pg::Pool>),
}

/// WAL frames (pages) past which a checkpoint makes the next write start
/// the WAL again from its beginning (64 MiB of 4 KiB pages).
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Copies the WAL back into the database every 250 ms (a passive
/// checkpoint never blocks writers), until the store is dropped; then once
/// more, truncating the WAL. Under steady writes a passive checkpoint never
/// catches up with the writer, and the WAL would grow without end (and
/// every read slow down with it): once it holds [`WAL_RESTART_FRAMES`],
/// a restart checkpoint holds writers back while it copies the little a
/// passive one left, so the next write starts the WAL again (reusing the
/// file).
fn checkpoint_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    // How many frames the WAL holds after the checkpoint.
    let checkpoint = |mode: &str| -> i64 {
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(1)
        }) {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                0
            }
        }
    };
    // A restart checkpoint waits this long for the writer.
    let _ = conn.busy_timeout(std::time::Duration::from_secs(1));
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(250))
    {
        if checkpoint("PASSIVE") >= WAL_RESTART_FRAMES {
            checkpoint("RESTART");
        }
    }
    checkpoint("TRUNCATE");
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub use warden_core::now_ms;

/// The name of the key that seals secrets in the database (registry
/// credentials): in the data dir, beside a SQLite database.
pub const SEALING_KEY: &str = "sealing.key";

/// The sealing key of the SQLite database at `path`: [`SEALING_KEY`] in
/// its directory. A key by the name earlier versions gave it (`DB.key`)
/// is renamed, so what it sealed stays readable.
fn sealing_key_beside(path: &Path) -> std::path::PathBuf {
    let key = path.with_file_name(SEALING_KEY);
    let mut legacy = path.as_os_str().to_owned();
    legacy.push(".key");
    if !key.exists()
        && Path::new(&legacy).exists()
        && let Err(e) = std::fs::rename(&legacy, &key)
        // Another process may have renamed it first.
        && !key.exists()
    {
        tracing::warn!(from = ?legacy, to = %key.display(), "cannot rename the sealing key: {e}");
        return legacy.into();
    }
    key
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `path`,
    /// with its sealing key [`SEALING_KEY`] beside it.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        warden_core::files::create_private(path).map_err(|e| open_err(&e))?;
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
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(open_err(&StoreError::TooNew {
                found: version,
                known: MIGRATIONS.len(),
            }));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
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
        let key = credentials::load_key(&sealing_key_beside(path)).map_err(|e| open_err(&e))?;
        Ok(Store {
            db: Db::Sqlite {
                conn: Mutex::new(conn),
                _checkpointer: stop,
            },
            name: path.display().to_string(),
            key,
        })
    }

    /// Connects to the PostgreSQL database at `url` (migrating it as
    /// needed), with at most `connections` open at once; secrets are
    /// sealed with the key in `key_file` (made if missing: replicas must
    /// share it).
    pub fn open_postgres(url: &str, connections: usize, key_file: &Path) -> StoreResult<Self> {
        let pool = pg::Pool::open(url, connections)?;
        let key = credentials::load_key(key_file).map_err(|message| StoreError::Open {
            path: key_file.display().to_string(),
            message,
        })?;
        Ok(Store {
            db: Db::Postgres(Box::new(pool)),
            name: pg::redact(url),
            key,
        })
    }

    /// On PostgreSQL, runs until dropped, calling `wake` whenever any
    /// replica changed runs; on SQLite (one control plane) returns at once.
    pub async fn listen(&self, wake: impl Fn()) {
        if let Db::Postgres(pool) = &self.db {
            pool.listen(wake).await;
        }
    }

    /// The database, for messages: its file, or its URL without password.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this store is PostgreSQL (shared by replicas).
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Runs `f`, work that may read thousands of rows (a lease poll's queue
    /// scan, the reaper's), off the async runtime's worker. On SQLite, whose
    /// other requests are short and run in place under the connection's
    /// lock, it runs in `block_in_place` on a multi-threaded runtime: the
    /// worker's other tasks move to another thread meanwhile. PostgreSQL's
    /// requests all run off the workers already ([`pg::Pool::with`]).
    fn off_worker<T>(&self, f: impl FnOnce() -> T) -> T {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match (&self.db, Handle::try_current()) {
            (Db::Sqlite { .. }, Ok(h)) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(f)
            }
            _ => f(),
        }
    }

    /// Runs `f` in one transaction. On PostgreSQL it runs again if it lost
    /// a serialization conflict or a deadlock, or lost its connection
    /// before COMMIT (on a new one: see [`pg::Pool::with`]).
    fn with_tx<T: Send>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> StoreResult<T> + Send,
    ) -> StoreResult<T> {
        match &self.db {
            Db::Sqlite { conn, .. } => {
                let mut conn = conn.lock().unwrap();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&mut Tx::Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Db::Postgres(pool) => pool.with(|conn| {
                let mut tries = 0;
                loop {
                    conn.begin()?;
                    let out = f(&mut Tx::Pg(conn));
                    let out = match out {
                        Ok(out) => conn.end(true).map(|()| out),
                        Err(e) => {
                            if !conn.client.is_closed() {
                                conn.end(false)?;
                            }
                            Err(e)
                        }
                    };
                    tries += 1;
                    match out {
                        Err(e) if tries < 10 && pg::retryable(&e) => continue,
                        out => return out,
                    }
                }
            }),
        }
    }

    /// Runs `f` outside a transaction (reads: on PostgreSQL they run again
    /// on a new connection if theirs was lost).
    fn with_conn<T: Send>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> StoreResult<T> + Send,
    ) -> StoreResult<T> {
        match &self.db {
            Db::Sqlite { conn, .. } => f(&mut Tx::Lite(&conn.lock().unwrap())),
            Db::Postgres(pool) => pool.with(|conn| f(&mut Tx::Pg(conn))),
        }
    }
}

/// A new lease token: 128 random bits, hex.
fn new_lease_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
