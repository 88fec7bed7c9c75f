//! [`ComponentStore`]: components by digest for this node: in memory
//! (compiled, pre-instantiated; the [`MAX_LOADED`] most recently used), in
//! the compile cache (found by digest, authenticated; the component's bytes
//! are not needed then), on disk (`data_dir/blobs`, verified against the
//! digest on every read,
//! bounded like the compile cache with least-recently-used eviction),
//! fetched from the registry once, with concurrent fetches of one digest
//! deduplicated.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use warden_core::{FailureKind, RunFailure};
use warden_host::Sandbox;
use warden_host::cache::{evict_lru, sha256_hex, touch};
use warden_host::engine::{AgentComponent, LoadError, Quiet};
use warden_proto::v1 as pb;
use warden_proto::v1::registry_service_client::RegistryServiceClient;

/// Compiled components kept in memory.
const MAX_LOADED: usize = 256;

type Loaded = Arc<OnceCell<AgentComponent>>;

/// Loaded components with their last use, and the LRU clock.
#[derive(Default)]
struct Lru {
    entries: HashMap<String, (Loaded, u64)>,
    tick: u64,
}

pub(super) struct ComponentStore {
    dir: PathBuf,
    channel: crate::Upstream,
    loaded: Mutex<Lru>,
    /// How long the last load took (disk or fetch, verify, compile or
    /// deserialize, pre-instantiate), in microseconds.
    pub(super) last_load_us: AtomicU64,
    metrics: crate::metrics::NodeMetrics,
}

fn host_error(message: String) -> RunFailure {
    RunFailure::new(FailureKind::HostError, message)
}

fn load_failure(e: LoadError) -> RunFailure {
    match e {
        LoadError::Invalid(m) => RunFailure::new(FailureKind::InvalidComponent, m),
        LoadError::Host(m) => host_error(m),
    }
}

impl ComponentStore {
    pub(super) fn new(
        dir: PathBuf,
        channel: crate::Upstream,
        metrics: crate::metrics::NodeMetrics,
    ) -> Self {
        ComponentStore {
            dir,
            channel,
            loaded: Mutex::default(),
            last_load_us: AtomicU64::new(0),
            metrics,
        }
    }

    /// Components fetched from the registry (not found intact on disk).
    pub(super) fn fetches(&self) -> u64 {
        self.metrics
            .component_loads
            .get_or_create(&crate::metrics::SourceLabel { source: "registry" })
            .get()
    }

    /// Counts a component a run needed, by where it came from.
    fn count_load(&self, source: &'static str) {
        tracing::Span::current().record("warden.component.source", source);
        self.metrics
            .component_loads
            .get_or_create(&crate::metrics::SourceLabel { source })
            .inc();
    }

