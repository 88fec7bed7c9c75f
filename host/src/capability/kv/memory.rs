//! [`MemoryStore`]: a process-local key-value backend, for tests and
//! throwaway runs.

use super::{KvError, KvKey, KvStore, counter_value};
use std::collections::BTreeMap;
use std::sync::Mutex;

type Key = (String, String, String);

#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<Key, Vec<u8>>>,
}

fn key(at: KvKey<'_>) -> Key {
    (at.namespace.into(), at.bucket.into(), at.key.into())
}

#[async_trait::async_trait]
impl KvStore for MemoryStore {
    async fn get(&self, at: KvKey<'_>) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.map.lock().unwrap().get(&key(at)).cloned())
    }

    async fn set(&self, at: KvKey<'_>, value: &[u8]) -> Result<(), KvError> {
        self.map.lock().unwrap().insert(key(at), value.to_vec());
        Ok(())
    }

    async fn delete(&self, at: KvKey<'_>) -> Result<(), KvError> {
        self.map.lock().unwrap().remove(&key(at));
        Ok(())
    }

    async fn list_keys(
        &self,
        namespace: &str,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let map = self.map.lock().unwrap();
        let start = (namespace.to_string(), bucket.to_string(), String::new());
        Ok(map
            .range(start..)
            .take_while(|((n, b, _), _)| n == namespace && b == bucket)
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit)
            .map(|((_, _, k), _)| k.clone())
            .collect())
    }

    async fn increment(&self, at: KvKey<'_>, delta: u64) -> Result<u64, KvError> {
        let mut map = self.map.lock().unwrap();
        let current = counter_value(at.key, map.get(&key(at)).map(Vec::as_slice))?;
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Overflow(at.key.to_string()))?;
        map.insert(key(at), next.to_string().into_bytes());
        Ok(next)
    }

    async fn compare_and_swap(
        &self,
        at: KvKey<'_>,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let mut map = self.map.lock().unwrap();
        if map.get(&key(at)).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(key(at), new.to_vec());
        Ok(true)
    }
}
