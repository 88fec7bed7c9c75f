//! `AuthService`: client tokens. Admins manage their own tenant's tokens;
//! the system role any tenant's.

use crate::ControlPlane;
use crate::auth::client_of;
use crate::store::{Scope, TokenInfo};
use tonic::{Request, Response, Status};
use warden_core::Role;
use warden_proto::v1 as pb;
use warden_proto::v1::auth_service_server::AuthService;

/// Most patterns in a tenant's webhook allow-list.
const MAX_WEBHOOK_PATTERNS: usize = 64;

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

fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::Agent(name) => format!("agent {name}"),
        Scope::Label(k, v) => format!("label {k}={v}"),
    }
}

impl ControlPlane {
    /// A tenant's quotas, concurrency limits and what it spent today.
    fn quotas_of(&self, tenant: &str) -> Result<pb::Quotas, Status> {
        let q = self.store.quotas(tenant)?;
        let (cost_usd_today, tokens_today) = self.store.spent_today(tenant)?;
        let limits = self
            .store
            .limits(tenant)?
            .into_iter()
            .map(|l| match l.scope {
                Scope::Agent(agent) => pb::ConcurrencyLimit {
                    agent,
                    max_running: l.max_running,
                    ..Default::default()
                },
                Scope::Label(k, v) => pb::ConcurrencyLimit {
                    label: format!("{k}={v}"),
                    max_running: l.max_running,
                    ..Default::default()
                },
            })
            .collect();
        Ok(pb::Quotas {
            max_running: q.max_running,
            max_queued: q.max_queued,
            max_input_bytes: q.max_input_bytes,
            max_cost_usd_per_day: q.max_cost_usd_per_day,
            max_tokens_per_day: q.max_tokens_per_day,
            limits,
            cost_usd_today,
            tokens_today,
        })
    }
}

/// A registry as credentials name it: `HOST` or `HOST:PORT`.
fn check_registry(registry: &str) -> Result<(), Status> {
    let ok = !registry.is_empty()
        && registry.len() <= 253
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{:?} is not a registry (HOST or HOST:PORT)",
            warden_core::escape_controls(registry)
        )))
    }
}

