//! Who is calling: nodes by their client certificate (enrolled with a join
//! token, signed by the control plane's CA), clients by a bearer token with
//! a tenant and a role. Without TLS ([`Security::Insecure`]: `warden dev`
//! on loopback, or `--insecure`) nobody is authenticated and every caller
//! is the system role of tenant `default`.

use crate::ControlPlane;
use crate::pki::Pki;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Status};
use warden_core::Role;

/// Per-token request rate and stream limits.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
    streams: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// The tenant of callers when authentication is off, and of the first
/// admin token.
pub const DEFAULT_TENANT: &str = "default";

/// How the control plane knows who calls.
#[derive(Clone, Debug, Default)]
pub enum Security {
    /// Plaintext; nobody is authenticated.
    #[default]
    Insecure,
    /// TLS with the CA's server certificate; nodes present certificates
    /// it signed, clients tokens.
    Tls(Arc<Pki>),
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    pub tenant: String,
    pub role: Role,
    /// `None` when authentication is off.
    pub token_id: Option<String>,
}

impl Client {
    /// The tenant whose objects this client may see: its own, or (the
    /// system role) every tenant's (`None`).
    pub(crate) fn scope(&self) -> Option<&str> {
        (self.role < Role::System).then_some(self.tenant.as_str())
    }
}

/// An authenticated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeCaller {
    /// The certificate's node, or (authentication off) the id the request
    /// names, possibly none.
    pub id: String,
    /// Labels its join token gave it: they override its own.
    pub labels: BTreeMap<String, String>,
    /// Its certificate's fingerprint; `None` when authentication is off.
    pub fingerprint: Option<String>,
}

impl NodeCaller {
    /// The node leases must be bound to: `None` (any) when authentication
    /// is off.
    pub(crate) fn bound(&self) -> Option<&str> {
        self.fingerprint.is_some().then_some(self.id.as_str())
    }
}

/// What `role` is needed for, in words, for the denial message.
fn needs(role: Role) -> &'static str {
    match role {
        Role::Viewer => "reading",
        Role::Submitter => "submitting and cancelling runs",
        Role::Publisher => "publishing components",
        Role::Admin => "managing tokens",
        Role::System => "managing nodes and tenants",
    }
}

