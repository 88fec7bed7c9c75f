//! `NodeService`: nodes enroll, register, heartbeat, drain and leave;
//! operators make join tokens and revoke nodes.

use crate::ControlPlane;
use crate::auth::Security;
use crate::auth::{client_of, node_of};
use crate::store::JoinTokenRefusal;
use tonic::{Request, Response, Status};
use warden_proto::v1::*;

/// Longest a join token may stay valid.
const MAX_JOIN_TOKEN_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

#[tonic::async_trait]
impl node_service_server::NodeService for ControlPlane {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let Security::Tls(pki) = &self.config.security else {
            return Err(Status::failed_precondition(
                "this control plane runs without TLS (--insecure): nodes need no enrollment",
            ));
        };
        let r = req.into_inner();
        warden_core::check_name("node id", &r.node_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (certificate_pem, fingerprint) = pki
            .sign_node(&r.csr_pem, &r.node_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.store.enroll(&r.join_token, &r.node_id, &fingerprint)? {
            Ok(labels) => {
                tracing::info!(node = %r.node_id, "node enrolled");
                self.audit(
                    "",
                    &format!("node:{}", r.node_id),
                    "node.enroll",
                    &r.node_id,
                    "",
                );
                Ok(Response::new(EnrollResponse {
                    certificate_pem,
                    labels: labels.into_iter().collect(),
                }))
            }
            Err(e @ crate::store::EnrollError::BadToken) => {
                tracing::warn!(node = %r.node_id, "enrollment refused: bad join token");
                self.audit(
                    "",
                    "anonymous",
                    "denied",
                    "NodeService.Enroll",
                    &format!("node {}: a bad join token", r.node_id),
                );
                Err(Status::unauthenticated(e.to_string()))
            }
            Err(e) => Err(Status::already_exists(e.to_string())),
        }
    }

    async fn create_join_token(
        &self,
        req: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        for (key, value) in &r.labels {
            warden_core::check_label(key, value)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        if r.ttl_ms == 0 || r.ttl_ms > MAX_JOIN_TOKEN_TTL_MS {
            return Err(Status::invalid_argument(
                "a join token's ttl must be more than 0 and at most 7 days",
            ));
        }
        let labels = r.labels.into_iter().collect();
        let (join_token, id, expires) = self.store.create_join_token(&labels, r.ttl_ms as i64)?;
        tracing::info!(join_token = %id, "join token created");
        self.audit(&caller.tenant, caller.actor(), "join_token.create", &id, "");
        Ok(Response::new(CreateJoinTokenResponse {
            join_token,
            expires_unix_ms: expires,
            id,
        }))
    }

    async fn list_join_tokens(
        &self,
        req: Request<ListJoinTokensRequest>,
    ) -> Result<Response<ListJoinTokensResponse>, Status> {
        // The layer let a client in (refused without it).
        client_of(&req)?;
        Ok(Response::new(ListJoinTokensResponse {
            join_tokens: self.store.list_join_tokens()?,
        }))
    }

    async fn revoke_join_token(
        &self,
        req: Request<RevokeJoinTokenRequest>,
    ) -> Result<Response<RevokeJoinTokenResponse>, Status> {
        let caller = client_of(&req)?;
        let id = req.into_inner().id;
        let shown = warden_core::escape_controls(&id);
        match self.store.revoke_join_token(&id)? {
            Ok(()) => {}
            Err(JoinTokenRefusal::Unknown) => {
                return Err(Status::not_found(format!(
                    "no join token {shown} (`warden nodes join-token list` shows them)"
                )));
            }
            Err(JoinTokenRefusal::Used(node)) => {
                return Err(Status::failed_precondition(format!(
                    "join token {shown} was used by node {node}: revoke the node instead (`warden nodes revoke {node}`)"
                )));
            }
        }
        tracing::info!(join_token = %id, "join token revoked");
        self.audit(&caller.tenant, caller.actor(), "join_token.revoke", &id, "");
        Ok(Response::new(RevokeJoinTokenResponse {}))
    }

    async fn revoke_node(
        &self,
        req: Request<RevokeNodeRequest>,
    ) -> Result<Response<RevokeNodeResponse>, Status> {
        let caller = client_of(&req)?;
        let id = req.into_inner().node_id;
        let Some(requeued) = self.store.revoke_node(&id)? else {
            return Err(Status::not_found(format!(
                "no node {} was enrolled",
                warden_core::escape_controls(&id)
            )));
        };
        self.store.expire_leases()?;
        self.changed.notify_waiters();
        tracing::warn!(node = %id, requeued, "node revoked");
        self.audit(&caller.tenant, caller.actor(), "node.revoke", &id, "");
        Ok(Response::new(RevokeNodeResponse { requeued }))
    }

    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let node = node_of(&req, &req.get_ref().node_id)?;
        let mut req = req.into_inner();
        for (key, value) in &req.labels {
            warden_core::check_label(key, value)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        // The join token's labels win: a node cannot place itself where
        // the operator did not put it.
        req.labels.extend(node.labels);
        if req.hostname.len() > 255 {
            return Err(Status::invalid_argument(
                "hostname is longer than 255 bytes",
            ));
        }
        check_capacity(req.capacity.as_ref())?;
        self.store.register_node(&req)?;
        tracing::info!(node = %req.node_id, hostname = %req.hostname, "node registered");
        self.changed.notify_waiters();
        Ok(Response::new(RegisterResponse {
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            node_timeout_ms: self.config.node_timeout.as_millis() as u64,
            now_unix_ms: warden_core::now_ms(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        node_of(&req, &req.get_ref().node_id)?;
        let r = req.into_inner();
        let known = self
            .store
            .heartbeat(&r.node_id, r.active_runs, r.free_slots, r.accepting)?;
        Ok(Response::new(HeartbeatResponse {
            reregister: !known,
            now_unix_ms: warden_core::now_ms(),
        }))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        node_of(&req, &req.get_ref().node_id)?;
        let r = req.into_inner();
        self.store.deregister_node(&r.node_id)?;
        // Anything still leased to it goes back to the queue now.
        self.store.expire_leases()?;
        self.changed.notify_waiters();
        tracing::info!(node = %r.node_id, "node deregistered");
        Ok(Response::new(DeregisterResponse {}))
    }

    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        // The layer let a client in (refused without it).
        client_of(&req)?;
        Ok(Response::new(ListNodesResponse {
            nodes: self.store.list_nodes()?,
        }))
    }
}

/// Most accelerators a node may report, and the longest text of each.
const MAX_ACCELERATORS: usize = 64;
const MAX_CAPACITY_TEXT: usize = 256;

/// A node's capacity as it reports it: bounded, since it is stored and
/// shown to operators.
fn check_capacity(capacity: Option<&NodeCapacity>) -> Result<(), Status> {
    let Some(c) = capacity else { return Ok(()) };
    if c.accelerators.len() > MAX_ACCELERATORS {
        return Err(Status::invalid_argument(format!(
            "a node may report at most {MAX_ACCELERATORS} accelerators, not {}",
            c.accelerators.len()
        )));
    }
    let texts = [&c.os, &c.arch, &c.warden_version, &c.wasmtime_version]
        .into_iter()
        .chain(
            c.accelerators
                .iter()
                .flat_map(|a| [&a.kind, &a.name, &a.device]),
        );
    for text in texts {
        if text.len() > MAX_CAPACITY_TEXT {
            return Err(Status::invalid_argument(format!(
                "a capacity field is longer than {MAX_CAPACITY_TEXT} bytes"
            )));
        }
    }
    Ok(())
}
