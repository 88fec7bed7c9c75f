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

/// Run the control plane: run and lease store (SQLite, or PostgreSQL
/// shared by replicas), scheduler, node registry and the built-in
/// component registry, over gRPC.
///
/// It serves TLS with its own CA (DATA_DIR/ca.pem: give it to nodes and
/// clients as --ca) and authenticates every call: nodes by the certificate
/// they enroll for with a join token, clients by token. The first start
/// writes a system-role token to DATA_DIR/admin.token.
#[derive(Debug, Args)]
pub(crate) struct ControlPlaneArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// Serve plaintext gRPC with no authentication at all: anyone who can
    /// reach the port can act as a node or an admin. Only for a trusted
    /// network; logs a warning.
    #[arg(long)]
    insecure: bool,

    /// Another name (host name or IP address) clients and nodes reach this
    /// control plane by, for its certificate. Repeatable. localhost,
    /// 127.0.0.1, ::1, this machine's host name and the --listen address
    /// are always in it.
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,

    /// Your own server certificate (PEM) instead of one signed by the
    /// control plane's CA; with --tls-key. Clients then verify it with
    /// your CA (--ca).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Config file (TOML, the node config's format): the control plane uses
    /// its data_dir and [engine] settings, including the compile bounds
    /// ([engine.compile]) publish and submit check components against.
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    admin: AdminArgs,

    #[command(flatten)]
    data: DataDir,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,

    /// The database: a SQLite file (default: DATA_DIR/control-plane.sqlite3),
    /// or a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB) that
    /// several control-plane replicas share; its schema is migrated at
    /// start. Registry credentials in it are sealed with sealing.key (made
    /// on first start, 0600): beside a SQLite file, in DATA_DIR with
    /// PostgreSQL. Replicas on PostgreSQL need the same ca.pem, ca.key and
    /// sealing.key in their data dirs (see the README).
    #[arg(long, env = "WARDEN_DB", value_name = "PATH|URL")]
    db: Option<String>,

    /// Most PostgreSQL connections this replica opens at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    db_connections: u16,

    /// A lease not renewed for this long is re-queued with attempt + 1.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,

    /// A node silent for this long is marked lost and its leases re-queued.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    node_timeout: Duration,

    /// A queued run whose --selector no live node matches fails
    /// `unschedulable` after waiting this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    placement_timeout: Duration,

    /// Requests a second each client token may make (bursts of twice
    /// that); 0 for no limit. Over it, calls fail RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 200)]
    rate_limit: u32,

    /// Watches (`runs watch`, `submit --wait`) each client token may have
    /// open at once.
    #[arg(long, default_value_t = 64)]
    max_streams_per_token: u32,

    /// Attempts per run unless `submit --max-attempts` says otherwise.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,

    /// Largest run input a submit may carry (e.g. 1MiB, 16MiB).
    #[arg(long, default_value = "1MiB", value_parser = parse_input_size)]
    max_input: usize,

    /// Largest component a publish (or an OCI import) may bring.
    #[arg(long, default_value = "64MiB", value_parser = parse_component_size)]
    max_component: usize,

    /// Bytes of each attempt's log (agent log lines, stdout, stderr) kept
    /// for `warden runs logs`; later lines are dropped and a line marks
    /// where. 0 keeps none.
    #[arg(long, default_value = "1MiB", value_parser = warden_core::parse_bytes)]
    max_log_bytes: u64,

    /// How submits of oci:// references reach their registries.
    #[command(flatten)]
    oci: crate::oci::OciArgs,

    /// A registry (HOST or HOST:PORT) submits may name. Repeatable. With
    /// none, any registry on a public address; one on a loopback, private,
    /// link-local or metadata address only if listed here. (`warden dev`
    /// allows every registry: it serves its own machine.)
    #[arg(long = "allow-registry", value_name = "HOST[:PORT]")]
    allow_registries: Vec<String>,
}

