//! The sandbox engine: [`AgentEngine`] owns a wasmtime `Engine` configured
//! for untrusted agents (async, pooling allocator, epoch interruption with
//! one ticker thread, optional fuel, bounded stack, proposals agents don't
//! need turned off), the `Linker` with every capability, and the compile
//! cache. [`AgentEngine::load`] turns component bytes into an
//! [`AgentComponent`]: validated, compiled (or loaded from the cache) and
//! pre-instantiated, so a run only instantiates.

use crate::bindings::AgentPre;
use crate::cache::{ComponentCache, sha256_hex};
use crate::config::EngineConfig;
use crate::store::RunState;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch ticks: the resolution of wall-time deadlines and of
/// cooperative yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Host resources any run may hold, whatever its memory budget.
const MIN_HANDLES: usize = 256;

/// Why a component cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(String),
    #[error("engine: {0}")]
    Host(String),
}

/// A component ready to run.
#[derive(Clone)]
pub struct AgentComponent {
    pub(crate) pre: AgentPre<RunState>,
    /// sha256 of the component bytes, hex.
    pub digest: String,
}

impl AgentComponent {
    /// The names of what the component imports and exports.
    pub fn interface(&self, engine: &Engine) -> (Vec<String>, Vec<String>) {
        let ty = self.pre.instance_pre().component().component_type();
        let names = |items: &mut dyn Iterator<Item = &str>| items.map(str::to_string).collect();
        (
            names(&mut ty.imports(engine).map(|(n, _)| n)),
            names(&mut ty.exports(engine).map(|(n, _)| n)),
        )
    }
}

impl std::fmt::Debug for AgentComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentComponent")
            .field("digest", &self.digest)
            .finish()
    }
}

/// Where a component came from on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled now (and written to the cache, if there is one).
    Compiled,
    /// Loaded from the on-disk cache.
    Cache,
}

/// Told about a slow load before it starts.
pub trait LoadProgress {
    /// A component of `size` bytes is about to be compiled.
    fn compiling(&self, size: usize);
    fn done(&self);
}

/// No progress output.
#[derive(Debug)]
pub struct Quiet;

impl LoadProgress for Quiet {
    fn compiling(&self, _size: usize) {}
    fn done(&self) {}
}

/// Stops the epoch ticker thread when the engine is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<RunState>,
    cache: Option<ComponentCache>,
    config: EngineConfig,
    max_memory_bytes: u64,
    _ticker: EpochTicker,
}

/// The engine, linker and cache shared by every run on a node. Cheap to
/// clone.
#[derive(Clone)]
pub struct AgentEngine {
    inner: Arc<Inner>,
}

impl AgentEngine {
    /// Builds the engine. `max_memory_bytes` is the node's memory maximum
    /// per run (the pooling allocator's slot size); `cache_dir` enables the
    /// on-disk compile cache.
    pub fn new(
        config: &EngineConfig,
        max_memory_bytes: u64,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, LoadError> {
        let host = |e: wasmtime::Error| LoadError::Host(format!("{e:#}"));
        let mut wasm = wasm_config(config);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(
            config,
            max_memory_bytes,
        )));
        let engine = Engine::new(&wasm).map_err(host)?;

        let mut linker = Linker::new(&engine);
        crate::store::add_to_linker(&mut linker).map_err(host)?;

        let cache = match cache_dir {
            Some(dir) => Some(
                ComponentCache::new(
                    dir.clone(),
                    &engine,
                    config.cache_max_bytes,
                    &config.compile.shape_key(),
                )
                .map_err(|e| {
                    LoadError::Host(format!(
                        "cannot create compile cache {}: {e}",
                        dir.display()
                    ))
                })?,
            ),
            None => None,
        };

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("warden-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Host(format!("cannot start the epoch thread: {e}")))?
        };

