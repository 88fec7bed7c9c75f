//! The PostgreSQL backend: a pool of connections (deadpool, the pool the
//! KV backend's connections are in too), each used by one request at a
//! time, which passes over connections the server closed (a restart) and
//! waits a few seconds for one it refuses ([`Pool::with`]); and the
//! schema's versioned migrations, run at start in one transaction under an
//! advisory lock so replicas starting together migrate once.
//!
//! The client is tokio-postgres, as everywhere in Warden, through its
//! blocking face (the `postgres` crate): the store's logic is synchronous,
//! like SQLite's, and runs off the async runtime's workers ([`blocking`]),
//! where each statement waits on its own thread, which drives the
//! connection itself.

use super::sql::PgConn;
use super::{StoreError, StoreResult};
use deadpool::managed::{Metrics, PoolError, RecycleError, RecycleResult};
use std::time::{Duration, Instant};

/// Migrations, in order; `warden_migrations` records which ran. The first
/// is the SQLite schema as of its version 8, in PostgreSQL's types.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "initial schema",
        r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    agent TEXT NOT NULL,
    digest TEXT NOT NULL,
    input TEXT NOT NULL,
    budget BYTEA NOT NULL,
    grant_ BYTEA NOT NULL,
    selector TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    lease_node TEXT,
    lease_token TEXT,
    lease_expires BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    output TEXT,
    error_kind BIGINT NOT NULL DEFAULT 0,
    error_message TEXT,
    usage BYTEA,
    traceparent TEXT NOT NULL DEFAULT '',
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
CREATE INDEX runs_by_state ON runs (state, not_before, created);
CREATE INDEX runs_by_node ON runs (lease_node, state);
CREATE INDEX runs_by_tenant ON runs (tenant, created);
CREATE INDEX runs_by_state_tenant ON runs (state, tenant, not_before, created);
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    token TEXT NOT NULL DEFAULT '',
    started BIGINT NOT NULL,
    ended BIGINT,
    outcome TEXT NOT NULL,
    error_kind BIGINT NOT NULL DEFAULT 0,
    error_message TEXT,
    usage BYTEA,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    labels TEXT NOT NULL,
    capacity BYTEA NOT NULL,
    state TEXT NOT NULL,
    active_runs BIGINT NOT NULL DEFAULT 0,
    free_slots BIGINT NOT NULL DEFAULT 0,
    last_heartbeat BIGINT NOT NULL
);
CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE versions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES components (digest),
    created BIGINT NOT NULL,
    capabilities TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, name, version)
);
CREATE INDEX versions_by_digest ON versions (digest, tenant);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created BIGINT NOT NULL,
    expires BIGINT,
    revoked BIGINT
);
CREATE TABLE join_tokens (
    hash TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    used_by TEXT
);
CREATE TABLE node_identities (
    fingerprint TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    created BIGINT NOT NULL,
    revoked BIGINT
);
CREATE INDEX node_identities_by_node ON node_identities (node_id);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant, id);
CREATE TABLE quotas (
    tenant TEXT PRIMARY KEY,
    max_running BIGINT,
    max_queued BIGINT,
    max_input_bytes BIGINT,
    max_cost_usd_per_day DOUBLE PRECISION,
    max_tokens_per_day BIGINT
);
CREATE TABLE concurrency_limits (
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    max_running BIGINT NOT NULL,
    PRIMARY KEY (tenant, scope)
);
CREATE TABLE usage_daily (
    tenant TEXT NOT NULL,
    day BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);
CREATE TABLE registry_credentials (
    tenant TEXT NOT NULL,
    registry TEXT NOT NULL,
    username TEXT NOT NULL,
    secret BYTEA NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (tenant, registry)
);
"#,
    ),
    ("idempotency keys", super::IDEMPOTENCY_KEYS),
    // The order runs were queued in, for ties within a millisecond (SQLite
    // has its rowid).
    (
        "queue order",
        "ALTER TABLE runs ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
         CREATE INDEX runs_queue ON runs (state, tenant, not_before, created, seq);",
    ),
    // Every run is updated three or four times on its way through the
    // states. Indexes that hold only queued or only in-flight runs stay
    // small and get no entry when a run ends; full indexes led by `state`
    // made each lease poll step over the old versions of every run
    // updated since the last vacuum. Vacuum runs after fewer changes too.
    (
        "partial queue and in-flight indexes",
        "CREATE INDEX runs_queued ON runs (tenant, not_before, created, seq)
             WHERE state = 'queued';
         CREATE INDEX runs_in_flight ON runs (lease_node) WHERE state IN ('leased', 'running');
         DROP INDEX runs_queue;
         DROP INDEX runs_by_state_tenant;
         DROP INDEX runs_by_node;
         ALTER TABLE runs SET (autovacuum_vacuum_scale_factor = 0.02,
                               autovacuum_vacuum_threshold = 500);",
    ),
    ("run logs", super::RUN_LOGS),
    ("usage by agent", super::USAGE_BY_AGENT),
    ("runs by state, newest first", super::RUNS_BY_STATE),
    ("webhooks", super::webhooks::MIGRATION),
];

