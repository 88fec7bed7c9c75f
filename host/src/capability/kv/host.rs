//! `wasi:keyvalue/store` and `atomics` for [`KvCtx`]: policy (granted?
//! sizes?) first, then the backend.

use super::{Bucket, KvCtx, KvError, KvKey, LIST_PAGE, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::bindings::kv_atomics;
use crate::bindings::kv_store::{self, Error, KeyResponse};
use wasmtime::component::Resource;

type KvResult<T> = wasmtime::Result<Result<T, Error>>;

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        Error::Other(e.to_string())
    }
}

impl KvCtx {
    /// The namespace and bucket name behind a guest handle.
    fn resolve(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(&str, &str)> {
        let b = self.table.get(bucket)?;
        // A bucket exists only if it was opened, which requires a namespace.
        let ns = self
            .namespace
            .as_deref()
            .ok_or_else(|| wasmtime::format_err!("bucket without a namespace"))?;
        Ok((ns, &b.name))
    }

    fn with_key<T>(
        &self,
        bucket: &Resource<Bucket>,
        key: &str,
        f: impl FnOnce(KvKey<'_>) -> Result<T, KvError>,
    ) -> KvResult<T> {
        if key.len() > MAX_KEY_BYTES {
            return Ok(Err(Error::Other(format!(
                "key is {} bytes; the limit is {MAX_KEY_BYTES}",
                key.len()
            ))));
        }
        let (namespace, bucket) = self.resolve(bucket)?;
        Ok(f(KvKey {
            namespace,
            bucket,
            key,
        })
        .map_err(Error::from))
    }
}

impl kv_store::Host for KvCtx {
    #[tracing::instrument(name = "kv.open", skip(self))]
    fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if self.namespace.is_none() {
            return Ok(Err(Error::AccessDenied));
        }
        if identifier.is_empty() || identifier.len() > 256 {
            return Ok(Err(Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl kv_store::HostBucket for KvCtx {
    #[tracing::instrument(name = "kv.get", skip(self, bucket))]
    fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let store = self.store.clone();
        self.with_key(&bucket, &key, |at| store.get(at))
    }

    #[tracing::instrument(name = "kv.set", skip(self, bucket, value), fields(bytes = value.len()))]
    fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(Error::Other(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            ))));
        }
        let store = self.store.clone();
        self.with_key(&bucket, &key, |at| store.set(at, &value))
    }

    #[tracing::instrument(name = "kv.delete", skip(self, bucket))]
    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let store = self.store.clone();
        self.with_key(&bucket, &key, |at| store.delete(at))
    }

    #[tracing::instrument(name = "kv.exists", skip(self, bucket))]
    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let store = self.store.clone();
        self.with_key(&bucket, &key, |at| store.exists(at))
    }

    #[tracing::instrument(name = "kv.list_keys", skip(self, bucket))]
    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<KeyResponse> {
        let (namespace, name) = self.resolve(&bucket)?;
        let offset = cursor.unwrap_or(0);
        Ok(self
            .store
            .list_keys(namespace, name, offset, LIST_PAGE)
            .map(|keys| {
                let cursor = (keys.len() == LIST_PAGE).then(|| offset + LIST_PAGE as u64);
                KeyResponse { keys, cursor }
            })
            .map_err(Error::from))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl kv_atomics::Host for KvCtx {
    #[tracing::instrument(name = "kv.increment", skip(self, bucket))]
    fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> KvResult<u64> {
        let store = self.store.clone();
        self.with_key(&bucket, &key, |at| store.increment(at, delta))
    }
}
