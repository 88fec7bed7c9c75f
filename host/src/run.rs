//! [`Sandbox`]: runs agents. One run is a fresh store and instance from the
//! component's `InstancePre`, with the run's grant and budget, dropped at the
//! end; the outcome is a [`RunOutcome`] (result, usage, logs).
//!
//! Wall time is enforced twice: the epoch callback traps guest code at the
//! deadline (and yields to the executor every tick so a spinning guest
//! never starves other runs), and a host-side timeout around the whole call
//! covers time spent inside host calls such as a slow LLM request.

use crate::capability::config::ConfigCtx;
use crate::capability::context::ContextCtx;
use crate::capability::fs::ScratchDir;
use crate::capability::http::{HttpHooks, HttpPolicy};
use crate::capability::kv::{KvCtx, KvStore};
use crate::capability::llm::{LlmCtx, LlmService};
use crate::capability::logging::{LogLine, LogSource, LogTap, RunLog};
use crate::config::NodeConfig;
use crate::engine::{AgentComponent, AgentEngine};
use crate::meter::RunMeter;
use crate::store::{MemoryLimiter, RunState};
use crate::trap::BudgetTrap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;
use warden_core::{FailureKind, Grant, HOST_CALL_FUEL, RunBudget, RunFailure, Usage};
use wasmtime::{CallHook, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

/// One run to perform.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The agent's name: its key-value namespace and its name in logs.
    pub agent_name: String,
    /// JSON text, by convention.
    pub input: String,
    /// Clamped to the node's limits.
    pub budget: RunBudget,
    pub grant: Grant,
    pub run_id: String,
    pub attempt: u32,
    /// Print log lines to stderr as they arrive.
    pub echo_logs: bool,
    /// Sees each log line as it is logged.
    pub log_tap: Option<LogTap>,
    /// Stops the run from outside (cancel, lease lost, node shutdown).
    pub cancel: CancelToken,
}

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CancelReason {
    /// The user cancelled the run.
    Cancelled = 1,
    /// The node is shutting down.
    Shutdown = 2,
    /// The lease was lost (expired or re-leased elsewhere).
    LeaseLost = 3,
}

/// Stops a run: guest code at the next epoch tick, host calls at once.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    reason: std::sync::atomic::AtomicU8,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    /// Stops the run; the first reason wins.
    pub fn cancel(&self, reason: CancelReason) {
        use std::sync::atomic::Ordering;
        if self
            .inner
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.inner.notify.notify_waiters();
        }
    }

    pub fn reason(&self) -> Option<CancelReason> {
        match self.inner.reason.load(std::sync::atomic::Ordering::SeqCst) {
            1 => Some(CancelReason::Cancelled),
            2 => Some(CancelReason::Shutdown),
            3 => Some(CancelReason::LeaseLost),
            _ => None,
        }
    }

    /// Resolves once the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.reason().is_some() {
                return;
            }
            notified.await;
        }
    }
}

