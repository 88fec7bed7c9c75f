//! [`ComponentCache`]: precompiled components on disk, keyed by (sha256 of
//! the component, engine compatibility hash).
//!
//! Deserializing a precompiled artifact runs its machine code, so the cache
//! only loads artifacts it wrote itself: every artifact has a sidecar with
//! its MAC (keyed BLAKE3) under a key only this data dir holds (`cache.key`
//! beside the cache, mode 0600, made on first use), checked in constant
//! time over the open file, which wasmtime then maps by its descriptor
//! (the file checked, not whatever its name points to by then). A plain checksum would not do:
//! whoever can write the artifact can rewrite its checksum too. A missing,
//! truncated or tampered entry is a miss: it is logged and deleted, and the
//! component is compiled again.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// An on-disk cache of compiled components for one engine configuration,
/// kept under `max_bytes` by evicting the least recently used entries.
#[derive(Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
    max_bytes: u64,
    /// The MAC key (derived from the data dir's secret); never printed.
    key: [u8; 32],
}

impl std::fmt::Debug for ComponentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCache")
            .field("dir", &self.dir)
            .field("engine_hash", &self.engine_hash)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// The cache's MAC key at `path`, made (32 random bytes, mode 0600) if
/// there is none yet.
fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    loop {
        match std::fs::read(path) {
            Ok(bytes) => {
                return bytes.try_into().map_err(|_| {
                    std::io::Error::other(format!(
                        "the compile cache key {} is damaged; delete it and the cache to start over",
                        path.display()
                    ))
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key: [u8; 32] = rand::random();
        let mut options = std::fs::File::options();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(&key)?;
                file.sync_all()?;
                return Ok(key);
            }
            // Another process made it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What the artifact MAC's key is derived for (BLAKE3's key derivation
/// context: the data dir's secret keys nothing else this way).
const MAC_CONTEXT: &str = "warden 2026-12 compile cache artifact MAC";

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
    /// A cache in `dir` for artifacts of `engine`, checked against the
    /// compile bounds `shape_key` (`CompileLimits::shape_key`).
    pub fn new(
        dir: PathBuf,
        engine: &Engine,
        max_bytes: u64,
        shape_key: &str,
    ) -> std::io::Result<Self> {
        warden_core::files::private_dir(&dir)?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        shape_key.hash(&mut h);
        // Entries written under another MAC scheme are other entries.
        MAC_CONTEXT.hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..8]);
        let secret = load_or_create_key(&Self::key_path(&dir))?;
        let key = blake3::derive_key(MAC_CONTEXT, &secret);
        Ok(ComponentCache {
            dir,
            engine_hash,
            max_bytes,
            key,
        })
    }

    /// Where the MAC key of the cache in `dir` lives: beside it, not in it,
    /// so eviction never touches it.
    pub fn key_path(dir: &Path) -> PathBuf {
        dir.with_extension("key")
    }

    /// The MAC of `artifact`. BLAKE3 rather than HMAC-SHA256: the MAC is
    /// checked on every warm load, and over a 1 MB artifact keyed BLAKE3
    /// took a fraction of the time.
    fn mac(&self, artifact: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.key, artifact)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    fn mac_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm.mac", self.engine_hash))
    }

    /// Deletes a rejected entry, so it is rewritten rather than read again.
    fn discard(&self, digest: &str) {
        let _ = std::fs::remove_file(self.artifact_path(digest));
        let _ = std::fs::remove_file(self.mac_path(digest));
    }

    /// The cached component for `digest`, if an entry this cache wrote
    /// exists, unaltered.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        if !is_sha256(digest) {
            return None;
        }
        let path = self.artifact_path(digest);
        let mut file = std::fs::File::open(&path).ok()?;
        let tag = std::fs::read_to_string(self.mac_path(digest)).ok()?;
        let tag = blake3::Hash::from_hex(tag.trim()).ok();
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update_reader(&mut file).ok()?;
        // `blake3::Hash` compares in constant time.
        if tag != Some(mac.finalize()) {
            tracing::warn!(%digest, "cached artifact failed its authentication (not written by this node, or altered); deleted, recompiling");
            self.discard(digest);
            return None;
        }
        let loaded = deserialize_own_file(engine, &file).or_else(|e| {
            // Where the open file cannot be mapped by its descriptor (no
            // /proc), its bytes, read through the same descriptor and
            // checked again, are deserialized instead.
            tracing::debug!(%digest, error = %e, "cannot map the cached artifact; reading it");
            let mut bytes = Vec::new();
            std::io::Seek::rewind(&mut file)?;
            std::io::Read::read_to_end(&mut file, &mut bytes)?;
            if tag != Some(self.mac(&bytes)) {
                wasmtime::bail!("the artifact changed while it was read");
            }
            deserialize_own(engine, &bytes)
        });
        match loaded {
            Ok(c) => {
                touch(&path);
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
        self.store_artifact(digest, &bytes)
    }

    /// Writes a serialized artifact this process (or its compile worker)
    /// made for `digest`, with its MAC.
    pub fn store_artifact(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        if !is_sha256(digest) {
            return Err(std::io::Error::other(format!(
                "{digest:?} is not a sha256 in hex"
            )));
        }
        let tag = self.mac(bytes).to_hex();
        write_atomic(&self.dir, &self.artifact_path(digest), bytes)?;
        write_atomic(&self.dir, &self.mac_path(digest), tag.as_bytes())?;
        evict_lru(&self.dir, self.max_bytes, &self.artifact_path(digest))?;
        Ok(())
    }
}

