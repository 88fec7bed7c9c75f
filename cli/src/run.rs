//! `warden run`: run one agent component locally, once.

use crate::args::{BudgetArgs, GrantArgs, read_input, read_manifest};
use crate::output;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use warden_core::{FailureKind, Manifest, RunFailure, Usage, grant_for};
use warden_host::config::NodeConfig;
use warden_host::engine::{LoadError, LoadProgress};
use warden_host::{RunOutcome, RunRequest, Sandbox};
use warden_oci::{OciRef, pull};

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
    oci: crate::oci::OciArgs,

    /// Input: JSON text, or @FILE to read it from a file, or @- for stdin.
    #[arg(long, short, default_value = "null", value_name = "JSON|@FILE")]
    input: String,

    #[command(flatten)]
    budget: BudgetArgs,

    #[command(flatten)]
    grant: GrantArgs,

    /// The agent's name (its key-value namespace). Default: the file name
    /// without extension; for oci://HOST/REPO:TAG, oci://HOST/REPO (the
    /// name nodes use for it too).
    #[arg(long)]
    name: Option<String>,

    /// Node config file (TOML): data dir, LLM provider, price table, limits.
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    node_config: Option<PathBuf>,

    /// Where the key-value file, compile cache and scratch dirs live.
    /// Default: $XDG_DATA_HOME/warden, else ~/.local/share/warden.
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Print one JSON object: {"status","output","error","usage","logs"}.
    #[arg(long)]
    json: bool,
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
    let asked = args.grant.grant()?;
    // `rules`: the capability manifest the run is held to, if any (`Some(None)`
    // for an OCI artifact without one: it may use nothing).
    let (bytes, file_name, default_name, rules) = match OciRef::parse(&args.agent) {
        Some(oci) => {
            let oci = oci?;
            let pulled = pull(
                &oci,
                &args.oci.options(),
                &crate::oci::Bar::new("downloading"),
            )
            .await?;
            let manifest = match &pulled.capabilities {
                Some(text) => {
                    Some(Manifest::parse(text).map_err(|e| anyhow::anyhow!("{oci}: {e}"))?)
                }
                None => None,
            };
            let name = warden_core::agent_name(&format!("oci://{}", oci.name())).to_string();
            (pulled.bytes, oci.to_string(), name, Some(manifest))
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
            let rules = match &args.manifest {
                Some(m) => Some(Some(read_manifest(m)?.1)),
                None => None,
            };
            (bytes, file_name, stem, rules)
        }
    };
    let name = args.name.clone().unwrap_or(default_name);
    // The grant and budget a node would give this run: the manifest's
    // declaration narrowed by the flags, and the flags' budget over the
    // manifest's [budget] over the defaults.
    let grant = match &rules {
        Some(manifest) => grant_for(&file_name, manifest.as_ref(), &asked, true)?,
        None => asked,
    };
    let declared = rules
        .as_ref()
        .and_then(Option::as_ref)
        .map(|m| m.budget.clone())
        .unwrap_or_default();
    let budget = args.budget.request().or(&declared).resolve();
    budget.check()?;

    let mut config = NodeConfig::load(args.node_config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
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
        Err(LoadError::Invalid(message)) => RunOutcome {
            result: Err(RunFailure::new(FailureKind::InvalidComponent, message)),
            usage: Usage::default(),
            logs: Vec::new(),
        },
        Err(e) => return Err(e.into()),
    };

    Ok(output::print_outcome(&outcome, args.json))
}