impl RunRequest {
    pub fn new(agent_name: impl Into<String>, input: impl Into<String>) -> Self {
        RunRequest {
            agent_name: agent_name.into(),
            input: input.into(),
            budget: RunBudget::default(),
            grant: Grant::default(),
            run_id: warden_core::new_run_id(),
            attempt: 1,
            echo_logs: false,
            log_tap: None,
            cancel: CancelToken::default(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The agent's output, or why it failed.
    pub result: Result<String, RunFailure>,
    pub usage: Usage,
    pub logs: Vec<LogLine>,
}

/// What a node offers every run, built once.
#[derive(Clone)]
pub struct HostServices {
    pub kv: Arc<dyn KvStore>,
    pub llm: LlmService,
    /// Parent of per-run scratch directories.
    pub scratch_root: PathBuf,
    /// What the capabilities count (LLM and HTTP calls).
    pub metrics: crate::metrics::HostMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Engine(#[from] crate::engine::LoadError),
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kv(#[from] crate::capability::kv::KvError),
    #[error("LLM provider: {0}")]
    Llm(String),
}

/// Runs agents under budgets and grants.
#[derive(Clone)]
pub struct Sandbox {
    engine: AgentEngine,
    services: HostServices,
    limits: RunBudget,
    policy: warden_core::NodePolicy,
}

impl Sandbox {
    /// A sandbox as `config` describes it: engine, compile cache, kv
    /// backend and LLM provider.
    pub fn from_config(config: &NodeConfig) -> Result<Self, SandboxError> {
        let data = &config.data_dir;
        warden_core::files::private_dir(data).map_err(|source| SandboxError::DataDir {
            path: data.clone(),
            source,
        })?;
        let cache_dir = config.engine.cache.then(|| data.join("cache"));
        let engine = AgentEngine::new(&config.engine, config.limits.max_memory_bytes, cache_dir)?;
        let kv = crate::capability::kv::open_store(&config.kv, data)?;
        let llm =
            LlmService::from_config(&config.llm).map_err(|e| SandboxError::Llm(e.to_string()))?;
        let scratch_root = crate::capability::fs::process_root(&data.join("scratch"));
        Ok(Sandbox::new(
            engine,
            HostServices {
                kv,
                llm,
                scratch_root,
                metrics: Default::default(),
            },
            config.limits.clone(),
        )
        .with_policy(config.policy.clone()))
    }

    pub fn new(engine: AgentEngine, services: HostServices, limits: RunBudget) -> Self {
        Sandbox {
            engine,
            services,
            limits,
            policy: Default::default(),
        }
    }

    /// The node's ceiling on grants (default: no ceiling).
    pub fn with_policy(mut self, policy: warden_core::NodePolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn engine(&self) -> &AgentEngine {
        &self.engine
    }

    /// What the capabilities count, for the node's `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::HostMetrics {
        &self.services.metrics
    }

    /// The node's maxima.
    pub fn limits(&self) -> &RunBudget {
        &self.limits
    }

    /// Runs `agent` once. Never panics on guest behaviour: every way a
    /// guest can fail is a [`RunFailure`] in the outcome. In a span `run`
    /// saying how it ended (`error.type`: the failure kind) and what it used;
    /// which run it is only when no span encloses it (a node's lease span
    /// says so already).
    pub async fn run(&self, agent: &AgentComponent, req: RunRequest) -> RunOutcome {
        use tracing::field::Empty;
        let span = tracing::info_span!(
            "run",
            warden.agent = Empty,
            warden.run_id = Empty,
            warden.attempt = Empty,
            otel.status_code = Empty,
            error.type = Empty,
            warden.fuel_used = Empty,
            warden.peak_memory_bytes = Empty,
        );
        if !span.is_disabled() && tracing::Span::current().is_none() {
            span.record("warden.agent", req.agent_name.as_str());
            span.record("warden.run_id", req.run_id.as_str());
            span.record("warden.attempt", req.attempt);
        }
        async {
            let outcome = self.run_in_span(agent, req).await;
            let span = tracing::Span::current();
            if let Err(failure) = &outcome.result {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", failure.kind.as_str());
            }
            if let Some(fuel) = outcome.usage.fuel_used {
                span.record("warden.fuel_used", fuel);
            }
            span.record("warden.peak_memory_bytes", outcome.usage.peak_memory_bytes);
            outcome
        }
        .instrument(span)
        .await
    }

    async fn run_in_span(&self, agent: &AgentComponent, mut req: RunRequest) -> RunOutcome {
        let started = Instant::now();
        let (grant, dropped) = self.policy.restrict(std::mem::take(&mut req.grant));
        req.grant = grant;
        if !dropped.is_empty() {
            tracing::warn!(dropped = %dropped.join(", "), "the node's policy does not allow part of the grant");
        }
        let mut budget = req.budget.clamp_to(&self.limits);
        budget.max_memory_bytes = budget.max_memory_bytes.min(self.engine.max_memory_bytes());
        let max_handles = self.engine.max_handles(budget.max_memory_bytes);
        let meter = Arc::new(RunMeter::new(budget.clone()));
        let log = RunLog::new(meter.clone(), req.echo_logs, req.log_tap.take());
        let fail = |kind, message: String, fuel: Option<u64>| RunOutcome {
            result: Err(RunFailure::new(kind, message)),
            usage: meter.usage(started.elapsed(), fuel),
            logs: log.lines(),
        };

        let mut store = match self.new_store(&req, &budget, meter.clone(), log.clone(), started) {
            Ok(store) => store,
            Err(failure) => return fail(failure.kind, failure.message, None),
        };
        let fuel_start = if self.engine.fuel_enabled() {
            let fuel = budget.fuel.unwrap_or(u64::MAX);
            if let Err(e) = store.set_fuel(fuel) {
                return fail(
                    FailureKind::HostError,
                    format!("cannot set fuel: {e}"),
                    None,
                );
            }
            Some(fuel)
        } else {
            None
        };

        // Instantiation can fail for the node's reasons (no free pool slot);
        // once the guest's code runs, every error is the guest's doing.
        let call = async {
            let instance = agent
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (Phase::Instantiate, e))?;
            instance
                .call_run(&mut store, &req.input)
                .await
                .map_err(|e| (Phase::Call, e))
        };
        let cancel = req.cancel.clone();
        let result = tokio::select! {
            r = tokio::time::timeout(budget.timeout, call) => r,
            () = cancel.cancelled() => Ok(Err((Phase::Call, BudgetTrap::Cancelled.into()))),
        };
        let fuel_used = fuel_start.and_then(|start| store.get_fuel().ok().map(|left| start - left));
        log.finish_stdio();

        let result = match result {
            Err(_elapsed) => Err(RunFailure::new(
                FailureKind::Timeout,
                BudgetTrap::Timeout(budget.timeout).to_string(),
            )),
            Ok(Err((phase, e))) => Err(classify(phase, &e, &log, max_handles)),
            Ok(Ok(Err(guest))) => Err(RunFailure::new(FailureKind::GuestError, guest)),
            Ok(Ok(Ok(output))) if output.len() as u64 > budget.max_output_bytes => {
                Err(RunFailure::new(
                    FailureKind::OutputTooLarge,
                    format!(
                        "output is {} bytes; the budget is {} bytes",
                        output.len(),
                        budget.max_output_bytes
                    ),
                ))
            }
            Ok(Ok(Ok(output))) => Ok(output),
        };
        drop(store);
        RunOutcome {
            result,
            usage: meter.usage(started.elapsed(), fuel_used),
            logs: log.lines(),
        }
    }

    fn new_store(
        &self,
        req: &RunRequest,
        budget: &RunBudget,
        meter: Arc<RunMeter>,
        log: RunLog,
        started: Instant,
    ) -> Result<Store<RunState>, RunFailure> {
        let policy = HttpPolicy::new(&req.grant.http)
            .map_err(|e| RunFailure::new(FailureKind::CapabilityDenied, e.to_string()))?;
        let calls = meter.clone();

        let mut wasi = WasiCtxBuilder::new();
        wasi.max_random_size(MAX_RANDOM_BYTES)
            .stdout(log.pipe(LogSource::Stdout))
            .stderr(log.pipe(LogSource::Stderr))
            .arg(&req.agent_name);
        let scratch = if req.grant.scratch_dir {
            let dir = ScratchDir::create(&self.services.scratch_root).map_err(|e| {
                RunFailure::new(
                    FailureKind::HostError,
                    format!("cannot create a scratch dir: {e}"),
                )
            })?;
            dir.preopen(&mut wasi).map_err(|e| {
                RunFailure::new(
                    FailureKind::HostError,
                    format!("cannot preopen the scratch dir: {e}"),
                )
            })?;
            Some(dir)
        } else {
            None
        };

        let deadline = started + budget.timeout;
        // Every resource a guest makes the host hold (WASI, wasi-http, kv)
        // lives in this one table: its capacity bounds them all.
        // Each holds at most `max_handle_bytes` (fields, body buffers), so
        // the table's capacity also bounds the bytes they hold.
        let mut table = wasmtime::component::ResourceTable::new();
        let max_handles = self.engine.max_handles(budget.max_memory_bytes);
        table.set_max_capacity(max_handles);
        let max_handle_bytes = self.engine.max_handle_bytes();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(max_handle_bytes);
        let state = RunState {
            wasi: wasi.build(),
            table,
            http,
            http_hooks: HttpHooks::new(
                policy,
                meter.clone(),
                max_handle_bytes,
                self.services.metrics.clone(),
            ),
            limiter: MemoryLimiter {
                max_memory_bytes: usize::try_from(budget.max_memory_bytes).unwrap_or(usize::MAX),
                meter: meter.clone(),
            },
            llm: LlmCtx::new(
                self.services.llm.clone(),
                req.grant.models.clone(),
                meter.clone(),
                self.services.metrics.clone(),
            ),
            kv: KvCtx::new(
                self.services.kv.clone(),
                req.grant.kv.then(|| req.agent_name.clone()),
                max_handles,
            ),
            config: ConfigCtx::new(req.grant.config.clone()),
            log,
            context: ContextCtx {
                run_id: req.run_id.clone(),
                attempt: req.attempt,
                deadline,
                meter: meter.clone(),
            },
            disk: Arc::new(crate::capability::fs::DiskQuota::new(
                budget.max_disk_bytes,
                self.engine.max_scratch_entries(),
                meter,
            )),
            _scratch: scratch,
        };
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Every call into the host is counted and costs `HOST_CALL_FUEL`:
        // a flood of cheap host calls spends the fuel budget as the same
        // work in instructions would.
        store.call_hook(move |mut ctx, hook| {
            if !matches!(hook, CallHook::CallingHost) {
                return Ok(());
            }
            calls.count_host_call();
            match ctx.get_fuel() {
                Ok(left) if left < HOST_CALL_FUEL => Err(Trap::OutOfFuel.into()),
                Ok(left) => ctx.set_fuel(left - HOST_CALL_FUEL),
                // Fuel metering is off on this engine.
                Err(_) => Ok(()),
            }
        });
        // A guest cannot have more than its memory budget to hand over in
        // one call; past it, the call traps (`resource_limit`).
        store.set_hostcall_fuel(usize::try_from(budget.max_memory_bytes).unwrap_or(usize::MAX));
        let timeout = budget.timeout;
        let cancel = req.cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if cancel.reason().is_some() {
                Err(BudgetTrap::Cancelled.into())
            } else if Instant::now() >= deadline {
                Err(BudgetTrap::Timeout(timeout).into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }
}

/// Where a run's error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Instantiating: the node's own faults (no free pool slot) are possible.
    Instantiate,
    /// The guest's code runs: every error is the guest's doing.
    Call,
}

/// Most bytes one `wasi:random` call may ask the host for.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// wasmtime's message when a guest hands the host more than the hostcall
/// fuel in one call (its error type is private); a test pins it.
const HOSTCALL_FUEL_MESSAGE: &str = "fuel allocated for hostcalls has been exhausted";

/// Names the failure behind a trap or host error: a guest kind for
/// anything the guest caused, `host_error` only for the node's own faults
/// (no free instance slot, the OS out of memory) while instantiating.
fn classify(phase: Phase, e: &wasmtime::Error, log: &RunLog, max_handles: usize) -> RunFailure {
    if let Some(trap) = e.downcast_ref::<BudgetTrap>() {
        return RunFailure::new(trap.kind(), trap.to_string());
    }
    // The guest's doing, not the host's: it made the host hold too much.
    if let Some(wasmtime::component::ResourceTableError::Full) =
        e.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        return RunFailure::new(
            FailureKind::ResourceLimit,
            format!(
                "the run holds more than {max_handles} host resources (handles) at once; \
                 the bound is its memory budget / [engine].max_handle_bytes, at most [engine].max_handles"
            ),
        );
    }
    if let Some(
        wasmtime_wasi_http::FieldMapError::TotalSizeTooBig
        | wasmtime_wasi_http::FieldMapError::TooManyFields,
    ) = e.downcast_ref::<wasmtime_wasi_http::FieldMapError>()
    {
        return RunFailure::new(
            FailureKind::ResourceLimit,
            "a wasi-http fields map would hold more than [engine].max_handle_bytes bytes of names and values",
        );
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => RunFailure::new(FailureKind::FuelExhausted, "fuel budget exhausted"),
            Trap::StackOverflow => RunFailure::new(
                FailureKind::Trap,
                "stack overflow: the guest recursed too deeply",
            ),
            other => {
                let mut message = other.to_string();
                if matches!(other, Trap::MemoryOutOfBounds) {
                    // Rust and C keep a shadow stack at the bottom of linear
                    // memory; running off it is an out-of-bounds access.
                    message.push_str(" (a guest stack overflow or memory bug)");
                }
                if let Some(stderr) = log.last(LogSource::Stderr) {
                    message.push_str("; guest stderr: ");
                    message.push_str(&stderr);
                }
                RunFailure::new(FailureKind::Trap, message)
            }
        };
    }
    let message = format!("{e:#}");
    match phase {
        // The node's own faults: no free instance slot, the OS refusing
        // memory. Another node (or a later try) may do better.
        Phase::Instantiate
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
                || e.chain().any(|cause| cause.is::<std::io::Error>()) =>
        {
            RunFailure::new(FailureKind::HostError, message)
        }
        // Anything else the component asked for: more memory or tables
        // than the node's pool holds, or a start function misusing a host
        // call. Retrying it anywhere fails the same way.
        Phase::Instantiate => RunFailure::new(
            FailureKind::InvalidComponent,
            format!("the component cannot be instantiated on this node: {message}"),
        ),
        Phase::Call if message.contains(HOSTCALL_FUEL_MESSAGE) => RunFailure::new(
            FailureKind::ResourceLimit,
            format!(
                "the guest passed the host more bytes in one call than its memory budget allows ({message})"
            ),
        ),
        // A host call refused what the guest passed (a bad handle, a
        // malformed string or list): the guest broke the interface.
        Phase::Call => RunFailure::new(
            FailureKind::Trap,
            format!("the guest misused a host interface: {message}"),
        ),
    }
}
