//! Resolving and pulling over the OCI distribution API with Warden's own
//! HTTP client, so that every request a pull makes is Warden's to check:
//! the manifest, the blob, the token service, and every redirect hop of
//! each. Owns [`Resolved`] and [`RegistryClient`].
//!
//! With a [`RegistryGuard`] (a server pulling on others' behalf) every
//! host contacted passes the guard: a redirect hop or a token service
//! (`WWW-Authenticate: Bearer realm=…`, read from the very answer that
//! asks for it, every time) outside the allow-list is refused, a name is
//! resolved by the guard's resolver, which drops loopback, private and
//! other special addresses unless the host is allow-listed (the client
//! then connects only to the addresses checked), credentials go to a token
//! service only on the registry's own host, and a redirect never
//! downgrades HTTPS to plain HTTP. Without a guard (the CLI, for its own
//! user) redirects are followed as any client does, and credentials go
//! to the token service the registry names, as `docker` sends them.

use crate::{MAX_COMPONENT_BYTES, OciError, OciOptions, OciRef, Progress, Pulled, RegistryGuard};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The largest manifest read: the distribution spec's suggested limit.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The largest token-service answer read.
const MAX_TOKEN_BYTES: usize = 64 << 10;
/// The longest one request (a manifest, a token, a whole blob) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Redirect hops followed per request.
const MAX_REDIRECTS: usize = 5;
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// How a request proves who it is for.
#[derive(Debug, Clone)]
pub(crate) enum Authorization {
    Basic(String, String),
    Bearer(String),
}

/// A registry's answer to a request without (enough) authorization.
#[derive(Debug, PartialEq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One repository on one registry, reached through the guard (if any).
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    reference: OciRef,
    /// `scheme://HOST[:PORT]` of the registry.
    base: String,
    credentials: Option<Authorization>,
    guard: Option<RegistryGuard>,
    /// The authorization that worked (a token from the token service, or
    /// the Basic credentials), reused by the requests after it.
    authorized: tokio::sync::Mutex<Option<Authorization>>,
    /// A token service the credentials were withheld from (not on the
    /// registry's host), to say so if the registry then refuses.
    withheld_from: std::sync::Mutex<Option<String>>,
}

impl RegistryClient {
    pub(crate) fn new(r: &OciRef, opts: &OciOptions) -> Result<Self, OciError> {
        let plain_http = opts.insecure || r.is_loopback();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            // A registry that trickles bytes holds a submit no longer.
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")));
        if let Some(guard) = &opts.guard {
            builder = builder
                // A proxy would connect where the guard never looked.
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
                .redirect(guarded_redirects(guard.clone(), plain_http));
        }
        let http = builder.build().map_err(|e| OciError::Registry {
            reference: r.to_string(),
            message: format!("cannot make an HTTP client: {e}"),
        })?;
        let registry = r.reference.resolve_registry();
        let scheme = if plain_http { "http" } else { "https" };
        Ok(RegistryClient {
            http,
            reference: r.clone(),
            base: format!("{scheme}://{registry}"),
            credentials: credentials(r, opts),
            guard: opts.guard.clone(),
            authorized: tokio::sync::Mutex::new(None),
            withheld_from: std::sync::Mutex::new(None),
        })
    }

