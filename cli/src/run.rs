//! `warden run`: run one agent component locally, once.

use crate::args::{BudgetArgs, GrantArgs, read_input, read_manifest};
use crate::output;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
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
///
/// Given an agent's directory (see `warden new`), it builds the agent first
/// (when its sources changed) and runs it under the directory's warden.toml,
/// with input.json as input unless --input says otherwise.
///
/// An LLM script stands in for the provider in an agent's tests: a JSON
/// array whose items answer the agent's chat calls in order, each
/// {"content": TEXT}, {"tool_calls": [{"name": TOOL, "arguments": {...}}]}
/// or {"status": HTTP_ERROR} (429 is rate-limited), with optional
/// "prompt_tokens" and "completion_tokens". A call beyond the script fails
/// as a provider error.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  warden run hello.wasm --input '{\"name\":\"ada\"}'
  warden run fetch.wasm --input @req.json --allow-http 'https://*.example.com' --json
  warden run agent.wasm --allow-model gpt-4o-mini --max-tokens 2000 --max-cost-usd 0.05
  warden run ./my-agent --llm-script ./my-agent/llm-script.json")]
pub(crate) struct RunArgs {
    /// The agent: an agent's directory (built first), a component .wasm
    /// built for wasm32-wasip2, or oci://HOST/REPO:TAG to pull one (its
    /// capability manifest applies).
    agent: String,

    /// A capability manifest (TOML) for a local file: the grant flags must
    /// stay within it, and no flags means what it declares. Default for a
    /// directory: its warden.toml.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,

    #[command(flatten)]
    oci: crate::oci::OciArgs,

    /// Input: JSON text, or @FILE to read it from a file, or @- for stdin.
    /// Default: null, or a directory's input.json.
    #[arg(long, short, value_name = "JSON|@FILE")]
    input: Option<String>,

    /// Answer the agent's LLM calls from this script (JSON; see above)
    /// instead of a provider.
    #[arg(long, value_name = "FILE", conflicts_with = "mock_llm")]
    llm_script: Option<PathBuf>,

    /// Answer the agent's LLM calls with the mock's canned replies (as
    /// `warden dev --mock-llm`) instead of a provider.
    #[arg(long)]
    mock_llm: bool,

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
    let mut config = NodeConfig::load(args.node_config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    let script = match &args.llm_script {
        Some(path) => Some(std::sync::Arc::new(crate::mock_llm::Script::load(path)?)),
        None => None,
    };
    // Checked before any build.
    let asked = args.grant.grant()?;
    // An agent's directory: build it, then run what was built.
    let project = match Path::new(&args.agent) {
        dir if dir.is_dir() => Some(crate::project::Project::open(dir)?),
        _ => None,
    };
    let (agent, manifest, input) = match &project {
        Some(p) => {
            let out = p.ensure_built(&crate::sdk::Sdk::unpacked(&config.data_dir)?)?;
            (
                out.display().to_string(),
                args.manifest.clone().or_else(|| p.manifest()),
                args.input.clone().or_else(|| p.default_input()),
            )
        }
        None => (
            args.agent.clone(),
            args.manifest.clone(),
            args.input.clone(),
        ),
    };
    let input = read_input(input.as_deref().unwrap_or("null"))?;
    let stand_in = match &script {
        Some(script) => Some(script.clone().start().await?),
        None if args.mock_llm => Some(crate::mock_llm::start().await?),
        None => None,
    };
    if let Some(url) = stand_in {
        config.llm.base_url = Some(url);
        config
            .llm
            .default_model
            .get_or_insert_with(|| "scripted".into());
    }
    // `rules`: the capability manifest the run is held to, if any (`Some(None)`
    // for an OCI artifact without one: it may use nothing).
    let (bytes, file_name, default_name, rules) = match OciRef::parse(&agent) {
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
            let path = PathBuf::from(&agent);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("cannot read agent component {}", path.display()))?;
            let file_name = path
                .file_name()
                .map_or_else(|| "agent".into(), |n| n.to_string_lossy().into_owned());
            let stem = path
                .file_stem()
                .map_or_else(|| "agent".into(), |s| s.to_string_lossy().into_owned());
            let rules = match &manifest {
                Some(m) => Some(Some(read_manifest(m)?.1)),
                None => None,
            };
            (bytes, file_name, stem, rules)
        }
    };
    let name = args
        .name
        .clone()
        .or_else(|| project.as_ref().map(|p| p.name.clone()))
        .unwrap_or(default_name);
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

    // The engine's slots stay node-sized (the run's own budget is enforced
    // per run, and says `memory_limit` when an agent starts above it), so
    // the compile cache is the one a node with this config uses.
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

    if let Some(script) = &script {
        let (asked, replies) = script.used();
        if asked != replies {
            eprintln!(
                "note: the agent made {asked} chat call{} and the LLM script has {replies} repl{}",
                if asked == 1 { "" } else { "s" },
                if replies == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(output::print_outcome(&outcome, args.json))
}
