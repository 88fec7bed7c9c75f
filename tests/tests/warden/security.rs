//! Cluster security over real TLS on loopback: a `warden control-plane`
//! process with its own CA, nodes that enroll with join tokens and are then
//! known by their certificates, clients with tokens and roles.

use crate::warden;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use warden_proto::v1 as pb;
use warden_proto::v1::node_service_client::NodeServiceClient;
use warden_proto::v1::run_service_client::RunServiceClient;
use warden_tests::cluster::{self, free_port, secure_control_plane, tls_connect, with_token};
use warden_tests::examples;

pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"))
}

/// A TLS control plane process and what a client needs to reach it.
pub(crate) struct Secure {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) admin: String,
    _cp: cluster::Proc,
    _db: Option<warden_testkit::PostgresDatabase>,
}

impl Secure {
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    pub(crate) fn start_with(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut all = vec!["--lease-ttl", "30s"];
        all.extend(args);
        let (cp, url, admin) = secure_control_plane(
            &bin(),
            free_port(),
            &tmp.path().join("cp"),
            &all,
            &cluster::log_dir(tmp.path()),
        );
        Secure {
            tmp,
            url,
            admin,
            _cp: cp,
            _db: None,
        }
    }

    /// Whether its store is PostgreSQL.
    pub(crate) fn on_postgres(&self) -> bool {
        self._db.is_some()
    }

    /// [`Self::start`] on a PostgreSQL database of the test run's server.
    pub(crate) fn start_on_postgres() -> Self {
        let db = warden_testkit::postgres_database();
        let mut cp = Self::start_with(&["--db", &db.url]);
        cp._db = Some(db);
        cp
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.tmp.path().join("cp").join("ca.pem")
    }

