//! Key-value storage through `wasi:keyvalue/store` and `atomics`.
//!
//! The namespace is chosen by the host (the agent's name), never by the
//! guest: a bucket the guest opens is a bucket *within* its namespace, so two
//! agents cannot see each other's keys. Backends implement [`KvStore`]:
//! [`MemoryStore`], [`SqliteStore`] (the default, a file under the data
//! dir), and the shared ones, so that state follows an agent from node to
//! node: `PostgresStore` and `RedisStore`, behind the features
//! `kv-postgres` and `kv-redis` (the `warden` binary has both). `increment`
//! is atomic on each, across every node that shares it.

mod host;
mod memory;
#[cfg(feature = "kv-postgres")]
mod postgres;
#[cfg(feature = "kv-redis")]
mod redis;
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "kv-postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "kv-redis")]
pub use redis::RedisStore;
pub use sqlite::SqliteStore;

use crate::config::{KvBackend, KvConfig};
use std::path::Path;
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

/// The backend `config` names: a SQLite file in `data_dir` (the
/// default), memory, or a shared backend if this build has it.
pub fn open_store(config: &KvConfig, data_dir: &Path) -> Result<Arc<dyn KvStore>, KvError> {
    match config.backend {
        KvBackend::Sqlite => Ok(Arc::new(SqliteStore::open(&data_dir.join("kv.sqlite3"))?)),
        KvBackend::Memory => Ok(Arc::new(MemoryStore::default())),
        #[cfg(feature = "kv-postgres")]
        KvBackend::Postgres => Ok(Arc::new(PostgresStore::new(shared_url(config)?)?)),
        #[cfg(feature = "kv-redis")]
        KvBackend::Redis => Ok(Arc::new(RedisStore::new(
            shared_url(config)?,
            &config.prefix,
        )?)),
        #[allow(unreachable_patterns)]
        other => {
            let (name, feature) = match other {
                KvBackend::Redis => ("Redis", "kv-redis"),
                _ => ("PostgreSQL", "kv-postgres"),
            };
            Err(KvError::Backend(format!(
                "[kv] backend: this build has no {name} backend (warden-host's {feature} feature)"
            )))
        }
    }
}

#[cfg(any(feature = "kv-postgres", feature = "kv-redis"))]
fn shared_url(config: &KvConfig) -> Result<&str, KvError> {
    config
        .url
        .as_deref()
        .ok_or_else(|| KvError::Backend("[kv] url is missing for a shared backend".into()))
}

/// Where one (namespace, bucket, key) lives.
#[derive(Debug, Clone, Copy)]
pub struct KvKey<'a> {
    pub namespace: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
}

