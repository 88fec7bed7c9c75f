//! Commands that talk to a control plane: `publish`, `submit`, `runs`,
//! `nodes`.

use super::oci::{Bar, OciArgs};
use super::output;
use super::run::{BudgetArgs, GrantArgs, read_input};
use crate::failure::RunFailure;
use crate::node::convert::{budget_to_proto, kind_from_proto, usage_from_proto};
use crate::run::RunOutcome;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;
use warden_control_plane::ComponentValidator;
use warden_control_plane::capabilities::Manifest;
use warden_control_plane::oci::OciRef;
use warden_control_plane::store::is_terminal;
use warden_proto::v1 as pb;
use warden_proto::v1::node_service_client::NodeServiceClient;
use warden_proto::v1::registry_service_client::RegistryServiceClient;
use warden_proto::v1::run_service_client::RunServiceClient;

#[derive(Debug, Args)]
pub(crate) struct Remote {
    /// The control plane's URL.
    #[arg(
        long,
        env = "WARDEN_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    control_plane: String,
}

impl Remote {
    async fn channel(&self) -> anyhow::Result<Channel> {
        tonic::transport::Endpoint::from_shared(self.control_plane.clone())
            .with_context(|| format!("invalid control plane URL `{}`", self.control_plane))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| {
                // The transport error nests the same cause several times; say the root once.
                let mut root: &dyn std::error::Error = &e;
                while let Some(next) = root.source() {
                    root = next;
                }
                anyhow::anyhow!(
                    "cannot reach the control plane at {}: {root} (is `warden control-plane` or `warden dev` running?)",
                    self.control_plane
                )
            })
    }
}

/// A gRPC status as a user-facing error.
fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

/// Publish a component: to the control plane's registry as NAME@VERSION,
/// or to an OCI registry as oci://HOST/REPO:TAG (the wasm artifact layout
/// of `wkg oci push`). The component is checked first (a component of the
/// warden:agent/agent world); built-in versions are immutable.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// NAME@VERSION (e.g. hello@1.0.0) or oci://HOST/REPO:TAG.
    reference: String,
    /// The agent's capability manifest (TOML): what it may use and its
    /// default budget. Without one, the agent may use nothing.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    remote: Remote,
    #[command(flatten)]
    oci: OciArgs,
}

/// Show what a component is before running it: its world, imports and
/// exports, size, digest and capability manifest.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// A .wasm file, NAME@VERSION in the control plane's registry, or
    /// oci://HOST/REPO:TAG.
    reference: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
    #[command(flatten)]
    oci: OciArgs,
}

