//! `warden submit`: one run, or one per line of a JSON Lines file, and
//! waiting for a run to end.

use crate::args::{BudgetArgs, GrantArgs, parse_key_value, read_input};
use crate::output;
use crate::remote::Conn;
use crate::remote::{Remote, status};
use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warden_core::{FailureKind, RunFailure, RunState, Usage};
use warden_host::RunOutcome;
use warden_proto::v1 as pb;
use warden_proto::v1::run_service_client::RunServiceClient;

/// Submit a run to the control plane: of a published agent, or of an OCI
/// reference (the control plane resolves the tag to a digest once and pulls
/// the component). The grant is what the agent's capability manifest
/// declares, narrowed by the grant flags; asking for more is refused.
///
/// For a quick try against a dev cluster, AGENT may be an agent's directory
/// written as a path (`./my-agent`: built first, with its warden.toml) or a
/// .wasm file (with --manifest):
/// it is published as NAME@dev-HASH (the same build, the same version; no
/// version bump needed) and that version is submitted.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  warden submit research@1.2.0 --input @question.json --wait
  warden submit ./my-agent --wait              # build, publish a dev version, run
  warden submit agent.wasm --manifest warden.toml --input '{}'")]
pub(crate) struct SubmitArgs {
    /// NAME@VERSION of a published agent, NAME alone (its newest
    /// version), oci://HOST/REPO:TAG, or a local agent: a directory written
    /// as a path (./NAME) or a .wasm file.
    agent: String,

    /// The capability manifest for a local .wasm (a directory's is its
    /// warden.toml).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,

    /// Input: JSON text, or @FILE, or @- for stdin. Default: null, or a
    /// local agent directory's input.json.
    #[arg(long, short, value_name = "JSON|@FILE")]
    input: Option<String>,

    /// Submit one run per line of this JSON Lines file (- for stdin), in
    /// batches of 1,000 per call; prints one run id per line, in order.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "wait"])]
    inputs: Option<PathBuf>,

    /// Wait for the run to end and print its result (exit 0 only on success).
    #[arg(long)]
    wait: bool,

    /// Check everything (agent, manifest and grant, budget, input, labels,
    /// selector, quotas, a ready node for the selector) and start nothing:
    /// prints every problem found (exit 2 if any).
    #[arg(long, conflicts_with_all = ["inputs", "wait"])]
    dry_run: bool,

    /// Attempts before a run that keeps failing retryably is dead-lettered.
    /// Default: the control plane's `--max-attempts` (3 unless set).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,

    /// Only nodes with this label (KEY=VALUE). Repeatable.
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    selector: Vec<(String, String)>,

    /// A label of the run itself (KEY=VALUE, e.g. role=manager), which
    /// concurrency limits may count (`warden quotas limit --label`).
    /// Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,

    /// At most one run per key: a submit with a key already used (by this
    /// tenant) makes no run and prints the first one. For a job that may
    /// be submitted again, e.g. its id in the queue it came from.
    #[arg(long, value_name = "KEY", conflicts_with = "inputs")]
    idempotency_key: Option<String>,

    /// The W3C trace context to put the run in (00-TRACE_ID-SPAN_ID-FLAGS):
    /// its submit, leases, runs and calls become spans of that trace. Without
    /// it, and with OTLP export configured (OTEL_EXPORTER_OTLP_ENDPOINT), this
    /// command's own span is the parent.
    #[arg(long, env = "TRACEPARENT", value_parser = parse_traceparent)]
    traceparent: Option<String>,

    /// POST the run's result to this URL once it ends, signed with the
    /// tenant's webhook key and retried until the receiver answers 2xx
    /// (the URL must be on the tenant's allow-list: `warden webhooks`).
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,

    #[command(flatten)]
    budget: BudgetArgs,

    #[command(flatten)]
    grant: GrantArgs,

    /// Print JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: Remote,
}

/// A recorded run as the outcome `warden run` prints.
pub(crate) fn outcome_of(run: &pb::Run) -> RunOutcome {
    let state = RunState::from_wire(run.run_state, &run.state);
    let result = if state == Some(RunState::Succeeded) {
        Ok(run.output.clone())
    } else {
        let kind = FailureKind::from_proto(run.error_kind).unwrap_or(FailureKind::HostError);
        let message = if state == Some(RunState::DeadLettered) {
            format!(
                "dead-lettered after {} attempt{}: {}",
                run.attempt,
                if run.attempt == 1 { "" } else { "s" },
                run.error_message
            )
        } else {
            run.error_message.clone()
        };
        // As recorded: the node already bounded the message.
        Err(RunFailure { kind, message })
    };
    RunOutcome {
        result,
        usage: Usage::from(run.usage),
        logs: Vec::new(),
    }
}

