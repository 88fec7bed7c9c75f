//! `warden control-plane`, `warden node` and `warden dev` (both in one
//! process).

use crate::validator::EngineValidator;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden_control_plane::{ControlPlane, ControlPlaneConfig};
use warden_host::config::{EngineConfig, NodeConfig};
use warden_host::{AgentEngine, Sandbox};
use warden_node::{NodeAgent, NodeOptions, persistent_node_id};

mod admin;
mod args;
mod config;

use admin::AdminParts;
pub(crate) use args::{ControlPlaneArgs, DevArgs, NodeArgs};
use args::{NodeFlags, ServerArgs};
use config::ServerConfig;

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

async fn start_control_plane(
    args: &ServerArgs,
    config: &ServerConfig,
    tls: Option<TlsArgs<'_>>,
    guard_registries: bool,
    admin: Option<&mut AdminParts>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let store = warden_control_plane::bootstrap::open_store(
        args.db.as_deref(),
        &config.data_dir,
        usize::from(args.db_connections),
    )?;
    let (security, notes) = match &tls {
        Some(tls) => {
            for name in tls.names {
                if name.parse::<std::net::IpAddr>().is_err() {
                    warden_core::check_name("--tls-name", name)?;
                }
            }
            let mut names = certificate_names(args.listen, tls.names);
            if let Some(http) = args.http_listen
                && !http.ip().is_unspecified()
            {
                names.push(http.ip().to_string());
            }
            warden_control_plane::bootstrap::secure(&store, &config.data_dir, &names, tls.own)?
        }
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
            webhook_retries: warden_control_plane::webhooks::RETRY_DELAYS
                [..usize::from(args.webhook_attempts) - 1]
                .to_vec(),
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
    // Both listeners are bound before the first line says the control
    // plane is up.
    let http = match args.http_listen {
        Some(http_addr) => {
            let api = warden_control_plane::http_api::HttpApi::new(cp.clone())?;
            let listener = warden_control_plane::bind(http_addr)
                .await
                .with_context(|| format!("cannot listen on {http_addr} (--http-listen)"))?;
            Some((api, listener))
        }
        None => None,
    };
    println!(
        "warden control plane listening on {url} (database {})",
        cp.store().name()
    );
    if let Some((_, listener)) = &http {
        let addr = listener.local_addr()?;
        println!("HTTP API on {scheme}://{addr}/v1/, console at {scheme}://{addr}/");
    }
    for note in notes {
        println!("{note}");
    }
    std::io::stdout().flush()?;
    // One shutdown for both listeners: gRPC's, then the HTTP API's.
    let (stopped, mut stop) = tokio::sync::watch::channel(());
    let shutdown = async move {
        shutdown.await;
        drop(stopped);
    };
    let server = tokio::spawn(async move {
        let http = http.map(|(api, listener)| {
            let stop = async move { while stop.changed().await.is_ok() {} };
            tokio::spawn(api.serve(listener, stop))
        });
        if let Err(e) = cp.serve(listener, shutdown).await {
            tracing::error!(error = %e, "control plane server stopped");
        }
        if let Some(http) = http {
            let _ = http.await;
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
                        if matches!(e, warden_node::NodeError::AlreadyEnrolled(_)) {
                            println!("this node is already enrolled; the join token was not used");
                        } else {
                            println!(
                                "the join token was not used ({}); going on with this node's certificate",
                                e.to_string().trim_end_matches('.')
                            );
                        }
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
    lock: Option<warden_node::DataDirLock>,
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
        "warden node {node_id} with {slots} slot{}, control plane {}",
        if slots == 1 { "" } else { "s" },
        control_planes.join(", ")
    );
    std::io::stdout().flush()?;
    let options = NodeOptions {
        control_planes,
        node_id: node_id.clone(),
        labels,
        slots,
        drain_grace: flags.drain_grace,
        prewarm: flags.prewarm.clone(),
        tls,
    };
    let node = match lock {
        Some(lock) => NodeAgent::with_lock(sandbox, options, &config.data_dir, lock)?,
        None => NodeAgent::new(sandbox, options, &config.data_dir)?,
    };
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
    let config = ServerConfig::load(args.config.as_deref(), args.data.data_dir.as_ref())?;
    let tls = if args.insecure {
        tracing::warn!(
            listen = %args.server.listen,
            "--insecure: plaintext and no authentication; anyone who can reach this port (or the --http-listen one) can act as a node or an admin"
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
    // The data dir is this node's before anything is written to it (its
    // id, its key and certificate): a second node there stops here.
    let lock = warden_node::DataDirLock::acquire(&config.data_dir)?;
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
        Some(lock),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dev(mut args: DevArgs) -> anyhow::Result<ExitCode> {
    // The HTTP API and console too, by default on the port after gRPC's.
    let listen = args.server.listen;
    let http_default = SocketAddr::new(
        listen.ip(),
        match listen.port() {
            0 => 0,
            port => port.checked_add(1).unwrap_or(0),
        },
    );
    args.server.http_listen.get_or_insert(http_default);
    let mut config = load_config(
        args.node.node_config.as_deref(),
        args.data.data_dir.as_ref(),
    )?;
    let watched = crate::watch::projects(&args.watch)?;
    for addr in std::iter::once(args.server.listen).chain(args.server.http_listen) {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "`warden dev` serves plaintext without authentication, so it listens on loopback only \
                 (not {addr}); run `warden control-plane` to serve other machines"
            );
        }
    }
    // The control plane stays up until the node has drained.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // `warden dev` serves its own machine's user: any registry.
    let mut admin = AdminParts::new(&args.admin, "warden-dev");
    // One config serves both: the node's data dir and engine settings.
    let server_config = ServerConfig {
        data_dir: config.data_dir.clone(),
        engine: config.engine.clone(),
    };
    let (url, server) = start_control_plane(
        &args.server,
        &server_config,
        None,
        false,
        admin.as_mut(),
        async {
            let _ = stopped.await;
        },
    )
    .await?;
    if args.mock_llm {
        let base_url = crate::mock_llm::start().await?;
        println!(
            "mock LLM at {base_url}: scripted answers for any model, no provider called \
             (sample page at {}/docs/wasm)",
            base_url.trim_end_matches("/v1")
        );
        config.llm.base_url = Some(base_url);
        config
            .llm
            .default_model
            .get_or_insert_with(|| "mock".into());
    }
    if !watched.is_empty() {
        let sdk = crate::sdk::Sdk::unpacked(&config.data_dir)?;
        for project in watched {
            tokio::spawn(crate::watch::watch(project, sdk.clone(), url.clone()));
        }
    }
    run_node(&args.node, vec![url], None, config, admin, None).await?;
    let _ = stop.send(());
    server.await?;
    Ok(ExitCode::SUCCESS)
}
