//! Key-value storage through `wasi:keyvalue/store` and `atomics`.
//!
//! The namespace is chosen by the host (the agent's name), never by the
//! guest: a bucket the guest opens is a bucket *within* its namespace, so two
//! agents cannot see each other's keys. Backends implement [`KvStore`]:
//! [`MemoryStore`] and [`SqliteStore`] (the default, a file under the data
//! dir).

mod host;
mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use std::sync::Arc;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Keys per `list-keys` page.
pub const LIST_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key-value backend: {0}")]
    Backend(String),
    #[error("value of `{0}` is not a decimal u64, so it cannot be incremented")]
    NotACounter(String),
    #[error("counter `{0}` would overflow")]
    Overflow(String),
}

/// Where one (namespace, bucket, key) lives.
#[derive(Debug, Clone, Copy)]
pub struct KvKey<'a> {
    pub namespace: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
}

/// A key-value backend. Calls are short and synchronous (a local file or
/// memory); a networked backend would add async later.
pub trait KvStore: Send + Sync {
    fn get(&self, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError>;
    fn delete(&self, at: KvKey<'_>) -> Result<(), KvError>;
    fn exists(&self, at: KvKey<'_>) -> Result<bool, KvError> {
        Ok(self.get(at)?.is_some())
    }
    /// Keys in order, starting `offset` keys in, at most `limit` of them.
    fn list_keys(
        &self,
        namespace: &str,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, KvError>;
    /// Adds `delta` to the decimal counter at `at` (0 when absent),
    /// atomically, and returns the new value.
    fn increment(&self, at: KvKey<'_>, delta: u64) -> Result<u64, KvError>;
}

/// Parses a counter value; shared by the backends.
fn counter_value(key: &str, bytes: Option<&[u8]>) -> Result<u64, KvError> {
    match bytes {
        None => Ok(0),
        Some(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| KvError::NotACounter(key.to_string())),
    }
}

pub use crate::bindings::Bucket;

/// Key-value state of one run. `namespace` is `None` when kv is not granted.
pub struct KvCtx {
    store: Arc<dyn KvStore>,
    namespace: Option<String>,
    table: wasmtime::component::ResourceTable,
}

impl KvCtx {
    /// `max_buckets`: the most buckets the run may hold open at once (its
    /// own table, bounded like the run's main one).
    pub fn new(store: Arc<dyn KvStore>, namespace: Option<String>, max_buckets: usize) -> Self {
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(max_buckets);
        KvCtx {
            store,
            namespace,
            table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn exercise(store: &dyn KvStore) {
        let a = KvKey {
            namespace: "agent-a",
            bucket: "default",
            key: "k",
        };
        let b = KvKey {
            namespace: "agent-b",
            ..a
        };
        assert_eq!(store.get(a).unwrap(), None);
        store.set(a, b"one").unwrap();
        assert_eq!(store.get(a).unwrap().as_deref(), Some(&b"one"[..]));
        assert!(store.exists(a).unwrap());
        assert!(!store.exists(b).unwrap(), "namespaces must not leak");
        assert_eq!(store.increment(KvKey { key: "n", ..a }, 2).unwrap(), 2);
        assert_eq!(store.increment(KvKey { key: "n", ..a }, 3).unwrap(), 5);
        assert!(matches!(
            store.increment(a, 1),
            Err(KvError::NotACounter(_))
        ));
        assert_eq!(
            store.list_keys("agent-a", "default", 0, 10).unwrap(),
            ["k", "n"]
        );
        assert_eq!(store.list_keys("agent-a", "default", 1, 10).unwrap(), ["n"]);
        assert!(
            store
                .list_keys("agent-b", "default", 0, 10)
                .unwrap()
                .is_empty()
        );
        store.delete(a).unwrap();
        assert_eq!(store.get(a).unwrap(), None);
    }

    #[test]
    fn memory_store_semantics() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn sqlite_store_semantics_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite3");
        exercise(&SqliteStore::open(&path).unwrap());
        let at = KvKey {
            namespace: "x",
            bucket: "b",
            key: "kept",
        };
        SqliteStore::open(&path).unwrap().set(at, b"v").unwrap();
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.get(at).unwrap().as_deref(), Some(&b"v"[..]));
    }
}