    /// GET `path` (under `/v2/REPO/`), answering the registry's challenge
    /// once if it asks for authorization.
    async fn get(&self, path: &str, accept: Option<&str>) -> Result<reqwest::Response, OciError> {
        let url = format!(
            "{}/v2/{}/{path}",
            self.base,
            self.reference.reference.repository()
        );
        let mut authorization = self.authorized.lock().await.clone();
        let mut answered = false;
        loop {
            let mut request = self.http.get(&url);
            if let Some(accept) = accept {
                request = request.header(http::header::ACCEPT, accept);
            }
            request = authorize(request, authorization.as_ref());
            let response = request.send().await.map_err(|e| self.transport_error(&e))?;
            if response.status() != reqwest::StatusCode::UNAUTHORIZED || answered {
                if answered && response.status().is_success() {
                    *self.authorized.lock().await = authorization;
                }
                return Ok(response);
            }
            answered = true;
            let challenge = response
                .headers()
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_challenge);
            authorization = match challenge {
                Some(Challenge::Bearer { realm, service }) => {
                    Some(self.token(&realm, service.as_deref()).await?)
                }
                Some(Challenge::Basic) if self.credentials.is_some() => self.credentials.clone(),
                _ => return Ok(response),
            };
        }
    }

    /// A token from the token service `realm` names, for pulling this
    /// repository. The realm is checked here, on the answer that named
    /// it: a guarded client contacts it only if the guard allows its host,
    /// and sends it credentials only on the registry's own host.
    async fn token(&self, realm: &str, service: Option<&str>) -> Result<Authorization, OciError> {
        let url = reqwest::Url::parse(realm).map_err(|_| {
            self.error(format!(
                "the registry's token service {realm:?} is not a URL"
            ))
        })?;
        let realm_host = url_authority(&url).ok_or_else(|| {
            self.error(format!(
                "the registry's token service {realm:?} has no host"
            ))
        })?;
        let mut send_credentials = true;
        if let Some(guard) = &self.guard {
            guard.check(&realm_host).await.map_err(|e| {
                OciError::Refused(format!("the registry's token service {realm}: {e}"))
            })?;
            // The registry's own host, and never over plain HTTP unless
            // the registry itself is reached so.
            let host = |h: &str| crate::split_registry(h).0.to_ascii_lowercase();
            send_credentials = host(&realm_host) == host(self.reference.reference.registry())
                && (url.scheme() == "https" || self.base.starts_with("http://"));
        }
        let scope = format!("repository:{}:pull", self.reference.reference.repository());
        let mut request = self.http.get(url).query(&[("scope", scope.as_str())]);
        if let Some(service) = service {
            request = request.query(&[("service", service)]);
        }
        if send_credentials {
            request = authorize(request, self.credentials.as_ref());
        } else if self.credentials.is_some() {
            *self.withheld_from.lock().unwrap() = Some(realm.to_string());
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(match status.as_u16() {
                401 | 403 => self.status_error(status),
                _ => self.error(format!("its token service {realm} answered {status}")),
            });
        }
        let body = read_capped(response, MAX_TOKEN_BYTES, "token service answer")
            .await
            .map_err(|m| self.error(m))?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        ["token", "access_token"]
            .iter()
            .find_map(|k| answer.get(k)?.as_str().filter(|t| !t.is_empty()))
            .map(|t| Authorization::Bearer(t.to_string()))
            .ok_or_else(|| self.error(format!("its token service {realm} answered no token")))
    }

    fn error(&self, message: String) -> OciError {
        OciError::Registry {
            reference: self.reference.to_string(),
            message,
        }
    }

    /// A request that never got an answer: refused by the guard (a hop or
    /// an address), or the registry out of reach.
    fn transport_error(&self, e: &reqwest::Error) -> OciError {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        while let Some(err) = source {
            if let Some(Refused(message)) = err.downcast_ref::<Refused>() {
                let at = e.url().map(|u| format!(" ({u})")).unwrap_or_default();
                return OciError::Refused(format!("{}: {message}{at}", self.reference));
            }
            source = err.source();
        }
        self.error(format!(
            "cannot reach the registry {}: {}",
            self.reference.reference.registry(),
            warden_core::text::root_cause(e)
        ))
    }

    /// The registry's answer to a request that failed, as a clear error.
    fn status_error(&self, status: reqwest::StatusCode) -> OciError {
        let withheld_from = self.withheld_from.lock().unwrap().clone();
        self.error(match (status.as_u16(), withheld_from) {
            (401 | 403, Some(realm)) => format!(
                "the registry requires credentials; credentials are not sent to its token service {realm}, which is not on the registry's host"
            ),
            (401 | 403, None) if self.credentials.is_some() => {
                "the registry refused the credentials given".to_string()
            }
            (401 | 403, None) => credentials_needed().to_string(),
            (404, _) => "no such tag or digest in the registry".to_string(),
            _ => format!("the registry answered {status}"),
        })
    }
}