/// Follows a run until it ends; prints state changes to stderr.
pub(crate) async fn wait_for(
    client: &mut RunServiceClient<Conn>,
    run_id: &str,
    quiet: bool,
) -> anyhow::Result<pb::Run> {
    let mut stream = client
        .watch(pb::WatchRunRequest {
            run_id: run_id.into(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut last = None;
    while let Some(run) = stream.message().await.map_err(status)? {
        let state = RunState::from_wire(run.run_state, &run.state)
            .with_context(|| format!("the control plane sent run {run_id} without a state"))?;
        if !quiet && last != Some(state) {
            // A queued run says why it waits, as the control plane sees it.
            let why = if run.waiting.is_empty() {
                String::new()
            } else {
                format!(": {}", crate::output::safe(&run.waiting))
            };
            eprintln!(
                "  {} {state} (attempt {}){why}",
                crate::output::safe(&run.run_id),
                run.attempt
            );
        }
        last = Some(state);
        if state.is_terminal() {
            return Ok(run);
        }
    }
    bail!("the control plane closed the watch of run {run_id} before it ended")
}

fn parse_traceparent(text: &str) -> Result<String, String> {
    warden_telemetry::trace::check_traceparent(text).map(|()| text.to_string())
}

pub(crate) async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let span =
        tracing::info_span!("warden submit", otel.kind = "client", warden.agent = %args.agent);
    let traceparent = match &args.traceparent {
        Some(traceparent) => traceparent.clone(),
        None => warden_telemetry::trace::traceparent(&span).unwrap_or_default(),
    };
    // Ask for the manifest's declaration, narrowed by the flags; unset
    // budget fields and attempts take the manifest's and control plane's.
    let grant = pb::Grant {
        as_declared: true,
        ..pb::Grant::from(&args.grant.grant()?)
    };
    let budget = args.budget.request();
    // A dry run lets the control plane list this with everything else.
    if !args.dry_run {
        budget.check()?;
    }
    let budget = pb::Budget::from(&budget);
    let (agent, default_input) = match publish_local(&args).await? {
        Some(local) => local,
        None => (args.agent.clone(), None),
    };
    let request = |input: String| pb::SubmitRequest {
        agent: agent.clone(),
        input,
        budget: Some(budget),
        grant: Some(grant.clone()),
        node_selector: args.selector.iter().cloned().collect(),
        max_attempts: args.max_attempts.unwrap_or(0),
        traceparent: traceparent.clone(),
        labels: args.labels.iter().cloned().collect(),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        dry_run: args.dry_run,
        webhook_url: args.webhook.clone().unwrap_or_default(),
    };
    if let Some(path) = &args.inputs {
        let inputs = read_json_lines(path)?;
        let mut client = args.remote.runs().await?;
        return submit_many(
            &mut client,
            inputs.into_iter().map(request).collect(),
            args.json,
        )
        .await;
    }
    let input = args.input.clone().or(default_input);
    let input = read_input(input.as_deref().unwrap_or("null"))?;
    let mut client = args.remote.runs().await?;
    let answer = client
        .submit(request(input))
        .await
        .map_err(status)?
        .into_inner();
    if args.dry_run {
        if let Some(run) = &answer.run {
            bail!(
                "this control plane does not know dry runs (it is older than this CLI) and started run {}; \
                 `warden runs cancel {}` stops it",
                run.run_id,
                run.run_id
            );
        }
        return Ok(print_dry_run(&answer, args.json));
    }
    let run = answer
        .run
        .context("the control plane answered without a run")?;
    if !args.wait {
        print_submitted(&run, args.json);
        return Ok(ExitCode::SUCCESS);
    }
    let run = wait_for(&mut client, &run.run_id, args.json).await?;
    Ok(output::print_outcome(&outcome_of(&run), args.json))
}

/// A local agent (a directory, built first, or a .wasm file) published as
/// a dev version: its reference, and a directory's input.json as `@FILE`.
/// `None` when `args.agent` names no local file or directory.
async fn publish_local(args: &SubmitArgs) -> anyhow::Result<Option<(String, Option<String>)>> {
    use sha2::Digest;
    let path = Path::new(&args.agent);
    // A directory only when written as a path (`./greeter`): `greeter`
    // alone is the published agent (its newest version).
    let looks_like_path =
        args.agent.contains(std::path::MAIN_SEPARATOR) || args.agent == "." || args.agent == "..";
    let is_wasm = path.is_file() && path.extension().is_some_and(|e| e == "wasm");
    if args.dry_run && ((path.is_dir() && looks_like_path) || is_wasm) {
        bail!(
            "--dry-run checks a published agent and publishes nothing: publish {} first \
             (`warden submit` without --dry-run does, as a dev version)",
            output::safe(&args.agent)
        );
    }
    let mut input = None;
    let (wasm, name, manifest) = if path.is_dir() && looks_like_path {
        let project = crate::project::Project::open(path)?;
        let out = project.ensure_built(&crate::sdk::Sdk::unpacked(&crate::sdk::data_dir(None))?)?;
        let manifest = args.manifest.clone().or_else(|| project.manifest());
        input = project.default_input();
        (out, project.name, manifest)
    } else if is_wasm {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::project::check_name(&name).with_context(|| {
            format!(
                "the file's name is the agent's name, and `{}` is not a valid one",
                output::safe(&name)
            )
        })?;
        (path.to_path_buf(), name, args.manifest.clone())
    } else if path.is_dir() && args.manifest.is_some() {
        bail!(
            "{0} is a directory here, but `{0}` alone names a published agent: write ./{0} to \
             submit the directory",
            output::safe(&args.agent)
        );
    } else if args.manifest.is_some() {
        bail!(
            "--manifest is for a local agent (a directory or .wasm file), and {} is neither",
            output::safe(&args.agent)
        );
    } else {
        return Ok(None);
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let capabilities = match &manifest {
        Some(path) => crate::args::read_manifest(path)?.0,
        None => String::new(),
    };
    let mut hash = sha2::Sha256::new();
    hash.update(&bytes);
    hash.update(capabilities.as_bytes());
    let version = format!("dev-{}", &hex::encode(hash.finalize())[..12]);
    let resp = crate::registry::publish_to(
        args.remote.channel().await?,
        &name,
        &version,
        &bytes,
        capabilities,
        String::new(),
    )
    .await?;
    eprintln!(
        "published {name}@{version} ({}){}",
        output::bytes(resp.size),
        if resp.created { "" } else { ", unchanged" }
    );
    Ok(Some((format!("{name}@{version}"), input)))
}

/// What a dry run found: each problem, or that the submit would be taken.
fn print_dry_run(answer: &pb::SubmitResponse, json: bool) -> ExitCode {
    let found = warden_api::DryRun::from(answer);
    if json {
        println!("{}", serde_json::to_value(&found).unwrap_or_default());
    } else {
        for problem in &found.problems {
            println!("{}: {}", problem.code, output::safe(&problem.message));
        }
        for warning in &found.warnings {
            println!("warning: {}", output::safe(&warning.message));
        }
        if found.ok {
            println!("ok: the submit would be taken");
        }
    }
    if found.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn print_submitted(run: &pb::Run, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "run_id": run.run_id, "state": state_name(run) })
        );
    } else {
        println!("{}", run.run_id);
    }
}

