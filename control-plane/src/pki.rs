//! The control plane's certificate authority: it signs the control plane's
//! own server certificate and the client certificates nodes enroll for.
//!
//! Kept in the data dir: `ca.pem` (give it to nodes and clients: `--ca`),
//! `ca.key` (mode 0600, never leaves the machine). The server certificate
//! is signed afresh at every start for the names it should answer to, unless
//! the operator brings their own (`--tls-cert`/`--tls-key`).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long a node's certificate is valid.
pub const NODE_CERT_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the certificate signing request is not valid: {0}")]
    BadRequest(String),
    #[error("the server certificate or key cannot serve TLS: {0}")]
    Identity(String),
}

/// The CA, and the server identity to present.
pub struct Pki {
    ca_pem: String,
    ca_fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of DER bytes, as lowercase hex: how a certificate is named.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// `fingerprint` grouped for people: `AB:CD:…`.
pub fn display_fingerprint(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::File {
            path: path.into(),
            message: e.to_string(),
        }),
    }
}

/// Writes `text` to `path`, readable by the owner only when `secret`.
pub fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    warden_core::files::write_file(path, text, secret).map_err(|e| PkiError::File {
        path: path.into(),
        message: e.to_string(),
    })
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks a little behind ours.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    params.serial_number = Some(random_serial());
}

impl Pki {
    /// Loads the CA from `dir` (creating it on first start) and signs a
    /// server certificate for `names` (host names and IP addresses), or
    /// uses `own` (certificate and key PEM files) as the server identity.
    /// Also returns whether the CA was created now.
    pub fn load_or_create(
        dir: &Path,
        names: &[String],
        own: Option<(&Path, &Path)>,
    ) -> Result<(Pki, bool), PkiError> {
        let (ca_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let (ca_pem, key, created) = match (read(&ca_path)?, read(&key_path)?) {
            (Some(ca), Some(key)) => {
                let key = KeyPair::from_pem(&key).map_err(|e| PkiError::File {
                    path: key_path.clone(),
                    message: format!("not a private key: {e}"),
                })?;
                (ca, key, false)
            }
            (None, None) => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::default();
                params.distinguished_name = rcgen::DistinguishedName::new();
                let id: [u8; 4] = rand::random();
                params.distinguished_name.push(
                    DnType::CommonName,
                    format!("Warden control plane CA {}", hex::encode(id)),
                );
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                validity(&mut params, 3650);
                let cert = params.self_signed(&key)?;
                write_new(&key_path, &key.serialize_pem(), true)?;
                write_new(&ca_path, &cert.pem(), false)?;
                (cert.pem(), key, true)
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(PkiError::File {
                    path: dir.into(),
                    message: "holds one of ca.pem and ca.key without the other; restore both, or remove both to make a new CA (every node must enroll again)".into(),
                });
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| PkiError::File {
            path: ca_path.clone(),
            message: format!("not a CA certificate: {e}"),
        })?;
        let ca_der = pem_der(&ca_pem).ok_or_else(|| PkiError::File {
            path: ca_path.clone(),
            message: "not a PEM certificate".into(),
        })?;
        let (server_cert_pem, server_key_pem) = match own {
            Some((cert, key)) => {
                let load = |p: &Path| {
                    read(p)?.ok_or_else(|| PkiError::File {
                        path: p.into(),
                        message: "not found".into(),
                    })
                };
                (load(cert)?, load(key)?)
            }
            None => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(names.to_vec())?;
                params.distinguished_name = rcgen::DistinguishedName::new();
                params
                    .distinguished_name
                    .push(DnType::CommonName, "warden control plane");
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.use_authority_key_identifier_extension = true;
                validity(&mut params, 365);
                let cert = params.signed_by(&key, &issuer)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        Ok((
            Pki {
                ca_fingerprint: fingerprint(&ca_der),
                ca_pem,
                issuer,
                server_cert_pem,
                server_key_pem,
            },
            created,
        ))
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// SHA-256 of the CA certificate (hex).
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// TLS for the gRPC listener: the server identity, and client
    /// certificates signed by the CA accepted (nodes) but not required
    /// (clients use tokens).
    pub fn server_tls(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &self.server_cert_pem,
                &self.server_key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
            .timeout(std::time::Duration::from_secs(10))
    }

    /// TLS for the HTTP API's listener: the same server identity; no
    /// client certificates (clients use tokens); HTTP/2 and HTTP/1.1.
    pub fn http_tls(&self) -> Result<rustls::ServerConfig, PkiError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: &dyn std::fmt::Display| PkiError::Identity(e.to_string());
        let chain = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        let key =
            PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(|e| bad(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Signs a client certificate for node `node_id` over the public key
    /// of `csr_pem` (whose signature proves the node holds the private
    /// key). Nothing else in the request is taken. Returns the
    /// certificate's PEM and fingerprint.
    pub fn sign_node(&self, csr_pem: &str, node_id: &str) -> Result<(String, String), PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("warden node {node_id}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, NODE_CERT_DAYS);
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        Ok((cert.pem(), fingerprint(cert.der())))
    }
}

/// The DER of the first PEM block in `pem`.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_is_made_once_and_signs_node_requests() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (pki, created) = Pki::load_or_create(dir.path(), &names, None).unwrap();
        assert!(created);
        let (again, created) = Pki::load_or_create(dir.path(), &names, None).unwrap();
        assert!(!created);
        assert_eq!(pki.ca_fingerprint(), again.ca_fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let (cert, fp) = again.sign_node(&csr, "n1").unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE"));
        assert_eq!(fp.len(), 64);
        assert!(matches!(
            again.sign_node("not a request", "n1"),
            Err(PkiError::BadRequest(_))
        ));
        // Half a CA is refused, not replaced.
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        assert!(Pki::load_or_create(dir.path(), &names, None).is_err());
    }
}
