//! Key-value storage in the agent's own namespace, through
//! `wasi:keyvalue`. The host picks the namespace (the agent's name); a
//! bucket is a named area within it. Values persist across runs on the
//! node's store.
//!
//! ```ignore
//! let notes = warden_sdk::kv::Bucket::open("notes")?;
//! notes.set("last", b"hello")?;
//! let visits = notes.increment("visits", 1)?;
//! notes.set_json("profile", &serde_json::json!({"name": "ada"}))?;
//! ```

use crate::__private::wasi::keyvalue::{atomics, store};
use core::fmt;

/// A key-value error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// This run was not granted key-value storage.
    AccessDenied,
    NoSuchBucket,
    /// The value is not JSON of the asked type.
    Decode(String),
    Other(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::AccessDenied => f.write_str("key-value storage was not granted to this run"),
            KvError::NoSuchBucket => f.write_str("no such bucket"),
            KvError::Decode(m) => write!(f, "stored value is not the expected JSON: {m}"),
            KvError::Other(m) => write!(f, "key-value error: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<store::Error> for KvError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::AccessDenied => KvError::AccessDenied,
            store::Error::NoSuchStore => KvError::NoSuchBucket,
            store::Error::Other(m) => KvError::Other(m),
        }
    }
}

/// An open bucket.
pub struct Bucket {
    inner: store::Bucket,
}

impl Bucket {
    /// Opens the bucket `name` (created on first write).
    pub fn open(name: &str) -> Result<Self, KvError> {
        Ok(Bucket {
            inner: store::open(name)?,
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.inner.get(key)?)
    }

    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
        Ok(self.inner.set(key, value.as_ref())?)
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        Ok(self.inner.delete(key)?)
    }

    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.inner.exists(key)?)
    }

    /// Every key in the bucket, in order.
    pub fn keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.inner.list_keys(cursor)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Adds `delta` to the counter at `key` (0 when absent) atomically and
    /// returns the new value.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError> {
        Ok(atomics::increment(&self.inner, key, delta)?)
    }

    /// Sets `key` to `new` if its value is `expected` now (`None`: the key
    /// is absent), atomically, across every node sharing the store;
    /// returns whether it did. Read, compute, then swap, and try again
    /// when another writer came first.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        Ok(crate::__private::warden::agent::kv_cas::compare_and_swap(
            &self.inner,
            key,
            expected,
            new,
        )?)
    }

    /// The value at `key`, decoded from JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, KvError> {
        match self.get(key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| KvError::Decode(e.to_string())),
            None => Ok(None),
        }
    }

    /// Stores `value` at `key` as JSON.
    pub fn set_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Decode(e.to_string()))?;
        self.set(key, bytes)
    }
}