fn credentials_needed() -> &'static str {
    "the registry requires credentials (docker login, or --registry-username/--registry-password)"
}

fn authorize(
    request: reqwest::RequestBuilder,
    authorization: Option<&Authorization>,
) -> reqwest::RequestBuilder {
    match authorization {
        Some(Authorization::Basic(user, password)) => request.basic_auth(user, Some(password)),
        Some(Authorization::Bearer(token)) => request.bearer_auth(token),
        None => request,
    }
}

/// The credentials for `r`'s registry: explicit, else (for the CLI only)
/// the docker config, else none.
pub(crate) fn credentials(r: &OciRef, opts: &OciOptions) -> Option<Authorization> {
    if let Some(user) = &opts.credentials.username
        && opts.credentials.for_registry(r.reference.registry())
    {
        return Some(Authorization::Basic(
            user.clone(),
            opts.credentials.password.clone().unwrap_or_default(),
        ));
    }
    if opts.guard.is_some() {
        return None;
    }
    match docker_credential::get_credential(r.reference.resolve_registry()) {
        Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
            Some(Authorization::Basic(u, p))
        }
        Ok(docker_credential::DockerCredential::IdentityToken(t)) => Some(Authorization::Bearer(t)),
        Err(_) => None,
    }
}

/// How a guarded client follows redirects: at most [`MAX_REDIRECTS`] hops,
/// each passing the guard, and never from HTTPS down to plain HTTP unless
/// the registry itself is reached over plain HTTP (`plain_http`).
fn guarded_redirects(guard: RegistryGuard, plain_http: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
        }
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        let verdict = if downgrade && !plain_http {
            Err(Refused(format!(
                "a redirect from HTTPS to plain HTTP ({}) is refused",
                attempt.url()
            )))
        } else {
            guard.check_hop(attempt.url()).map_err(Refused)
        };
        match verdict {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// `HOST[:PORT]` of `url` (IPv6 hosts bracketed).
pub(crate) fn url_authority(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The challenge of a `WWW-Authenticate` value, if it is one we answer.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let param = |name: &str| {
        params.split(',').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"').to_string())
        })
    };
    Some(Challenge::Bearer {
        realm: param("realm")?,
        service: param("service"),
    })
}

