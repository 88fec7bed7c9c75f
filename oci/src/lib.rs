//! Components in OCI registries, in the wasm OCI artifact layout that
//! `wkg oci push/pull` uses: one `application/wasm` layer and an
//! `application/vnd.wasm.config.v0+json` config. Warden adds the capability
//! manifest as the manifest annotation [`CAPABILITIES_ANNOTATION`].
//!
//! References are `oci://HOST[:PORT]/REPO[:TAG|@sha256:…]`. Plain HTTP is
//! used only for loopback registries or with `insecure`. Credentials come
//! from [`Credentials`]: explicit, else the docker config file
//! (`~/.docker/config.json`, `DOCKER_CONFIG`), else anonymous.

mod pull;

pub use pull::{Resolved, pull, resolve};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const WASM_LAYER: &str = "application/wasm";
const OCI_IMAGE_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Annotation holding the capability manifest (TOML).
pub const CAPABILITIES_ANNOTATION: &str = "dev.warden.capabilities";
/// Components larger than this are refused.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("`{0}` is not an OCI reference like oci://registry.example.com/agents/hello:1.0 ({1})")]
    BadReference(String, String),
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{0}: not a wasm component artifact: {1}")]
    NotWasm(String, String),
    /// The registry is not one this process may contact.
    #[error("{0}")]
    Refused(String),
}

/// Registry credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// The registry (`HOST` or `HOST:PORT`) they are for; sent to no
    /// other. `None`: whichever registry the user names (the CLI).
    pub registry: Option<String>,
}

impl Credentials {
    /// Whether the explicit credentials go to `registry`.
    fn for_registry(&self, registry: &str) -> bool {
        self.username.is_some()
            && self.registry.as_deref().is_none_or(|r| {
                r.eq_ignore_ascii_case(registry)
                    || r.eq_ignore_ascii_case(split_registry(registry).0)
            })
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct OciOptions {
    /// Allow plain HTTP to non-loopback registries.
    pub insecure: bool,
    pub credentials: Credentials,
    /// For a server that pulls on others' behalf (the control plane):
    /// which registries (and registries' token services) it may contact.
    /// Such a server never reads the docker config file, and sends
    /// credentials to a registry's token service only on the registry's
    /// own host. `None`: any, as the CLI does for its user.
    pub guard: Option<RegistryGuard>,
}

/// Operator policy for the registries a server contacts: with an
/// allow-list only those; without one any public registry. A registry
/// whose name resolves to a loopback, private, link-local (cloud
/// metadata) or other special address is refused unless allow-listed, by
/// the same address check as agents' HTTP (`warden_core::pattern::
/// special_range`).
#[derive(Debug, Clone, Default)]
pub struct RegistryGuard {
    /// `HOST` or `HOST:PORT` entries.
    pub allow: Vec<String>,
}

impl RegistryGuard {
    fn listed(&self, registry: &str, host: &str) -> bool {
        self.allow
            .iter()
            .any(|a| a.eq_ignore_ascii_case(registry) || a.eq_ignore_ascii_case(host))
    }

    /// Whether `host` (a name, no port) is allow-listed on some port: its
    /// addresses are then the operator's choice.
    fn listed_host(&self, host: &str) -> bool {
        self.allow
            .iter()
            .any(|a| split_registry(a).0.eq_ignore_ascii_case(host))
    }

    fn not_allowed(&self, registry: &str) -> String {
        format!(
            "registry {registry} is not one this control plane may pull from (allowed: {}; the operator's --allow-registry)",
            self.allow.join(", ")
        )
    }

    /// The check of one hop of a request (a redirect's target), made
    /// without waiting: the allow-list, and for an IP literal its address.
    /// A name's addresses are checked when it is resolved
    /// (`pull::GuardedResolver`), and only those are connected to.
    fn check_hop(&self, url: &reqwest::Url) -> Result<(), String> {
        let Some(registry) = pull::url_authority(url) else {
            return Err(format!("{url} has no host"));
        };
        let host = url.host_str().unwrap_or_default();
        if self.listed(&registry, host) {
            return Ok(());
        }
        if !self.allow.is_empty() {
            return Err(self.not_allowed(&registry));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = bare.parse::<std::net::IpAddr>() else {
            return Ok(());
        };
        match warden_core::pattern::special_range(ip) {
            Some(kind) => Err(format!(
                "{registry} is at {ip}, a {kind} address: refused unless the operator allows it (--allow-registry {registry})"
            )),
            None => Ok(()),
        }
    }

    /// Whether `registry` (`HOST[:PORT]` as in a reference) may be
    /// contacted; resolves the name to check every address.
    pub async fn check(&self, registry: &str) -> Result<(), OciError> {
        let (host, port) = split_registry(registry);
        if self.listed(registry, host) {
            return Ok(());
        }
        if !self.allow.is_empty() {
            return Err(OciError::Refused(self.not_allowed(registry)));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::IpAddr> = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| OciError::Registry {
                    reference: registry.to_string(),
                    message: format!("cannot resolve the registry's name: {e}"),
                })?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in addrs {
            if let Some(kind) = warden_core::pattern::special_range(ip) {
                return Err(OciError::Refused(format!(
                    "registry {registry} is at {ip}, a {kind} address: refused unless the operator allows it (--allow-registry {registry})"
                )));
            }
        }
        Ok(())
    }
}

/// `HOST[:PORT]` of a reference's registry, with the HTTPS port by default.
pub(crate) fn split_registry(registry: &str) -> (&str, u16) {
    match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            (host, port.parse().unwrap_or(443))
        }
        _ => (registry, 443),
    }
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone)]
pub struct OciRef {
    pub reference: Reference,
}