#[tonic::async_trait]
impl AuthService for ControlPlane {
    async fn set_registry_credential(
        &self,
        req: Request<pb::SetRegistryCredentialRequest>,
    ) -> Result<Response<pb::RegistryCredential>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let tenant = self.tenant_for(
            &caller,
            &r.tenant,
            "AuthService.SetRegistryCredential",
            "setting another tenant's registry credentials",
        )?;
        check_registry(&r.registry)?;
        if r.username.is_empty() || r.username.len() > 1024 || r.password.len() > 64 << 10 {
            return Err(Status::invalid_argument(
                "a registry credential needs a username (at most 1 KiB) and a password (at most 64 KiB)",
            ));
        }
        self.store
            .set_registry_credential(&tenant, &r.registry, &r.username, &r.password)?;
        self.audit(
            &tenant,
            caller.actor(),
            "registry_credential.set",
            &r.registry,
            &format!("username {}", r.username),
        );
        Ok(Response::new(pb::RegistryCredential {
            registry: r.registry.to_ascii_lowercase(),
            username: r.username,
            created_unix_ms: warden_core::now_ms(),
        }))
    }

    async fn list_registry_credentials(
        &self,
        req: Request<pb::ListRegistryCredentialsRequest>,
    ) -> Result<Response<pb::ListRegistryCredentialsResponse>, Status> {
        let caller = client_of(&req)?;
        let tenant = self.tenant_for(
            &caller,
            &req.get_ref().tenant,
            "AuthService.ListRegistryCredentials",
            "reading another tenant's registry credentials",
        )?;
        let credentials = self
            .store
            .registry_credentials(&tenant)?
            .into_iter()
            .map(|c| pb::RegistryCredential {
                registry: c.registry,
                username: c.username,
                created_unix_ms: c.created_ms,
            })
            .collect();
        Ok(Response::new(pb::ListRegistryCredentialsResponse {
            credentials,
        }))
    }

    async fn delete_registry_credential(
        &self,
        req: Request<pb::DeleteRegistryCredentialRequest>,
    ) -> Result<Response<pb::DeleteRegistryCredentialResponse>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let tenant = self.tenant_for(
            &caller,
            &r.tenant,
            "AuthService.DeleteRegistryCredential",
            "deleting another tenant's registry credentials",
        )?;
        if !self
            .store
            .delete_registry_credential(&tenant, &r.registry)?
        {
            return Err(Status::not_found(format!(
                "tenant {tenant} has no credentials for {}",
                warden_core::escape_controls(&r.registry)
            )));
        }
        self.audit(
            &tenant,
            caller.actor(),
            "registry_credential.delete",
            &r.registry,
            "",
        );
        Ok(Response::new(pb::DeleteRegistryCredentialResponse {}))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = client_of(&req)?;
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
                "AuthService.CreateToken",
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
        let caller = client_of(&req)?;
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
        let caller = client_of(&req)?;
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
                self.audit(
                    tenant,
                    caller.actor(),
                    "denied",
                    "AuthService.RevokeToken",
                    &id,
                );
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
        let caller = client_of(&req)?;
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
        let caller = client_of(&req)?;
        let tenant = self.tenant_for(
            &caller,
            &req.get_ref().tenant,
            "AuthService.GetQuotas",
            "reading another tenant's quotas",
        )?;
        Ok(Response::new(self.quotas_of(&tenant)?))
    }

    async fn set_quotas(
        &self,
        req: Request<pb::SetQuotasRequest>,
    ) -> Result<Response<pb::Quotas>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        warden_core::check_name("tenant", &r.tenant)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let q = r.quotas.unwrap_or_default();
        if let Some(cost) = q.max_cost_usd_per_day
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(Status::invalid_argument(format!(
                "max_cost_usd_per_day must be a finite amount of dollars, 0 or more, not {cost}"
            )));
        }
        let quotas = crate::store::Quotas {
            max_running: q.max_running,
            max_queued: q.max_queued,
            max_input_bytes: q.max_input_bytes,
            max_cost_usd_per_day: q.max_cost_usd_per_day,
            max_tokens_per_day: q.max_tokens_per_day,
        };
        self.store.set_quotas(&r.tenant, &quotas)?;
        self.forget_quotas(&r.tenant);
        self.changed.notify_waiters();
        self.audit(
            &r.tenant,
            caller.actor(),
            "quotas.set",
            &r.tenant,
            &quotas.to_string(),
        );
        Ok(Response::new(self.quotas_of(&r.tenant)?))
    }

    async fn set_concurrency_limit(
        &self,
        req: Request<pb::SetConcurrencyLimitRequest>,
    ) -> Result<Response<pb::Quotas>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let tenant = self.tenant_for(
            &caller,
            &r.tenant,
            "AuthService.SetConcurrencyLimit",
            "setting another tenant's concurrency limits",
        )?;
        let bad = |e: warden_core::NameError| Status::invalid_argument(e.to_string());
        let scope = match (r.agent.is_empty(), r.label.split_once('=')) {
            (false, None) if r.label.is_empty() => {
                warden_core::check_name("agent", &r.agent).map_err(bad)?;
                Scope::Agent(r.agent)
            }
            (true, Some((k, v))) => {
                warden_core::check_label(k, v).map_err(bad)?;
                Scope::Label(k.to_string(), v.to_string())
            }
            _ => {
                return Err(Status::invalid_argument(
                    "a concurrency limit is for one agent (by name) or one label (key=value)",
                ));
            }
        };
        self.store.set_limit(&tenant, &scope, r.max_running)?;
        self.changed.notify_waiters();
        let detail = match r.max_running {
            Some(n) => format!("max_running {n}"),
            None => "removed".to_string(),
        };
        self.audit(
            &tenant,
            caller.actor(),
            "limit.set",
            &scope_name(&scope),
            &detail,
        );
        Ok(Response::new(self.quotas_of(&tenant)?))
    }

    async fn get_webhook_config(
        &self,
        req: Request<pb::GetWebhookConfigRequest>,
    ) -> Result<Response<pb::WebhookConfig>, Status> {
        let caller = client_of(&req)?;
        let tenant = self.tenant_for(
            &caller,
            &req.get_ref().tenant,
            "AuthService.GetWebhookConfig",
            "reading another tenant's webhook settings",
        )?;
        let config = self.store.webhook_config(&tenant)?;
        Ok(Response::new(pb::WebhookConfig {
            allow: config.allow,
            key_id: config.key_id.unwrap_or_default(),
            new_secret: String::new(),
        }))
    }

    async fn set_webhook_config(
        &self,
        req: Request<pb::SetWebhookConfigRequest>,
    ) -> Result<Response<pb::WebhookConfig>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let tenant = self.tenant_for(
            &caller,
            &r.tenant,
            "AuthService.SetWebhookConfig",
            "setting another tenant's webhook allow-list",
        )?;
        if r.allow.len() > MAX_WEBHOOK_PATTERNS {
            return Err(Status::invalid_argument(format!(
                "{} patterns; a webhook allow-list takes at most {MAX_WEBHOOK_PATTERNS}",
                r.allow.len()
            )));
        }
        warden_core::HttpPolicy::new(&r.allow)
            .map_err(|e| Status::invalid_argument(format!("the webhook allow-list: {e}")))?;
        let made = self.store.set_webhook_allow(&tenant, &r.allow)?;
        self.audit(
            &tenant,
            caller.actor(),
            "webhooks.allow",
            &tenant,
            &r.allow.join(" "),
        );
        let config = self.store.webhook_config(&tenant)?;
        // The key made now, with its secret; else the one that signs.
        let (key_id, new_secret) = match made {
            Some((key_id, secret)) => (key_id, secret),
            None => (config.key_id.unwrap_or_default(), String::new()),
        };
        Ok(Response::new(pb::WebhookConfig {
            allow: config.allow,
            key_id,
            new_secret,
        }))
    }

    async fn rotate_webhook_key(
        &self,
        req: Request<pb::RotateWebhookKeyRequest>,
    ) -> Result<Response<pb::WebhookConfig>, Status> {
        let caller = client_of(&req)?;
        let tenant = self.tenant_for(
            &caller,
            &req.get_ref().tenant,
            "AuthService.RotateWebhookKey",
            "rotating another tenant's webhook key",
        )?;
        let (key_id, secret) = self.store.rotate_webhook_key(&tenant)?;
        self.audit(&tenant, caller.actor(), "webhooks.key", &key_id, "");
        let config = self.store.webhook_config(&tenant)?;
        Ok(Response::new(pb::WebhookConfig {
            allow: config.allow,
            key_id,
            new_secret: secret,
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = client_of(&req)?;
        Ok(Response::new(pb::WhoAmIResponse {
            tenant: caller.tenant,
            role: caller.role.to_string(),
            token_id: caller.token_id.unwrap_or_default(),
        }))
    }
}