/// The body of `response`, refused past `max` bytes.
async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        format!(
            "the {what} broke off: {}",
            warden_core::text::root_cause(&e)
        )
    })? {
        if body.len() + chunk.len() > max {
            return Err(format!("the {what} is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A refusal by the guard, carried through reqwest's error chain.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves names for a guarded client: a host not allow-listed gets only
/// its public addresses, and none at all is an error naming them.
struct GuardedResolver(RegistryGuard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if guard.listed_host(&host) {
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            let mut refused = Vec::new();
            let public: Vec<_> = addrs
                .into_iter()
                .filter(|a| match warden_core::pattern::special_range(a.ip()) {
                    Some(kind) => {
                        refused.push(format!("{} ({kind})", a.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if public.is_empty() {
                return Err(Box::new(Refused(format!(
                    "{host} is at {}: refused unless the operator allows it (--allow-registry {host})",
                    refused.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A reference resolved to its manifest (once), ready to pull.
pub struct Resolved {
    client: RegistryClient,
    manifest: OciImageManifest,
    /// `sha256:` of the OCI manifest the reference resolved to.
    pub manifest_digest: String,
}

/// Resolves `r` to its manifest and digest.
pub async fn resolve(r: &OciRef, opts: &OciOptions) -> Result<Resolved, OciError> {
    if let Some(guard) = &opts.guard {
        guard.check(r.reference.registry()).await?;
    }
    let client = RegistryClient::new(r, opts)?;
    let target = r
        .reference
        .digest()
        .or(r.reference.tag())
        .unwrap_or("latest")
        .to_string();
    let response = client
        .get(&format!("manifests/{target}"), Some(MANIFEST_ACCEPT))
        .await?;
    if !response.status().is_success() {
        return Err(client.status_error(response.status()));
    }
    let body = read_capped(response, MAX_MANIFEST_BYTES, "manifest")
        .await
        .map_err(|m| client.error(m))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    if let Some(pinned) = r.reference.digest()
        && pinned != digest
    {
        return Err(client.error(format!(
            "the registry answered manifest {digest}, not {pinned}"
        )));
    }
    let manifest: OciManifest = serde_json::from_slice(&body)
        .map_err(|e| OciError::NotWasm(r.to_string(), format!("its manifest is not one: {e}")))?;
    match manifest {
        OciManifest::Image(manifest) => Ok(Resolved {
            client,
            manifest,
            manifest_digest: digest,
        }),
        OciManifest::ImageIndex(_) => Err(OciError::NotWasm(
            r.to_string(),
            "it is an image index, not a single component".into(),
        )),
    }
}

/// Pulls the component of `r`, verifying its digest, with progress.
pub async fn pull(
    r: &OciRef,
    opts: &OciOptions,
    progress: &dyn Progress,
) -> Result<Pulled, OciError> {
    resolve(r, opts).await?.pull(progress).await
}

impl Resolved {
    fn layer(&self) -> Result<&OciDescriptor, OciError> {
        crate::wasm_layer(&self.client.reference, &self.manifest)
    }

    /// `sha256:` of the component: the manifest's one wasm layer.
    pub fn digest(&self) -> Result<&str, OciError> {
        Ok(&self.layer()?.digest)
    }

    /// The size the manifest declares for the component (its wasm layer).
    pub fn size(&self) -> Result<i64, OciError> {
        Ok(self.layer()?.size)
    }

    /// The capability manifest the artifact carries, if any.
    pub fn capabilities(&self) -> Option<&str> {
        self.manifest
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::CAPABILITIES_ANNOTATION))
            .map(String::as_str)
    }

    /// Downloads the component, verifying its digest, with progress.
    pub async fn pull(&self, progress: &dyn Progress) -> Result<Pulled, OciError> {
        let r = &self.client.reference;
        let layer = self.layer()?;
        if layer.size < 0 || layer.size as u64 > MAX_COMPONENT_BYTES {
            return Err(OciError::NotWasm(
                r.to_string(),
                format!(
                    "its layer is {} bytes, more than the limit of {MAX_COMPONENT_BYTES}",
                    layer.size
                ),
            ));
        }
        if !is_sha256_digest(&layer.digest) {
            return Err(OciError::NotWasm(
                r.to_string(),
                format!("its layer digest {:?} is not sha256:HEX", layer.digest),
            ));
        }
        let mut response = self
            .client
            .get(&format!("blobs/{}", layer.digest), None)
            .await?;
        if !response.status().is_success() {
            return Err(self.client.status_error(response.status()));
        }
        progress.start(response.content_length().or(Some(layer.size as u64)));
        // The declared size is the registry's word: reserve at most 16 MiB
        // on it, and hold it to it.
        let mut bytes = Vec::with_capacity((layer.size as usize).min(16 << 20));
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                self.client.error(format!(
                    "download broke: {}",
                    warden_core::text::root_cause(&e)
                ))
            })?;
            let Some(chunk) = chunk else { break };
            if bytes.len() as u64 + chunk.len() as u64 > layer.size as u64 {
                return Err(OciError::NotWasm(
                    r.to_string(),
                    format!("the layer is larger than the {} bytes declared", layer.size),
                ));
            }
            bytes.extend_from_slice(&chunk);
            progress.advance(chunk.len() as u64);
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if digest != layer.digest {
            return Err(self.client.error(format!(
                "digest mismatch: the layer should be {} but the bytes are {digest}",
                layer.digest
            )));
        }
        Ok(Pulled {
            bytes,
            digest,
            capabilities: self.capabilities().map(str::to_string),
        })
    }
}

/// `sha256:` and 64 lowercase hex digits: a digest safe to put in a path.
fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests;