        Ok(AgentEngine {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                config: config.clone(),
                max_memory_bytes,
                _ticker: EpochTicker {
                    stop,
                    thread: Some(thread),
                },
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The most bytes each on-disk cache (compiled artifacts, node blobs)
    /// may hold before least recently used entries are evicted.
    pub fn cache_max_bytes(&self) -> u64 {
        self.inner.config.cache_max_bytes
    }

    pub fn fuel_enabled(&self) -> bool {
        self.inner.config.fuel
    }

    pub fn max_memory_bytes(&self) -> u64 {
        self.inner.max_memory_bytes
    }

    /// The most host resources a run with `memory_budget` bytes may hold
    /// at once: its memory budget / `[engine].max_handle_bytes`, at least
    /// 256 and at most `[engine].max_handles`.
    pub fn max_handles(&self, memory_budget: u64) -> usize {
        let config = &self.inner.config;
        let by_memory = memory_budget / config.max_handle_bytes.max(1) as u64;
        usize::try_from(by_memory)
            .unwrap_or(usize::MAX)
            .max(MIN_HANDLES)
            .min(config.max_handles)
    }

    /// The most entries a run's scratch directory may hold.
    pub fn max_scratch_entries(&self) -> usize {
        self.inner.config.max_scratch_entries
    }

    /// The most bytes one host resource may hold.
    pub fn max_handle_bytes(&self) -> usize {
        self.inner.config.max_handle_bytes
    }

    /// Validates, compiles (or loads from the cache) and pre-instantiates a
    /// component. `name` is only used in messages.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        progress: &dyn LoadProgress,
    ) -> Result<(AgentComponent, LoadSource), LoadError> {
        check_is_component(name, bytes)?;
        let digest = sha256_hex(bytes);
        if let Some(component) = self.load_cached(name, &digest)? {
            return Ok((component, LoadSource::Cache));
        }
        Ok((
            self.compile_new(name, &digest, bytes, progress)?,
            LoadSource::Compiled,
        ))
    }

    /// Validates, compiles and pre-instantiates a component the caller
    /// found missing from the cache ([`AgentEngine::load_cached`]), whose
    /// sha256 it checked is `digest`; the result goes to the cache.
    pub fn compile_new(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        progress: &dyn LoadProgress,
    ) -> Result<AgentComponent, LoadError> {
        check_is_component(name, bytes)?;
        // The compile bounds guard the compiler: a cached artifact was
        // checked against these same bounds (they are part of the cache
        // key), and this walk of every function body was a quarter of a
        // warm load.
        crate::compile::check_shape(name, bytes, &self.inner.config.compile)?;
        progress.compiling(bytes.len());
        let compiled = self.compile(name, digest, bytes);
        progress.done();
        let pre = self.pre_instantiate(name, &compiled?)?;
        Ok(AgentComponent {
            pre,
            digest: digest.to_string(),
        })
    }

    /// The component whose sha256 is `digest` (hex), from the compile cache
    /// and pre-instantiated, without its bytes: a node that ran it before
    /// (in this process or an earlier one) needs neither the component nor
    /// its hash. `None` when the cache has no intact entry for it, or there
    /// is no cache.
    pub fn load_cached(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<Option<AgentComponent>, LoadError> {
        let inner = &self.inner;
        // The digest names files: only a sha256 in hex may.
        let is_sha256 = digest.len() == 64
            && digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let Some(component) = inner
            .cache
            .as_ref()
            .filter(|_| is_sha256)
            .and_then(|c| c.load(&inner.engine, digest))
        else {
            return Ok(None);
        };
        let pre = self.pre_instantiate(name, &component)?;
        Ok(Some(AgentComponent {
            pre,
            digest: digest.to_string(),
        }))
    }

    /// Compiles `bytes`: in a compile worker if this process has one, else
    /// here; the result goes to the cache.
    fn compile(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let inner = &self.inner;
        let cache_warning = |e: std::io::Error| {
            tracing::warn!(error = %e, "cannot write the compile cache; continuing without it");
        };
        let Some(worker) = crate::compile::worker() else {
            let component = Component::new(&inner.engine, bytes).map_err(|e| {
                LoadError::Invalid(format!("{name} does not compile: {}", root_cause(&e)))
            })?;
            if let Some(cache) = &inner.cache {
                cache
                    .store(digest, &component)
                    .unwrap_or_else(cache_warning);
            }
            return Ok(component);
        };
        let spec = crate::compile::WorkerSpec {
            engine: inner.config.clone(),
        };
        let artifact = crate::compile::compile_in_worker(worker, &spec, name, bytes)?;
        let component = crate::cache::deserialize_own(&inner.engine, &artifact).map_err(|e| {
            LoadError::Host(format!(
                "the compile worker's artifact does not load: {}",
                root_cause(&e)
            ))
        })?;
        if let Some(cache) = &inner.cache {
            cache
                .store_artifact(digest, &artifact)
                .unwrap_or_else(cache_warning);
        }
        Ok(component)
    }

    fn pre_instantiate(
        &self,
        name: &str,
        component: &Component,
    ) -> Result<AgentPre<RunState>, LoadError> {
        let instance_pre = self.inner.linker.instantiate_pre(component).map_err(|e| {
            LoadError::Invalid(format!(
                "{name} is not a warden:agent/agent component: {}",
                root_cause(&e)
            ))
        })?;
        AgentPre::new(instance_pre).map_err(|e| {
            LoadError::Invalid(format!(
                "{name} is not a warden:agent/agent component: {}",
                root_cause(&e)
            ))
        })
    }
}

/// The engine settings that decide what compiled code looks like: the same
/// in the node and in its compile worker, so the worker's artifacts load.
fn wasm_config(config: &EngineConfig) -> Config {
    let mut wasm = Config::new();
    // Threads, GC, stack switching and component-model async are not
    // compiled into this wasmtime at all (Cargo features); memory64 is
    // turned off here.
    wasm.epoch_interruption(true)
        .consume_fuel(config.fuel)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20))
        .wasm_memory64(false)
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
        .parallel_compilation(true);
    wasm
}

