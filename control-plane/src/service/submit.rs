//! Submits, before a run exists: the agent resolved (a published
//! NAME@VERSION, or an OCI reference imported), the tenant's quotas, and
//! every check of a run's input, grant, budget and labels (`check_run`),
//! which a dry run lists all of and a submit stops at the first of.

use super::parse_reference;
use crate::ControlPlane;
use crate::store::NewRun;
use tonic::Status;
use warden_core::{BudgetRequest, Grant, Manifest, grant_for};
use warden_oci::OciRef;
use warden_proto::v1::*;

/// Most labels on one run.
const MAX_RUN_LABELS: usize = 32;

impl ControlPlane {
    /// The agent a submit names, as (agent, component digest, capability
    /// manifest): a published NAME@VERSION, NAME alone (its newest
    /// version), or an OCI reference resolved (and pulled if new) now.
    pub(super) async fn resolve_agent(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<(String, String, String), Status> {
        if let Some(oci) = OciRef::parse(reference) {
            let oci = oci.map_err(|e| Status::invalid_argument(e.to_string()))?;
            return self.import_oci(tenant, &oci).await;
        }
        // A name alone: its newest published version.
        let newest;
        let (name, version) = match reference.contains('@') {
            true => parse_reference(reference)?,
            false => {
                warden_core::check_name("agent name", reference).map_err(|_| {
                    Status::invalid_argument(format!(
                        "`{}` is not NAME or NAME@VERSION (e.g. hello or hello@1.0.0)",
                        warden_core::escape_controls(
                            &reference.chars().take(300).collect::<String>()
                        )
                    ))
                })?;
                newest = self
                    .store
                    .newest_version(tenant, reference)?
                    .ok_or_else(|| crate::service::agent_not_found(tenant, reference, "", false))?;
                (reference, newest.as_str())
            }
        };
        match self.resolve_cached(tenant, name, version)? {
            Ok(resolved) => Ok((
                format!("{name}@{version}"),
                resolved.digest,
                resolved.capabilities,
            )),
            Err(known) => Err(crate::service::agent_not_found(
                tenant, name, version, known,
            )),
        }
    }

    /// Refuses submits over `tenant`'s hard quotas (queued runs, input
    /// size), naming the quota.
    pub(super) fn check_quotas(&self, tenant: &str, runs: &[SubmitRequest]) -> Result<(), Status> {
        let q = self.quotas_cached(tenant)?;
        let exceeded = |what: String| Status::resource_exhausted(format!("quota_exceeded: {what}"));
        if let Some(max) = q.max_input_bytes
            && let Some((i, r)) = runs
                .iter()
                .enumerate()
                .find(|(_, r)| r.input.len() as u64 > max)
        {
            return Err(exceeded(format!(
                "run {i}'s input is {} bytes; tenant {tenant}'s max_input_bytes is {max}",
                r.input.len()
            )));
        }
        if q.max_cost_usd_per_day.is_some() || q.max_tokens_per_day.is_some() {
            let (cost, tokens) = self.store.spent_today(tenant)?;
            if let Some(max) = q.max_cost_usd_per_day
                && cost >= max
            {
                return Err(exceeded(format!(
                    "tenant {tenant}'s max_cost_usd_per_day of ${max} is spent (${cost:.6} today); it resets at 00:00 UTC"
                )));
            }
            if let Some(max) = q.max_tokens_per_day
                && tokens >= max
            {
                return Err(exceeded(format!(
                    "tenant {tenant}'s max_tokens_per_day of {max} is spent ({tokens} today); it resets at 00:00 UTC"
                )));
            }
        }
        if let Some(max) = q.max_queued {
            let queued = self.store.queued_runs(tenant)?;
            if queued + runs.len() as u64 > u64::from(max) {
                return Err(exceeded(format!(
                    "tenant {tenant} has {queued} runs queued and its max_queued is {max}"
                )));
            }
        }
        Ok(())
    }

    /// Checks a submit (input JSON, grant within the capability manifest)
    /// of the agent `resolved` (from [`Self::resolve_agent`]) and makes its
    /// run; the first problem found if there is one.
    pub(super) fn new_run(
        &self,
        tenant: &str,
        r: SubmitRequest,
        resolved: (String, String, String),
    ) -> Result<NewRun, Status> {
        let (grant, budget) = self
            .check_run(tenant, &r, Some(&resolved))
            .map_err(|mut problems| problems.remove(0))?;
        let (agent, digest, _) = resolved;
        Ok(NewRun {
            id: warden_core::new_run_id(),
            tenant: tenant.to_string(),
            agent,
            digest,
            input: r.input,
            budget: Budget::from(&budget),
            grant: warden_proto::v1::Grant::from(&grant),
            selector: r.node_selector.into_iter().collect(),
            labels: r.labels.into_iter().collect(),
            max_attempts: if r.max_attempts == 0 {
                self.config.default_max_attempts
            } else {
                r.max_attempts
            },
            traceparent: r.traceparent,
            idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
            webhook_url: (!r.webhook_url.is_empty()).then_some(r.webhook_url),
        })
    }

    /// Every problem of submit `r` of the agent `resolved` (`None`: it did
    /// not resolve, a problem counted elsewhere), in the order a submit
    /// meets them; else the run's grant and budget.
    fn check_run(
        &self,
        tenant: &str,
        r: &SubmitRequest,
        resolved: Option<&(String, String, String)>,
    ) -> Result<(Grant, BudgetRequest), Vec<Status>> {
        let mut problems = Vec::new();
        let max_input = self.config.max_input_bytes;
        if r.input.len() > max_input {
            problems.push(Status::invalid_argument(format!(
                "the input is {} bytes; this control plane takes at most {max_input} (--max-input)",
                r.input.len()
            )));
        } else if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&r.input) {
            problems.push(Status::invalid_argument(format!(
                "the input is not valid JSON: {e}"
            )));
        }
        let mut budget = BudgetRequest::from(r.budget);
        let mut grant = None;
        if let Some((agent, _, capabilities)) = resolved {
            // Checked on publish; one that no longer parses was published
            // under laxer rules (e.g. an HTTP pattern with a path).
            let manifest = match capabilities.as_str() {
                "" => Ok(None),
                text => Manifest::parse(text).map(Some).map_err(|e| {
                    Status::failed_precondition(format!(
                        "{agent} was published with a capability manifest this control plane refuses ({e}); publish a new version with a fixed manifest"
                    ))
                }),
            };
            match manifest {
                Ok(manifest) => {
                    let asked = r.grant.clone().unwrap_or_default();
                    let as_declared = asked.as_declared;
                    match grant_for(agent, manifest.as_ref(), &Grant::from(asked), as_declared) {
                        Ok(g) => grant = Some(g),
                        Err(e @ warden_core::GrantError::Beyond { .. }) => {
                            problems.push(Status::permission_denied(e.to_string()))
                        }
                        Err(e) => problems.push(Status::invalid_argument(e.to_string())),
                    }
                    if let Some(m) = &manifest {
                        budget = budget.or(&m.budget);
                    }
                }
                Err(status) => problems.push(status),
            }
        }
        if let Err(e) = budget.check() {
            problems.push(Status::invalid_argument(format!("the budget: {e}")));
        }
        for (key, value) in &r.node_selector {
            if let Err(e) = warden_core::check_label(key, value) {
                problems.push(Status::invalid_argument(format!("the node selector: {e}")));
            }
        }
        if r.idempotency_key.len() > 256 || r.idempotency_key.chars().any(char::is_control) {
            problems.push(Status::invalid_argument(
                "the idempotency key is longer than 256 bytes or holds control characters",
            ));
        }
        if r.labels.len() > MAX_RUN_LABELS {
            problems.push(Status::invalid_argument(format!(
                "{} labels; a run takes at most {MAX_RUN_LABELS}",
                r.labels.len()
            )));
        }
        for (key, value) in &r.labels {
            if let Err(e) = warden_core::check_label(key, value) {
                problems.push(Status::invalid_argument(format!("the run's labels: {e}")));
            }
        }
        if !r.traceparent.is_empty()
            && let Err(e) = warden_telemetry::trace::check_traceparent(&r.traceparent)
        {
            problems.push(Status::invalid_argument(e));
        }
        if !r.webhook_url.is_empty() {
            match self.store.webhook_config(tenant) {
                Ok(config) => {
                    if let Err(e) = crate::webhooks::check_url(tenant, &r.webhook_url, &config) {
                        problems.push(e);
                    }
                }
                Err(e) => problems.push(e.into()),
            }
        }
        match grant {
            Some(grant) if problems.is_empty() => Ok((grant, budget)),
            _ if problems.is_empty() => Err(vec![Status::internal(
                "the agent was not resolved before its run was made",
            )]),
            _ => Err(problems),
        }
    }

