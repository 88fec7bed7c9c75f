//! The command-line arguments of `warden control-plane`, `warden node` and
//! `warden dev`.

use crate::args::parse_key_value;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    pub(super) server: ServerArgs,

    /// Serve plaintext gRPC with no authentication at all: anyone who can
    /// reach the port can act as a node or an admin. Only for a trusted
    /// network; logs a warning.
    #[arg(long)]
    pub(super) insecure: bool,

    /// Another name (host name or IP address) clients and nodes reach this
    /// control plane by, for its certificate. Repeatable. localhost,
    /// 127.0.0.1, ::1, this machine's host name and the --listen address
    /// are always in it.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub(super) tls_names: Vec<String>,

    /// Your own server certificate (PEM) instead of one signed by the
    /// control plane's CA; with --tls-key. Clients then verify it with
    /// your CA (--ca).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,

    /// Config file (TOML): data_dir and [engine], as in a node's config,
    /// including the compile bounds ([engine.compile]) publish and submit
    /// check components against. Node settings ([limits], [policy],
    /// [llm], [kv]) are refused.
    #[arg(long, env = "WARDEN_CONTROL_PLANE_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,

    #[command(flatten)]
    pub(super) admin: AdminArgs,

    #[command(flatten)]
    pub(super) data: DataDir,
}

#[derive(Debug, Args)]
pub(super) struct ServerArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub(super) listen: SocketAddr,

    /// Also serve the HTTP/JSON API (/v1/runs, /v1/agents, ...) and the
    /// web console (/) on this address, with TLS and tokens like gRPC
    /// (port 0: any free port; the address is printed). Off unless given;
    /// `warden dev` serves them on the port after --listen's.
    #[arg(long, value_name = "ADDR")]
    pub(super) http_listen: Option<SocketAddr>,

    /// The database: a SQLite file (default: DATA_DIR/control-plane.sqlite3),
    /// or a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB) that
    /// several control-plane replicas share; its schema is migrated at
    /// start. Registry credentials in it are sealed with sealing.key (made
    /// on first start, 0600): beside a SQLite file, in DATA_DIR with
    /// PostgreSQL. Replicas on PostgreSQL need the same ca.pem, ca.key and
    /// sealing.key in their data dirs (see the README).
    #[arg(long, env = "WARDEN_DB", value_name = "PATH|URL")]
    pub(super) db: Option<String>,

    /// Most PostgreSQL connections this replica opens at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) db_connections: u16,

    /// A lease not renewed for this long is re-queued with attempt + 1.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(super) lease_ttl: Duration,

    /// A node silent for this long is marked lost and its leases re-queued.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(super) node_timeout: Duration,

    /// A queued run whose --selector no live node matches fails
    /// `unschedulable` after waiting this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(super) placement_timeout: Duration,

    /// Requests a second each client token may make (bursts of twice
    /// that); 0 for no limit. Over it, calls fail RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 200)]
    pub(super) rate_limit: u32,

    /// Watches (`runs watch`, `submit --wait`) each client token may have
    /// open at once.
    #[arg(long, default_value_t = 64)]
    pub(super) max_streams_per_token: u32,

    /// Attempts per run unless `submit --max-attempts` says otherwise.
    #[arg(long, default_value_t = 3)]
    pub(super) max_attempts: u32,

    /// Largest run input a submit may carry (e.g. 1MiB, 16MiB).
    #[arg(long, default_value = "1MiB", value_parser = parse_input_size)]
    pub(super) max_input: usize,

    /// Largest component a publish (or an OCI import) may bring.
    #[arg(long, default_value = "64MiB", value_parser = parse_component_size)]
    pub(super) max_component: usize,

    /// Bytes of each attempt's log (agent log lines, stdout, stderr) kept
    /// for `warden runs logs`; later lines are dropped and a line marks
    /// where. 0 keeps none.
    #[arg(long, default_value = "1MiB", value_parser = warden_core::parse_bytes)]
    pub(super) max_log_bytes: u64,

    /// Tries at delivering a run's webhook before it is marked failed
    /// (1-9): the next try waits 1s, 5s, 30s, 2m, 10m, 30m, 1h, then 2h.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub(super) webhook_attempts: u8,

    /// How submits of oci:// references reach their registries.
    #[command(flatten)]
    pub(super) oci: crate::oci::OciArgs,

    /// A registry (HOST or HOST:PORT) submits may name. Repeatable. With
    /// none, any registry on a public address; one on a loopback, private,
    /// link-local or metadata address only if listed here. (`warden dev`
    /// allows every registry: it serves its own machine.)
    #[arg(long = "allow-registry", value_name = "HOST[:PORT]")]
    pub(super) allow_registries: Vec<String>,
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
    pub(super) control_plane: Vec<String>,

    /// The control plane's CA certificate (its DATA_DIR/ca.pem).
    #[arg(long, env = "WARDEN_CA", value_name = "FILE")]
    pub(super) ca: Option<PathBuf>,

    /// A join token (`warden nodes join-token create`), to enroll this
    /// node on its first start, or again after it was revoked. Not used
    /// (and no harm) while the node is enrolled and not revoked.
    #[arg(long, env = "WARDEN_JOIN_TOKEN", hide_env_values = true)]
    pub(super) join_token: Option<String>,

    #[command(flatten)]
    pub(super) node: NodeFlags,

    #[command(flatten)]
    pub(super) admin: AdminArgs,

    #[command(flatten)]
    pub(super) data: DataDir,
}

