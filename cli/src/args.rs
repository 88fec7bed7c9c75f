//! Flags and inputs shared by `run` and `submit`: [`BudgetArgs`],
//! [`GrantArgs`], `KEY=VALUE`, `--input JSON|@FILE` and capability manifest
//! files.

use anyhow::{Context, bail};
use clap::Args;
use std::path::Path;
use std::time::Duration;
use warden_core::{BudgetRequest, Grant, HttpPolicy, Manifest, parse_bytes};

/// Budget flags, shared by `run` and `submit`. A flag left out takes the
/// agent's capability manifest `[budget]` value, else Warden's default
/// (shown in brackets).
#[derive(Debug, Args)]
pub(crate) struct BudgetArgs {
    /// Wall-time budget, including time spent in host calls (e.g. 500ms,
    /// 30s, 2m) [30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,

    /// Fuel (CPU work) budget, roughly wasm instructions [unlimited].
    #[arg(long)]
    fuel: Option<u64>,

    /// Linear memory budget (e.g. 64MiB, 512KiB) [64MiB].
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,

    /// LLM token budget (prompt + completion) [unlimited].
    #[arg(long)]
    max_tokens: Option<u64>,

    /// LLM cost budget in USD, priced by the node config's price table
    /// [unlimited].
    #[arg(long, value_name = "USD")]
    max_cost_usd: Option<f64>,

    /// Most outgoing HTTP requests [100].
    #[arg(long)]
    max_http_requests: Option<u32>,

    /// Most bytes of HTTP response bodies, over all requests [16MiB].
    #[arg(long, value_parser = parse_bytes)]
    max_http_bytes: Option<u64>,

    /// Most bytes of output [1MiB].
    #[arg(long, value_parser = parse_bytes)]
    max_output: Option<u64>,

    /// Most bytes of logs, stdout and stderr together [1MiB].
    #[arg(long, value_parser = parse_bytes)]
    max_log: Option<u64>,

    /// Most bytes the scratch directory (--scratch-dir) may hold: file sizes
    /// plus 4KiB per file, directory or link; past it writes fail with
    /// ENOSPC [64MiB].
    #[arg(long, value_parser = parse_bytes)]
    max_disk: Option<u64>,
}

impl BudgetArgs {
    /// The budget the flags set; what they leave out is unset.
    pub(crate) fn request(&self) -> BudgetRequest {
        BudgetRequest {
            timeout: self.timeout,
            fuel: self.fuel,
            max_memory_bytes: self.max_memory,
            max_tokens: self.max_tokens,
            max_cost_usd: self.max_cost_usd,
            max_http_requests: self.max_http_requests,
            max_http_response_bytes: self.max_http_bytes,
            max_output_bytes: self.max_output,
            max_log_bytes: self.max_log,
            max_disk_bytes: self.max_disk,
        }
    }
}

/// Grant flags, shared by `run` and `submit`.
#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// Allow HTTP to an origin, scheme://host[:port] (no path), e.g.
    /// https://api.example.com, https://*.example.com (its subdomains),
    /// https://* (any host), *://*:* (any scheme and port). Names and
    /// wildcards reach public addresses only; an IP or CIDR
    /// (http://127.0.0.1:8080, http://[::1]:8080, http://10.0.0.0/8:*) names
    /// private ones explicitly. Repeatable.
    #[arg(long = "allow-http", value_name = "PATTERN")]
    allow_http: Vec<String>,

    /// Allow this LLM model (`*` for any). Repeatable.
    #[arg(long = "allow-model", value_name = "NAME")]
    allow_model: Vec<String>,

    /// A config value for the agent (wasi:config). Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,

    /// Give the run an empty scratch directory at /scratch, removed afterwards.
    #[arg(long)]
    scratch_dir: bool,

    /// Do not grant key-value storage.
    #[arg(long)]
    no_kv: bool,
}

impl GrantArgs {
    /// What the flags ask for, with HTTP patterns checked. Against a
    /// capability manifest this narrows its declaration (see
    /// [`warden_core::grant_for`] with `as_declared`): `--allow-http` and
    /// `--allow-model` replace the declared lists and must stay within
    /// them, `--no-kv` drops kv, `--scratch-dir` asks for one.
    pub(crate) fn grant(&self) -> anyhow::Result<Grant> {
        HttpPolicy::new(&self.allow_http)?;
        Ok(Grant {
            http: self.allow_http.clone(),
            models: self.allow_model.clone(),
            kv: !self.no_kv,
            scratch_dir: self.scratch_dir,
            config: self.config.iter().cloned().collect(),
        })
    }
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub(crate) fn read_input(arg: &str) -> anyhow::Result<String> {
    let text = match arg.strip_prefix('@') {
        Some("-") => {
            std::io::read_to_string(std::io::stdin()).context("cannot read input from stdin")?
        }
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read input file {path}"))?,
        None => arg.to_string(),
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        bail!("the input is not valid JSON: {e}");
    }
    Ok(text)
}

/// Reads and checks a capability manifest file.
pub(crate) fn read_manifest(path: &Path) -> anyhow::Result<(String, Manifest)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read capability manifest {}", path.display()))?;
    let manifest =
        Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((text, manifest))
}
