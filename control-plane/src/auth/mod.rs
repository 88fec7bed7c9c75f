//! Who is calling: nodes by their client certificate (enrolled with a join
//! token, signed by the control plane's CA), clients by a bearer token with
//! a tenant and a role. Without TLS ([`Security::Insecure`]: `warden dev`
//! on loopback, or `--insecure`) nobody is authenticated and every caller
//! is the system role of tenant `default`.
//!
//! One layer decides who may call what ([`layer`], by the per-method table
//! in [`rules`]); handlers read the [`Caller`] it found with [`client_of`],
//! [`node_of`], [`calling_node`] and [`node_or_client`].

mod layer;
pub mod rules;

pub(crate) use layer::AuthorizeLayer;
pub use rules::{Rule, rule};

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

    /// Who this client is in the audit log.
    pub(crate) fn actor(&self) -> &str {
        self.token_id.as_deref().unwrap_or("anonymous")
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

/// Who called, as the authorization layer found: put in every request's
/// extensions before its handler runs.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// A method anyone may call ([`Rule::Public`]).
    Anyone,
    Node(NodeCaller),
    Client(Client),
}

/// A handler whose method has no rule for its caller: a bug, never the
/// request's fault (the table test keeps it from happening).
fn no_caller() -> Status {
    Status::internal("this method's authorization rule does not match its handler")
}

/// The client the authorization layer let call with `req`.
pub(crate) fn client_of<T>(req: &Request<T>) -> Result<Client, Status> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Client(c)) => Ok(c.clone()),
        _ => Err(no_caller()),
    }
}

/// The node the authorization layer let call with `req`, a request that
/// names no node (the certificate says which).
pub(crate) fn calling_node<T>(req: &Request<T>) -> Result<NodeCaller, Status> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Node(n)) => Ok(n.clone()),
        _ => Err(no_caller()),
    }
}

/// The node calling with `req`, which names itself `claimed`: the
/// certificate's node id, always (without TLS, a valid one). A request
/// naming another node, or none, is refused.
pub(crate) fn node_of<T>(req: &Request<T>, claimed: &str) -> Result<NodeCaller, Status> {
    if claimed.is_empty() {
        return Err(Status::invalid_argument(
            "the request names no node id; a node names itself (its certificate's id)",
        ));
    }
    let node = calling_node(req)?;
    if node.fingerprint.is_none() {
        // Authentication is off: the request says which node it is.
        warden_core::check_name("node id", claimed)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        return Ok(NodeCaller {
            id: claimed.to_string(),
            ..node
        });
    }
    if node.id != claimed {
        return Err(Status::permission_denied(format!(
            "this certificate is node {}'s, not {}'s",
            node.id,
            warden_core::escape_controls(claimed)
        )));
    }
    Ok(node)
}

/// A node (`None`), or the client, the authorization layer let call with
/// `req`: registry reads serve both.
pub(crate) fn node_or_client<T>(req: &Request<T>) -> Result<Option<Client>, Status> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Node(_)) => Ok(None),
        Some(Caller::Client(c)) => Ok(Some(c.clone())),
        _ => Err(no_caller()),
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

    /// Refuses `client` (and audits it) unless its role is `need` or
    /// above: for `method` (`RunService.Submit`), doing `what`.
    pub(crate) fn require(
        &self,
        client: &Client,
        need: Role,
        method: &str,
        what: &str,
    ) -> Result<(), Status> {
        if client.role >= need {
            return Ok(());
        }
        self.audit(
            &client.tenant,
            client.actor(),
            "denied",
            method,
            &format!("role {} needs {need}", client.role),
        );
        Err(layer::role_denied(client.role, need, what))
    }

    /// The tenant a call names (`requested`): the caller's own when it
    /// names none or its own; another tenant needs the system role (`what`
    /// says what for, in the denial) and a valid name.
    pub(crate) fn tenant_for(
        &self,
        client: &Client,
        requested: &str,
        method: &str,
        what: &str,
    ) -> Result<String, Status> {
        if requested.is_empty() || requested == client.tenant {
            return Ok(client.tenant.clone());
        }
        self.require(client, Role::System, method, what)?;
        warden_core::check_name("tenant", requested)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(requested.to_string())
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
}