/// A key-value backend. The local ones answer at once; the shared ones
/// over the network.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    async fn get(&self, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError>;
    async fn set(&self, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError>;
    async fn delete(&self, at: KvKey<'_>) -> Result<(), KvError>;
    async fn exists(&self, at: KvKey<'_>) -> Result<bool, KvError> {
        Ok(self.get(at).await?.is_some())
    }
    /// Keys in order, starting `offset` keys in, at most `limit` of them.
    async fn list_keys(
        &self,
        namespace: &str,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, KvError>;
    /// Adds `delta` to the decimal counter at `at` (0 when absent),
    /// atomically, and returns the new value.
    async fn increment(&self, at: KvKey<'_>, delta: u64) -> Result<u64, KvError>;
    /// Sets `at` to `new` if its value is `expected` (`None`: absent),
    /// atomically; returns whether it did.
    async fn compare_and_swap(
        &self,
        at: KvKey<'_>,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError>;
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

    pub(super) async fn exercise(store: &dyn KvStore) {
        let a = KvKey {
            namespace: "agent-a",
            bucket: "default",
            key: "k",
        };
        let b = KvKey {
            namespace: "agent-b",
            ..a
        };
        assert_eq!(store.get(a).await.unwrap(), None);
        store.set(a, b"one").await.unwrap();
        assert_eq!(store.get(a).await.unwrap().as_deref(), Some(&b"one"[..]));
        assert!(store.exists(a).await.unwrap());
        assert!(!store.exists(b).await.unwrap(), "namespaces must not leak");
        assert_eq!(
            store.increment(KvKey { key: "n", ..a }, 2).await.unwrap(),
            2
        );
        assert_eq!(
            store.increment(KvKey { key: "n", ..a }, 3).await.unwrap(),
            5
        );
        assert!(matches!(
            store.increment(a, 1).await,
            Err(KvError::NotACounter(_))
        ));
        assert_eq!(
            store.list_keys("agent-a", "default", 0, 10).await.unwrap(),
            ["k", "n"]
        );
        assert_eq!(
            store.list_keys("agent-a", "default", 1, 10).await.unwrap(),
            ["n"]
        );
        assert!(
            store
                .list_keys("agent-b", "default", 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        store.delete(a).await.unwrap();
        assert_eq!(store.get(a).await.unwrap(), None);
        // Compare-and-swap: from absent, then only from the current value.
        let c = KvKey { key: "cas", ..a };
        assert!(store.compare_and_swap(c, None, b"1").await.unwrap());
        assert!(!store.compare_and_swap(c, None, b"2").await.unwrap());
        assert!(!store.compare_and_swap(c, Some(b"0"), b"2").await.unwrap());
        assert!(store.compare_and_swap(c, Some(b"1"), b"2").await.unwrap());
        assert_eq!(store.get(c).await.unwrap().as_deref(), Some(&b"2"[..]));
        assert!(
            store
                .list_keys("agent-a", "default", 0, 10)
                .await
                .unwrap()
                .contains(&"cas".to_string())
        );
        boundaries_and_binary_values(store).await;
    }

    /// Where one name ends and the next begins is kept, whatever the names
    /// hold (a backend that joins them into one string must not let
    /// `a` + `b:c` meet `a:b` + `c`); values are bytes, any bytes. (Names
    /// never hold NUL: the host refuses it, as PostgreSQL text cannot.)
    async fn boundaries_and_binary_values(store: &dyn KvStore) {
        let places = [
            ("t/a", "b:c", "d"),
            ("t/a", "b", "c:d"),
            ("t/a:b", "c", "d"),
            ("t", "a/b", "c/d"),
            ("t/a", "b/c", "d"),
            ("t/a", "b", "c/d"),
        ];
        for (i, &(namespace, bucket, key)) in places.iter().enumerate() {
            let at = KvKey {
                namespace,
                bucket,
                key,
            };
            store.set(at, format!("{i}").as_bytes()).await.unwrap();
        }
        for (i, &(namespace, bucket, key)) in places.iter().enumerate() {
            let at = KvKey {
                namespace,
                bucket,
                key,
            };
            assert_eq!(
                store.get(at).await.unwrap(),
                Some(format!("{i}").into_bytes()),
                "{namespace} / {bucket} / {key}"
            );
        }
        assert_eq!(
            store.list_keys("t/a", "b", 0, 10).await.unwrap(),
            ["c/d", "c:d"],
            "only bucket b's keys, in byte order"
        );
        // Every byte value, an empty value, a value of 1 MiB.
        let all: Vec<u8> = (0..=255).collect();
        let at = |key| KvKey {
            namespace: "t/bytes",
            bucket: "default",
            key,
        };
        store.set(at("all"), &all).await.unwrap();
        assert_eq!(store.get(at("all")).await.unwrap(), Some(all.clone()));
        store.set(at("empty"), b"").await.unwrap();
        assert_eq!(store.get(at("empty")).await.unwrap(), Some(Vec::new()));
        assert!(
            store.exists(at("empty")).await.unwrap(),
            "an empty value exists"
        );
        let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        store.set(at("big"), &big).await.unwrap();
        assert_eq!(store.get(at("big")).await.unwrap(), Some(big));
        // Compare-and-swap compares bytes, not text.
        assert!(
            store
                .compare_and_swap(at("all"), Some(&all), b"\xff\x00")
                .await
                .unwrap()
        );
        assert!(
            !store
                .compare_and_swap(at("all"), Some(&all), b"x")
                .await
                .unwrap()
        );
    }

    /// Compare-and-swap racing from many tasks, each adding one to a
    /// number by read-then-swap until its swap lands: none is lost.
    pub(super) async fn concurrent_swaps(store: std::sync::Arc<dyn KvStore>) {
        let at = KvKey {
            namespace: "agent-a",
            bucket: "race",
            key: "cas",
        };
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    loop {
                        let now = store.get(at).await.unwrap();
                        let n: u64 = now
                            .as_deref()
                            .map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                        let next = (n + 1).to_string();
                        if store
                            .compare_and_swap(at, now.as_deref(), next.as_bytes())
                            .await
                            .unwrap()
                        {
                            return;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.get(at).await.unwrap().as_deref(), Some(&b"16"[..]));
    }

    /// Increments racing on one key, from many tasks: each new value is
    /// handed out once.
    /// `max`: the largest counter the backend keeps (Redis: i64::MAX).
    pub(super) async fn concurrent_increments(store: std::sync::Arc<dyn KvStore>, max: u64) {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let at = KvKey {
                        namespace: "agent-a",
                        bucket: "race",
                        key: "n",
                    };
                    store.increment(at, 1).await.unwrap()
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, (1..=64).collect::<Vec<u64>>());
        let big = KvKey {
            namespace: "agent-a",
            bucket: "race",
            key: "big",
        };
        store.set(big, max.to_string().as_bytes()).await.unwrap();
        assert!(matches!(
            store.increment(big, 1).await,
            Err(KvError::Overflow(_))
        ));
    }

    #[tokio::test]
    async fn memory_store_semantics() {
        exercise(&MemoryStore::default()).await;
        concurrent_increments(std::sync::Arc::new(MemoryStore::default()), u64::MAX).await;
        concurrent_swaps(std::sync::Arc::new(MemoryStore::default())).await;
    }

    #[tokio::test]
    async fn sqlite_store_semantics_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite3");
        exercise(&SqliteStore::open(&path).unwrap()).await;
        concurrent_increments(
            std::sync::Arc::new(SqliteStore::open(&path).unwrap()),
            u64::MAX,
        )
        .await;
        concurrent_swaps(std::sync::Arc::new(SqliteStore::open(&path).unwrap())).await;
        let at = KvKey {
            namespace: "x",
            bucket: "b",
            key: "kept",
        };
        SqliteStore::open(&path)
            .unwrap()
            .set(at, b"v")
            .await
            .unwrap();
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.get(at).await.unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[cfg(feature = "kv-postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_semantics_and_atomic_increments_and_swaps() {
        let db = warden_testkit::postgres_database();
        exercise(&PostgresStore::new(&db.url).unwrap()).await;
        concurrent_increments(
            std::sync::Arc::new(PostgresStore::new(&db.url).unwrap()),
            u64::MAX,
        )
        .await;
        concurrent_swaps(std::sync::Arc::new(PostgresStore::new(&db.url).unwrap())).await;
    }

    #[cfg(feature = "kv-redis")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store_semantics_and_atomic_increments_and_swaps() {
        let redis = warden_testkit::redis();
        exercise(&RedisStore::new(&redis.url, &redis.prefix).unwrap()).await;
        concurrent_increments(
            std::sync::Arc::new(RedisStore::new(&redis.url, &redis.prefix).unwrap()),
            i64::MAX as u64,
        )
        .await;
        concurrent_swaps(std::sync::Arc::new(
            RedisStore::new(&redis.url, &redis.prefix).unwrap(),
        ))
        .await;
    }
}