pub(crate) async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let (bytes, capabilities) = if let Some(oci) = OciRef::parse(&args.reference) {
        let pulled =
            warden_control_plane::oci::pull(&oci?, &args.oci.options(), &Bar::new("downloading"))
                .await?;
        (pulled.bytes, pulled.capabilities.unwrap_or_default())
    } else if args.reference.ends_with(".wasm") || Path::new(&args.reference).is_file() {
        let bytes = std::fs::read(&args.reference)
            .with_context(|| format!("cannot read component {}", args.reference))?;
        (bytes, String::new())
    } else {
        let channel = args.remote.channel().await?;
        let resolved = RegistryServiceClient::new(channel.clone())
            .resolve(pb::ResolveRequest {
                reference: args.reference.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut stream = RegistryServiceClient::new(channel)
            .fetch(pb::FetchRequest {
                digest: resolved.digest,
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(status)? {
            bytes.extend_from_slice(&chunk.data);
        }
        (bytes, resolved.capabilities)
    };
    let validator = super::cluster::EngineValidator::new()?;
    let (world, imports, exports) = match validator.load(&args.reference, &bytes) {
        Ok((imports, exports)) => ("warden:agent/agent".to_string(), imports, exports),
        Err(e) => (format!("not runnable here: {e}"), Vec::new(), Vec::new()),
    };
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "reference": args.reference, "digest": digest, "size": bytes.len(),
                "world": world, "imports": imports, "exports": exports,
                "capabilities": (!capabilities.is_empty()).then_some(&capabilities),
            })
        );
    } else {
        println!("reference  {}", args.reference);
        println!("digest     {digest}");
        println!("size       {}", output::bytes(bytes.len() as u64));
        println!("world      {world}");
        println!("imports    {}", imports.join("\n           "));
        println!("exports    {}", exports.join("\n           "));
        if capabilities.is_empty() {
            println!("manifest   none: runs of this component may use nothing");
        } else {
            println!("manifest");
            for line in capabilities.lines() {
                println!("  {line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and checks a capability manifest file.
pub(crate) fn read_manifest(path: &Path) -> anyhow::Result<(String, Manifest)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read capability manifest {}", path.display()))?;
    let manifest =
        Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((text, manifest))
}

pub(crate) async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read component {}", args.file.display()))?;
    let capabilities = match &args.manifest {
        Some(path) => read_manifest(path)?.0,
        None => String::new(),
    };
    if let Some(oci) = OciRef::parse(&args.reference) {
        let oci = oci?;
        check_component(&args.file, &bytes)?;
        let pushed = warden_control_plane::oci::push(
            &oci,
            &bytes,
            (!capabilities.is_empty()).then_some(capabilities.as_str()),
            &args.oci.options(),
            &Bar::new("uploading"),
        )
        .await?;
        println!(
            "pushed {oci} {} ({}), manifest {}",
            pushed.digest,
            output::bytes(bytes.len() as u64),
            pushed.manifest_digest
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (name, version) =
        warden_control_plane::split_reference(&args.reference).map_err(anyhow::Error::msg)?;
    let mut client = RegistryServiceClient::new(args.remote.channel().await?);
    let mut chunks = vec![pb::PublishChunk {
        part: Some(pb::publish_chunk::Part::Header(pb::PublishHeader {
            name: name.into(),
            version: version.into(),
            size: bytes.len() as u64,
            capabilities,
        })),
    }];
    chunks.extend(bytes.chunks(1 << 20).map(|c| pb::PublishChunk {
        part: Some(pb::publish_chunk::Part::Data(c.to_vec())),
    }));
    let resp = client
        .publish(tokio_stream::iter(chunks))
        .await
        .map_err(status)?
        .into_inner();
    let note = if resp.created {
        ""
    } else {
        " (already published, unchanged)"
    };
    println!(
        "published {name}@{version} {} ({}){note}",
        resp.digest,
        output::bytes(resp.size)
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks that `bytes` are a component of the agent world, without a
/// compile cache or pool; the error says what is wrong.
fn check_component(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    super::cluster::EngineValidator::new()?
        .validate(&path.display().to_string(), bytes)
        .map_err(anyhow::Error::msg)
}

/// Submit a run to the control plane: of a published agent, or of an OCI
/// reference (the control plane resolves the tag to a digest once and pulls
/// the component). The grant is what the agent's capability manifest
/// declares, narrowed by the grant flags; asking for more is refused.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// NAME@VERSION of a published agent, or oci://HOST/REPO:TAG.
    agent: String,

    /// Input: JSON text, or @FILE, or @- for stdin.
    #[arg(long, short, default_value = "null", value_name = "JSON|@FILE")]
    input: String,

    /// Submit one run per line of this JSON Lines file (- for stdin), in
    /// batches of 1,000 per call; prints one run id per line, in order.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "wait"])]
    inputs: Option<PathBuf>,

    /// Wait for the run to end and print its result (exit 0 only on success).
    #[arg(long)]
    wait: bool,

    /// Attempts before a run that keeps failing retryably is dead-lettered.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,

    /// Only nodes with this label (KEY=VALUE). Repeatable.
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = super::run::parse_key_value)]
    selector: Vec<(String, String)>,

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
fn outcome_of(run: &pb::Run) -> RunOutcome {
    let result = if run.state == "succeeded" {
        Ok(run.output.clone())
    } else {
        let kind = kind_from_proto(run.error_kind).unwrap_or(crate::FailureKind::HostError);
        let message = if run.state == "dead_lettered" {
            format!(
                "dead-lettered after {} attempts: {}",
                run.attempt, run.error_message
            )
        } else {
            run.error_message.clone()
        };
        Err(RunFailure::new(kind, message))
    };
    RunOutcome {
        result,
        usage: usage_from_proto(run.usage),
        logs: Vec::new(),
    }
}

/// Follows a run until it ends; prints state changes to stderr.
async fn wait_for(
    client: &mut RunServiceClient<Channel>,
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
        if !quiet && last.as_deref() != Some(run.state.as_str()) {
            eprintln!("  {} {} (attempt {})", run.run_id, run.state, run.attempt);
        }
        last = Some(run.state.clone());
        if is_terminal(&run.state) {
            return Ok(run);
        }
    }
    bail!("the control plane closed the watch of run {run_id} before it ended")
}

pub(crate) async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let grant = args.grant.request()?;
    let request = |input: String| pb::SubmitRequest {
        agent: args.agent.clone(),
        input,
        budget: Some(budget_to_proto(&args.budget.budget())),
        grant: Some(grant.clone()),
        node_selector: args.selector.iter().cloned().collect(),
        max_attempts: args.max_attempts,
        traceparent: String::new(),
    };
    if let Some(path) = &args.inputs {
        let inputs = read_json_lines(path)?;
        let mut client = RunServiceClient::new(args.remote.channel().await?);
        return submit_many(
            &mut client,
            inputs.into_iter().map(request).collect(),
            args.json,
        )
        .await;
    }
    let input = read_input(&args.input)?;
    let mut client = RunServiceClient::new(args.remote.channel().await?);
    let run = client
        .submit(request(input))
        .await
        .map_err(status)?
        .into_inner()
        .run
        .context("the control plane answered without a run")?;
    if !args.wait {
        print_submitted(&run, args.json);
        return Ok(ExitCode::SUCCESS);
    }
    let run = wait_for(&mut client, &run.run_id, args.json).await?;
    Ok(output::print_outcome(&outcome_of(&run), args.json))
}

fn print_submitted(run: &pb::Run, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "run_id": run.run_id, "state": run.state })
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
    client: &mut RunServiceClient<Channel>,
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

/// Inspect and control runs.
#[derive(Debug, Args)]
pub(crate) struct RunsArgs {
    #[command(subcommand)]
    command: RunsCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// The newest runs.
    List {
        /// Only runs in this state (queued, leased, running, succeeded,
        /// failed, dead_lettered, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One run with every attempt.
    Get {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Follow a run until it ends, then print its result.
    Watch {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run: queued runs at once, running ones on their node.
    Cancel { run_id: String },
}

fn run_json(run: &pb::Run) -> serde_json::Value {
    let attempts: Vec<_> = run
        .attempts
        .iter()
        .map(|a| {
            serde_json::json!({
                "attempt": a.attempt, "node_id": a.node_id, "token": a.token,
                "outcome": a.outcome, "started_unix_ms": a.started_unix_ms,
                "ended_unix_ms": a.ended_unix_ms,
                "error": kind_from_proto(a.kind).map(|k| serde_json::json!({"kind": k, "message": a.message})),
            })
        })
        .collect();
    serde_json::json!({
        "run_id": run.run_id, "agent": run.agent, "digest": run.component_digest,
        "state": run.state, "attempt": run.attempt, "max_attempts": run.max_attempts,
        "input": serde_json::from_str::<serde_json::Value>(&run.input).ok(),
        "output": serde_json::from_str::<serde_json::Value>(&run.output).ok(),
        "error": kind_from_proto(run.error_kind).map(|k| serde_json::json!({"kind": k, "message": run.error_message})),
        "usage": usage_from_proto(run.usage),
        "created_unix_ms": run.created_unix_ms, "updated_unix_ms": run.updated_unix_ms,
        "attempts": attempts,
    })
}

pub(crate) async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let mut client = RunServiceClient::new(args.remote.channel().await?);
    match args.command {
        RunsCommand::List { state, limit, json } => {
            let runs = client
                .list(pb::ListRunsRequest {
                    state: state.unwrap_or_default(),
                    limit,
                })
                .await
                .map_err(status)?
                .into_inner()
                .runs;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(runs.iter().map(run_json).collect())
                );
            } else {
                println!("{:<32}  {:<14}  {:>7}  AGENT", "RUN", "STATE", "ATTEMPT");
                for r in &runs {
                    println!(
                        "{:<32}  {:<14}  {:>7}  {}",
                        r.run_id, r.state, r.attempt, r.agent
                    );
                }
            }
        }
        RunsCommand::Get { run_id, json } => {
            let run = client
                .get(pb::GetRunRequest { run_id })
                .await
                .map_err(status)?
                .into_inner();
            let doc = run_json(&run);
            if json {
                println!("{doc}");
            } else {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            }
        }
        RunsCommand::Watch { run_id, json } => {
            let run = wait_for(&mut client, &run_id, json).await?;
            return Ok(output::print_outcome(&outcome_of(&run), json));
        }
        RunsCommand::Cancel { run_id } => {
            let run = client
                .cancel(pb::CancelRunRequest { run_id })
                .await
                .map_err(status)?
                .into_inner();
            let note = if run.cancel_requested && !is_terminal(&run.state) {
                " (cancel requested; the node stops it)"
            } else {
                ""
            };
            println!("{} {}{note}", run.run_id, run.state);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Inspect nodes.
#[derive(Debug, Args)]
pub(crate) struct NodesArgs {
    #[command(subcommand)]
    command: NodesCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum NodesCommand {
    /// Every node the control plane knows, with its state and capacity.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn nodes(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let mut client = NodeServiceClient::new(args.remote.channel().await?);
    let NodesCommand::List { json } = args.command;
    let nodes = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .nodes;
    if json {
        let docs: Vec<_> = nodes
            .iter()
            .map(|n| {
                let cap = n.capacity.clone().unwrap_or_default();
                serde_json::json!({
                    "node_id": n.node_id, "hostname": n.hostname, "state": n.state,
                    "labels": n.labels, "active_runs": n.active_runs, "free_slots": n.free_slots,
                    "slots": cap.slots, "cpu_cores": cap.cpu_cores, "memory_bytes": cap.memory_bytes,
                    "os": cap.os, "arch": cap.arch, "last_heartbeat_unix_ms": n.last_heartbeat_unix_ms,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(docs));
    } else {
        println!(
            "{:<28}  {:<9}  {:>6}  {:>5}  LABELS",
            "NODE", "STATE", "ACTIVE", "SLOTS"
        );
        for n in &nodes {
            let cap = n.capacity.clone().unwrap_or_default();
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{:<28}  {:<9}  {:>6}  {:>5}  {}",
                n.node_id,
                n.state,
                n.active_runs,
                cap.slots,
                labels.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
