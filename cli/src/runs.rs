//! `warden runs` and `warden nodes`: what the control plane knows.

use crate::output::{self, safe};
use crate::remote::{Remote, status};
use crate::submit::{outcome_of, state_name, wait_for};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use warden_core::{FailureKind, NodeState, RunState};
use warden_proto::v1 as pb;
use warden_proto::v1::node_service_client::NodeServiceClient;

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
        state: Option<RunState>,
        /// Only runs of this agent: a name (every version) or NAME@VERSION.
        #[arg(long)]
        agent: Option<String>,
        /// Only runs with this label (KEY=VALUE). Repeatable: runs with
        /// every one.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::args::parse_key_value)]
        labels: Vec<(String, String)>,
        /// Only runs submitted in this long before now (e.g. 30m, 2h, 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// At most this many runs, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One run with every attempt.
    Get {
        run_id: String,
        /// Print the run as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run until it ends, then print its result.
    Watch {
        run_id: String,
        /// Print the result as one JSON object: {"status","output","error","usage","logs"}.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run: queued runs at once, running ones on their node.
    Cancel { run_id: String },
    /// The run's log: its agent's log lines, stdout and stderr, as its
    /// nodes streamed them, for every attempt (failed ones too). Lines the
    /// control plane did not keep (over its --max-log-bytes per attempt, or
    /// dropped by a node) are marked with a `warden` line.
    Logs {
        run_id: String,
        /// Keep printing lines as they are logged, until the run ends.
        #[arg(long, short)]
        follow: bool,
        /// Only this attempt's lines (from 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
        /// One JSON object per line: attempt, seq, unix_ms, source, level,
        /// context, message.
        #[arg(long)]
        json: bool,
    },
}

/// A run as JSON (the HTTP API's document); a list's runs are summaries
/// (no input, output or attempts: their sizes instead).
fn run_json(run: &pb::Run, summary: bool) -> serde_json::Value {
    let doc = if summary {
        warden_api::Run::summary(run)
    } else {
        warden_api::Run::full(run)
    };
    serde_json::to_value(doc).unwrap_or_default()
}

pub(crate) async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.remote.runs().await?;
    match args.command {
        RunsCommand::List {
            state,
            agent,
            labels,
            since,
            limit,
            json,
        } => {
            let since_unix_ms = match since {
                Some(since) => {
                    let now = std::time::SystemTime::now();
                    let at = now.checked_sub(since).unwrap_or(std::time::UNIX_EPOCH);
                    let ms = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    (ms.as_millis() as i64).max(1)
                }
                None => 0,
            };
            // A page at a time, until `limit` runs or the last page.
            let mut runs = Vec::new();
            let mut page_token = String::new();
            while (runs.len() as u32) < limit {
                let page = client
                    .list(pb::ListRunsRequest {
                        state: state.map(|s| s.as_str().to_string()).unwrap_or_default(),
                        run_state: state.map_or(0, |s| pb::RunState::from(s) as i32),
                        limit: (limit - runs.len() as u32).min(1000),
                        page_token,
                        agent: agent.clone().unwrap_or_default(),
                        labels: labels.iter().cloned().collect(),
                        since_unix_ms,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                runs.extend(page.runs);
                page_token = page.next_page_token;
                if page_token.is_empty() {
                    break;
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(runs.iter().map(|r| run_json(r, true)).collect())
                );
            } else {
                // The agent column as wide as its widest; a queued run
                // says why it waits after it.
                let agent_width = runs.iter().map(|r| safe(&r.agent).chars().count()).max();
                let agent_width = agent_width.unwrap_or(0).max("AGENT".len());
                println!(
                    "{:<32}  {:<13}  {:>7}  {:<20}  {:>8}  {:<18}  {:<agent_width$}  WAITING ON",
                    "RUN", "STATE", "ATTEMPT", "SUBMITTED", "TOOK", "FAILURE", "AGENT"
                );
                for r in &runs {
                    let ended = RunState::from_wire(r.run_state, &r.state)
                        .is_some_and(RunState::is_terminal);
                    // Submit to end for a run that ended; so far for one
                    // that has not.
                    let until = if ended {
                        r.updated_unix_ms
                    } else {
                        warden_core::now_ms()
                    };
                    let failure = FailureKind::from_proto(r.error_kind).map_or("", |k| k.as_str());
                    let line = format!(
                        "{:<32}  {:<13}  {:>7}  {:<20}  {:>8}  {:<18}  {:<agent_width$}  {}",
                        safe(&r.run_id),
                        state_name(r),
                        format!("{}/{}", r.attempt, r.max_attempts),
                        output::when(r.created_unix_ms),
                        output::took(until - r.created_unix_ms),
                        failure,
                        safe(&r.agent),
                        safe(&r.waiting)
                    );
                    println!("{}", line.trim_end());
                }
            }
        }
        RunsCommand::Get { run_id, json } => {
            let run = client
                .get(pb::GetRunRequest { run_id })
                .await
                .map_err(status)?
                .into_inner();
            let doc = run_json(&run, false);
            if json {
                println!("{doc}");
            } else {
                println!("{}", output::pretty_json(&doc));
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
            let state = RunState::from_wire(run.run_state, &run.state);
            let note = if run.cancel_requested && !state.is_some_and(RunState::is_terminal) {
                " (cancel requested; the node stops it)"
            } else {
                ""
            };
            println!("{} {}{note}", safe(&run.run_id), state_name(&run));
        }
        RunsCommand::Logs {
            run_id,
            follow,
            attempt,
            json,
        } => {
            let mut stream = client
                .logs(pb::RunLogsRequest {
                    run_id,
                    attempt: attempt.unwrap_or(0),
                    follow,
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            while let Some(batch) = stream.message().await.map_err(status)? {
                for line in &batch.lines {
                    if json {
                        // serde_json leaves C1 controls and bidi overrides raw.
                        let doc = log_line_json(line).to_string();
                        writeln!(out, "{}", warden_core::escape_json_controls(&doc))?;
                    } else {
                        writeln!(out, "{}", log_line_text(line))?;
                    }
                }
                out.flush()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn log_line_json(line: &pb::LogLine) -> serde_json::Value {
    serde_json::to_value(warden_api::LogLine::from(line)).unwrap_or_default()
}

/// `TIME #ATTEMPT TAG [CONTEXT: ]MESSAGE`, the tag being the level of a
/// log line, else stdout, stderr or warden; control characters escaped.
fn log_line_text(line: &pb::LogLine) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(line.unix_ms.max(0) as u64);
    let tag = if line.level.is_empty() {
        warden_core::proto::log_source_name(line.source)
    } else {
        line.level.as_str()
    };
    let context = if line.context.is_empty() {
        String::new()
    } else {
        format!("{}: ", safe(&line.context))
    };
    format!(
        "{} #{} {:<6} {context}{}",
        humantime::format_rfc3339_millis(time),
        line.attempt,
        safe(tag),
        safe(&line.message)
    )
}

/// Inspect, enroll and revoke nodes.
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
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Join tokens, with which a node enrolls once.
    JoinToken {
        #[command(subcommand)]
        command: JoinTokenCommand,
    },
    /// Cut a node off at once: its certificate stops working and its runs
    /// go back to the queue.
    Revoke { node_id: String },
}

#[derive(Debug, Subcommand)]
enum JoinTokenCommand {
    /// Make a single-use join token; prints it alone on the last line.
    /// Start the node with `warden node --control-plane URL --ca ca.pem
    /// --join-token TOKEN`.
    Create {
        /// Valid for this long (at most 7d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// A label the node gets (overriding its own). Repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::args::parse_key_value)]
        labels: Vec<(String, String)>,
    },
    /// The join tokens made: id, labels, expiry, and whether a node used
    /// them (never the secrets).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a join token not used yet (by the id `create` and `list`
    /// show), so it enrolls nobody. A used one: revoke its node instead.
    Revoke { id: String },
}

/// `unix_ms` as an RFC 3339 time (UTC, seconds).
fn rfc3339(unix_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

async fn join_tokens(
    client: &mut NodeServiceClient<crate::remote::Conn>,
    command: JoinTokenCommand,
) -> anyhow::Result<()> {
    match command {
        JoinTokenCommand::Create { ttl, labels } => {
            let made = client
                .create_join_token(pb::CreateJoinTokenRequest {
                    ttl_ms: ttl.as_millis() as u64,
                    labels: labels.into_iter().collect(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "join token {} for one node, valid until {}",
                made.id,
                rfc3339(made.expires_unix_ms)
            );
            println!("{}", made.join_token);
        }
        JoinTokenCommand::List { json } => {
            let tokens = client
                .list_join_tokens(pb::ListJoinTokensRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .join_tokens;
            let now = warden_core::now_ms();
            let state = |t: &pb::JoinTokenInfo| {
                if !t.used_by.is_empty() {
                    format!("used by {}", safe(&t.used_by))
                } else if t.expires_unix_ms <= now {
                    "expired".to_string()
                } else {
                    "valid".to_string()
                }
            };
            if json {
                let docs: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "labels": t.labels, "created_unix_ms": t.created_unix_ms,
                            "expires_unix_ms": t.expires_unix_ms,
                            "used_by": (!t.used_by.is_empty()).then_some(&t.used_by),
                            "valid": t.used_by.is_empty() && t.expires_unix_ms > now,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(docs));
            } else {
                let mut table =
                    output::Table::new(&["ID", "CREATED", "EXPIRES", "STATE", "LABELS"]);
                for t in &tokens {
                    let mut labels: Vec<_> =
                        t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    labels.sort();
                    table.row(vec![
                        t.id.clone(),
                        rfc3339(t.created_unix_ms),
                        rfc3339(t.expires_unix_ms),
                        state(t).to_string(),
                        safe(&labels.join(",")).into_owned(),
                    ]);
                }
                table.print();
            }
        }
        JoinTokenCommand::Revoke { id } => {
            client
                .revoke_join_token(pb::RevokeJoinTokenRequest { id: id.clone() })
                .await
                .map_err(status)?;
            println!("join token {} revoked: it enrolls nobody", safe(&id));
        }
    }
    Ok(())
}

pub(crate) async fn nodes(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let mut client = NodeServiceClient::new(args.remote.channel().await?);
    let json = match args.command {
        NodesCommand::List { json } => json,
        NodesCommand::JoinToken { command } => {
            join_tokens(&mut client, command).await?;
            return Ok(ExitCode::SUCCESS);
        }
        NodesCommand::Revoke { node_id } => {
            let r = client
                .revoke_node(pb::RevokeNodeRequest {
                    node_id: node_id.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "node {} revoked; {} of its runs went back to the queue",
                safe(&node_id),
                r.requeued
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let nodes = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .nodes;
    if json {
        let docs: Vec<_> = nodes.iter().map(warden_api::Node::from).collect();
        println!("{}", serde_json::to_value(docs).unwrap_or_default());
    } else {
        let mut table = output::Table::new(&[
            "NODE",
            "STATE",
            ">ACTIVE",
            ">FREE",
            ">SLOTS",
            ">CPUS",
            ">MEMORY",
            ">DISK FREE",
            "ACCELERATORS",
            ">HEARTBEAT",
            "LABELS",
        ]);
        for n in &nodes {
            let cap = n.capacity.clone().unwrap_or_default();
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let accelerators = if cap.accelerators.is_empty() {
                "none".to_string()
            } else {
                format!("{}× {}", cap.accelerators.len(), cap.accelerators[0].name)
            };
            table.row(vec![
                safe(&n.node_id).into_owned(),
                node_state(n).to_string(),
                n.active_runs.to_string(),
                n.free_slots.to_string(),
                cap.slots.to_string(),
                cap.cpu_cores.to_string(),
                output::bytes(cap.memory_bytes),
                output::bytes(cap.disk_free_bytes),
                safe(&accelerators).into_owned(),
                format!("{:.1}s ago", heartbeat_age_ms(n) as f64 / 1000.0),
                safe(&labels.join(",")).into_owned(),
            ]);
        }
        table.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// Since the node's last heartbeat (the control plane's clock against
/// this machine's).
fn heartbeat_age_ms(n: &pb::NodeInfo) -> i64 {
    (warden_core::now_ms() - n.last_heartbeat_unix_ms).max(0)
}

fn node_state(n: &pb::NodeInfo) -> &'static str {
    NodeState::from_wire(n.node_state, &n.state).map_or("", NodeState::as_str)
}