/// The pooling allocator for `config.pool_slots` runs of at most
/// `max_memory_bytes` each.
fn pool_config(config: &EngineConfig, max_memory_bytes: u64) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    let slots = config.pool_slots.max(1);
    pool.total_component_instances(slots)
        // wit-component adds a few small core instances (shims) per component.
        .max_core_instances_per_component(16)
        .total_core_instances(slots * 16)
        .max_memories_per_component(4)
        .total_memories(slots * 2)
        .max_tables_per_component(8)
        .total_tables(slots * 8)
        .table_elements(crate::store::MAX_TABLE_ELEMENTS)
        .total_stacks(slots)
        .max_memory_size(usize::try_from(max_memory_bytes).unwrap_or(usize::MAX))
        .table_keep_resident(64 << 10);
    // On reuse, reset only the pages a run touched (PAGEMAP_SCAN, Linux
    // 6.7+) and keep them resident: no madvise, no TLB shootdown, no page
    // faults on the next run. A guest's stack and data sit around its
    // first MiB, so keep up to 4 MiB. Without the scan, resetting means a
    // memset of everything kept, so keep only 64 KiB.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(4 << 20);
    } else {
        pool.linear_memory_keep_resident(64 << 10);
    }

    pool
}

/// A compile-only engine for the compile worker: [`wasm_config`] without
/// the pooling allocator's address-space reservation (the worker runs under
/// a data-segment limit) and without an epoch ticker (it runs nothing).
pub(crate) fn compile_engine(config: &EngineConfig) -> Result<Engine, LoadError> {
    Engine::new(&wasm_config(config)).map_err(|e| LoadError::Host(format!("{e:#}")))
}

/// The innermost message of an error chain, which names the import or
/// export at fault.
fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

/// Fails with a clear message unless `bytes` is a component binary.
fn check_is_component(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::Invalid(format!(
            "{name} is not a WebAssembly file (it does not start with the \\0asm header)"
        )));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(LoadError::Invalid(format!(
            "{name} is a core WebAssembly module, not a component: build it with \
             `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
        ))),
        _ => Err(LoadError::Invalid(format!(
            "{name} is a WebAssembly binary of an unsupported version or layer"
        ))),
    }
}