    /// Runs the `warden` CLI against this control plane with `token`.
    pub(crate) fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        let ca = self.ca().display().to_string();
        let mut all = args.to_vec();
        all.extend(["--control-plane", &self.url, "--ca", &ca]);
        if !token.is_empty() {
            all.extend(["--token", token]);
        }
        warden(&self.tmp.path().join("client"), &all)
    }

    /// A new client token of `tenant` with `role`, made by the admin.
    pub(crate) fn token(&self, tenant: &str, role: &str) -> String {
        self.secret(
            &self.admin,
            &["tokens", "create", "--tenant", tenant, "--role", role],
        )
    }

    /// The last line of a successful CLI call's stdout (a secret it made).
    pub(crate) fn secret(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli(token, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string()
    }

    pub(crate) async fn channel(&self, identity: Option<&Identity>) -> tonic::transport::Channel {
        tls_connect(
            &self.url,
            &self.ca(),
            identity.map(|i| (i.cert.as_str(), i.key.as_str())),
        )
        .await
        .unwrap()
    }

    /// A `warden node` process, enrolled with a fresh join token.
    pub(crate) fn enrolled_node(&self, extra: &[&str]) -> cluster::Proc {
        let join = self.secret(&self.admin, &["nodes", "join-token", "create"]);
        let mut args = vec!["--join-token", &join];
        args.extend(extra);
        self.node(&args)
    }

    /// A `warden node n1` process with `--ca` and `extra` (its data under
    /// this control plane's temp dir).
    pub(crate) fn node(&self, extra: &[&str]) -> cluster::Proc {
        let ca = self.ca().display().to_string();
        let mut args = vec!["--ca", &ca];
        args.extend(extra);
        cluster::node(
            &bin(),
            &self.url,
            "n1",
            self.tmp.path(),
            &args,
            &cluster::log_dir(self.tmp.path()),
        )
    }

    /// Waits until `nodes list` shows node `id` in `state` (at most 30 s).
    pub(crate) fn wait_node(&self, id: &str, state: &str) {
        let start = std::time::Instant::now();
        loop {
            let out = self.cli(&self.admin, &["nodes", "list", "--json"]);
            assert!(out.status.success(), "{}", stderr(&out));
            let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if nodes
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["node_id"] == id && n["state"] == state)
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node {id} never {state}: {nodes}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) async fn get_run(&self, id: &str) -> pb::Run {
        RunServiceClient::new(self.channel(None).await)
            .get(with_token(
                pb::GetRunRequest { run_id: id.into() },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Enrolls `node_id` over gRPC with a fresh key and join token.
    pub(crate) async fn enroll(&self, node_id: &str) -> Identity {
        let join = self.secret(&self.admin, &["nodes", "join-token", "create"]);
        let (csr, key) = csr();
        let answer = NodeServiceClient::new(self.channel(None).await)
            .enroll(pb::EnrollRequest {
                join_token: join,
                node_id: node_id.into(),
                csr_pem: csr,
            })
            .await
            .unwrap()
            .into_inner();
        Identity {
            cert: answer.certificate_pem,
            key,
        }
    }
}

pub(crate) struct Identity {
    cert: String,
    key: String,
}

pub(crate) fn csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (csr, key.serialize_pem())
}

pub(crate) fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_need_a_valid_token_with_the_role_for_the_call() {
    let cp = Secure::start();
    let list = ["runs", "list"];
    // No token, a made-up one.
    let out = cp.cli("", &list);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unauthenticated"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));
    let out = cp.cli(&format!("wdn_{}", "1".repeat(64)), &list);
    assert!(stderr(&out).contains("unauthenticated"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not one this control plane made"),
        "{}",
        stderr(&out)
    );
    // An expired one: it works until its TTL is over (long enough for a
    // CLI call on a loaded machine), then not.
    let made = std::time::Instant::now();
    let short = cp.secret(
        &cp.admin,
        &["tokens", "create", "--role", "viewer", "--ttl", "5s"],
    );
    assert!(cp.cli(&short, &list).status.success());
    tokio::time::sleep(Duration::from_millis(5200).saturating_sub(made.elapsed())).await;
    let out = cp.cli(&short, &list);
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // A viewer reads but does not submit; a submitter does not publish.
    let viewer = cp.secret(&cp.admin, &["tokens", "create", "--role", "viewer"]);
    let submitter = cp.secret(&cp.admin, &["tokens", "create", "--role", "submitter"]);
    assert!(cp.cli(&viewer, &list).status.success());
    let out = cp.cli(&viewer, &["submit", "hello@1.0.0", "--input", "{}"]);
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    let out = cp.cli(&submitter, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    // Nor does an admin's token make a system one.
    let admin = cp.secret(&cp.admin, &["tokens", "create", "--role", "admin"]);
    let out = cp.cli(&admin, &["tokens", "create", "--role", "system"]);
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    // Nor revoke one above its role (the first admin token is system).
    let whoami = cp.cli(&cp.admin, &["whoami"]);
    let system_id = String::from_utf8_lossy(&whoami.stdout)
        .split(['(', ')'])
        .nth(1)
        .unwrap()
        .to_string();
    assert!(system_id.starts_with("tok_"), "{system_id}");
    let out = cp.cli(&admin, &["tokens", "revoke", &system_id]);
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(cp.cli(&cp.admin, &["whoami"]).status.success());

    // A revoked token stops working at once; tokens are listed, never
    // their secrets.
    let listed = cp.cli(&cp.admin, &["tokens", "list", "--json"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(!listed.contains(&viewer), "a secret was listed");
    let tokens: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let viewer_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "viewer" && t["expires_unix_ms"] == 0)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cp.cli(&cp.admin, &["tokens", "revoke", &viewer_id])
            .status
            .success()
    );
    let out = cp.cli(&viewer, &list);
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    // The audit log has the token changes and the denials; a viewer may
    // not read it.
    let audit = cp.cli(&cp.admin, &["audit", "list", "--limit", "1000", "--json"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let has =
        |action: &str, target: &str| {
            audit.as_array().unwrap().iter().any(|e| {
                e["action"] == action && e["target"].as_str().unwrap_or("").contains(target)
            })
        };
    assert!(has("token.create", "tok_"), "{audit}");
    assert!(has("token.revoke", &viewer_id), "{audit}");
    assert!(has("denied", "RunService.Submit"), "{audit}");
    assert!(has("denied", "RegistryService.Publish"), "{audit}");
    assert!(has("denied", "RunService.List"), "{audit}");
    assert!(has("denied", "AuthService.CreateToken"), "{audit}");
    // The denial says what the call does and the role it needs.
    let out = cp.cli(&submitter, &["audit", "list"]);
    assert!(
        stderr(&out).contains("permission denied")
            && stderr(&out).contains("reading the audit log needs admin"),
        "{}",
        stderr(&out)
    );
    // The database holds hashes only.
    let db = std::fs::read(cp.tmp.path().join("cp").join("control-plane.sqlite3")).unwrap();
    let wal = std::fs::read(cp.tmp.path().join("cp").join("control-plane.sqlite3-wal"))
        .unwrap_or_default();
    for secret in [&cp.admin, &viewer, &submitter] {
        let needle = secret.as_bytes();
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "a token is stored in the clear"
            );
        }
    }

    // Plaintext to the TLS port, or TLS without the CA: clear errors.
    let list_at = |url: &str, ca: Option<&Path>| {
        let ca = ca.map(|p| p.display().to_string());
        let mut args = vec!["runs", "list", "--control-plane", url, "--token", &cp.admin];
        if let Some(ca) = &ca {
            args.extend(["--ca", ca]);
        }
        warden(&cp.tmp.path().join("client"), &args)
    };
    let out = list_at(&cp.url.replace("https://", "http://"), None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));
    let out = list_at(&cp.url, None);
    assert!(stderr(&out).contains("--ca"), "{}", stderr(&out));
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = warden_control_plane::pki::Pki::load_or_create(
        other.path(),
        &["localhost".to_string()],
        None,
    )
    .unwrap();
    assert!(other_ca.ca_pem().contains("CERTIFICATE"));
    let out = list_at(&cp.url, Some(&other.path().join("ca.pem")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ca"), "{}", stderr(&out));
}

/// The user's path: a node enrolls with `warden node --join-token` once,
/// restarts without it, and runs agents submitted with a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_runs_agents_end_to_end() {
    a_secure_cluster_runs_agents_end_to_end_on(Secure::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_runs_agents_end_to_end_on_postgres() {
    a_secure_cluster_runs_agents_end_to_end_on(Secure::start_on_postgres()).await;
}

async fn a_secure_cluster_runs_agents_end_to_end_on(cp: Secure) {
    let join = cp.secret(
        &cp.admin,
        &["nodes", "join-token", "create", "--label", "zone=a"],
    );
    // Without a token, an unenrolled node says what to do and stops.
    let mut refused = cp.node(&[]);
    let status = refused
        .wait_exit(Duration::from_secs(20))
        .expect("it stops");
    assert!(!status.success());
    let log = std::fs::read_to_string(cluster::log_dir(cp.tmp.path()).join("n1.log")).unwrap();
    assert!(log.contains("--join-token"), "{log}");

    let mut node = cp.node(&["--join-token", &join]);
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let submitter = cp.secret(&cp.admin, &["tokens", "create", "--role", "submitter"]);
    let run = |input: &str| {
        let out = cp.cli(
            &submitter,
            &[
                "submit",
                "hello@1.0.0",
                "--input",
                input,
                "--wait",
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["output"]["greeting"].as_str().unwrap().to_string()
    };
    assert_eq!(run(r#"{"name":"tls"}"#), "hello, tls");
    // The join token's label stuck.
    let nodes = cp.cli(&cp.admin, &["nodes", "list", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    assert_eq!(nodes[0]["labels"]["zone"], "a", "{nodes}");

    // Restarted, it needs no token: its certificate is in its data dir.
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(30)).expect("node stops");
    let key = cp.tmp.path().join("n1").join("node.key");
    // Keys, databases (inputs, outputs, token hashes, audit) and KV data
    // are the owner's alone, in directories that are too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let cp_dir = cp.tmp.path().join("cp");
        let node_dir = cp.tmp.path().join("n1");
        for file in [
            cp_dir.join("control-plane.sqlite3"),
            cp_dir.join("control-plane.sqlite3-wal"),
            cp_dir.join("control-plane.sqlite3-shm"),
            cp_dir.join("sealing.key"),
            cp_dir.join("ca.key"),
            cp_dir.join("admin.token"),
            node_dir.join("kv.sqlite3"),
            key.clone(),
        ] {
            // On PostgreSQL there is no database file here.
            if cp.on_postgres() && file.to_string_lossy().contains("control-plane.sqlite3") {
                continue;
            }
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        for dir in [&cp_dir, &node_dir] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
    }
    let _node = cp.node(&[]);
    assert_eq!(run(r#"{"name":"again"}"#), "hello, again");
    assert!(Path::new(&key).exists());
}

/// Two tenants on one cluster: neither sees, cancels, watches or runs the
/// other's runs and agents, nor shares its key-value data; the answer is
/// the one for a missing object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_runs_agents_and_data() {
    tenants_see_only_their_own_runs_agents_and_data_on(Secure::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_runs_agents_and_data_on_postgres() {
    tenants_see_only_their_own_runs_agents_and_data_on(Secure::start_on_postgres()).await;
}

async fn tenants_see_only_their_own_runs_agents_and_data_on(cp: Secure) {
    let _node = cp.enrolled_node(&[]);
    // Each tenant's admin makes its own publisher.
    let admin = |tenant: &str| {
        cp.secret(
            &cp.admin,
            &["tokens", "create", "--tenant", tenant, "--role", "admin"],
        )
    };
    let (a, b) = (admin("acme"), admin("globex"));
    let a_pub = cp.secret(&a, &["tokens", "create", "--role", "publisher"]);
    let out = cp.cli(
        &b,
        &["tokens", "create", "--tenant", "acme", "--role", "viewer"],
    );
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    let whoami = cp.cli(&a_pub, &["whoami"]);
    assert!(
        String::from_utf8_lossy(&whoami.stdout).contains("tenant acme, role publisher"),
        "{whoami:?}"
    );

    // Each publishes kv-counter@1 (the same name, separate entries).
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/kv-counter/warden.toml"
    );
    for token in [&a_pub, &b] {
        let out = cp.cli(
            token,
            &[
                "publish",
                examples::KV_COUNTER,
                "kv-counter@1.0.0",
                "--manifest",
                manifest,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let count = |token: &str| {
        let out = cp.cli(
            token,
            &[
                "submit",
                "kv-counter@1.0.0",
                "--input",
                "{}",
                "--wait",
                "--json",
            ],
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(out.status.success(), "{doc} {}", stderr(&out));
        doc["output"]["count"].as_u64().unwrap()
    };
    // The counters are apart.
    assert_eq!(count(&a_pub), 1);
    assert_eq!(count(&a_pub), 2);
    assert_eq!(count(&b), 1);

    // B sees nothing of A's: runs, run ids, components.
    let a_runs = cp.cli(&a_pub, &["runs", "list", "--json"]);
    let a_runs: serde_json::Value = serde_json::from_slice(&a_runs.stdout).unwrap();
    assert_eq!(a_runs.as_array().unwrap().len(), 2, "{a_runs}");
    let a_run = a_runs[0]["run_id"].as_str().unwrap().to_string();
    let b_runs = cp.cli(&b, &["runs", "list", "--json"]);
    let b_runs: serde_json::Value = serde_json::from_slice(&b_runs.stdout).unwrap();
    assert_eq!(b_runs.as_array().unwrap().len(), 1, "{b_runs}");
    let missing = "0123456789abcdef0123456789abcdef";
    for verb in ["get", "cancel", "watch"] {
        let theirs = cp.cli(&b, &["runs", verb, &a_run]);
        let nobody = cp.cli(&b, &["runs", verb, missing]);
        assert!(!theirs.status.success(), "{verb}");
        assert_eq!(
            stderr(&theirs).replace(&a_run, "ID"),
            stderr(&nobody).replace(missing, "ID"),
            "{verb}"
        );
    }
    // A's run is untouched by B's cancel.
    let run = cp.get_run(&a_run).await;
    assert!(!run.cancel_requested);
    assert_eq!(run.tenant, "acme");
    // A component only A published: B can neither run nor fetch it.
    let out = cp.cli(&a_pub, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cp.cli(&b, &["submit", "hello@1.0.0", "--input", "{}"]);
    assert!(
        stderr(&out).contains("no agent named hello"),
        "{}",
        stderr(&out)
    );
    let digest = serde_json::from_slice::<serde_json::Value>(
        &cp.cli(&a_pub, &["inspect", "hello@1.0.0", "--json"]).stdout,
    )
    .map(|d| d["digest"].as_str().unwrap_or_default().to_string())
    .unwrap_or_default();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let fetched = warden_proto::v1::registry_service_client::RegistryServiceClient::new(
        cp.channel(None).await,
    )
    .fetch(with_token(pb::FetchRequest { digest }, &b))
    .await;
    assert_eq!(fetched.unwrap_err().code(), Code::NotFound);
}