/// Whether `digest` is a sha256 in lowercase hex: only such a name may name
/// a file here.
pub fn is_sha256(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Deserializes an artifact this node made, in memory: one its compile
/// worker just wrote to a pipe (the same binary), or a cache entry read
/// and checked where it could not be mapped.
pub(crate) fn deserialize_own(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` are an artifact wasmtime produced for this engine's
    // configuration on this machine, unmodified: they come straight from
    // this process's compile worker over a pipe, or carry a valid MAC under
    // this data dir's secret key, which only `store_artifact` computes (the
    // file name carries the engine hash). They are in memory, so no change
    // on disk can change them.
    #[expect(unsafe_code, reason = "deserializing our own artifact")]
    unsafe {
        Component::deserialize(engine, bytes)
    }
}

/// Deserializes the cached artifact open as `file`, whose MAC was just
/// checked: wasmtime maps it (no copy), named by its descriptor, not its
/// path, so it is the file that was checked even if the path was renamed
/// over since.
#[cfg(unix)]
fn deserialize_own_file(engine: &Engine, file: &std::fs::File) -> wasmtime::Result<Component> {
    use std::os::fd::AsRawFd;
    let by_descriptor = if cfg!(target_os = "linux") {
        format!("/proc/self/fd/{}", file.as_raw_fd())
    } else {
        format!("/dev/fd/{}", file.as_raw_fd())
    };
    // SAFETY: the file holds an artifact wasmtime produced for this
    // engine's configuration (the engine hash is in its name): its MAC,
    // under this data dir's secret key, which only `store_artifact`
    // computes, was checked over its contents through this same open file.
    // The cache never changes a file in place (it writes a new one and
    // renames it) and never truncates one, so the contents stay as checked
    // while mapped; changing them in place takes writing this node's own
    // mode-0600 files, which means being able to read its key as well.
    #[expect(unsafe_code, reason = "deserializing our own artifact")]
    unsafe {
        Component::deserialize_file(engine, by_descriptor)
    }
}

#[cfg(not(unix))]
fn deserialize_own_file(_: &Engine, _: &std::fs::File) -> wasmtime::Result<Component> {
    wasmtime::bail!("mapping by descriptor needs a unix")
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