/// Run a node: register with the control plane, pull leases, run agents.
///
/// With a TLS control plane (https://), a node enrolls once:
/// `warden node --control-plane https://HOST:7070 --ca ca.pem --join-token T`
/// keeps its certificate in its data dir, and later starts need no token.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The control plane's URL: https://HOST:PORT, or http:// for one
    /// started with --insecure. For replicas sharing a PostgreSQL database,
    /// each of their URLs, comma-separated: the node talks to one and
    /// moves to the next when it cannot be reached.
    #[arg(
        long,
        env = "WARDEN_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7070",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    control_plane: Vec<String>,

    /// The control plane's CA certificate (its DATA_DIR/ca.pem).
    #[arg(long, env = "WARDEN_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// A join token (`warden nodes join-token create`), to enroll this
    /// node on its first start, or again after it was revoked. Not used
    /// (and no harm) while the node is enrolled and not revoked.
    #[arg(long, env = "WARDEN_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,

    #[command(flatten)]
    node: NodeFlags,

    #[command(flatten)]
    admin: AdminArgs,

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

/// The admin endpoints flag of each command.
#[derive(Debug, Args)]
struct AdminArgs {
    /// Serve /metrics (Prometheus), /healthz, /readyz and /health on this
    /// address (e.g. 127.0.0.1:9464; port 0: any free port, printed). Off
    /// unless given. Plaintext and unauthenticated: keep it on loopback or
    /// a network only your monitoring reaches. (The same metrics are pushed
    /// over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, with or without
    /// this.)
    #[arg(long, env = "WARDEN_ADMIN_ADDR", value_name = "ADDR")]
    admin_addr: Option<SocketAddr>,
}

/// What an admin server (`--admin-addr`) and the OTLP metrics push report
/// on, gathered as the process starts its parts.
struct AdminParts {
    addr: Option<SocketAddr>,
    /// The OpenTelemetry service name for metrics pushed over OTLP.
    service: &'static str,
    registry: warden_telemetry::prometheus_client::registry::Registry,
    components: Vec<Arc<dyn warden_telemetry::Component>>,
}

impl AdminParts {
    /// `None` when neither `--admin-addr` nor OTLP metrics are asked for.
    fn new(args: &AdminArgs, service: &'static str) -> Option<AdminParts> {
        (args.admin_addr.is_some() || warden_telemetry::otlp_metrics::requested()).then(|| {
            AdminParts {
                addr: args.admin_addr,
                service,
                registry: Default::default(),
                components: Vec::new(),
            }
        })
    }

    /// Serves the admin endpoints and pushes the metrics over OTLP (as
    /// asked) for as long as the process runs.
    async fn start(self) -> anyhow::Result<()> {
        let admin = warden_telemetry::Admin::new(self.registry, self.components);
        if let Some(destination) =
            warden_telemetry::otlp_metrics::push_from_env(admin.clone(), self.service)
                .map_err(anyhow::Error::msg)?
        {
            // On stderr: a process's first line on stdout says where it
            // listens, for scripts.
            eprintln!("warden: metrics are pushed to {destination}");
        }
        let Some(addr) = self.addr else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--admin-addr)"))?;
        println!(
            "admin endpoints on http://{} (/metrics, /healthz, /readyz, /health)",
            listener.local_addr()?
        );
        std::io::stdout().flush()?;
        tokio::spawn(async move {
            if let Err(e) = warden_telemetry::serve(listener, admin, std::future::pending()).await {
                tracing::error!(error = %e, "admin server stopped");
            }
        });
        Ok(())
    }
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
    admin: AdminArgs,

    #[command(flatten)]
    data: DataDir,

    /// Answer LLM calls with a stand-in on loopback instead of a provider:
    /// scripted, deterministic answers for any model, no provider called,
    /// nothing spent (it also serves a sample page at /docs/wasm). For
    /// trying Warden with no provider; overrides [llm] base_url.
    #[arg(long)]
    mock_llm: bool,
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
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