    /// The component `digest` names, ready to run: from memory, else from
    /// the blob cache or the registry, compiled (or from the compile cache).
    pub(super) async fn get(
        &self,
        sandbox: &Sandbox,
        digest: &str,
    ) -> Result<AgentComponent, RunFailure> {
        let cell = {
            let mut guard = self.loaded.lock().unwrap();
            let Lru {
                entries: loaded,
                tick,
            } = &mut *guard;
            *tick += 1;
            let now = *tick;
            if !loaded.contains_key(digest) && loaded.len() >= MAX_LOADED {
                let oldest = loaded
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(d, _)| d.clone());
                if let Some(oldest) = oldest {
                    loaded.remove(&oldest);
                }
            }
            let entry = loaded.entry(digest.to_string()).or_default();
            entry.1 = now;
            entry.0.clone()
        };
        if cell.initialized() {
            self.count_load("memory");
        }
        cell.get_or_try_init(|| self.load(sandbox, digest))
            .await
            .cloned()
    }

    /// Loads a component not in memory, in a span of its own (a memory hit
    /// is only an attribute of the lease's span).
    #[tracing::instrument(name = "component.load", skip_all, fields(
        warden.component.digest = %digest,
        warden.component.source = tracing::field::Empty,
        warden.component.compile = tracing::field::Empty,
    ))]
    async fn load(&self, sandbox: &Sandbox, digest: &str) -> Result<AgentComponent, RunFailure> {
        let started = std::time::Instant::now();
        let loaded = self.load_uncached(sandbox, digest).await;
        self.last_load_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.metrics
            .component_load_duration
            .observe(started.elapsed().as_secs_f64());
        loaded
    }

    async fn load_uncached(
        &self,
        sandbox: &Sandbox,
        digest: &str,
    ) -> Result<AgentComponent, RunFailure> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        // Compiled here before: the compile cache has it by digest, and
        // the component's bytes are not needed.
        let cached = {
            let (sandbox, hex) = (sandbox.clone(), hex.to_string());
            tokio::task::spawn_blocking(move || sandbox.engine().load_cached(&hex, &hex))
                .await
                .map_err(|e| host_error(e.to_string()))?
                .map_err(load_failure)?
        };
        if let Some(component) = cached {
            // The blob stays as recent as its use (for the blob cache's
            // eviction), though it was not read.
            touch(&self.dir.join(format!("{hex}.wasm")));
            self.count_load("disk");
            self.count_compile("cache");
            return Ok(component);
        }
        let bytes = self.blob(sandbox, digest, hex).await?;
        let (sandbox, hex) = (sandbox.clone(), hex.to_string());
        let started = std::time::Instant::now();
        let component = tokio::task::spawn_blocking(move || {
            sandbox.engine().compile_new(&hex, &hex, &bytes, &Quiet)
        })
        .await
        .map_err(|e| host_error(e.to_string()))?
        .map_err(load_failure)?;
        self.metrics
            .compile_duration
            .observe(started.elapsed().as_secs_f64());
        self.count_compile("compiled");
        Ok(component)
    }

    /// Counts a load by whether it compiled.
    fn count_compile(&self, result: &'static str) {
        tracing::Span::current().record("warden.component.compile", result);
        self.metrics
            .compiles
            .get_or_create(&crate::metrics::CompileLabel { result })
            .inc();
    }

    /// The component's bytes, verified against `hex`: from the blob cache,
    /// else fetched from the registry and kept there.
    async fn blob(
        &self,
        sandbox: &Sandbox,
        digest: &str,
        hex: &str,
    ) -> Result<Vec<u8>, RunFailure> {
        let path = self.dir.join(format!("{hex}.wasm"));
        match std::fs::read(&path) {
            Ok(bytes) if sha256_hex(&bytes) == hex => {
                touch(&path);
                self.count_load("disk");
                Ok(bytes)
            }
            _ => {
                self.count_load("registry");
                let bytes = self.fetch(digest).await?;
                if sha256_hex(&bytes) != hex {
                    return Err(host_error(format!(
                        "component {digest} failed its digest check"
                    )));
                }
                warden_core::files::private_dir(&self.dir)
                    .and_then(|()| std::fs::write(&path, &bytes))
                    .map_err(|e| host_error(format!("cannot store component {digest}: {e}")))?;
                if let Err(e) = evict_lru(&self.dir, sandbox.engine().cache_max_bytes(), &path) {
                    tracing::warn!(error = %e, "cannot evict old component blobs");
                }
                Ok(bytes)
            }
        }
    }

    async fn fetch(&self, digest: &str) -> Result<Vec<u8>, RunFailure> {
        let mut client =
            RegistryServiceClient::new(self.channel.clone()).max_decoding_message_size(8 << 20);
        let mut stream = client
            .fetch(pb::FetchRequest {
                digest: digest.to_string(),
            })
            .await
            .map_err(|e| host_error(format!("cannot fetch component {digest}: {}", e.message())))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| host_error(format!("fetching component {digest}: {}", e.message())))?
        {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }
}
