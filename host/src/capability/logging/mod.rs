//! The run's log: `wasi:logging` records and the guest's stdout/stderr, in
//! one bounded [`RunLog`]. Bytes over the run's log budget end the run as
//! `output_too_large`. A [`LogTap`] sees each line as it is logged (a node
//! streams them to the control plane).

use crate::bindings::logging::{self, Level};
use crate::meter::RunMeter;
use crate::trap::BudgetTrap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    Log,
    Stdout,
    Stderr,
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub source: LogSource,
    /// For `log` lines: trace, debug, info, warn, error, critical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub context: String,
    pub message: String,
    /// When it was logged (Unix ms).
    pub unix_ms: i64,
}

/// Called with each line as it is logged, and its place in the run's log
/// (from 0). Runs on the guest's call: it must not block.
#[derive(Clone)]
pub struct LogTap(pub Arc<TapFn>);

/// What a [`LogTap`] calls.
pub type TapFn = dyn Fn(u64, &LogLine) + Send + Sync;

impl std::fmt::Debug for LogTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogTap")
    }
}

/// The log of one run, shared by the logging capability and the stdio pipes.
#[derive(Clone)]
pub struct RunLog {
    lines: Arc<Mutex<Vec<LogLine>>>,
    meter: Arc<RunMeter>,
    /// Also print each line to the host's stderr as it arrives.
    echo: bool,
    tap: Option<LogTap>,
    /// Bytes after the last newline of stdout and stderr, kept until the
    /// line completes. Shared by every pipe of a stream.
    stdout_partial: Arc<Mutex<Vec<u8>>>,
    stderr_partial: Arc<Mutex<Vec<u8>>>,
}

impl RunLog {
    pub fn new(meter: Arc<RunMeter>, echo: bool, tap: Option<LogTap>) -> Self {
        RunLog {
            lines: Arc::default(),
            meter,
            echo,
            tap,
            stdout_partial: Arc::default(),
            stderr_partial: Arc::default(),
        }
    }

    fn push(&self, line: LogLine) -> Result<(), BudgetTrap> {
        let bytes = (line.message.len() + line.context.len()) as u64;
        if !self.meter.add_log_bytes(bytes) {
            return Err(BudgetTrap::LogBytes(self.meter.budget().max_log_bytes));
        }
        if self.echo {
            let tag = match (&line.source, &line.level) {
                (LogSource::Log, Some(level)) => level.as_str(),
                (LogSource::Stdout, _) => "stdout",
                _ => "stderr",
            };
            if line.context.is_empty() {
                eprintln!("  [{tag}] {}", warden_core::escape_controls(&line.message));
            } else {
                eprintln!(
                    "  [{tag}] {}: {}",
                    warden_core::escape_controls(&line.context),
                    warden_core::escape_controls(&line.message)
                );
            }
        }
        let mut lines = self.lines.lock().unwrap();
        if let Some(tap) = &self.tap {
            (tap.0)(lines.len() as u64, &line);
        }
        lines.push(line);
        Ok(())
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines.lock().unwrap().clone()
    }

    /// The last `source` line, for trap messages (a Rust panic message is
    /// the guest's last stderr output).
    pub fn last(&self, source: LogSource) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        let mut tail: Vec<&str> = lines
            .iter()
            .rev()
            .filter(|l| l.source == source)
            .take(3)
            .map(|l| l.message.as_str())
            .collect();
        tail.reverse();
        (!tail.is_empty()).then(|| tail.join("\n"))
    }

    /// A `StdoutStream` for the guest's stdout or stderr.
    pub fn pipe(&self, source: LogSource) -> StdioPipe {
        let partial = match source {
            LogSource::Stderr => self.stderr_partial.clone(),
            _ => self.stdout_partial.clone(),
        };
        StdioPipe {
            log: self.clone(),
            source,
            partial,
        }
    }

    /// Keeps the last stdout and stderr lines a guest wrote without a
    /// newline (at the end of a run).
    pub fn finish_stdio(&self) {
        self.pipe(LogSource::Stdout).finish();
        self.pipe(LogSource::Stderr).finish();
    }
}

impl logging::Host for RunLog {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Critical => "critical",
        }
        .to_string();
        self.push(LogLine {
            source: LogSource::Log,
            level: Some(level),
            context,
            message,
            unix_ms: warden_core::now_ms(),
        })?;
        Ok(())
    }
}

/// The guest's stdout or stderr: split into lines, appended to the run log.
#[derive(Clone)]
pub struct StdioPipe {
    log: RunLog,
    source: LogSource,
    /// The stream's bytes after its last newline (owned by the `RunLog`).
    partial: Arc<Mutex<Vec<u8>>>,
}

impl StdioPipe {
    fn write_bytes(&self, bytes: &[u8]) -> Result<(), BudgetTrap> {
        let mut partial = self.partial.lock().unwrap();
        partial.extend_from_slice(bytes);
        while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1])?;
        }
        // A guest that never writes a newline still counts against the budget.
        if partial.len() > 64 * 1024 {
            let line = std::mem::take(&mut *partial);
            self.emit(&line)?;
        }
        Ok(())
    }

    fn emit(&self, line: &[u8]) -> Result<(), BudgetTrap> {
        self.log.push(LogLine {
            source: self.source,
            level: None,
            context: String::new(),
            message: String::from_utf8_lossy(line).into_owned(),
            unix_ms: warden_core::now_ms(),
        })
    }

    /// Flushes a last line without a newline.
    fn finish(&self) {
        let line = std::mem::take(&mut *self.partial.lock().unwrap());
        if !line.is_empty() {
            let _ = self.emit(&line);
        }
    }
}

impl IsTerminal for StdioPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StdioPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp2 guests run here; p3 streams are not wired up.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StdioPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for StdioPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes)
            .map_err(|trap| StreamError::Trap(trap.into()))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}
