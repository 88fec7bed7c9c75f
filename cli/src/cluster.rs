//! `warden control-plane`, `warden node` and `warden dev` (both in one
//! process).

use crate::args::parse_key_value;
use crate::validator::EngineValidator;
use anyhow::Context;
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden_control_plane::{ControlPlane, ControlPlaneConfig, Store};
use warden_host::config::{EngineConfig, NodeConfig};
use warden_host::{AgentEngine, Sandbox};
use warden_node::{NodeAgent, NodeOptions, persistent_node_id};

/// Run the control plane: run and lease store (SQLite), scheduler, node
/// registry and the built-in component registry, over gRPC.
#[derive(Debug, Args)]
pub(crate) struct ControlPlaneArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// Config file (TOML, the node config's format): the control plane uses
    /// its data_dir and [engine] settings, including the compile bounds
    /// ([engine.compile]) publish and submit check components against.
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    data: DataDir,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,

    /// The SQLite database. Default: DATA_DIR/control-plane.sqlite3.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,

    /// A lease not renewed for this long is re-queued with attempt + 1.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,

    /// A node silent for this long is marked lost and its leases re-queued.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    node_timeout: Duration,

    /// Attempts per run unless `submit --max-attempts` says otherwise.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,

    /// Largest run input a submit may carry (e.g. 1MiB, 16MiB).
    #[arg(long, default_value = "1MiB", value_parser = parse_input_size)]
    max_input: usize,

    /// How submits of oci:// references reach their registries.
    #[command(flatten)]
    oci: crate::oci::OciArgs,
}

/// Run a node: register with the control plane, pull leases, run agents.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The control plane's URL.
    #[arg(
        long,
        env = "WARDEN_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7070"
    )]
    control_plane: String,

    #[command(flatten)]
    node: NodeFlags,

    #[command(flatten)]
    data: DataDir,
}

#[derive(Debug, Args)]
struct NodeFlags {
    /// Runs at once. Default: 4 per CPU core.
    #[arg(long)]
    slots: Option<u32>,

    /// A label for placement (e.g. region=eu). Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,

    /// On SIGTERM, how long in-flight runs may take to finish before they
    /// are failed as node_shutdown and re-queued.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_grace: Duration,

    /// Fetch and compile this agent at start (NAME@VERSION or oci://…), so
    /// its first run is warm. Repeatable.
    #[arg(long, value_name = "REF")]
    prewarm: Vec<String>,

    /// The node's id. Default: kept in DATA_DIR/node-id, created once.
    #[arg(long)]
    node_id: Option<String>,

    /// Node config file (TOML): data dir, LLM provider, price table, limits.
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    node_config: Option<PathBuf>,
}

/// The data dir flag of each command.
#[derive(Debug, Args)]
struct DataDir {
    /// Where the database, key-value file, compile cache and scratch dirs
    /// live. Default: $XDG_DATA_HOME/warden, else ~/.local/share/warden.
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// Run a control plane and a node in one process, on localhost, with the
/// SQLite default under the data dir: the quickest way to try Warden.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    server: ServerArgs,

    #[command(flatten)]
    node: NodeFlags,

    #[command(flatten)]
    data: DataDir,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

async fn start_control_plane(
    args: &ServerArgs,
    config: &NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| config.data_dir.join("control-plane.sqlite3"));
    let store = Store::open(&db)?;
    let engine = AgentEngine::new(
        &EngineConfig {
            pool_slots: 1,
            ..config.engine.clone()
        },
        64 << 20,
        config.engine.cache.then(|| config.data_dir.join("cache")),
    )?;
    let cp = ControlPlane::new(
        store,
        ControlPlaneConfig {
            lease_ttl: args.lease_ttl,
            node_timeout: args.node_timeout,
            heartbeat_interval: (args.node_timeout / 5)
                .clamp(Duration::from_millis(100), Duration::from_secs(1)),
            default_max_attempts: args.max_attempts,
            max_input_bytes: args.max_input,
            oci: args.oci.options(),
            ..ControlPlaneConfig::default()
        },
        Arc::new(EngineValidator::with_engine(engine)),
    );
    let listener = warden_control_plane::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "warden control plane listening on http://{addr} (database {})",
        db.display()
    );
    std::io::stdout().flush()?;
    let server = tokio::spawn(async move {
        if let Err(e) = cp.serve(listener, shutdown).await {
            tracing::error!(error = %e, "control plane server stopped");
        }
    });
    Ok((addr, server))
}

fn load_config(
    node_config: Option<&std::path::Path>,
    data_dir: Option<&PathBuf>,
) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::load(node_config)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

async fn run_node(
    flags: &NodeFlags,
    control_plane: String,
    config: NodeConfig,
) -> anyhow::Result<()> {
    let slots = flags
        .slots
        .unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let mut config = config;
    config.engine.pool_slots = config.engine.pool_slots.max(slots);
    let sandbox = Sandbox::from_config(&config)?;
    let node_id = match &flags.node_id {
        Some(id) => id.clone(),
        None => persistent_node_id(&config.data_dir)
            .with_context(|| format!("cannot keep the node id in {}", config.data_dir.display()))?,
    };
    warden_core::check_name("node id", &node_id)?;
    for (key, value) in &flags.labels {
        warden_core::check_label(key, value)?;
    }
    let labels: BTreeMap<String, String> = flags.labels.iter().cloned().collect();
    println!("warden node {node_id} with {slots} slots, control plane {control_plane}");
    std::io::stdout().flush()?;
    let node = NodeAgent::new(
        sandbox,
        NodeOptions {
            control_plane,
            node_id,
            labels,
            slots,
            drain_grace: flags.drain_grace,
            prewarm: flags.prewarm.clone(),
        },
        &config.data_dir,
    )?;
    node.run(shutdown_signal()).await;
    Ok(())
}

pub(crate) async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.as_deref(), args.data.data_dir.as_ref())?;
    let (_, server) = start_control_plane(&args.server, &config, shutdown_signal()).await?;
    server.await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(
        args.node.node_config.as_deref(),
        args.data.data_dir.as_ref(),
    )?;
    run_node(&args.node, args.control_plane, config).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(
        args.node.node_config.as_deref(),
        args.data.data_dir.as_ref(),
    )?;
    // The control plane stays up until the node has drained.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = start_control_plane(&args.server, &config, async {
        let _ = stopped.await;
    })
    .await?;
    run_node(&args.node, format!("http://{addr}"), config).await?;
    let _ = stop.send(());
    server.await?;
    Ok(ExitCode::SUCCESS)
}

/// `--max-input`: a size that fits in a message with its run.
fn parse_input_size(text: &str) -> Result<usize, String> {
    let bytes = warden_core::parse_bytes(text)?;
    let most = warden_core::wire::MAX_MESSAGE_BYTES / 2;
    usize::try_from(bytes)
        .ok()
        .filter(|b| *b <= most)
        .ok_or_else(|| format!("`{text}` is more than the most an input can be ({most} bytes)"))
}
