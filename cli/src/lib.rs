//! The `warden` command line: one module per command group (`run`,
//! `cluster` for dev/node/control-plane, `registry` for publish/inspect,
//! `submit`, `runs` for runs/nodes), with shared flags in `args`.
//! Errors are reported here, at the edge, with `anyhow`; library crates
//! return typed errors.

mod admin;
mod agents;
mod args;
mod bridge;
mod cluster;
pub mod mock_llm;
mod new;
mod oci;
mod output;
mod project;
mod registry;
mod remote;
mod run;
mod runs;
mod sdk;
mod submit;
mod usage;
mod validator;
mod watch;
mod webhooks;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Warden: a WebAssembly sandbox host for AI agents.
///
/// Runs untrusted agent components (wasm32-wasip2, world warden:agent/agent)
/// under hard budgets (time, fuel, memory, LLM tokens and cost, HTTP, output)
/// with only the capabilities you grant.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, long_about)]
struct Cli {
    /// Log format for Warden's own diagnostics (agent logs are separate).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "pretty",
        env = "WARDEN_LOG_FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    New(new::NewArgs),
    Build(project::BuildArgs),
    Run(run::RunArgs),
    Dev(cluster::DevArgs),
    ControlPlane(cluster::ControlPlaneArgs),
    Node(cluster::NodeArgs),
    Publish(registry::PublishArgs),
    Agents(agents::AgentsArgs),
    Inspect(registry::InspectArgs),
    Submit(submit::SubmitArgs),
    Runs(runs::RunsArgs),
    Usage(usage::UsageArgs),
    Nodes(runs::NodesArgs),
    Tokens(admin::TokensArgs),
    Whoami(admin::WhoAmIArgs),
    Audit(admin::AuditArgs),
    Quotas(admin::QuotasArgs),
    Credentials(admin::CredentialsArgs),
    Webhooks(webhooks::WebhooksArgs),
    Bridge(bridge::BridgeArgs),
    Sdk(sdk::SdkArgs),
    Completions(CompletionsArgs),
}

/// Print a shell completion script, e.g. `warden completions bash >
/// /etc/bash_completion.d/warden`, or `source <(warden completions zsh)`.
#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    /// The shell to complete in.
    shell: clap_complete::Shell,
}

/// The internal command a compile child process runs: `warden
/// compile-worker SPEC` compiles one component from stdin for the process
/// that started it, under the compile bounds. Not a clap command, so that
/// neither `--help`, completions nor "did you mean" offer it.
const COMPILE_WORKER: &str = "compile-worker";

/// Exit code for a run that failed (any failure kind).
const EXIT_RUN_FAILED: u8 = 1;
/// Exit code for a request that could not start: bad flags, unreadable
/// files, invalid input JSON, bad config.
const EXIT_USAGE: u8 = 2;

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == COMPILE_WORKER) {
        let spec = args.next().and_then(|s| s.into_string().ok());
        return match (spec, args.next()) {
            (Some(spec), None) => warden_host::compile::worker_main(&spec),
            _ => {
                eprintln!("error: {COMPILE_WORKER} takes one argument, the engine as JSON");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    let cli = Cli::parse();
    if let Command::Completions(args) = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(args.shell, &mut command, "warden", &mut script);
        // A closed pipe (`| head`) is the reader's choice, not an error.
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("error: cannot write the completion script: {e}");
                ExitCode::from(EXIT_USAGE)
            }
            _ => ExitCode::SUCCESS,
        };
    }
    // Every engine in this process compiles in a child of this binary, under
    // the compile bounds, and never runs Cranelift itself.
    match std::env::current_exe() {
        Ok(program) => warden_host::compile::use_worker(warden_host::compile::Worker {
            program,
            args: vec![COMPILE_WORKER.into()],
        }),
        Err(e) => eprintln!("warning: cannot find this program ({e}); compiling in process"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // OTLP exporters run on the runtime.
    let tracing = {
        let _in_runtime = runtime.enter();
        match init_tracing(cli.log_format, service_name(&cli.command)) {
            Ok(tracing) => tracing,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::New(args) => new::new(args),
            Command::Build(args) => project::build(args),
            Command::Sdk(args) => sdk::sdk(args),
            Command::Run(args) => run::run(args).await,
            Command::Dev(args) => cluster::dev(args).await,
            Command::ControlPlane(args) => cluster::control_plane(args).await,
            Command::Node(args) => cluster::node(args).await,
            Command::Publish(args) => registry::publish(args).await,
            Command::Agents(args) => agents::agents(args).await,
            Command::Inspect(args) => registry::inspect(args).await,
            Command::Submit(args) => submit::submit(args).await,
            Command::Runs(args) => runs::runs(args).await,
            Command::Usage(args) => usage::usage(args).await,
            Command::Nodes(args) => runs::nodes(args).await,
            Command::Tokens(args) => admin::tokens(args).await,
            Command::Whoami(args) => admin::whoami(args).await,
            Command::Audit(args) => admin::audit(args).await,
            Command::Quotas(args) => admin::quotas(args).await,
            Command::Webhooks(args) => webhooks::webhooks(args).await,
            Command::Credentials(args) => admin::credentials(args).await,
            Command::Bridge(args) => bridge::bridge(args).await,
            Command::Completions(_) => unreachable!("handled before the runtime starts"),
        }
    });
    if let Some(tracing) = tracing {
        tracing.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The OpenTelemetry service name of `command` (unless
/// `OTEL_SERVICE_NAME` says otherwise).
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::Dev(_) => "warden-dev",
        Command::ControlPlane(_) => "warden-control-plane",
        Command::Node(_) => "warden-node",
        Command::Bridge(_) => "warden-bridge",
        _ => "warden",
    }
}

/// Warden's own diagnostics on stderr (filtered by `WARDEN_LOG`, default
/// `warn`), and its spans over OTLP when the `OTEL_*` variables ask for it.
fn init_tracing(
    format: LogFormat,
    service: &str,
) -> Result<Option<warden_telemetry::trace::Tracing>, String> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, Registry};
    let filter = EnvFilter::try_from_env("WARDEN_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        // Field values can be outside text (node ids, host names, guest
        // messages): every control character is escaped, so none reaches
        // the terminal and no newline forges a log line. JSON quotes them.
        LogFormat::Pretty => {
            use tracing_subscriber::field::MakeExt;
            let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                let text = format!("{value:?}");
                let text = warden_core::escape_controls(&text);
                match field.name() {
                    "message" => w.write_str(&text),
                    name => write!(w, "{name}={text}"),
                }
            })
            .delimited(" ");
            tracing_subscriber::fmt::layer()
                .compact()
                .fmt_fields(fields)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let tracing = warden_telemetry::trace::Tracing::from_env(service)?;
    if let Some(tracing) = &tracing
        && service != "warden"
    {
        // Long-running processes say so (on stderr: their first line on
        // stdout says where they listen, for scripts).
        eprintln!("warden: spans are exported to {}", tracing.destination());
    }
    let otel = tracing.as_ref().map(|t| t.layer());
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Ok(tracing)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