/// How a control plane is secured: `None` serves plaintext without
/// authentication.
struct TlsArgs<'a> {
    names: &'a [String],
    own: Option<(&'a std::path::Path, &'a std::path::Path)>,
}

/// The names a control plane's certificate covers.
fn certificate_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = sysinfo::System::host_name() {
        names.push(host);
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Loads (or makes) the CA and server certificate, and on the first start
/// the first admin token, written to DATA_DIR/admin.token. Also returns
/// what to tell the operator.
fn secure(
    store: &Store,
    dir: &std::path::Path,
    listen: SocketAddr,
    tls: &TlsArgs<'_>,
) -> anyhow::Result<(warden_control_plane::Security, Vec<String>)> {
    let mut notes = Vec::new();
    use warden_control_plane::pki::{Pki, display_fingerprint, write_new};
    let names = certificate_names(listen, tls.names);
    for name in tls.names {
        if name.parse::<std::net::IpAddr>().is_err() {
            warden_core::check_name("--tls-name", name)?;
        }
    }
    let (pki, created) = Pki::load_or_create(dir, &names, tls.own)?;
    notes.push(format!(
        "CA certificate {}{} (give it to nodes and clients: --ca), fingerprint (sha256) {}",
        dir.join("ca.pem").display(),
        if created { ", created now" } else { "" },
        display_fingerprint(pki.ca_fingerprint())
    ));
    if !store.has_tokens()? {
        let (info, token) = store.create_token(
            warden_control_plane::auth::DEFAULT_TENANT,
            warden_core::Role::System,
            "first admin token",
            None,
        )?;
        let path = dir.join("admin.token");
        write_new(&path, &format!("{token}\n"), true)?;
        notes.push(format!(
            "first admin token ({}, role system) written to {}",
            info.id,
            path.display()
        ));
    }
    Ok((warden_control_plane::Security::Tls(Arc::new(pki)), notes))
}

async fn start_control_plane(
    args: &ServerArgs,
    config: &NodeConfig,
    tls: Option<TlsArgs<'_>>,
    guard_registries: bool,
    admin: Option<&mut AdminParts>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let store = match args.db.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Store::open_postgres(
                url,
                usize::from(args.db_connections),
                &config
                    .data_dir
                    .join(warden_control_plane::store::SEALING_KEY),
            )?
        }
        Some(path) => Store::open(std::path::Path::new(path))?,
        None => Store::open(&config.data_dir.join("control-plane.sqlite3"))?,
    };
    let (security, notes) = match &tls {
        Some(tls) => secure(&store, &config.data_dir, args.listen, tls)?,
        None => (warden_control_plane::Security::Insecure, Vec::new()),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
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
            placement_timeout: args.placement_timeout,
            rate_limit: args.rate_limit,
            max_streams_per_token: args.max_streams_per_token,
            max_input_bytes: args.max_input,
            max_component_bytes: args.max_component,
            max_log_bytes: args.max_log_bytes,
            oci: warden_oci::OciOptions {
                guard: guard_registries.then(|| warden_oci::RegistryGuard {
                    allow: args.allow_registries.clone(),
                }),
                ..args.oci.options()
            },
            security,
        },
        Arc::new(EngineValidator::with_engine(engine)),
    );
    if let Some(admin) = admin {
        cp.register_metrics(&mut admin.registry);
        admin.components.push(cp.health());
    }
    let listener = warden_control_plane::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("{scheme}://{addr}");
    println!(
        "warden control plane listening on {url} (database {})",
        cp.store().name()
    );
    for note in notes {
        println!("{note}");
    }
    std::io::stdout().flush()?;
    let server = tokio::spawn(async move {
        if let Err(e) = cp.serve(listener, shutdown).await {
            tracing::error!(error = %e, "control plane server stopped");
        }
    });
    Ok((url, server))
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