    /// A dry run of `r` for `tenant`: every problem a submit would meet,
    /// and as warnings what would only hold the run back (no ready node
    /// for its selector). Starts nothing and fetches nothing: an `oci://`
    /// reference is only parsed.
    pub(super) async fn dry_run(
        &self,
        tenant: &str,
        r: &SubmitRequest,
    ) -> Result<(Vec<Status>, Vec<Status>), Status> {
        let mut problems = Vec::new();
        if let Err(status) = self.check_quotas(tenant, std::slice::from_ref(r)) {
            problems.push(status);
        }
        let resolved = match OciRef::parse(&r.agent) {
            Some(Ok(_)) => None,
            Some(Err(e)) => {
                problems.push(Status::invalid_argument(e.to_string()));
                None
            }
            None => match self.resolve_agent(tenant, &r.agent).await {
                Ok(resolved) => Some(resolved),
                Err(status) => {
                    problems.push(status);
                    None
                }
            },
        };
        if let Err(found) = self.check_run(tenant, r, resolved.as_ref()) {
            // Without the agent, the "not resolved" note says nothing new.
            problems.extend(
                found
                    .into_iter()
                    .filter(|s| s.code() != tonic::Code::Internal),
            );
        }
        let alive_since = self.alive_since();
        let placeable = self.store.list_nodes()?.iter().any(|n| {
            warden_core::NodeState::from_wire(n.node_state, &n.state)
                == Some(warden_core::NodeState::Ready)
                && n.last_heartbeat_unix_ms >= alive_since
                && r.node_selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
        });
        let mut warnings = Vec::new();
        if !placeable {
            let wanted: Vec<String> = r
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let which = if wanted.is_empty() {
                "no node is ready".to_string()
            } else {
                format!("no ready node has the labels {}", wanted.join(", "))
            };
            warnings.push(Status::failed_precondition(format!(
                "{which}: the run would wait, and fail unschedulable after {} if none comes",
                humantime::format_duration(self.config.placement_timeout)
            )));
        }
        Ok((problems, warnings))
    }