/// The bearer token of `req`, if any.
fn bearer<T>(req: &Request<T>) -> Result<Option<&str>, Status> {
    let Some(value) = req.metadata().get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    value
        .strip_prefix("Bearer ")
        .map(|t| Some(t.trim()))
        .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer TOKEN`"))
}

/// What `req` asks, for the audit log: its message type (`SubmitRequest`,
/// `Streaming<PublishChunk>`), which names the call.
fn method<T>(_req: &Request<T>) -> String {
    let name = std::any::type_name::<T>();
    // Drop the module paths, keep the generics.
    let mut out = String::new();
    for part in name.split_inclusive(['<', '>', ',', ' ']) {
        out.push_str(part.rsplit("::").next().unwrap_or(part));
    }
    out
}

impl Client {
    /// Who this client is in the audit log.
    pub(crate) fn actor(&self) -> &str {
        self.token_id.as_deref().unwrap_or("anonymous")
    }
}

impl ControlPlane {
    /// Appends to the audit log; a failure to is logged, never the
    /// request's.
    pub(crate) fn audit(
        &self,
        tenant: &str,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) {
        let entry = crate::store::AuditEntry {
            tenant: tenant.to_string(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: warden_core::escape_controls(target).into_owned(),
            detail: warden_core::escape_controls(detail).into_owned(),
            ..Default::default()
        };
        if let Err(e) = self.store.audit(entry) {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }

    /// The client calling with `req`, if its token allows `need`.
    pub(crate) fn client<T>(&self, req: &Request<T>, need: Role) -> Result<Client, Status> {
        if matches!(self.config.security, Security::Insecure) {
            return Ok(Client {
                tenant: DEFAULT_TENANT.to_string(),
                role: Role::System,
                token_id: None,
            });
        }
        let denied = |status: Status| {
            self.audit("", "anonymous", "denied", &method(req), status.message());
            status
        };
        let token = bearer(req).map_err(denied)?.ok_or_else(|| {
            denied(Status::unauthenticated(
                "this control plane needs a token: pass --token or set WARDEN_TOKEN \
                 (the first admin token is in the control plane's DATA_DIR/admin.token)",
            ))
        })?;
        let info = match self.store.token(token)? {
            Some(t) if t.usable(warden_core::now_ms()) => t,
            Some(t) if t.revoked_ms.is_some() => {
                return Err(denied(Status::unauthenticated(
                    "the token was revoked; ask an admin for a new one",
                )));
            }
            Some(_) => {
                return Err(denied(Status::unauthenticated(
                    "the token expired; ask an admin for a new one",
                )));
            }
            None => {
                return Err(denied(Status::unauthenticated(
                    "the token is not one this control plane made",
                )));
            }
        };
        // A token bucket per token: `rate_limit` a second, bursts of twice
        // that.
        let rate = f64::from(self.config.rate_limit);
        if rate > 0.0 {
            let now = std::time::Instant::now();
            let mut buckets = self.limits.buckets.lock().unwrap();
            let (level, at) = buckets.entry(info.id.clone()).or_insert((2.0 * rate, now));
            *level = (*level + now.duration_since(*at).as_secs_f64() * rate).min(2.0 * rate);
            *at = now;
            if *level < 1.0 {
                return Err(Status::resource_exhausted(format!(
                    "this token is over its rate limit of {} requests a second; slow down",
                    self.config.rate_limit
                )));
            }
            *level -= 1.0;
        }
        if info.role < need {
            self.audit(
                &info.tenant,
                &info.id,
                "denied",
                &method(req),
                &format!("role {} needs {need}", info.role),
            );
            return Err(Status::permission_denied(format!(
                "this token's role is {}; {} needs {} or above",
                info.role,
                needs(need),
                need
            )));
        }
        Ok(Client {
            tenant: info.tenant,
            role: info.role,
            token_id: Some(info.id),
        })
    }

    /// The node calling with `req`, which names itself `claimed`: the
    /// certificate's node id, always (without TLS, a valid one). A request
    /// naming another node, or none, is refused.
    pub(crate) fn node<T>(&self, req: &Request<T>, claimed: &str) -> Result<NodeCaller, Status> {
        if claimed.is_empty() {
            return Err(Status::invalid_argument(
                "the request names no node id; a node names itself (its certificate's id)",
            ));
        }
        self.node_with(req, Some(claimed))
    }

    /// The node calling with `req`, a request that names no node (the
    /// certificate says which).
    pub(crate) fn calling_node<T>(&self, req: &Request<T>) -> Result<NodeCaller, Status> {
        self.node_with(req, None)
    }

    fn node_with<T>(&self, req: &Request<T>, claimed: Option<&str>) -> Result<NodeCaller, Status> {
        if matches!(self.config.security, Security::Insecure) {
            let claimed = claimed.unwrap_or_default();
            if !claimed.is_empty() {
                warden_core::check_name("node id", claimed)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            return Ok(NodeCaller {
                id: claimed.to_string(),
                labels: BTreeMap::new(),
                fingerprint: None,
            });
        }
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "no node certificate: enroll this node once with --join-token \
                 (`warden nodes join-token create` makes one)",
            )
        })?;
        let cert = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no node certificate"))?;
        let fingerprint = crate::pki::fingerprint(cert.as_ref());
        let (id, labels) = self.store.node_identity(&fingerprint)?.ok_or_else(|| {
            self.audit(
                "",
                "anonymous",
                "denied",
                &method(req),
                "a revoked or unknown node certificate",
            );
            Status::unauthenticated("this node's certificate was revoked or is unknown here")
        })?;
        if let Some(claimed) = claimed
            && claimed != id
        {
            return Err(Status::permission_denied(format!(
                "this certificate is node {id}'s, not {}'s",
                warden_core::escape_controls(claimed)
            )));
        }
        Ok(NodeCaller {
            id,
            labels,
            fingerprint: Some(fingerprint),
        })
    }

    /// A slot for one more long-lived stream (a watch) of `client`, held
    /// until the stream ends.
    pub(crate) fn stream_slot(
        &self,
        client: &Client,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Status> {
        let Some(id) = &client.token_id else {
            return Ok(None);
        };
        let max = self.config.max_streams_per_token as usize;
        let semaphore = self
            .limits
            .streams
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max)))
            .clone();
        semaphore.try_acquire_owned().map(Some).map_err(|_| {
            Status::resource_exhausted(format!(
                "this token has {max} streams open, its most; close some first"
            ))
        })
    }

    /// A node (`None`), or a client allowed `need`: registry reads serve
    /// both.
    pub(crate) fn node_or_client<T>(
        &self,
        req: &Request<T>,
        need: Role,
    ) -> Result<Option<Client>, Status> {
        if req.peer_certs().is_some_and(|c| !c.is_empty()) {
            self.calling_node(req).map(|_| None)
        } else {
            self.client(req, need).map(Some)
        }
    }
}