/// TLS for a node of the control plane at `urls` (its replicas): its CA
/// and this node's identity, enrolling first with `join_token` if given.
async fn node_tls(
    urls: &[String],
    ca: Option<&std::path::Path>,
    join_token: Option<&str>,
    node_id: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    let url = urls.first().map(String::as_str).unwrap_or_default();
    if let Some(plain) = urls.iter().find(|u| u.starts_with("http://"))
        && urls.iter().any(|u| u.starts_with("https://"))
    {
        anyhow::bail!(
            "{plain} is plaintext but other control plane addresses are https://: give them all alike"
        );
    }
    let Some(tls) = crate::remote::client_tls(url, ca)? else {
        if join_token.is_some() {
            anyhow::bail!(
                "--join-token needs a TLS control plane (an https:// URL); {url} is plaintext"
            );
        }
        return Ok(None);
    };
    let existing = warden_node::identity::load_identity(data_dir)?;
    let identity = match (existing, join_token) {
        (Some(identity), None) => identity,
        // A join token enrolls the node, again if it was before (its
        // certificate revoked): the new certificate replaces the old.
        // Refused, a node that has a certificate goes on with it: a spent
        // token left on a command line must not stop a restart.
        (existing, Some(token)) => {
            let again = existing.is_some();
            match warden_node::identity::enroll(urls, tls.clone(), token, node_id, data_dir).await {
                Ok(identity) => {
                    println!(
                        "enrolled {}as node {node_id}; its certificate is in {}",
                        if again { "again " } else { "" },
                        data_dir.display()
                    );
                    identity
                }
                Err(e) => match existing {
                    Some(identity) => {
                        println!(
                            "this node is already enrolled; the join token was not used ({})",
                            e.to_string().trim_end_matches('.')
                        );
                        identity
                    }
                    None => return Err(e.into()),
                },
            }
        }
        (None, None) => anyhow::bail!(
            "this node is not enrolled with {url}: start it once with --join-token \
             (`warden nodes join-token create` on an admin's machine makes one)"
        ),
    };
    Ok(Some(tls.identity(identity)))
}

/// The node's id: `--node-id`, or the one kept in the data dir.
fn node_id(flags: &NodeFlags, config: &NodeConfig) -> anyhow::Result<String> {
    let node_id = match &flags.node_id {
        Some(id) => id.clone(),
        None => persistent_node_id(&config.data_dir)
            .with_context(|| format!("cannot keep the node id in {}", config.data_dir.display()))?,
    };
    warden_core::check_name("node id", &node_id)?;
    Ok(node_id)
}

async fn run_node(
    flags: &NodeFlags,
    control_planes: Vec<String>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    config: NodeConfig,
    admin: Option<AdminParts>,
) -> anyhow::Result<()> {
    let slots = flags
        .slots
        .unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let mut config = config;
    config.engine.pool_slots = config.engine.pool_slots.max(slots);
    let sandbox = Sandbox::from_config(&config)?;
    let node_id = node_id(flags, &config)?;
    for (key, value) in &flags.labels {
        warden_core::check_label(key, value)?;
    }
    let labels: BTreeMap<String, String> = flags.labels.iter().cloned().collect();
    println!(
        "warden node {node_id} with {slots} slots, control plane {}",
        control_planes.join(", ")
    );
    std::io::stdout().flush()?;
    let node = NodeAgent::new(
        sandbox,
        NodeOptions {
            control_planes,
            node_id: node_id.clone(),
            labels,
            slots,
            drain_grace: flags.drain_grace,
            prewarm: flags.prewarm.clone(),
            tls,
        },
        &config.data_dir,
    )?;
    if let Some(mut admin) = admin {
        node.register_metrics(&mut admin.registry);
        admin.components.push(node.health());
        admin.start().await?;
    }
    let grace = flags.drain_grace;
    let draining = async move {
        shutdown_signal().await;
        println!(
            "draining: taking no new runs, finishing those running (at most {}, --drain-grace)",
            humantime::format_duration(grace)
        );
        let _ = std::io::stdout().flush();
    };
    node.run(draining).await?;
    println!("node {node_id} drained and deregistered; exiting");
    Ok(())
}

