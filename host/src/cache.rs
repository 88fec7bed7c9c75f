//! [`ComponentCache`]: precompiled components on disk, keyed by (sha256 of
//! the component, engine compatibility hash).
//!
//! Deserializing a precompiled artifact runs its machine code, so the cache
//! only loads artifacts it wrote itself and that are intact: every artifact
//! has a sidecar with its own sha256, checked on the bytes in memory, and
//! those same bytes are what gets deserialized (no window between the check
//! and the load). A missing, truncated or tampered entry is a miss, and the
//! component is compiled again and the entry rewritten.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// An on-disk cache of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
}

/// Feeds `Hash` output into sha256, so the engine hash is stable across
/// processes (unlike `DefaultHasher`, which is not promised to be).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap())
    }
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ComponentCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..8]);
        Ok(ComponentCache { dir, engine_hash })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    fn checksum_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm.sha256", self.engine_hash))
    }

    /// The cached component for `digest`, if an intact entry exists.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let bytes = std::fs::read(self.artifact_path(digest)).ok()?;
        let expected = std::fs::read_to_string(self.checksum_path(digest)).ok()?;
        if sha256_hex(&bytes) != expected.trim() {
            tracing::warn!(%digest, "cached artifact failed its integrity check; recompiling");
            return None;
        }
        if !matches!(
            Engine::detect_precompiled(&bytes),
            Some(wasmtime::Precompiled::Component)
        ) {
            tracing::warn!(%digest, "cached artifact is not a precompiled component; recompiling");
            return None;
        }
        // SAFETY: the bytes were written by `store` of this cache for this
        // engine configuration (the file name carries the engine hash) and
        // match the checksum written with them, so they are an artifact
        // wasmtime produced, unmodified. They are not read from disk again.
        #[expect(
            unsafe_code,
            reason = "deserializing our own, integrity-checked artifact"
        )]
        let component = unsafe { Component::deserialize(engine, &bytes) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cached artifact did not load; recompiling");
                None
            }
        }
    }

    /// Writes the compiled `component` for `digest` (atomically: a reader
    /// sees the old entry, no entry, or the whole new one).
    pub fn store(&self, digest: &str, component: &Component) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        write_atomic(&self.dir, &self.artifact_path(digest), &bytes)?;
        write_atomic(
            &self.dir,
            &self.checksum_path(digest),
            sha256_hex(&bytes).as_bytes(),
        )
    }
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