/// The JSON values of a JSON Lines file (`-`: stdin), blank lines skipped;
/// the error names the first bad line.
fn read_json_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read inputs from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read inputs file {}", path.display()))?
    };
    let mut inputs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(line) {
            bail!(
                "{} line {}: the input is not valid JSON: {e}",
                path.display(),
                n + 1
            );
        }
        inputs.push(line.to_string());
    }
    if inputs.is_empty() {
        bail!("{} has no inputs", path.display());
    }
    Ok(inputs)
}

/// Submits runs with SubmitBatch, 1,000 per call, with a progress bar on
/// stderr; prints each run id as its batch is queued.
async fn submit_many(
    client: &mut RunServiceClient<Conn>,
    requests: Vec<pb::SubmitRequest>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    const BATCH: usize = 1000;
    let total = requests.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("submitting {pos}/{len} runs {bar:30} {elapsed}")
            .expect("valid template"),
    );
    if total <= BATCH {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut done = 0;
    for chunk in requests.chunks(BATCH) {
        let runs = client
            .submit_batch(pb::SubmitBatchRequest {
                runs: chunk.to_vec(),
            })
            .await
            .map_err(|e| {
                bar.abandon();
                anyhow::anyhow!(
                    "{} ({done} of {total} runs were queued before this batch)",
                    status(e)
                )
            })?
            .into_inner()
            .runs;
        bar.suspend(|| {
            for run in &runs {
                print_submitted(run, json);
            }
        });
        done += runs.len();
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    Ok(ExitCode::SUCCESS)
}

/// The name of a run's state (empty if the control plane sent none).
pub(crate) fn state_name(run: &pb::Run) -> &'static str {
    RunState::from_wire(run.run_state, &run.state).map_or("", RunState::as_str)
}