pub(crate) async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.as_deref(), args.data.data_dir.as_ref())?;
    let tls = if args.insecure {
        tracing::warn!(
            listen = %args.server.listen,
            "--insecure: plaintext and no authentication; anyone who can reach this port can act as a node or an admin"
        );
        None
    } else {
        Some(TlsArgs {
            names: &args.tls_names,
            own: args.tls_cert.as_deref().zip(args.tls_key.as_deref()),
        })
    };
    let creds = args.server.oci.options().credentials;
    if creds.username.is_some() && creds.registry.is_none() {
        anyhow::bail!(
            "--registry-username on the control plane needs --registry-host HOST: \
             the credentials are sent to that registry only, never to one a submit names"
        );
    }
    let mut admin = AdminParts::new(&args.admin, "warden-control-plane");
    let (_, server) = start_control_plane(
        &args.server,
        &config,
        tls,
        true,
        admin.as_mut(),
        shutdown_signal(),
    )
    .await?;
    if let Some(admin) = admin {
        admin.start().await?;
    }
    server.await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(
        args.node.node_config.as_deref(),
        args.data.data_dir.as_ref(),
    )?;
    let node_id = node_id(&args.node, &config)?;
    let schemes: std::collections::BTreeSet<_> = args
        .control_plane
        .iter()
        .map(|url| url.split_once("://").map_or("", |(scheme, _)| scheme))
        .collect();
    if schemes.len() > 1 {
        anyhow::bail!(
            "--control-plane: the replicas {} mix http:// and https://; they share one database and one CA, so all are TLS or none",
            args.control_plane.join(", ")
        );
    }
    // A node enrolls once, through the first replica that answers (they
    // share the database that records enrollments).
    let tls = node_tls(
        &args.control_plane,
        args.ca.as_deref(),
        args.join_token.as_deref(),
        &node_id,
        &config.data_dir,
    )
    .await?;
    run_node(
        &args.node,
        args.control_plane,
        tls,
        config,
        AdminParts::new(&args.admin, "warden-node"),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(
        args.node.node_config.as_deref(),
        args.data.data_dir.as_ref(),
    )?;
    if !args.server.listen.ip().is_loopback() {
        anyhow::bail!(
            "`warden dev` serves plaintext without authentication, so it listens on loopback only \
             (not {}); run `warden control-plane` to serve other machines",
            args.server.listen
        );
    }
    // The control plane stays up until the node has drained.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // `warden dev` serves its own machine's user: any registry.
    let mut admin = AdminParts::new(&args.admin, "warden-dev");
    let (url, server) =
        start_control_plane(&args.server, &config, None, false, admin.as_mut(), async {
            let _ = stopped.await;
        })
        .await?;
    if args.mock_llm {
        let base_url = crate::mock_llm::start().await?;
        println!(
            "mock LLM at {base_url}: scripted answers for any model, no provider called \
             (sample page at {}/docs/wasm)",
            base_url.trim_end_matches("/v1")
        );
        config.llm.base_url = Some(base_url);
    }
    run_node(&args.node, vec![url], None, config, admin).await?;
    let _ = stop.send(());
    server.await?;
    Ok(ExitCode::SUCCESS)
}

/// `--max-component`: at least a byte, at most 1 GiB.
fn parse_component_size(text: &str) -> Result<usize, String> {
    let bytes = warden_core::parse_bytes(text)?;
    usize::try_from(bytes)
        .ok()
        .filter(|b| (1..=1 << 30).contains(b))
        .ok_or_else(|| format!("`{text}` is not a component size from 1 byte to 1GiB"))
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
