//! [`PostgresStore`]: key-value data in a PostgreSQL table that every node
//! pointing at the database shares, so an agent's state follows it from
//! node to node. `increment` locks its row for the read-add-write, so
//! concurrent increments from any nodes are each applied once.
//!
//! A call whose pooled connection turns out closed (the server restarted)
//! runs again on another, where that is safe ([`PostgresStore::run`]).

use super::{KvError, KvKey, KvStore, counter_value};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

pub struct PostgresStore {
    pool: Pool,
    /// The table, made once per process (under an advisory lock, so nodes
    /// starting together do not race).
    ready: OnceCell<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> KvError {
    KvError::Backend(format!("PostgreSQL: {e}"))
}

fn pg(e: tokio_postgres::Error) -> KvError {
    backend(said(&e))
}

/// What went wrong, in PostgreSQL's words when it answered.
fn said(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// One try of a call, on a connection of its own.
type Try<'a, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'a>>;

/// Why one try of a call failed.
enum Failure {
    /// Tried again on another connection if this one was lost
    /// ([`connection_lost`]).
    Pg(tokio_postgres::Error),
    /// Not tried again.
    Final(KvError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

/// Commits `tx`. If the connection is lost meanwhile, whether the
/// transaction committed is unknown: the error is final, as running it
/// again might apply it twice.
async fn commit(tx: deadpool_postgres::Transaction<'_>) -> Result<(), Failure> {
    tx.commit().await.map_err(|e| Failure::Final(pg(e)))
}

/// Whether `e` means the connection is gone, or none can be had yet: it
/// was closed or reset (`08...`, an io error), or the server is shutting
/// down, crashed, starting up, or ended an idle session (`57P01`, `57P02`,
/// `57P03`, `57P05`).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    match e.code().map(|c| c.code()) {
        Some(code) => {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "57P05")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

/// How long a call waits for a refused connection to be accepted
/// (PostgreSQL restarting) before it fails.
const RECONNECT_FOR: Duration = Duration::from_secs(5);

/// Key of the advisory lock held while making the table ("wkv").
const SCHEMA_LOCK: i64 = 0x77_6b76;

impl PostgresStore {
    /// A pool of connections to `url` (`postgres://USER:PASSWORD@HOST/DB`);
    /// nothing is contacted until the first call.
    pub fn new(url: &str) -> Result<Self, KvError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| KvError::Backend(format!("[kv] url is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("warden-node-kv");
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // The most recently used connection first, as the control plane's
        // pool: a few connections (and their server processes) stay warm.
        let pool = Pool::builder(manager)
            .max_size(16)
            .queue_mode(deadpool_postgres::QueueMode::Lifo)
            .build()
            .map_err(backend)?;
        Ok(PostgresStore {
            pool,
            ready: OnceCell::new(),
        })
    }

    /// Runs `op` on a pooled connection. The pool hands out a connection
    /// unless it knows it closed, but the server may have closed it since
    /// its last use (a restart ends every session with `57P01`), and a new
    /// one is refused while the server is down. When `op` fails because
    /// its connection is lost, it runs again on another: each call is a
    /// read, a write that is the same done twice (`set`, `delete`), or a
    /// transaction, which PostgreSQL rolls back unless it got its COMMIT
    /// (a lost COMMIT is final: see [`commit`]). A lost connection goes
    /// back to the pool, which drops it once closed (`RecyclingMethod::Fast`
    /// checks that). Every idle connection may be stale, so `op` has the
    /// pool's size + 1 tries; a refused connection is asked for again,
    /// with a backoff, for [`RECONNECT_FOR`] (a restart's length).
    async fn run<'a, T>(&self, mut op: impl FnMut(Object) -> Try<'a, T>) -> Result<T, KvError> {
        let started = Instant::now();
        let (mut lost, mut refused) = (0, 0);
        let last = loop {
            match self.pool.get().await {
                Ok(client) => {
                    let out = match self.made_table(&client).await {
                        Ok(()) => op(client).await,
                        Err(e) => Err(Failure::Pg(e)),
                    };
                    match out {
                        Ok(out) => return Ok(out),
                        Err(Failure::Pg(e)) if connection_lost(&e) => {
                            lost += 1;
                            if lost > self.pool.status().max_size {
                                break e;
                            }
                            tracing::debug!(error = %e, "PostgreSQL connection lost; trying another");
                        }
                        Err(Failure::Pg(e)) => return Err(pg(e)),
                        Err(Failure::Final(e)) => return Err(e),
                    }
                }
                Err(PoolError::Backend(e)) if connection_lost(&e) => {
                    refused += 1;
                    let pause = warden_core::Backoff::RECONNECT.delay(refused);
                    if started.elapsed() + pause >= RECONNECT_FOR {
                        break e;
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(backend(e)),
            }
        };
        Err(backend(format!(
            "cannot reach the database ({} tries in {:.1?}): {}",
            lost + refused as usize,
            started.elapsed(),
            said(&last)
        )))
    }

    /// Makes the table, once per process.
    async fn made_table(&self, client: &Object) -> Result<(), tokio_postgres::Error> {
        self.ready
            .get_or_try_init(|| async {
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
                         CREATE TABLE IF NOT EXISTS warden_kv (
                             namespace TEXT NOT NULL,
                             bucket TEXT NOT NULL,
                             key TEXT NOT NULL,
                             value BYTEA NOT NULL,
                             PRIMARY KEY (namespace, bucket, key)
                         );
                         COMMIT;"
                    ))
                    .await
            })
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl KvStore for PostgresStore {
    async fn get(&self, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError> {
        self.run(|c| {
            Box::pin(async move {
                let stmt = c
                .prepare_cached(
                    "SELECT value FROM warden_kv WHERE namespace = $1 AND bucket = $2 AND key = $3",
                )
                .await?;
                let row = c
                    .query_opt(&stmt, &[&at.namespace, &at.bucket, &at.key])
                    .await?;
                Ok(row.map(|r| r.get(0)))
            })
        })
        .await
    }

    async fn set(&self, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError> {
        self.run(|c| {
            Box::pin(async move {
                let stmt = c
                .prepare_cached(
                    "INSERT INTO warden_kv (namespace, bucket, key, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value",
                )
                .await?;
                c.execute(&stmt, &[&at.namespace, &at.bucket, &at.key, &value])
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn delete(&self, at: KvKey<'_>) -> Result<(), KvError> {
        self.run(|c| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM warden_kv WHERE namespace = $1 AND bucket = $2 AND key = $3",
                    &[&at.namespace, &at.bucket, &at.key],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn list_keys(
        &self,
        namespace: &str,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        self.run(|c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT key FROM warden_kv WHERE namespace = $1 AND bucket = $2
                     ORDER BY key COLLATE \"C\" LIMIT $3 OFFSET $4",
                        &[
                            &namespace,
                            &bucket,
                            &(limit as i64),
                            &(offset.min(i64::MAX as u64) as i64),
                        ],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })
        .await
    }

    async fn increment(&self, at: KvKey<'_>, delta: u64) -> Result<u64, KvError> {
        self.run(|mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&at.namespace, &at.bucket, &at.key];
                // The row exists (made by this increment, or another's that
                // commits first), then is locked until this one commits.
                tx.execute(
                "INSERT INTO warden_kv (namespace, bucket, key, value) VALUES ($1, $2, $3, '\\x30')
                 ON CONFLICT (namespace, bucket, key) DO NOTHING",
                &params,
            )
            .await?;
                let current: Vec<u8> = tx
                .query_one(
                    "SELECT value FROM warden_kv WHERE namespace = $1 AND bucket = $2 AND key = $3
                     FOR UPDATE",
                    &params,
                )
                .await?
                .get(0);
                let next = counter_value(at.key, Some(&current))
                    .map_err(Failure::Final)?
                    .checked_add(delta)
                    .ok_or_else(|| Failure::Final(KvError::Overflow(at.key.to_string())))?;
                tx.execute(
                "UPDATE warden_kv SET value = $4 WHERE namespace = $1 AND bucket = $2 AND key = $3",
                &[
                    &at.namespace,
                    &at.bucket,
                    &at.key,
                    &next.to_string().into_bytes(),
                ],
            )
            .await?;
                commit(tx).await?;
                Ok(next)
            })
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        at: KvKey<'_>,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.run(|mut c| {
            Box::pin(async move {
            // One statement each way: PostgreSQL applies it atomically (an
            // update waits for a concurrent writer, then checks again). In
            // a transaction of its own: a swap done twice is not the same
            // as once, and only a transaction's COMMIT tells whether it
            // was done when the connection is lost (see `run`).
            let tx = c.transaction().await?;
            let changed = match expected {
                None => {
                    tx.execute(
                        "INSERT INTO warden_kv (namespace, bucket, key, value) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (namespace, bucket, key) DO NOTHING",
                        &[&at.namespace, &at.bucket, &at.key, &new],
                    )
                    .await?
                }
                Some(expected) => {
                    tx.execute(
                        "UPDATE warden_kv SET value = $5
                         WHERE namespace = $1 AND bucket = $2 AND key = $3 AND value = $4",
                        &[&at.namespace, &at.bucket, &at.key, &expected, &new],
                    )
                    .await?
                }
            };
            commit(tx).await?;
            Ok(changed == 1)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a single-threaded runtime nothing reads the pooled connections'
    /// sockets while the server restarts, so each is stale when next used.
    #[tokio::test]
    async fn a_server_restart_costs_no_call() {
        let server = warden_testkit::OwnPostgres::start();
        let db = warden_testkit::postgres_database_at(&server.url);
        let store = PostgresStore::new(&db.url).unwrap();
        let at = KvKey {
            namespace: "agent",
            bucket: "default",
            key: "k",
        };
        let n = KvKey { key: "n", ..at };
        store.set(at, b"1").await.unwrap();
        // Before each call the server restarts, ending every session
        // (57P01), with three connections idle in the pool.
        let restart = async || {
            let (a, b, c) = tokio::join!(store.get(at), store.get(at), store.get(n));
            for read in [a, b, c] {
                read.unwrap();
            }
            server.restart();
        };

        restart().await;
        assert_eq!(store.get(at).await.unwrap().as_deref(), Some(&b"1"[..]));
        restart().await;
        store.set(at, b"2").await.unwrap();
        restart().await;
        assert_eq!(store.increment(n, 5).await.unwrap(), 5);
        restart().await;
        assert!(store.compare_and_swap(at, Some(b"2"), b"3").await.unwrap());
        restart().await;
        assert_eq!(
            store.list_keys("agent", "default", 0, 10).await.unwrap(),
            ["k", "n"]
        );
        restart().await;
        store.delete(at).await.unwrap();
        assert_eq!(store.get(at).await.unwrap(), None);
        assert_eq!(store.get(n).await.unwrap().as_deref(), Some(&b"5"[..]));
    }
}
