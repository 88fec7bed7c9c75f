//! `wasi:keyvalue/store` and `atomics` for [`KvCtx`]: policy (granted?
//! sizes?) first, then the backend.

use super::{Bucket, KvCtx, KvError, KvKey, LIST_PAGE, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::bindings::kv_store::{self, Error, KeyResponse};
use crate::bindings::{kv_atomics, kv_cas};
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

    /// Where `key` of `bucket` lives, or the guest's error for a key that
    /// is too long.
    fn at<'a>(
        &'a self,
        bucket: &Resource<Bucket>,
        key: &'a str,
    ) -> wasmtime::Result<Result<KvKey<'a>, Error>> {
        if key.len() > MAX_KEY_BYTES {
            return Ok(Err(Error::Other(format!(
                "key is {} bytes; the limit is {MAX_KEY_BYTES}",
                key.len()
            ))));
        }
        // One rule on every backend (PostgreSQL text cannot hold it).
        if key.contains('\0') {
            return Ok(Err(Error::Other(
                "a key may not contain the NUL character (U+0000)".into(),
            )));
        }
        let (namespace, bucket) = self.resolve(bucket)?;
        Ok(Ok(KvKey {
            namespace,
            bucket,
            key,
        }))
    }
}

/// `$call` on the store at `$at` (a key of a bucket), as the guest's result.
macro_rules! with_key {
    ($ctx:expr, $bucket:expr, $key:expr, |$store:ident, $at:ident| $call:expr) => {{
        let $store = $ctx.store.clone();
        match $ctx.at(&$bucket, &$key)? {
            Err(e) => Ok(Err(e)),
            Ok($at) => Ok($call.await.map_err(Error::from)),
        }
    }};
}

impl kv_store::Host for KvCtx {
    #[tracing::instrument(name = "kv.open", skip(self))]
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if self.namespace.is_none() {
            return Ok(Err(Error::AccessDenied));
        }
        if identifier.is_empty() || identifier.len() > 256 || identifier.contains('\0') {
            return Ok(Err(Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl kv_store::HostBucket for KvCtx {
    #[tracing::instrument(name = "kv.get", skip(self, bucket))]
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        with_key!(self, bucket, key, |store, at| store.get(at))
    }

    #[tracing::instrument(name = "kv.set", skip(self, bucket, value), fields(bytes = value.len()))]
    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(Error::Other(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            ))));
        }
        with_key!(self, bucket, key, |store, at| store.set(at, &value))
    }

    #[tracing::instrument(name = "kv.delete", skip(self, bucket))]
    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        with_key!(self, bucket, key, |store, at| store.delete(at))
    }

    #[tracing::instrument(name = "kv.exists", skip(self, bucket))]
    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        with_key!(self, bucket, key, |store, at| store.exists(at))
    }

    #[tracing::instrument(name = "kv.list_keys", skip(self, bucket))]
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<KeyResponse> {
        let (namespace, name) = self.resolve(&bucket)?;
        let offset = cursor.unwrap_or(0);
        Ok(self
            .store
            .list_keys(namespace, name, offset, LIST_PAGE)
            .await
            .map(|keys| {
                let cursor = (keys.len() == LIST_PAGE).then(|| offset + LIST_PAGE as u64);
                KeyResponse { keys, cursor }
            })
            .map_err(Error::from))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl kv_atomics::Host for KvCtx {
    #[tracing::instrument(name = "kv.increment", skip(self, bucket))]
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        with_key!(self, bucket, key, |store, at| store.increment(at, delta))
    }
}

impl kv_cas::Host for KvCtx {
    #[tracing::instrument(name = "kv.compare_and_swap", skip(self, bucket, expected, new))]
    async fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<bool> {
        if new.len() > MAX_VALUE_BYTES {
            return Ok(Err(Error::Other(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                new.len()
            ))));
        }
        with_key!(self, bucket, key, |store, at| store.compare_and_swap(
            at,
            expected.as_deref(),
            &new
        ))
    }
}
