//! Compile bounds. Cranelift's time and memory grow far faster than a
//! component's size on some shapes (many blocks with thousands of locals
//! live across them), and wasmtime treats compile-time denial of service as
//! out of its scope, so the bounds are ours, in two layers:
//!
//! 1. [`check_shape`]: a cheap pass over the bytes (no validation, no
//!    compile) that refuses a component over [`CompileLimits`]' size,
//!    function count, function body size, locals or block nesting.
//! 2. A compile worker: when the process has one ([`use_worker`]; the
//!    `warden` binary always does), the component is compiled in a child
//!    process ([`worker_main`]) that caps its own data segment
//!    (`RLIMIT_DATA`) and CPU time (`RLIMIT_CPU`) before reading anything,
//!    and is killed at [`CompileLimits::timeout`]. The parent gets the
//!    serialized artifact back and never runs Cranelift itself, so a compile
//!    bomb costs a child process, never the node or the control plane.
//!
//! A component over a bound fails as `invalid_component`, with a message
//! naming the bound and its config key.

use crate::engine::LoadError;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bounds on what a node (or the control plane, at publish) compiles.
/// `[engine.compile]` in the node config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompileLimits {
    /// Most bytes a component may have.
    pub max_component_bytes: u64,
    /// Most functions (bodies), over all the component's core modules.
    pub max_functions: u64,
    /// Most bytes of one function body.
    pub max_function_bytes: u64,
    /// Most locals one function may declare.
    pub max_locals: u64,
    /// Deepest nesting of blocks, loops and ifs in one function.
    pub max_nesting: u64,
    /// Longest a compile may take (wall time), in the compile worker.
    #[serde(with = "warden_core::budget::duration")]
    pub timeout: Duration,
    /// Most memory (data segment) the compile worker may use.
    pub max_memory_bytes: u64,
}

impl CompileLimits {
    /// The bounds on a component's shape, as text: part of the compile
    /// cache's key, so that an artifact is used only under the bounds it
    /// was checked against (the cache skips the walk).
    pub fn shape_key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.max_component_bytes,
            self.max_functions,
            self.max_function_bytes,
            self.max_locals,
            self.max_nesting
        )
    }
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_component_bytes: 64 << 20,
            max_functions: 100_000,
            max_function_bytes: 1 << 20,
            max_locals: 10_000,
            max_nesting: 5_000,
            timeout: Duration::from_secs(120),
            max_memory_bytes: 4 << 30,
        }
    }
}

