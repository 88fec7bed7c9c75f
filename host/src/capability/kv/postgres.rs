//! [`PostgresStore`]: key-value data in a PostgreSQL table that every node
//! pointing at the database shares, so an agent's state follows it from
//! node to node. `increment` locks its row for the read-add-write, so
//! concurrent increments from any nodes are each applied once.

use super::{KvError, KvKey, KvStore, counter_value};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
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

/// What went wrong, in PostgreSQL's words when it answered.
fn pg(e: tokio_postgres::Error) -> KvError {
    match e.as_db_error() {
        Some(db) => backend(db.message()),
        None => backend(e),
    }
}

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
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("warden-node-kv");
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(backend)?;
        Ok(PostgresStore {
            pool,
            ready: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, KvError> {
        let client = self.pool.get().await.map_err(backend)?;
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
                    .map_err(pg)
            })
            .await?;
        Ok(client)
    }
}

#[async_trait::async_trait]
impl KvStore for PostgresStore {
    async fn get(&self, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT value FROM warden_kv WHERE namespace = $1 AND bucket = $2 AND key = $3",
            )
            .await
            .map_err(pg)?;
        let row = c
            .query_opt(&stmt, &[&at.namespace, &at.bucket, &at.key])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set(&self, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO warden_kv (namespace, bucket, key, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value",
            )
            .await
            .map_err(pg)?;
        c.execute(&stmt, &[&at.namespace, &at.bucket, &at.key, &value])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn delete(&self, at: KvKey<'_>) -> Result<(), KvError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM warden_kv WHERE namespace = $1 AND bucket = $2 AND key = $3",
            &[&at.namespace, &at.bucket, &at.key],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn list_keys(
        &self,
        namespace: &str,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let c = self.client().await?;
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
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn increment(&self, at: KvKey<'_>, delta: u64) -> Result<u64, KvError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&at.namespace, &at.bucket, &at.key];
        // The row exists (made by this increment, or another's that
        // commits first), then is locked until this one commits.
        tx.execute(
            "INSERT INTO warden_kv (namespace, bucket, key, value) VALUES ($1, $2, $3, '\\x30')
             ON CONFLICT (namespace, bucket, key) DO NOTHING",
            &params,
        )
        .await
        .map_err(pg)?;
        let current: Vec<u8> = tx
            .query_one(
                "SELECT value FROM warden_kv WHERE namespace = $1 AND bucket = $2 AND key = $3
                 FOR UPDATE",
                &params,
            )
            .await
            .map_err(pg)?
            .get(0);
        let next = counter_value(at.key, Some(&current))?
            .checked_add(delta)
            .ok_or_else(|| KvError::Overflow(at.key.to_string()))?;
        tx.execute(
            "UPDATE warden_kv SET value = $4 WHERE namespace = $1 AND bucket = $2 AND key = $3",
            &[
                &at.namespace,
                &at.bucket,
                &at.key,
                &next.to_string().into_bytes(),
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(next)
    }

    async fn compare_and_swap(
        &self,
        at: KvKey<'_>,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let c = self.client().await?;
        // One statement each way: PostgreSQL applies it atomically (an
        // update waits for a concurrent writer, then checks again).
        let changed = match expected {
            None => c
                .execute(
                    "INSERT INTO warden_kv (namespace, bucket, key, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (namespace, bucket, key) DO NOTHING",
                    &[&at.namespace, &at.bucket, &at.key, &new],
                )
                .await
                .map_err(pg)?,
            Some(expected) => c
                .execute(
                    "UPDATE warden_kv SET value = $5
                     WHERE namespace = $1 AND bucket = $2 AND key = $3 AND value = $4",
                    &[&at.namespace, &at.bucket, &at.key, &expected, &new],
                )
                .await
                .map_err(pg)?,
        };
        Ok(changed == 1)
    }
}
