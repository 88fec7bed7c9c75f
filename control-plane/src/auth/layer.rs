//! The authorization layer: a tower layer around every gRPC service. For
//! each request it finds the method's [`Rule`], authenticates the caller
//! (a node by its certificate, a client by its bearer token), applies the
//! token's rate limit, checks the role, audits the denial if it refuses,
//! and otherwise hands the handler a [`Caller`] in the request's
//! extensions. Handlers never authenticate; they read who called.

use super::rules::{Rule, method_name, rule};
use super::{Caller, Client, DEFAULT_TENANT, NodeCaller, Security};
use crate::ControlPlane;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use warden_core::Role;

/// Wraps the gRPC router: see the module.
#[derive(Clone)]
pub(crate) struct AuthorizeLayer(pub(crate) ControlPlane);

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            cp: Arc::new(self.0.clone()),
            inner,
        }
    }
}

/// The gRPC router behind [`AuthorizeLayer`].
#[derive(Clone)]
pub(crate) struct Authorize<S> {
    cp: Arc<ControlPlane>,
    inner: S,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // Call the service that was made ready; keep a clone.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let cp = self.cp.clone();
        // The check (a store lookup, an audit write) runs in the request's
        // own task, not on the connection's, where it would hold up every
        // other call multiplexed on it.
        Box::pin(async move {
            match cp.authorize(req.uri().path(), req.headers(), req.extensions()) {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    ready.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// What the denial of `need` says `what` needs.
pub(super) fn role_denied(role: Role, need: Role, what: &str) -> Status {
    Status::permission_denied(format!(
        "this token's role is {role}; {what} needs {need} or above"
    ))
}

/// The bearer token of a request, if any.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, Status> {
    let Some(value) = headers.get("authorization") else {
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

impl ControlPlane {
    /// Who calls the method at `path`, if its rule lets them.
    pub(crate) fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, Status> {
        let Some(rule) = rule(path) else {
            return Err(Status::unimplemented(format!(
                "this control plane has no method {}",
                method_name(path)
            )));
        };
        let certs = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .filter(|c| !c.is_empty());
        match rule {
            Rule::Public => Ok(Caller::Anyone),
            Rule::Node => self.node_caller(path, certs).map(Caller::Node),
            Rule::NodeOrClient(..) if certs.is_some() => {
                self.node_caller(path, certs).map(Caller::Node)
            }
            Rule::Client(need, what) | Rule::NodeOrClient(need, what) => self
                .client_caller(path, headers, need, what)
                .map(Caller::Client),
        }
    }

    /// The node presenting `certs`: its certificate must be one this
    /// control plane signed and has not revoked.
    fn node_caller(
        &self,
        path: &str,
        certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    ) -> Result<NodeCaller, Status> {
        if matches!(self.config.security, Security::Insecure) {
            return Ok(NodeCaller {
                id: String::new(),
                labels: BTreeMap::new(),
                fingerprint: None,
            });
        }
        let denied = |why: &str, status: Status| {
            self.audit("", "anonymous", "denied", &method_name(path), why);
            status
        };
        let Some(cert) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(denied(
                "no node certificate",
                Status::unauthenticated(
                    "no node certificate: enroll this node once with --join-token \
                     (`warden nodes join-token create` makes one)",
                ),
            ));
        };
        let fingerprint = crate::pki::fingerprint(cert.as_ref());
        let (id, labels) = self.store.node_identity(&fingerprint)?.ok_or_else(|| {
            denied(
                "a revoked or unknown node certificate",
                Status::unauthenticated("this node's certificate was revoked or is unknown here"),
            )
        })?;
        Ok(NodeCaller {
            id,
            labels,
            fingerprint: Some(fingerprint),
        })
    }

    /// The client whose bearer token is in `headers`, if its role is
    /// `need` or above.
    fn client_caller(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        need: Role,
        what: &str,
    ) -> Result<Client, Status> {
        if matches!(self.config.security, Security::Insecure) {
            return Ok(Client {
                tenant: DEFAULT_TENANT.to_string(),
                role: Role::System,
                token_id: None,
            });
        }
        let denied = |status: Status| {
            self.audit(
                "",
                "anonymous",
                "denied",
                &method_name(path),
                status.message(),
            );
            status
        };
        let token = bearer(headers).map_err(denied)?.ok_or_else(|| {
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
        self.within_rate(&info.id)?;
        let client = Client {
            tenant: info.tenant,
            role: info.role,
            token_id: Some(info.id),
        };
        self.require(&client, need, &method_name(path), what)?;
        Ok(client)
    }

    /// Takes one request from token `id`'s bucket: `rate_limit` a second,
    /// bursts of twice that.
    fn within_rate(&self, id: &str) -> Result<(), Status> {
        let rate = f64::from(self.config.rate_limit);
        if rate <= 0.0 {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let mut buckets = self.limits.buckets.lock().unwrap();
        let (level, at) = buckets.entry(id.to_string()).or_insert((2.0 * rate, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * rate).min(2.0 * rate);
        *at = now;
        if *level < 1.0 {
            return Err(Status::resource_exhausted(format!(
                "this token is over its rate limit of {} requests a second; slow down",
                self.config.rate_limit
            )));
        }
        *level -= 1.0;
        Ok(())
    }
}
