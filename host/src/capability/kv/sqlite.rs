//! [`SqliteStore`]: the default key-value backend, one SQLite file (WAL) per
//! node data dir, shared by all agents, partitioned by namespace.

use super::{KvError, KvKey, KvStore, counter_value};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn backend(e: rusqlite::Error) -> KvError {
    KvError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        warden_core::files::create_private(path)
            .map_err(|e| KvError::Backend(format!("cannot create {}: {e}", path.display())))?;
        let conn = Connection::open(path)
            .map_err(|e| KvError::Backend(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS kv (
                 namespace TEXT NOT NULL,
                 bucket TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (namespace, bucket, key)
             ) WITHOUT ROWID;",
        )
        .map_err(|e| KvError::Backend(format!("cannot initialise {}: {e}", path.display())))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }
}

/// The value at `at` (on a connection, or in a transaction).
fn read(conn: &Connection, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError> {
    conn.prepare_cached("SELECT value FROM kv WHERE namespace = ?1 AND bucket = ?2 AND key = ?3")
        .and_then(|mut s| {
            s.query_row(params![at.namespace, at.bucket, at.key], |r| r.get(0))
                .optional()
        })
        .map_err(backend)
}

/// Sets the value at `at`.
fn write(conn: &Connection, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError> {
    conn.prepare_cached(
        "INSERT INTO kv (namespace, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![at.namespace, at.bucket, at.key, value]))
    .map(drop)
    .map_err(backend)
}

#[async_trait::async_trait]
impl KvStore for SqliteStore {
    async fn get(&self, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError> {
        read(&self.conn.lock().unwrap(), at)
    }

    async fn set(&self, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError> {
        write(&self.conn.lock().unwrap(), at, value)
    }

    async fn delete(&self, at: KvKey<'_>) -> Result<(), KvError> {
        self.conn
            .lock()
            .unwrap()
            .prepare_cached("DELETE FROM kv WHERE namespace = ?1 AND bucket = ?2 AND key = ?3")
            .and_then(|mut s| s.execute(params![at.namespace, at.bucket, at.key]))
            .map(drop)
            .map_err(backend)
    }

    async fn list_keys(
        &self,
        namespace: &str,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key FROM kv WHERE namespace = ?1 AND bucket = ?2
                 ORDER BY key LIMIT ?3 OFFSET ?4",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(
                params![namespace, bucket, limit as i64, offset as i64],
                |r| r.get(0),
            )
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    async fn increment(&self, at: KvKey<'_>, delta: u64) -> Result<u64, KvError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction().map_err(backend)?;
        let current = read(&tx, at)?;
        let next = counter_value(at.key, current.as_deref())?
            .checked_add(delta)
            .ok_or_else(|| KvError::Overflow(at.key.to_string()))?;
        write(&tx, at, next.to_string().as_bytes())?;
        tx.commit().map_err(backend)?;
        Ok(next)
    }

    async fn compare_and_swap(
        &self,
        at: KvKey<'_>,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction().map_err(backend)?;
        if read(&tx, at)?.as_deref() != expected {
            return Ok(false);
        }
        write(&tx, at, new)?;
        tx.commit().map_err(backend)?;
        Ok(true)
    }
}
