//! `NodeService`: nodes register, heartbeat, drain and leave.

use crate::ControlPlane;
use tonic::{Request, Response, Status};
use warden_proto::v1::*;

#[tonic::async_trait]
impl node_service_server::NodeService for ControlPlane {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = req.into_inner();
        warden_core::check_name("node id", &req.node_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        for (key, value) in &req.labels {
            warden_core::check_label(key, value)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        if req.hostname.len() > 255 {
            return Err(Status::invalid_argument(
                "hostname is longer than 255 bytes",
            ));
        }
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
        _req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: self.store.list_nodes()?,
        }))
    }
}
