//! A real OCI registry on loopback: Debian's `docker-registry` (the CNCF
//! distribution registry), started per test with its storage in a temp dir;
//! and the answers a registry of our own making ([`crate::http_server`])
//! gives, for registries that misbehave.

use crate::cluster::{Proc, free_port};
use crate::http_server::Response;
use sha2::{Digest, Sha256};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry, stopped on drop.
pub struct OciRegistry {
    _proc: Proc,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub host: String,
}

impl OciRegistry {
    /// Starts `docker-registry` on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry that requires `user`/`password` (HTTP basic, htpasswd
    /// made with PyPI's `bcrypt`).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Self {
        let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "an OCI registry binary: `apt-get install -y docker-registry` (.ci/run does this)",
            );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            let made = Command::new("python3")
                .args([
                    "-c",
                    "import bcrypt, sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=5)).decode())",
                    user,
                    password,
                ])
                .output()
                .expect("python3 runs");
            assert!(
                made.status.success(),
                "cannot make an htpasswd (`pip install bcrypt`; .ci/run does this): {}",
                String::from_utf8_lossy(&made.stderr)
            );
            std::fs::write(&htpasswd, made.stdout).unwrap();
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let proc = Proc {
            child,
            name: "docker-registry".into(),
        };
        let host = format!("127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if answers(&host) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not start: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        OciRegistry {
            _proc: proc,
            _dir: dir,
            host,
        }
    }

    /// `oci://HOST/REPO:TAG` on this registry.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.host)
    }
}

/// Whether `GET /v2/` answers 200.
fn answers(host: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    // 200, or 401 when the registry requires credentials: either way it is up.
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).is_ok() && (head.ends_with(b"200") || head.ends_with(b"401"))
}

/// `sha256:HEX` of `bytes`.
fn sha256_digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A wasm artifact of `component` as a registry serves it: (manifest
/// bytes, layer digest).
pub fn wasm_artifact(component: &[u8]) -> (Vec<u8>, String) {
    wasm_artifact_declaring(component, component.len() as u64)
}

/// A wasm artifact of `component` whose manifest declares its layer to be
/// `size` bytes, true or not.
pub fn wasm_artifact_declaring(component: &[u8], size: u64) -> (Vec<u8>, String) {
    let layer = sha256_digest(component);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": sha256_digest(b"{}"),
            "size": 2,
        },
        "layers": [{ "mediaType": "application/wasm", "digest": layer, "size": size }],
    });
    (manifest.to_string().into_bytes(), layer)
}

pub fn manifest_response(manifest: &[u8]) -> Response {
    Response {
        status: 200,
        content_type: "application/vnd.oci.image.manifest.v1+json",
        headers: Vec::new(),
        body: manifest.to_vec(),
    }
}

pub fn blob_response(bytes: &[u8]) -> Response {
    Response {
        status: 200,
        content_type: "application/octet-stream",
        headers: Vec::new(),
        body: bytes.to_vec(),
    }
}