impl OciRef {
    /// `Some` for `oci://…` strings (parsed, or the error), `None` otherwise.
    pub fn parse(text: &str) -> Option<Result<OciRef, OciError>> {
        let rest = text.strip_prefix("oci://")?;
        let bad = |m: String| OciError::BadReference(text.to_string(), m);
        if !rest.contains('/') {
            return Some(Err(bad("no repository after the registry".into())));
        }
        Some(
            rest.parse::<Reference>()
                .map(|reference| OciRef { reference })
                .map_err(|e| bad(e.to_string())),
        )
    }

    /// `HOST/REPO`: the agent's name (its kv namespace) across tags.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            self.reference.registry(),
            self.reference.repository()
        )
    }

    pub(crate) fn is_loopback(&self) -> bool {
        let host = self.reference.registry();
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1")
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}", self.reference.whole())
    }
}

/// A component pulled from a registry.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub bytes: Vec<u8>,
    /// `sha256:` of the component (the layer), verified.
    pub digest: String,
    /// The capability manifest, when the artifact carries one.
    pub capabilities: Option<String>,
}

/// Progress of a transfer: bytes done, bytes in all (when known).
pub trait Progress: Send + Sync {
    fn start(&self, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

fn client(r: &OciRef, opts: &OciOptions) -> Client {
    let protocol = if opts.insecure || r.is_loopback() {
        ClientProtocol::HttpsExcept(vec![r.reference.registry().to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(std::time::Duration::from_secs(5)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    })
}

/// The credentials for `r`'s registry, as the OCI client takes them.
fn auth(r: &OciRef, opts: &OciOptions) -> RegistryAuth {
    match pull::credentials(r, opts) {
        Some(pull::Authorization::Basic(user, password)) => RegistryAuth::Basic(user, password),
        Some(pull::Authorization::Bearer(token)) => RegistryAuth::Bearer(token),
        None => RegistryAuth::Anonymous,
    }
}

fn registry_error(
    r: &OciRef,
    opts: &OciOptions,
    e: oci_client::errors::OciDistributionError,
) -> OciError {
    use oci_client::errors::OciDistributionError as E;
    let credentials_needed = || {
        if opts.credentials.for_registry(r.reference.registry()) {
            "the registry refused the credentials given".to_string()
        } else {
            "the registry requires credentials (docker login, or --registry-username/--registry-password)".to_string()
        }
    };
    let message = match &e {
        E::UnauthorizedError { .. }
        | E::ServerError {
            code: 401 | 403, ..
        } => credentials_needed(),
        E::ImageManifestNotFoundError(_) => "no such tag or digest in the registry".to_string(),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            "no such tag or digest in the registry".to_string()
        }
        E::AuthenticationFailure(m) => format!("the registry refused the credentials: {m}"),
        E::RequestError(re) if re.is_connect() || re.is_timeout() => {
            format!("cannot reach the registry {}: {re}", r.reference.registry())
        }
        E::DigestError(d) => format!("digest mismatch: {d}"),
        _ => e.to_string(),
    };
    OciError::Registry {
        reference: r.to_string(),
        message,
    }
}

pub(crate) fn wasm_layer<'m>(
    r: &OciRef,
    manifest: &'m OciImageManifest,
) -> Result<&'m oci_client::manifest::OciDescriptor, OciError> {
    let wasm: Vec<_> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == WASM_LAYER)
        .collect();
    match wasm.as_slice() {
        [layer] => Ok(layer),
        [] => Err(OciError::NotWasm(
            r.to_string(),
            format!(
                "no {WASM_LAYER} layer (layers: {})",
                manifest
                    .layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Err(OciError::NotWasm(
            r.to_string(),
            format!("{} {WASM_LAYER} layers; expected one", wasm.len()),
        )),
    }
}

/// What a push made.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    pub manifest_digest: String,
}

/// Pushes `component` to `r` in the wasm artifact layout, with the
/// capability manifest as an annotation when given.
pub async fn push(
    r: &OciRef,
    component: &[u8],
    capabilities: Option<&str>,
    opts: &OciOptions,
    progress: &dyn Progress,
) -> Result<Pushed, OciError> {
    let c = client(r, opts);
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(component)));
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest],
    });
    let config = Config::new(
        config.to_string().into_bytes(),
        WASM_CONFIG.to_string(),
        None,
    );
    let layer = ImageLayer::new(component.to_vec(), WASM_LAYER.to_string(), None);
    let mut annotations = BTreeMap::new();
    if let Some(text) = capabilities {
        annotations.insert(CAPABILITIES_ANNOTATION.to_string(), text.to_string());
    }
    let mut manifest = OciImageManifest::build(
        std::slice::from_ref(&layer),
        &config,
        (!annotations.is_empty()).then_some(annotations),
    );
    manifest.artifact_type = Some(WASM_CONFIG.to_string());
    // Serialized here, not by the client: its canonical-JSON writer leaves
    // newlines in strings unescaped, which registries reject, and the digest
    // printed must be of the exact bytes pushed.
    let registry_err = |message: String| OciError::Registry {
        reference: r.to_string(),
        message,
    };
    let manifest_json = serde_json::to_vec(&manifest).map_err(|e| registry_err(e.to_string()))?;
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest_json)));
    c.auth(
        &r.reference,
        &auth(r, opts),
        oci_client::RegistryOperation::Push,
    )
    .await
    .map_err(|e| registry_error(r, opts, e))?;
    progress.start(Some(component.len() as u64));
    c.push_blob(&r.reference, &config.data, &manifest.config.digest)
        .await
        .map_err(|e| registry_error(r, opts, e))?;
    c.push_blob(&r.reference, component, &digest)
        .await
        .map_err(|e| registry_error(r, opts, e))?;
    progress.advance(component.len() as u64);
    let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
    c.push_manifest_raw(&r.reference, manifest_json, content_type)
        .await
        .map_err(|e| registry_error(r, opts, e))?;
    Ok(Pushed {
        digest,
        manifest_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// References and manifests come from users and registries: any
        /// text is a reference or an error, and any manifest has one wasm
        /// layer or an error.
        #[test]
        fn fuzz_references_and_manifests_never_panic(
            text in prop_oneof![
                "oci://[a-z0-9.:-]{0,12}(/[a-z0-9._-]{0,8}){0,3}(:[ -~]{0,8})?(@[ -~]{0,70})?",
                any::<String>(),
            ],
            layers in proptest::collection::vec(
                (prop_oneof![Just(WASM_LAYER.to_string()), "[a-z/.+]{0,20}"], any::<i64>()),
                0..4,
            ),
            annotations in proptest::option::of(proptest::collection::btree_map(
                prop_oneof![Just(CAPABILITIES_ANNOTATION.to_string()), "[a-z.]{0,10}"],
                any::<String>(),
                0..3,
            )),
        ) {
            let r = match OciRef::parse(&text) {
                Some(Ok(r)) => r,
                _ => OciRef::parse("oci://localhost:5000/a/b:1").unwrap().unwrap(),
            };
            let _ = (r.name(), r.to_string());
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:0", "size": 2 },
                "layers": layers.iter().map(|(media, size)| serde_json::json!({
                    "mediaType": media, "digest": "sha256:1", "size": size,
                })).collect::<Vec<_>>(),
                "annotations": annotations,
            });
            if let Ok(m) = serde_json::from_value::<OciImageManifest>(manifest) {
                let wasm = layers.iter().filter(|(media, _)| media == WASM_LAYER).count();
                prop_assert_eq!(wasm_layer(&r, &m).is_ok(), wasm == 1);
            }
        }
    }

    fn parse(text: &str) -> OciRef {
        OciRef::parse(text).unwrap().unwrap()
    }

    #[test]
    fn references_name_the_agent_across_tags_and_digests() {
        let r = parse("oci://ghcr.io/acme/agents/hello:1.0");
        assert_eq!(r.name(), "ghcr.io/acme/agents/hello");
        let pinned = format!("oci://ghcr.io/acme/hello@sha256:{}", "a".repeat(64));
        assert_eq!(parse(&pinned).name(), "ghcr.io/acme/hello");
        assert!(
            OciRef::parse("hello@1.0").is_none(),
            "not an OCI reference at all"
        );
        assert!(matches!(OciRef::parse("oci://ghcr.io"), Some(Err(_))));
    }

    #[test]
    fn plain_http_only_for_loopback_unless_insecure() {
        for host in ["localhost:5000", "127.0.0.1:5000", "localhost"] {
            assert!(
                parse(&format!("oci://{host}/a/b:1")).is_loopback(),
                "{host}"
            );
        }
        for host in ["ghcr.io", "registry.local:5000", "10.0.0.1:5000"] {
            assert!(
                !parse(&format!("oci://{host}/a/b:1")).is_loopback(),
                "{host}"
            );
        }
    }
}