/// How long a request waits for a refused connection to be accepted
/// (PostgreSQL restarting) before it fails.
const RECONNECT_FOR: Duration = Duration::from_secs(5);

/// Key of the advisory lock migrations hold ("warden" in ASCII).
const MIGRATION_LOCK: i64 = 0x7761_7264_656e;

/// Runs `f`, which blocks on the network, without stalling the async
/// runtime: on a multi-threaded runtime's worker the worker's other tasks
/// move to another thread meanwhile; on a single-threaded runtime `f` runs
/// on a thread of its own.
pub(crate) fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Err(_) => f(),
    }
}

/// Makes the pool's connections, and checks one is open before it is
/// used again.
struct Connector {
    config: postgres::Config,
    /// This replica's name in its NOTIFYs (random, hex).
    replica: String,
}

impl deadpool::managed::Manager for Connector {
    type Type = PgConn;
    type Error = postgres::Error;

    /// Connects, blocking: the pool is only asked from a thread off the
    /// async runtime ([`Pool::with`]).
    async fn create(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn::new(
            self.config.connect(postgres::NoTls)?,
            &self.replica,
        ))
    }

    async fn recycle(&self, conn: &mut PgConn, _: &Metrics) -> RecycleResult<postgres::Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("closed by the server"));
        }
        // A request that panicked mid-transaction left it open: its work
        // must not commit with the next request's.
        if conn.in_transaction() {
            return Err(RecycleError::message("left in a transaction"));
        }
        Ok(())
    }
}

/// Connections to one database, at most `max` open at once.
pub(crate) struct Pool {
    url: String,
    replica: String,
    pool: deadpool::managed::Pool<Connector>,
    max: usize,
}

