//! [`RedisStore`]: key-value data in Redis, shared by every node pointing
//! at it, so an agent's state follows it from node to node. Each value is a
//! Redis string; each bucket also keeps a sorted set of its keys, for
//! listing in order. `increment` is Redis's own `INCRBY` (atomic),
//! applied with the index update in one `MULTI`.

use super::{KvError, KvKey, KvStore};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

pub struct RedisStore {
    client: redis::Client,
    /// Connected on first use, then reconnecting on its own.
    conn: OnceCell<ConnectionManager>,
    /// Put before every key (default `warden:kv:`).
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> KvError {
    KvError::Backend(format!("Redis: {e}"))
}

impl RedisStore {
    /// A store at `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`), its keys
    /// under `prefix`; nothing is contacted until the first call.
    pub fn new(url: &str, prefix: &str) -> Result<Self, KvError> {
        let client = redis::Client::open(url)
            .map_err(|e| KvError::Backend(format!("[kv] url is not a Redis URL: {e}")))?;
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            prefix: prefix.to_string(),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, KvError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(std::time::Duration::from_secs(5))
                    .set_response_timeout(std::time::Duration::from_secs(5));
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(backend)?;
        Ok(conn.clone())
    }

    /// The bucket's part of every key: lengths first, so no namespace and
    /// bucket pair can be read as another.
    fn bucket(&self, namespace: &str, bucket: &str) -> String {
        format!(
            "{}{}:{namespace}{}:{bucket}",
            self.prefix,
            namespace.len(),
            bucket.len()
        )
    }

    fn value_key(&self, at: KvKey<'_>) -> String {
        format!("{}:v:{}", self.bucket(at.namespace, at.bucket), at.key)
    }

    fn index_key(&self, namespace: &str, bucket: &str) -> String {
        format!("{}:keys", self.bucket(namespace, bucket))
    }
}

#[async_trait::async_trait]
impl KvStore for RedisStore {
    async fn get(&self, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError> {
        let mut c = self.conn().await?;
        c.get(self.value_key(at)).await.map_err(backend)
    }

    async fn set(&self, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError> {
        let mut c = self.conn().await?;
        redis::pipe()
            .atomic()
            .set(self.value_key(at), value)
            .ignore()
            .zadd(self.index_key(at.namespace, at.bucket), at.key, 0)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(backend)
    }

    async fn delete(&self, at: KvKey<'_>) -> Result<(), KvError> {
        let mut c = self.conn().await?;
        redis::pipe()
            .atomic()
            .del(self.value_key(at))
            .ignore()
            .zrem(self.index_key(at.namespace, at.bucket), at.key)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(backend)
    }

    async fn exists(&self, at: KvKey<'_>) -> Result<bool, KvError> {
        let mut c = self.conn().await?;
        c.exists(self.value_key(at)).await.map_err(backend)
    }

    async fn list_keys(
        &self,
        namespace: &str,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        // Every member scores 0: the set is in byte order of the keys.
        let start = offset.min(isize::MAX as u64) as isize;
        let stop = start.saturating_add(limit as isize - 1);
        c.zrange(self.index_key(namespace, bucket), start, stop)
            .await
            .map_err(backend)
    }

    async fn increment(&self, at: KvKey<'_>, delta: u64) -> Result<u64, KvError> {
        let delta = i64::try_from(delta).map_err(|_| KvError::Overflow(at.key.to_string()))?;
        let mut c = self.conn().await?;
        let answer: Result<(i64,), _> = redis::pipe()
            .atomic()
            .incr(self.value_key(at), delta)
            .zadd(self.index_key(at.namespace, at.bucket), at.key, 0)
            .ignore()
            .query_async(&mut c)
            .await;
        match answer {
            Ok((n,)) => u64::try_from(n).map_err(|_| KvError::NotACounter(at.key.to_string())),
            Err(e) if e.to_string().contains("overflow") => {
                Err(KvError::Overflow(at.key.to_string()))
            }
            Err(e) if e.to_string().contains("not an integer") => {
                Err(KvError::NotACounter(at.key.to_string()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn compare_and_swap(
        &self,
        at: KvKey<'_>,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        // A script runs atomically on the server.
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"
                local v = redis.call('GET', KEYS[1])
                if (ARGV[1] == '0' and v == false) or (ARGV[1] == '1' and v == ARGV[2]) then
                    redis.call('SET', KEYS[1], ARGV[3])
                    redis.call('ZADD', KEYS[2], 0, ARGV[4])
                    return 1
                end
                return 0",
            )
        });
        let mut c = self.conn().await?;
        let swapped: i64 = SCRIPT
            .key(self.value_key(at))
            .key(self.index_key(at.namespace, at.bucket))
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new)
            .arg(at.key)
            .invoke_async(&mut c)
            .await
            .map_err(backend)?;
        Ok(swapped == 1)
    }
}
