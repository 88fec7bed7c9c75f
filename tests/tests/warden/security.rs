//! Cluster security over real TLS on loopback: a `warden control-plane`
//! process with its own CA, nodes that enroll with join tokens and are then
//! known by their certificates, clients with tokens and roles.

use crate::warden;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use warden_proto::v1 as pb;
use warden_proto::v1::lease_service_client::LeaseServiceClient;
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
        }
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

fn csr() -> (String, String) {
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

fn register(id: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        node_id: id.into(),
        hostname: "test".into(),
        labels: Default::default(),
        capacity: Some(pb::NodeCapacity {
            slots: 4,
            ..Default::default()
        }),
    }
}

fn lease_ref(l: &pb::Lease) -> pb::LeaseRef {
    pb::LeaseRef {
        run_id: l.run_id.clone(),
        attempt: l.attempt,
        token: l.token.clone(),
    }
}

fn complete(lease: pb::LeaseRef) -> pb::CompleteRequest {
    pb::CompleteRequest {
        lease: Some(lease),
        output: "\"forged\"".into(),
        usage: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_enrolled_and_a_lease_is_its_node_s_alone() {
    let cp = Secure::start();
    // No certificate: no registering, no pulling.
    let anonymous = cp.channel(None).await;
    let e = NodeServiceClient::new(anonymous.clone())
        .register(register("intruder"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = LeaseServiceClient::new(anonymous.clone())
        .pull(pb::PullRequest {
            node_id: "intruder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A made-up join token enrolls nobody; a real one enrolls once.
    let (csr, _) = csr();
    let bogus = pb::EnrollRequest {
        join_token: format!("wjt_{}", "0".repeat(64)),
        node_id: "intruder".into(),
        csr_pem: csr.clone(),
    };
    let e = NodeServiceClient::new(anonymous.clone())
        .enroll(bogus)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let join = cp.secret(&cp.admin, &["nodes", "join-token", "create", "--ttl", "5m"]);
    let enroll = pb::EnrollRequest {
        join_token: join,
        node_id: "a".into(),
        csr_pem: csr,
    };
    NodeServiceClient::new(anonymous.clone())
        .enroll(enroll.clone())
        .await
        .unwrap();
    let again = NodeServiceClient::new(anonymous.clone())
        .enroll(pb::EnrollRequest {
            node_id: "c".into(),
            ..enroll
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated, "used twice: {again:?}");

    let a = cp.enroll("node-a").await;
    let b = cp.enroll("node-b").await;
    let (chan_a, chan_b) = (cp.channel(Some(&a)).await, cp.channel(Some(&b)).await);
    // A certificate speaks for its own node only.
    let e = NodeServiceClient::new(chan_a.clone())
        .register(register("node-b"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // And it names its node: a request naming none is refused (it once
    // made a ready node '' with labels of the caller's choosing).
    let e = NodeServiceClient::new(chan_a.clone())
        .register(register(""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = LeaseServiceClient::new(chan_a.clone())
        .pull(pb::PullRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = NodeServiceClient::new(chan_a.clone())
        .heartbeat(pb::HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let nodes = cp.cli(&cp.admin, &["nodes", "list", "--json"]);
    assert!(nodes.status.success(), "{}", stderr(&nodes));
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    assert!(
        nodes.as_array().unwrap().iter().all(|n| n["node_id"] != ""),
        "a node with no id: {nodes}"
    );
    for (chan, id) in [(&chan_a, "node-a"), (&chan_b, "node-b")] {
        NodeServiceClient::new(chan.clone())
            .register(register(id))
            .await
            .unwrap();
    }

    // A run, leased to node A (only A pulls).
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let submitted = cp.cli(&cp.admin, &["submit", "hello@1.0.0", "--input", "{}"]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let mut stream = LeaseServiceClient::new(chan_a.clone())
        .pull(pb::PullRequest {
            node_id: "node-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let lease = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(lease.token.len(), 32, "128 random bits, hex");

    // Node B, holding the right token, cannot ack, renew or complete it.
    let mut leases_b = LeaseServiceClient::new(chan_b.clone());
    let acked = leases_b
        .ack(pb::AckRequest {
            leases: vec![lease_ref(&lease)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.stale.len(), 1);
    let renewed = leases_b
        .renew(pb::RenewRequest {
            node_id: "node-b".into(),
            leases: vec![lease_ref(&lease)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        renewed.results[0].renew_status,
        pb::RenewStatus::Lost as i32
    );
    let e = leases_b
        .complete(complete(lease_ref(&lease)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Nor can node A with a guessed token.
    let mut guessed = lease_ref(&lease);
    guessed.token = "0123456789abcdef0123456789abcdef".into();
    let mut leases_a = LeaseServiceClient::new(chan_a.clone());
    let e = leases_a.complete(complete(guessed)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let run = cp.get_run(&lease.run_id).await;
    assert_ne!(run.output, "\"forged\"");

    // Revoking A cuts it off at once and gives its lease back.
    let revoked = cp.cli(&cp.admin, &["nodes", "revoke", "node-a"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        String::from_utf8_lossy(&revoked.stdout).contains("1 of its runs"),
        "{revoked:?}"
    );
    let e = NodeServiceClient::new(chan_a.clone())
        .heartbeat(pb::HeartbeatRequest {
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the revoked node's lease stream ends");
    assert!(ended.is_err(), "{ended:?}");
    let run = cp.get_run(&lease.run_id).await;
    assert_eq!(
        warden_core::RunState::from_proto(run.run_state),
        Some(warden_core::RunState::Queued),
        "{run:?}"
    );
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
    let cp = Secure::start();
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
    let cp = Secure::start();
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

/// A token's calls are rate limited and its open watches bounded, each
/// with RESOURCE_EXHAUSTED, and both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_rate_limited_and_its_streams_bounded() {
    let cp = Secure::start_with(&["--rate-limit", "5", "--max-streams-per-token", "2"]);
    let channel = cp.channel(None).await;
    let mut auth = warden_proto::v1::auth_service_client::AuthServiceClient::new(channel.clone());
    let (mut ok, mut limited) = (0, 0);
    let burst = std::time::Instant::now();
    for _ in 0..30 {
        match auth
            .who_am_i(with_token(pb::WhoAmIRequest {}, &cp.admin))
            .await
        {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::ResourceExhausted => limited += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    // The burst (10) and what refilled meanwhile (5 a second), no more.
    let refilled = (burst.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(ok >= 10 && ok <= 10 + refilled, "{ok} went through");
    assert!(limited >= 1 && ok + limited == 30, "{limited} were limited");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    auth.who_am_i(with_token(pb::WhoAmIRequest {}, &cp.admin))
        .await
        .expect("the bucket refills");

    // Two watches at once, not three; closing one frees its slot.
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let run = cp.secret(&cp.admin, &["submit", "hello@1.0.0", "--input", "{}"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut runs = RunServiceClient::new(channel.clone());
    let watch = || {
        with_token(
            pb::WatchRunRequest {
                run_id: run.clone(),
            },
            &cp.admin,
        )
    };
    let first = runs.watch(watch()).await.unwrap();
    let _second = runs.watch(watch()).await.unwrap();
    let third = runs.watch(watch()).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    drop(first);
    // The slot frees once the server sees the stream cancelled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match runs.watch(watch()).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(std::time::Instant::now() < deadline, "no slot freed: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// The CLI sends a token in plaintext only to this machine (`warden dev`,
/// `--insecure` control planes on loopback) unless told to: an http:// URL
/// elsewhere (127.0.0.2 stands for another host) is refused before any
/// connection, naming `--insecure`; with it, the CLI connects.
#[test]
fn a_token_goes_in_plaintext_only_when_asked() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                // Accepted and closed at once: not a control plane.
                if conn.is_ok() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let tmp = tempfile::tempdir().unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec![
            "runs",
            "list",
            "--control-plane",
            &url,
            "--token",
            "wt_secret",
        ];
        args.extend(extra);
        warden(tmp.path(), &args)
    };
    let out = list(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("plaintext") && err.contains("--insecure") && err.contains("https://"),
        "{err}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the token was sent");
    // Without a token there is nothing to leak; with --insecure it is the
    // user's choice.
    for extra in [&["--insecure"][..], &[]] {
        let args: Vec<&str> = if extra.is_empty() {
            vec!["runs", "list", "--control-plane", &url]
        } else {
            vec![
                "runs",
                "list",
                "--control-plane",
                &url,
                "--token",
                "wt_secret",
                "--insecure",
            ]
        };
        let before = accepted.load(Ordering::SeqCst);
        let out = warden(tmp.path(), &args);
        assert!(!out.status.success(), "not a control plane: {out:?}");
        assert!(
            accepted.load(Ordering::SeqCst) > before,
            "{args:?} did not connect"
        );
    }
}

/// Join tokens are listed (id, expiry, labels, used or not; never the
/// secret) and revoked before use: a revoked one enrolls nobody. A used
/// one is not revoked (its node is), and only the system role sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_listed_and_revoked_before_use() {
    let cp = Secure::start();
    let made = cp.cli(
        &cp.admin,
        &[
            "nodes",
            "join-token",
            "create",
            "--ttl",
            "2h",
            "--label",
            "zone=a",
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let made = String::from_utf8(made.stdout).unwrap();
    let secret = made.lines().last().unwrap().to_string();
    let id = made.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(id.len(), 16, "{made}");
    let list = |token: &str| {
        let out = cp.cli(token, &["nodes", "join-token", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains(&secret[4..]), "a secret listed: {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let listed = list(&cp.admin);
    assert_eq!(listed[0]["id"], id, "{listed}");
    assert_eq!(listed[0]["valid"], true, "{listed}");
    assert_eq!(listed[0]["labels"]["zone"], "a", "{listed}");
    assert!(listed[0]["used_by"].is_null(), "{listed}");
    let table = cp.cli(&cp.admin, &["nodes", "join-token", "list"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains(&id) && table.contains("valid"), "{table}");
    // Only the system role.
    let tenant_admin = cp.token("default", "admin");
    let out = cp.cli(&tenant_admin, &["nodes", "join-token", "list"]);
    assert!(!out.status.success(), "an admin listed join tokens");

    let out = cp.cli(&cp.admin, &["nodes", "join-token", "revoke", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(list(&cp.admin).as_array().unwrap().is_empty());
    let (csr, _) = csr();
    let e = NodeServiceClient::new(cp.channel(None).await)
        .enroll(pb::EnrollRequest {
            join_token: secret.clone(),
            node_id: "late".into(),
            csr_pem: csr,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unauthenticated,
        "a revoked token enrolled: {e:?}"
    );
    let out = cp.cli(&cp.admin, &["nodes", "join-token", "revoke", &id]);
    assert!(stderr(&out).contains("no join token"), "{}", stderr(&out));

    // A used one shows its node, and revoking it points at the node.
    cp.enroll("node-u").await;
    let listed = list(&cp.admin);
    assert_eq!(listed[0]["used_by"], "node-u", "{listed}");
    assert_eq!(listed[0]["valid"], false, "{listed}");
    let used = listed[0]["id"].as_str().unwrap().to_string();
    let out = cp.cli(&cp.admin, &["nodes", "join-token", "revoke", &used]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("warden nodes revoke node-u"),
        "{}",
        stderr(&out)
    );
}

/// Enrollment tries every control-plane address a node is given: with the
/// first one down, the node enrolls through the next and runs.
#[test]
fn a_node_enrolls_through_the_first_replica_that_answers() {
    let cp = Secure::start();
    let down = format!("https://127.0.0.1:{}", free_port());
    let urls = format!("{down},{}", cp.url);
    let join = cp.secret(&cp.admin, &["nodes", "join-token", "create"]);
    let ca = cp.ca().display().to_string();
    let _node = cluster::node(
        &bin(),
        &urls,
        "n-second",
        cp.tmp.path(),
        &["--ca", &ca, "--join-token", &join],
        &cluster::log_dir(cp.tmp.path()),
    );
    // Ready: it enrolled through its second address.
    cp.wait_node("n-second", "ready");
}