    /// How to pull `oci` for `tenant`: with the tenant's own credentials for
    /// its registry, if it set some; else the operator's
    /// (`--registry-username`), which are the default tenant's alone; else
    /// none.
    fn oci_options(&self, tenant: &str, oci: &OciRef) -> Result<warden_oci::OciOptions, Status> {
        let mut opts = self.config.oci.clone();
        let registry = oci.reference.registry();
        if let Some((username, password)) = self.store.registry_credential(tenant, registry)? {
            opts.credentials = warden_oci::Credentials {
                username: Some(username),
                password: Some(password),
                registry: Some(registry.to_string()),
            };
        } else if tenant != crate::auth::DEFAULT_TENANT {
            opts.credentials = warden_oci::Credentials::default();
        }
        Ok(opts)
    }

    /// Resolves an OCI reference to a digest once, pulls the component if
    /// this control plane does not have it yet (verified, validated), and
    /// returns (agent, digest, capability manifest).
    pub(super) async fn import_oci(
        &self,
        tenant: &str,
        oci: &OciRef,
    ) -> Result<(String, String, String), Status> {
        let unavailable = |e: warden_oci::OciError| match e {
            warden_oci::OciError::Registry { .. } => Status::unavailable(e.to_string()),
            warden_oci::OciError::Refused(_) => Status::permission_denied(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        };
        let opts = &self.oci_options(tenant, oci)?;
        let resolved = warden_oci::resolve(oci, opts).await.map_err(unavailable)?;
        let capabilities = resolved.capabilities().unwrap_or_default().to_string();
        if !capabilities.is_empty() {
            Manifest::parse(&capabilities)
                .map_err(|e| Status::invalid_argument(format!("{oci}: {e}")))?;
        }
        let layer = resolved.digest().map_err(unavailable)?.to_string();
        let digest = if self.store.component_size(&layer)?.is_some() {
            layer
        } else {
            let max = self.config.max_component_bytes;
            let size = resolved.size().map_err(unavailable)?;
            if size < 0 || size as u64 > max as u64 {
                return Err(Status::resource_exhausted(format!(
                    "{oci}: the component is {size} bytes, more than this control plane's limit of {max} bytes (--max-component)"
                )));
            }
            let pulled = resolved
                .pull(&warden_oci::Quiet)
                .await
                .map_err(unavailable)?;
            self.validator
                .validate(&oci.to_string(), &pulled.bytes)
                .map_err(Status::invalid_argument)?;
            self.store.put_component(&pulled.digest, &pulled.bytes)?;
            tracing::info!(reference = %oci, digest = %pulled.digest, size = pulled.bytes.len(), "component pulled from OCI");
            pulled.digest
        };
        let agent = format!("oci://{}@{}", oci.name(), resolved.manifest_digest);
        Ok((agent, digest, capabilities))
    }
}
