//! `warden run`: run one agent component locally, once.

use super::output;
use crate::config::{NodeConfig, parse_bytes};
use crate::engine::LoadProgress;
use crate::node::convert::grant_from_proto;
use crate::{FailureKind, Grant, RunBudget, RunFailure, RunOutcome, RunRequest, Sandbox, Usage};
use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use warden_control_plane::capabilities::{Manifest, grant_for};
use warden_control_plane::oci::{OciRef, pull};

/// Run an agent component once, locally, and print its output.
///
/// Exit status: 0 when the run succeeded, 1 when it failed (any failure
/// kind: timeout, fuel_exhausted, memory_limit, output_too_large, trap,
/// guest_error, invalid_component, ...), 2 when it could not start (bad
/// flags, unreadable file, input that is not JSON, bad config).
///
/// Nothing is granted by default except key-value storage in the agent's
/// own namespace: grant HTTP hosts with --allow-http, LLM models with
/// --allow-model, a scratch directory with --scratch-dir.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  warden run hello.wasm --input '{\"name\":\"ada\"}'
  warden run fetch.wasm --input @req.json --allow-http 'https://*.example.com' --json
  warden run agent.wasm --allow-model gpt-4o-mini --max-tokens 2000 --max-cost-usd 0.05")]
pub(crate) struct RunArgs {
    /// The agent component: a .wasm file built for wasm32-wasip2, or
    /// oci://HOST/REPO:TAG to pull one (its capability manifest applies).
    agent: String,

    /// A capability manifest (TOML) for a local file: the grant flags must
    /// stay within it, and no flags means what it declares.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,

    #[command(flatten)]
    oci: super::oci::OciArgs,

    /// Input: JSON text, or @FILE to read it from a file, or @- for stdin.
    #[arg(long, short, default_value = "null", value_name = "JSON|@FILE")]
    input: String,

    #[command(flatten)]
    budget: BudgetArgs,

    #[command(flatten)]
    grant: GrantArgs,

    /// The agent's name (its key-value namespace). Default: the file name
    /// without extension.
    #[arg(long)]
    name: Option<String>,

    /// Node config file (TOML): data dir, LLM provider, price table, limits.
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    node_config: Option<PathBuf>,

    /// Where the key-value file, compile cache and scratch dirs live.
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Print one JSON object: {"status","output","error","usage","logs"}.
    #[arg(long)]
    json: bool,
}

/// Budget flags, shared by `run` and `submit`.
#[derive(Debug, Args)]
pub(crate) struct BudgetArgs {
    /// Wall-time budget, including time spent in host calls (e.g. 500ms, 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Fuel (CPU work) budget, roughly wasm instructions. Default: unlimited.
    #[arg(long)]
    fuel: Option<u64>,

    /// Linear memory budget (e.g. 64MiB, 512KiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    max_memory: u64,

    /// LLM token budget (prompt + completion). Default: unlimited.
    #[arg(long)]
    max_tokens: Option<u64>,

    /// LLM cost budget in USD, priced by the node config's price table.
    #[arg(long, value_name = "USD")]
    max_cost_usd: Option<f64>,

    /// Most outgoing HTTP requests.
    #[arg(long, default_value_t = 100)]
    max_http_requests: u32,

    /// Most bytes of HTTP response bodies, over all requests.
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
    max_http_bytes: u64,

    /// Most bytes of output.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    max_output: u64,

    /// Most bytes of logs, stdout and stderr together.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    max_log: u64,
}

impl BudgetArgs {
    pub(crate) fn budget(&self) -> RunBudget {
        RunBudget {
            timeout: self.timeout,
            fuel: self.fuel,
            max_memory_bytes: self.max_memory,
            max_tokens: self.max_tokens,
            max_cost_usd: self.max_cost_usd,
            max_http_requests: self.max_http_requests,
            max_http_response_bytes: self.max_http_bytes,
            max_output_bytes: self.max_output,
            max_log_bytes: self.max_log,
        }
    }
}