/// Refuses `bytes` if its shape is over `limits`. Reads the binary once
/// (every core module, nested components included) without validating it;
/// malformed bytes are left to the compiler's validation, which names the
/// problem better.
pub fn check_shape(name: &str, bytes: &[u8], limits: &CompileLimits) -> Result<(), LoadError> {
    let over = |what: String, key: &str| {
        Err(LoadError::Invalid(format!(
            "{name} is over a compile bound: {what} ([engine.compile].{key})"
        )))
    };
    if bytes.len() as u64 > limits.max_component_bytes {
        return over(
            format!(
                "it is {} bytes; the most is {}",
                bytes.len(),
                limits.max_component_bytes
            ),
            "max_component_bytes",
        );
    }
    let mut functions = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        let wasmparser::Payload::CodeSectionEntry(body) = payload else {
            continue;
        };
        functions += 1;
        if functions > limits.max_functions {
            return over(
                format!("it has more than {} functions", limits.max_functions),
                "max_functions",
            );
        }
        let size = body.range().len() as u64;
        if size > limits.max_function_bytes {
            return over(
                format!(
                    "function {functions} is {size} bytes; the most is {}",
                    limits.max_function_bytes
                ),
                "max_function_bytes",
            );
        }
        let Ok(locals) = body.get_locals_reader() else {
            return Ok(());
        };
        let mut declared = 0u64;
        for group in locals {
            let Ok((count, _)) = group else {
                return Ok(());
            };
            declared += u64::from(count);
            if declared > limits.max_locals {
                return over(
                    format!(
                        "function {functions} declares more than {} locals",
                        limits.max_locals
                    ),
                    "max_locals",
                );
            }
        }
        let Ok(mut ops) = body.get_operators_reader() else {
            return Ok(());
        };
        let mut depth = 0u64;
        while !ops.eof() {
            let Ok(op) = ops.read() else {
                return Ok(());
            };
            use wasmparser::Operator as Op;
            match op {
                Op::Block { .. } | Op::Loop { .. } | Op::If { .. } | Op::TryTable { .. } => {
                    depth += 1;
                    if depth > limits.max_nesting {
                        return over(
                            format!(
                                "function {functions} nests blocks more than {} deep",
                                limits.max_nesting
                            ),
                            "max_nesting",
                        );
                    }
                }
                Op::End => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// How this process compiles in a child: a program and its arguments
/// (which must end up in [`worker_main`]).
#[derive(Debug, Clone)]
pub struct Worker {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

static WORKER: OnceLock<Worker> = OnceLock::new();

/// Makes every engine in this process compile in `worker` child
/// processes. Set once, at start-up, by a binary that can run
/// [`worker_main`]; later calls are ignored. Without it, compiles run in
/// process, bounded only by [`check_shape`].
pub fn use_worker(worker: Worker) {
    let _ = WORKER.set(worker);
}

pub(crate) fn worker() -> Option<&'static Worker> {
    WORKER.get()
}

/// What the parent tells the worker: enough to build the same engine.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    pub(crate) engine: crate::config::EngineConfig,
}

/// The worker's exit code for "the compiler refused the component" (its
/// message is on stderr); any other failure is a bound or a host fault.
const EXIT_INVALID: u8 = 3;
/// Most bytes of the worker's stderr kept for a message.
const MAX_WORKER_MESSAGE: u64 = 64 << 10;

/// Compiles `bytes` in a worker child process under `limits`: the
/// serialized artifact, for [`crate::cache::deserialize_own`].
pub(crate) fn compile_in_worker(
    worker: &Worker,
    spec: &WorkerSpec,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, LoadError> {
    let limits = &spec.engine.compile;
    let host = |what: &str, e: &dyn std::fmt::Display| {
        LoadError::Host(format!(
            "compile worker {}: {what}: {e}",
            worker.program.display()
        ))
    };
    let spec_json = serde_json::to_string(spec).map_err(|e| host("spec", &e))?;
    let mut child = Command::new(&worker.program)
        .args(&worker.args)
        .arg(spec_json)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| host("cannot start it", &e))?;
    // Feed and drain on threads, so a full pipe never blocks the clock.
    let mut stdin = child.stdin.take().expect("piped");
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.take(MAX_WORKER_MESSAGE).read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + limits.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                return Err(host("cannot wait for it", &e));
            }
        }
    };
    let _ = feeder.join();
    let artifact = reader.join().ok().and_then(Result::ok);
    let message = err_reader.join().unwrap_or_default();
    let over = |what: String, key: &str| {
        LoadError::Invalid(format!(
            "{name} is over a compile bound: {what} ([engine.compile].{key})"
        ))
    };
    let Some(status) = status else {
        return Err(over(
            format!("compiling it took longer than {:?}", limits.timeout),
            "timeout",
        ));
    };
    match (status.code(), artifact) {
        (Some(0), Some(artifact)) => Ok(artifact),
        (Some(code), _) if code == i32::from(EXIT_INVALID) => Err(LoadError::Invalid(format!(
            "{name} does not compile: {}",
            message.trim()
        ))),
        _ => {
            use std::os::unix::process::ExitStatusExt;
            // SIGXCPU is the CPU limit; an allocation the data limit refused
            // aborts (SIGABRT) or exits with Rust's allocation-failure message.
            if status.signal() == Some(24) {
                return Err(over(
                    format!(
                        "compiling it used more than {:?} of CPU time",
                        cpu_limit(limits.timeout)
                    ),
                    "timeout",
                ));
            }
            Err(over(
                format!(
                    "compiling it needed more than {} bytes of memory ({status})",
                    limits.max_memory_bytes
                ),
                "max_memory_bytes",
            ))
        }
    }
}

/// The worker's CPU-time cap: a backstop for a parent that died, since the
/// parent kills the worker at the wall-clock timeout.
fn cpu_limit(timeout: Duration) -> Duration {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    timeout * threads.max(1) + Duration::from_secs(1)
}

/// The compile worker's body: caps its own memory and CPU time, reads a
/// component from stdin, compiles it for the engine `spec_json` describes
/// and writes the serialized artifact to stdout. Exit 0 on success,
/// [`EXIT_INVALID`] with the reason on stderr when the compiler refuses the
/// component, anything else when a bound stopped it.
pub fn worker_main(spec_json: &str) -> ExitCode {
    let fail = |code: u8, message: String| {
        eprintln!("{message}");
        ExitCode::from(code)
    };
    let spec: WorkerSpec = match serde_json::from_str(spec_json) {
        Ok(spec) => spec,
        Err(e) => return fail(2, format!("bad compile worker spec: {e}")),
    };
    let limits = &spec.engine.compile;
    let cpu = cpu_limit(limits.timeout).as_secs();
    if let Err(e) = rlimit::setrlimit(
        rlimit::Resource::DATA,
        limits.max_memory_bytes,
        limits.max_memory_bytes,
    )
    .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu))
    {
        return fail(2, format!("cannot limit the compile worker: {e}"));
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(limits.max_component_bytes + 1)
        .read_to_end(&mut bytes)
    {
        return fail(2, format!("cannot read the component: {e}"));
    }
    let engine = match crate::engine::compile_engine(&spec.engine) {
        Ok(engine) => engine,
        Err(e) => return fail(2, e.to_string()),
    };
    let artifact = match wasmtime::component::Component::new(&engine, &bytes) {
        Ok(component) => component.serialize(),
        Err(e) => return fail(EXIT_INVALID, format!("{e:#}")),
    };
    match artifact {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(2, format!("cannot write the artifact: {e}")),
        },
        Err(e) => fail(2, format!("cannot serialize the artifact: {e:#}")),
    }
}
