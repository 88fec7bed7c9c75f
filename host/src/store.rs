//! [`RunState`]: the data of one run's `Store`, with every capability's
//! context, and [`add_to_linker`], which wires all capabilities into the
//! engine's one `Linker`. [`MemoryLimiter`] enforces the memory budget and
//! records peak memory.

use crate::bindings;
use crate::capability::config::ConfigCtx;
use crate::capability::context::ContextCtx;
use crate::capability::fs::{DiskQuota, QuotaFs, QuotaFsData, ScratchDir};
use crate::capability::http::HttpHooks;
use crate::capability::kv::KvCtx;
use crate::capability::llm::LlmCtx;
use crate::capability::logging::RunLog;
use crate::meter::RunMeter;
use crate::trap::BudgetTrap;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything one run's store holds.
pub(crate) struct RunState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_hooks: HttpHooks,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) llm: LlmCtx,
    pub(crate) kv: KvCtx,
    pub(crate) config: ConfigCtx,
    pub(crate) log: RunLog,
    pub(crate) context: ContextCtx,
    /// The scratch directory's quota (charged by [`QuotaFs`]).
    pub(crate) disk: Arc<DiskQuota>,
    /// Removed when the store is dropped.
    pub(crate) _scratch: Option<ScratchDir>,
}

impl RunState {
    fn quota_fs(&mut self) -> QuotaFs<'_> {
        let quota = self.disk.clone();
        QuotaFs {
            inner: wasmtime_wasi::filesystem::WasiFilesystemView::filesystem(self),
            quota,
        }
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Limits linear memory and table growth; a refused memory growth traps
/// with [`BudgetTrap::Memory`] so the run fails as `memory_limit`.
pub(crate) struct MemoryLimiter {
    pub(crate) max_memory_bytes: usize,
    pub(crate) meter: Arc<RunMeter>,
}

/// The most elements a table may hold: the limiter's bound, and the
/// pooling allocator's table size (`engine::pool_config`), one number.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            return Err(BudgetTrap::Memory {
                limit: self.max_memory_bytes,
                desired,
            }
            .into());
        }
        self.meter.note_memory(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

struct Llm;
impl HasData for Llm {
    type Data<'a> = &'a mut LlmCtx;
}
struct Kv;
impl HasData for Kv {
    type Data<'a> = &'a mut KvCtx;
}
struct Config;
impl HasData for Config {
    type Data<'a> = &'a mut ConfigCtx;
}
struct Log;
impl HasData for Log {
    type Data<'a> = &'a mut RunLog;
}
struct Context;
impl HasData for Context {
    type Data<'a> = &'a mut ContextCtx;
}

/// Adds every interface of the `agent` world to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    // The guest's `wasi:filesystem/types` is wasmtime-wasi's, wrapped to
    // charge the scratch quota: it replaces the one just added.
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::filesystem::types::add_to_linker::<RunState, QuotaFsData>(
        linker,
        RunState::quota_fs,
    )?;
    linker.allow_shadowing(false);
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    bindings::llm::add_to_linker::<RunState, Llm>(linker, |s| &mut s.llm)?;
    bindings::kv_store::add_to_linker::<RunState, Kv>(linker, |s| &mut s.kv)?;
    bindings::kv_atomics::add_to_linker::<RunState, Kv>(linker, |s| &mut s.kv)?;
    bindings::kv_cas::add_to_linker::<RunState, Kv>(linker, |s| &mut s.kv)?;
    bindings::config_store::add_to_linker::<RunState, Config>(linker, |s| &mut s.config)?;
    bindings::logging::add_to_linker::<RunState, Log>(linker, |s| &mut s.log)?;
    bindings::context::add_to_linker::<RunState, Context>(linker, |s| &mut s.context)?;
    Ok(())
}
