//! `AuthService`: client tokens. Admins manage their own tenant's tokens;
//! the system role any tenant's.

use crate::ControlPlane;
use crate::store::TokenInfo;
use tonic::{Request, Response, Status};
use warden_core::Role;
use warden_proto::v1 as pb;
use warden_proto::v1::auth_service_server::AuthService;

fn info(t: TokenInfo) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id,
        tenant: t.tenant,
        role: t.role.to_string(),
        description: t.description,
        created_unix_ms: t.created_ms,
        expires_unix_ms: t.expires_ms.unwrap_or(0),
        revoked_unix_ms: t.revoked_ms.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl AuthService for ControlPlane {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = self.client(&req, Role::Admin)?;
        let r = req.into_inner();
        let role: Role = r
            .role
            .parse()
            .map_err(|e: warden_core::role::UnknownRole| Status::invalid_argument(e.to_string()))?;
        let tenant = if r.tenant.is_empty() {
            caller.tenant.clone()
        } else {
            r.tenant
        };
        warden_core::check_name("tenant", &tenant)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if caller.role < Role::System && (tenant != caller.tenant || role > caller.role) {
            self.audit(
                &caller.tenant,
                caller.actor(),
                "denied",
                "CreateTokenRequest",
                &format!("a {role} token for tenant {tenant}"),
            );
            return Err(Status::permission_denied(
                "an admin makes tokens for its own tenant, with at most its own role",
            ));
        }
        if r.description.len() > 1024 {
            return Err(Status::invalid_argument("the description is over 1 KiB"));
        }
        let expires = (r.ttl_ms > 0).then(|| {
            warden_core::now_ms().saturating_add(i64::try_from(r.ttl_ms).unwrap_or(i64::MAX))
        });
        let (token_info, token) =
            self.store
                .create_token(&tenant, role, &r.description, expires)?;
        tracing::info!(token = %token_info.id, %tenant, %role, by = ?caller.token_id, "token created");
        self.audit(
            &tenant,
            caller.actor(),
            "token.create",
            &token_info.id,
            &format!("role {role}"),
        );
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(info(token_info)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.client(&req, Role::Admin)?;
        let tenant = caller.scope();
        let tokens = self
            .store
            .list_tokens(tenant)?
            .into_iter()
            .map(info)
            .collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = self.client(&req, Role::Admin)?;
        let id = req.into_inner().id;
        let tenant = caller.scope();
        // An admin revokes its tenant's tokens up to its own role.
        if let Some(tenant) = tenant {
            let above = self
                .store
                .list_tokens(Some(tenant))?
                .into_iter()
                .any(|t| t.id == id && t.role > caller.role);
            if above {
                self.audit(tenant, caller.actor(), "denied", "RevokeTokenRequest", &id);
                return Err(Status::permission_denied(
                    "an admin revokes tokens of at most its own role",
                ));
            }
        }
        if !self.store.revoke_token(&id, tenant)? {
            return Err(Status::not_found(format!(
                "no token {}",
                warden_core::escape_controls(&id)
            )));
        }
        tracing::info!(token = %id, by = ?caller.token_id, "token revoked");
        self.audit(&caller.tenant, caller.actor(), "token.revoke", &id, "");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let caller = self.client(&req, Role::Admin)?;
        let limit = match req.into_inner().limit {
            0 => 100,
            n => n.min(1000),
        };
        let entries = self
            .store
            .list_audit(caller.scope(), limit)?
            .into_iter()
            .map(|e| pb::AuditEntry {
                at_unix_ms: e.at_ms,
                tenant: e.tenant,
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }

    async fn get_quotas(
        &self,
        req: Request<pb::GetQuotasRequest>,
    ) -> Result<Response<pb::Quotas>, Status> {
        let caller = self.client(&req, Role::Viewer)?;
        let tenant = req.into_inner().tenant;
        let tenant = if tenant.is_empty() {
            caller.tenant.clone()
        } else {
            tenant
        };
        if caller.role < Role::System && tenant != caller.tenant {
            return Err(Status::permission_denied(
                "only the system role reads another tenant's quotas",
            ));
        }
        let q = self.store.quotas(&tenant)?;
        Ok(Response::new(pb::Quotas {
            max_running: q.max_running,
            max_queued: q.max_queued,
            max_input_bytes: q.max_input_bytes,
        }))
    }

    async fn set_quotas(
        &self,
        req: Request<pb::SetQuotasRequest>,
    ) -> Result<Response<pb::Quotas>, Status> {
        let caller = self.client(&req, Role::System)?;
        let r = req.into_inner();
        warden_core::check_name("tenant", &r.tenant)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let q = r.quotas.unwrap_or_default();
        self.store.set_quotas(
            &r.tenant,
            &crate::store::Quotas {
                max_running: q.max_running,
                max_queued: q.max_queued,
                max_input_bytes: q.max_input_bytes,
            },
        )?;
        self.changed.notify_waiters();
        self.audit(
            &r.tenant,
            caller.actor(),
            "quotas.set",
            &r.tenant,
            &format!("{q:?}"),
        );
        Ok(Response::new(q))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = self.client(&req, Role::Viewer)?;
        Ok(Response::new(pb::WhoAmIResponse {
            tenant: caller.tenant,
            role: caller.role.to_string(),
            token_id: caller.token_id.unwrap_or_default(),
        }))
    }
}
