//! A node's identity for a control plane with TLS: a client certificate
//! signed by the control plane's CA, for a key made here that never leaves
//! the data dir (`node.key`, mode 0600; `node.pem`). Made once by
//! [`enroll`] with a single-use join token.

use crate::NodeError;
use std::path::Path;
use tonic::transport::{ClientTlsConfig, Endpoint, Identity};
use warden_proto::v1 as pb;

const CERT_FILE: &str = "node.pem";
const KEY_FILE: &str = "node.key";

/// The identity kept in `data_dir`, if this node enrolled before.
pub fn load_identity(data_dir: &Path) -> Result<Option<Identity>, NodeError> {
    let read = |name: &str| match std::fs::read_to_string(data_dir.join(name)) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Identity(format!(
            "cannot read {}: {e}",
            data_dir.join(name).display()
        ))),
    };
    match (read(CERT_FILE)?, read(KEY_FILE)?) {
        (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(cert, key))),
        (None, None) => Ok(None),
        _ => Err(NodeError::Identity(format!(
            "{} holds one of {CERT_FILE} and {KEY_FILE} without the other; remove both and enroll again",
            data_dir.display()
        ))),
    }
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), NodeError> {
    warden_core::files::write_file(path, text, secret)
        .map_err(|e| NodeError::Identity(format!("cannot write {}: {e}", path.display())))
}

/// Enrolls `node_id` with the control plane (the first of `urls` that
/// answers) using `join_token`: makes a key, sends a signing request for
/// it, keeps the certificate it gets back. Returns the identity to connect
/// with from now on.
pub async fn enroll(
    urls: &[String],
    tls: ClientTlsConfig,
    join_token: &str,
    node_id: &str,
    data_dir: &Path,
) -> Result<Identity, NodeError> {
    let key = rcgen::KeyPair::generate().map_err(|e| NodeError::Identity(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| NodeError::Identity(e.to_string()))?;
    let request = pb::EnrollRequest {
        join_token: join_token.trim().to_string(),
        node_id: node_id.to_string(),
        csr_pem: csr,
    };
    // Each address in turn (replicas share the database that records
    // enrollments): one that cannot be connected to is passed over. Once
    // the request is sent its outcome is final, even a lost answer (the
    // token may be spent): moving on could only meet "token used".
    let mut unreachable = Vec::new();
    let mut answer = None;
    for url in urls {
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| NodeError::Url(url.to_string(), e.to_string()))?
            .tls_config(tls.clone())
            .map_err(|e| NodeError::Url(url.to_string(), e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .connect()
            .await;
        let channel = match channel {
            Ok(channel) => channel,
            Err(e) => {
                unreachable.push(format!(
                    "cannot reach {url}: {}",
                    warden_core::text::root_cause(&e)
                ));
                continue;
            }
        };
        match pb::node_service_client::NodeServiceClient::new(channel)
            .enroll(request.clone())
            .await
        {
            Ok(a) => {
                answer = Some(a.into_inner());
                break;
            }
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                return Err(NodeError::AlreadyEnrolled(e.message().to_string()));
            }
            Err(e) => return Err(NodeError::Enroll(format!("{url}: {}", e.message()))),
        }
    }
    let Some(answer) = answer else {
        return Err(NodeError::Enroll(unreachable.join("; ")));
    };
    let key_pem = key.serialize_pem();
    // Both written in full first, then each renamed over the old one (a
    // node enrolling again replaces its identity): never half a file.
    let staged = |name: &str| data_dir.join(format!("{name}.new"));
    write(&staged(KEY_FILE), &key_pem, true)?;
    write(&staged(CERT_FILE), &answer.certificate_pem, false)?;
    for name in [KEY_FILE, CERT_FILE] {
        std::fs::rename(staged(name), data_dir.join(name)).map_err(|e| {
            NodeError::Identity(format!(
                "cannot write {}: {e}",
                data_dir.join(name).display()
            ))
        })?;
    }
    Ok(Identity::from_pem(answer.certificate_pem, key_pem))
}