#[derive(Debug, Args)]
pub(super) struct NodeFlags {
    /// Runs at once. Default: 4 per CPU core.
    #[arg(long)]
    pub(super) slots: Option<u32>,

    /// A label for placement (e.g. region=eu). Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(super) labels: Vec<(String, String)>,

    /// On SIGTERM, how long in-flight runs may take to finish before they
    /// are failed as node_shutdown and re-queued.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(super) drain_grace: Duration,

    /// Fetch and compile this agent at start (NAME@VERSION or oci://…), so
    /// its first run is warm. Repeatable.
    #[arg(long, value_name = "REF")]
    pub(super) prewarm: Vec<String>,

    /// The node's id. Default: kept in DATA_DIR/node-id, created once.
    #[arg(long)]
    pub(super) node_id: Option<String>,

    /// Node config file (TOML): data dir, LLM provider, price table, limits.
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    pub(super) node_config: Option<PathBuf>,
}

/// The data dir flag of each command.
#[derive(Debug, Args)]
pub(super) struct DataDir {
    /// Where the database, key-value file, compile cache and scratch dirs
    /// live. Default: $XDG_DATA_HOME/warden, else ~/.local/share/warden.
    #[arg(long, env = "WARDEN_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
}

/// The admin endpoints flag of each command.
#[derive(Debug, Args)]
pub(super) struct AdminArgs {
    /// Serve /metrics (Prometheus), /healthz, /readyz and /health on this
    /// address (e.g. 127.0.0.1:9464; port 0: any free port, printed). Off
    /// unless given. Plaintext and unauthenticated: keep it on loopback or
    /// a network only your monitoring reaches. (The same metrics are pushed
    /// over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, with or without
    /// this.)
    #[arg(long, env = "WARDEN_ADMIN_ADDR", value_name = "ADDR")]
    pub(super) admin_addr: Option<SocketAddr>,
}

/// Run a control plane and a node in one process, on localhost, with the
/// SQLite default under the data dir: the quickest way to try Warden.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(super) server: ServerArgs,

    #[command(flatten)]
    pub(super) node: NodeFlags,

    #[command(flatten)]
    pub(super) admin: AdminArgs,

    #[command(flatten)]
    pub(super) data: DataDir,

    /// Answer LLM calls with a stand-in on loopback instead of a provider:
    /// scripted, deterministic answers for any model, no provider called,
    /// nothing spent (it also serves a sample page at /docs/wasm). For
    /// trying Warden with no provider; overrides [llm] base_url.
    #[arg(long)]
    pub(super) mock_llm: bool,

    /// An agent's directory to build and publish now and again whenever
    /// its sources change, as NAME@dev-TIME-HASH: `warden submit NAME`
    /// runs the newest. Repeatable.
    #[arg(long, value_name = "DIR")]
    pub(super) watch: Vec<std::path::PathBuf>,
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
