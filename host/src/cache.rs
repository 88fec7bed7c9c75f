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

/// An on-disk cache of compiled components for one engine configuration,
/// kept under `max_bytes` by evicting the least recently used entries.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
    max_bytes: u64,
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
    pub fn new(dir: PathBuf, engine: &Engine, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..8]);
        Ok(ComponentCache {
            dir,
            engine_hash,
            max_bytes,
        })
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
            Ok(c) => {
                touch(&self.artifact_path(digest));
                Some(c)
            }
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
        )?;
        evict_lru(&self.dir, self.max_bytes, &self.artifact_path(digest))?;
        Ok(())
    }
}

/// Marks `path` as just used (its modification time is the LRU clock).
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used entries of `dir` until it holds at most
/// `max_bytes`, never `keep`. An entry is the files sharing a name up to the
/// first dot (an artifact and its checksum); its recency is its newest
/// modification time. Returns the bytes removed.
pub fn evict_lru(dir: &Path, max_bytes: u64, keep: &Path) -> std::io::Result<u64> {
    use std::collections::HashMap;
    use std::time::SystemTime;
    let keep_key = entry_key(keep);
    let mut entries: HashMap<String, (u64, SystemTime, Vec<PathBuf>)> = HashMap::new();
    for file in std::fs::read_dir(dir)? {
        let file = file?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let path = file.path();
        let Some(key) = entry_key(&path) else {
            continue;
        };
        let e = entries
            .entry(key)
            .or_insert((0, SystemTime::UNIX_EPOCH, Vec::new()));
        e.0 += meta.len();
        e.1 = e.1.max(meta.modified()?);
        e.2.push(path);
    }
    let mut total: u64 = entries.values().map(|e| e.0).sum();
    let mut oldest_first: Vec<_> = entries
        .into_iter()
        .filter(|(k, _)| Some(k) != keep_key.as_ref())
        .collect();
    oldest_first.sort_by_key(|(_, e)| e.1);
    let mut removed = 0;
    for (key, (size, _, files)) in oldest_first {
        if total <= max_bytes {
            break;
        }
        for f in files {
            std::fs::remove_file(&f)?;
        }
        tracing::info!(entry = %key, size, "evicted from the cache (least recently used)");
        total -= size;
        removed += size;
    }
    Ok(removed)
}

fn entry_key(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    // Temp files of writes in progress (`.tmpXXXX`) are not entries.
    if name.starts_with('.') {
        return None;
    }
    Some(name.split('.').next()?.to_string())
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