/// Grant flags, shared by `run` and `submit`.
#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// Allow HTTP to scheme://host[:port] (wildcards: *.example.com, *; IPs
    /// and CIDRs name private addresses explicitly). Repeatable.
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
    /// What a submit asks for: the capability manifest's declaration,
    /// narrowed by the flags (`--allow-http`/`--allow-model` replace the
    /// declared lists and must stay within them, `--no-kv` drops kv,
    /// `--scratch-dir` asks for one).
    pub(crate) fn request(&self) -> anyhow::Result<warden_proto::v1::Grant> {
        let mut grant = crate::node::convert::grant_to_proto(&self.grant()?);
        grant.as_declared = true;
        Ok(grant)
    }

    /// The grant, with HTTP patterns checked.
    pub(crate) fn grant(&self) -> anyhow::Result<Grant> {
        crate::capability::http::HttpPolicy::new(&self.allow_http)?;
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

/// A spinner on stderr while a component compiles for the first time.
struct Spinner {
    name: String,
    bar: std::cell::RefCell<Option<ProgressBar>>,
}

impl LoadProgress for Spinner {
    fn compiling(&self, size: usize) {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        bar.set_message(format!(
            "compiling {} ({}) for this machine; cached for next time",
            self.name,
            output::bytes(size as u64)
        ));
        bar.enable_steady_tick(Duration::from_millis(100));
        *self.bar.borrow_mut() = Some(bar);
    }

    fn done(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(&args.input)?;
    let (bytes, file_name, default_name, grant) = match OciRef::parse(&args.agent) {
        Some(oci) => {
            let oci = oci?;
            let pulled = pull(
                &oci,
                &args.oci.options(),
                &super::oci::Bar::new("downloading"),
            )
            .await?;
            let manifest = match &pulled.capabilities {
                Some(text) => {
                    Some(Manifest::parse(text).map_err(|e| anyhow::anyhow!("{oci}: {e}"))?)
                }
                None => None,
            };
            let grant = grant_for(&oci.to_string(), manifest.as_ref(), &args.grant.request()?)
                .map_err(anyhow::Error::msg)?;
            (
                pulled.bytes,
                oci.to_string(),
                oci.name(),
                grant_from_proto(Some(grant)),
            )
        }
        None => {
            let path = PathBuf::from(&args.agent);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("cannot read agent component {}", path.display()))?;
            let file_name = path
                .file_name()
                .map_or_else(|| "agent".into(), |n| n.to_string_lossy().into_owned());
            let stem = path
                .file_stem()
                .map_or_else(|| "agent".into(), |s| s.to_string_lossy().into_owned());
            let grant = match &args.manifest {
                Some(m) => {
                    let (_, manifest) = super::client::read_manifest(m)?;
                    let grant = grant_for(&file_name, Some(&manifest), &args.grant.request()?)
                        .map_err(anyhow::Error::msg)?;
                    grant_from_proto(Some(grant))
                }
                None => args.grant.grant()?,
            };
            (bytes, file_name, stem, grant)
        }
    };
    let name = args.name.clone().unwrap_or(default_name);

    let mut config = NodeConfig::load(args.node_config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    let budget = args.budget.budget();
    // The engine's memory slots need only be as large as this run's budget.
    config.limits.max_memory_bytes = config.limits.max_memory_bytes.min(budget.max_memory_bytes);
    config.engine.pool_slots = 4;
    let sandbox = Sandbox::from_config(&config)?;

    let spinner = Spinner {
        name: file_name.clone(),
        bar: Default::default(),
    };
    let outcome = match sandbox.engine().load(&file_name, &bytes, &spinner) {
        Ok((agent, _source)) => {
            let mut req = RunRequest::new(name, input);
            req.budget = budget;
            req.grant = grant;
            req.echo_logs = !args.json;
            sandbox.run(&agent, req).await
        }
        Err(crate::engine::LoadError::Invalid(message)) => RunOutcome {
            result: Err(RunFailure::new(FailureKind::InvalidComponent, message)),
            usage: Usage::default(),
            logs: Vec::new(),
        },
        Err(e) => return Err(e.into()),
    };

    Ok(output::print_outcome(&outcome, args.json))
}