impl Pool {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and
    /// migrates the schema.
    pub(crate) fn open(url: &str, max: usize) -> StoreResult<Pool> {
        let open_error = |message: String| StoreError::Open {
            path: redact(url),
            message,
        };
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| open_error(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("warden-control-plane");
        let replica = hex::encode(rand::random::<[u8; 8]>());
        let max = max.max(1);
        let pool = deadpool::managed::Pool::builder(Connector {
            config,
            replica: replica.clone(),
        })
        .max_size(max)
        // The most recently used connection first: a few stay busy (and
        // their server processes warm), the rest idle.
        .queue_mode(deadpool::managed::QueueMode::Lifo)
        .build()
        .map_err(|e| open_error(e.to_string()))?;
        let pool = Pool {
            url: url.to_string(),
            replica,
            pool,
            max,
        };
        pool.with(migrate).map_err(|e| match e {
            e @ StoreError::Unreachable { .. } => e,
            e => open_error(e.to_string()),
        })?;
        Ok(pool)
    }

    /// Runs `f` on a connection of the pool (a new one if none is idle;
    /// waits for one if `max` are in use).
    ///
    /// A pooled connection may have been closed by the server since its
    /// last use (a restart ends every session with `57P01`), and a new one
    /// is refused while the server is down. When `f` fails because its
    /// connection is lost ([`connection_lost`]) with no COMMIT in flight,
    /// `f` runs again on another: PostgreSQL rolls back a transaction whose
    /// COMMIT it did not get, and a read outside a transaction changed
    /// nothing. Whether a lost COMMIT took effect is unknown, so that error
    /// is returned: running the transaction again might apply it twice.
    /// Every idle connection may be stale, so `f` has `max` + 1 tries; a
    /// refused connection is asked for again, with a backoff, for
    /// [`RECONNECT_FOR`] (a restart's length). Then the error is
    /// [`StoreError::Unreachable`].
    pub(crate) fn with<T: Send>(
        &self,
        mut f: impl FnMut(&mut PgConn) -> StoreResult<T> + Send,
    ) -> StoreResult<T> {
        blocking(|| {
            let started = Instant::now();
            let (mut lost, mut refused) = (0, 0);
            let last = loop {
                // Off the runtime (see `blocking`): waiting here, or
                // connecting, blocks only this thread.
                match futures_executor::block_on(self.pool.get()) {
                    Ok(mut conn) => {
                        let out = f(&mut conn);
                        let gone = matches!(&out, Err(e) if connection_lost(e));
                        let commit_sent = std::mem::take(&mut conn.commit_sent);
                        if gone {
                            drop(deadpool::managed::Object::take(conn));
                        }
                        match out {
                            Err(e) if gone && !commit_sent => {
                                lost += 1;
                                if lost > self.max {
                                    break e;
                                }
                                tracing::debug!(error = %e, "PostgreSQL connection lost; trying another");
                            }
                            out => return out,
                        }
                    }
                    Err(PoolError::Backend(e)) if pg_lost(&e) => {
                        refused += 1;
                        let pause = warden_core::Backoff::RECONNECT.delay(refused);
                        if started.elapsed() + pause >= RECONNECT_FOR {
                            break StoreError::Pg(e);
                        }
                        std::thread::sleep(pause);
                    }
                    Err(PoolError::Backend(e)) => return Err(e.into()),
                    Err(e) => {
                        return Err(StoreError::Open {
                            path: redact(&self.url),
                            message: e.to_string(),
                        });
                    }
                }
            };
            Err(StoreError::Unreachable {
                database: redact(&self.url),
                tries: lost + refused as usize,
                waited: started.elapsed(),
                cause: match &last {
                    StoreError::Pg(e) => super::pg_message(e),
                    e => e.to_string(),
                },
            })
        })
    }
}

impl Pool {
    /// Listens for other replicas' "runs changed" until dropped, calling
    /// `wake` on each (and once after each reconnect, for what was missed);
    /// this replica's own are skipped (its changes woke it already).
    pub(crate) async fn listen(&self, wake: impl Fn()) {
        let url = self.url.clone();
        let replica = self.replica.clone();
        loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, mut conn)) => {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let replica = replica.clone();
                    let driver = tokio::spawn(async move {
                        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await
                        {
                            match msg {
                                Ok(tokio_postgres::AsyncMessage::Notification(n))
                                    if n.payload() != replica =>
                                {
                                    let _ = tx.send(());
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "PostgreSQL LISTEN connection");
                                    break;
                                }
                            }
                        }
                    });
                    match client
                        .batch_execute(&format!("LISTEN {}", super::sql::CHANNEL))
                        .await
                    {
                        Ok(()) => {
                            wake();
                            while rx.recv().await.is_some() {
                                wake();
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "PostgreSQL LISTEN"),
                    }
                    driver.abort();
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect to PostgreSQL to LISTEN"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for Pool {
    /// Each connection owns a small runtime, which may not be dropped on
    /// an async runtime's thread: the idle ones are closed on a thread of
    /// their own.
    fn drop(&mut self) {
        let idle = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("warden-pg-close".into())
                .spawn(move || drop(idle));
        }
    }
}

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Applies the migrations not yet recorded, all in one transaction (the
/// schema moves to the newest version or, if one fails, stays where it
/// was), holding an advisory lock so that replicas starting at once wait
/// for each other. Safe to run again whatever happened to a lost COMMIT:
/// it reads what ran first.
fn migrate(conn: &mut PgConn) -> StoreResult<()> {
    let client = &mut conn.client;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS warden_migrations (
             version BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             applied BIGINT NOT NULL
         )",
    )?;
    let done: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM warden_migrations",
            &[],
        )?
        .get(0);
    if done > MIGRATIONS.len() as i64 {
        return Err(StoreError::TooNew {
            found: done,
            known: MIGRATIONS.len(),
        });
    }
    for (i, (description, sql)) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO warden_migrations (version, description, applied) VALUES ($1, $2, $3)",
            &[&(i as i64 + 1), description, &super::now_ms()],
        )?;
        tracing::info!(version = i + 1, description, "PostgreSQL schema migrated");
    }
    tx.commit()?;
    Ok(())
}

/// Whether `e` means the connection is gone, or none can be had yet: it
/// was closed or reset (`08...`, an io error), or the server is shutting
/// down, crashed, starting up, or ended an idle session (`57P01`, `57P02`,
/// `57P03`, `57P05`).
pub(crate) fn connection_lost(e: &StoreError) -> bool {
    matches!(e, StoreError::Pg(e) if pg_lost(e))
}

fn pg_lost(e: &postgres::Error) -> bool {
    match e.code().map(|c| c.code()) {
        Some(code) => {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "57P05")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

/// Whether `e` means "try the transaction again" (a serialization
/// failure or a deadlock PostgreSQL broke).
pub(crate) fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Pg(e) => e.code().is_some_and(|c| {
            *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                || *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_name_the_database_but_not_its_password() {
        assert_eq!(
            super::redact("postgres://warden:s3cret@db:5432/warden"),
            "postgres://warden:***@db:5432/warden"
        );
        assert_eq!(
            super::redact("postgres://db/warden"),
            "postgres://db/warden"
        );
    }
}
