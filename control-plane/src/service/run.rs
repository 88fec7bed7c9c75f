//! `RunService`: submit (one or a batch; the agent resolved, the grant
//! checked against its capability manifest, budget defaults filled), get,
//! list, cancel and watch runs.

use super::{StreamOf, parse_reference};
use crate::ControlPlane;
use crate::auth::client_of;
use crate::store::{NewRun, RunFilter};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use warden_core::{BudgetRequest, Grant, Manifest, RunState, grant_for};
use warden_oci::OciRef;
use warden_proto::v1::*;

/// Most runs in one SubmitBatch.
const MAX_SUBMIT_BATCH: usize = 10_000;
/// Most labels on one run.
const MAX_RUN_LABELS: usize = 32;

impl ControlPlane {
    /// The agent a submit names, as (agent, component digest, capability
    /// manifest): a published NAME@VERSION, or an OCI reference resolved
    /// (and pulled if new) now.
    async fn resolve_agent(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<(String, String, String), Status> {
        if let Some(oci) = OciRef::parse(reference) {
            let oci = oci.map_err(|e| Status::invalid_argument(e.to_string()))?;
            return self.import_oci(tenant, &oci).await;
        }
        let (name, version) = parse_reference(reference)?;
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
    fn check_quotas(&self, tenant: &str, runs: &[SubmitRequest]) -> Result<(), Status> {
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
    fn new_run(
        &self,
        tenant: &str,
        r: SubmitRequest,
        resolved: (String, String, String),
    ) -> Result<NewRun, Status> {
        let (grant, budget) = self
            .check_run(&r, Some(&resolved))
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
        })
    }

    /// Every problem of submit `r` of the agent `resolved` (`None`: it did
    /// not resolve, a problem counted elsewhere), in the order a submit
    /// meets them; else the run's grant and budget.
    fn check_run(
        &self,
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
    async fn dry_run(
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
        if let Err(found) = self.check_run(r, resolved.as_ref()) {
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

#[tonic::async_trait]
impl run_service_server::RunService for ControlPlane {
    type WatchStream = StreamOf<Run>;
    type LogsStream = StreamOf<RunLogsResponse>;

    async fn submit(
        &self,
        req: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        // The run's trace: this span, under the client's traceparent if it
        // sent one; every attempt's lease span on the nodes is its child.
        let span = tracing::info_span!(
            "submit",
            otel.kind = "server",
            warden.agent = r.agent.as_str(),
            warden.tenant = caller.tenant.as_str(),
            warden.run_id = tracing::field::Empty,
        );
        // A malformed one sets no parent (and new_run refuses it).
        warden_telemetry::trace::set_parent(&span, &r.traceparent);
        async move {
            if r.dry_run {
                let (problems, warnings) = self.dry_run(&caller.tenant, &r).await?;
                let listed = |found: Vec<Status>| {
                    found
                        .iter()
                        .map(|s| SubmitProblem {
                            code: crate::http_api::code_name(s.code()),
                            message: s.message().to_string(),
                        })
                        .collect()
                };
                return Ok(Response::new(SubmitResponse {
                    run: None,
                    problems: listed(problems),
                    warnings: listed(warnings),
                }));
            }
            self.check_quotas(&caller.tenant, std::slice::from_ref(&r))?;
            let resolved = self.resolve_agent(&caller.tenant, &r.agent).await?;
            let mut run = self.new_run(&caller.tenant, r, resolved)?;
            let span = tracing::Span::current();
            span.record("warden.run_id", run.id.as_str());
            if let Some(traceparent) = warden_telemetry::trace::traceparent(&span) {
                run.traceparent = traceparent;
            }
            let run = self.insert_run(run).await?;
            Ok(Response::new(SubmitResponse {
                run: Some(run),
                ..Default::default()
            }))
        }
        .instrument(span)
        .await
    }

    async fn submit_batch(
        &self,
        req: Request<SubmitBatchRequest>,
    ) -> Result<Response<SubmitBatchResponse>, Status> {
        let caller = client_of(&req)?;
        let requests = req.into_inner().runs;
        if requests.len() > MAX_SUBMIT_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} runs in one batch; the most is {MAX_SUBMIT_BATCH}",
                requests.len()
            )));
        }
        let span = tracing::info_span!(
            "submit_batch",
            otel.kind = "server",
            warden.tenant = caller.tenant.as_str(),
            warden.runs = requests.len(),
        );
        let traceparent = warden_telemetry::trace::traceparent(&span);
        async move {
            self.check_quotas(&caller.tenant, &requests)?;
            // Each distinct agent is resolved once per batch.
            let mut resolved = std::collections::HashMap::new();
            let mut runs = Vec::with_capacity(requests.len());
            for (i, r) in requests.into_iter().enumerate() {
                let at = |e: Status| Status::new(e.code(), format!("run {i}: {}", e.message()));
                if r.dry_run {
                    return Err(at(Status::invalid_argument(
                        "dry_run is for single submits (Submit), not batches",
                    )));
                }
                if !resolved.contains_key(&r.agent) {
                    let agent = self
                        .resolve_agent(&caller.tenant, &r.agent)
                        .await
                        .map_err(at)?;
                    resolved.insert(r.agent.clone(), agent);
                }
                let agent = resolved[&r.agent].clone();
                let mut run = self.new_run(&caller.tenant, r, agent).map_err(at)?;
                // A run without a trace of its own is in the batch's.
                if run.traceparent.is_empty()
                    && let Some(traceparent) = &traceparent
                {
                    run.traceparent = traceparent.clone();
                }
                runs.push(run);
            }
            let runs = self.store.insert_runs(&runs)?;
            self.metrics.runs_submitted.inc_by(runs.len() as u64);
            self.changed.notify_waiters();
            Ok(Response::new(SubmitBatchResponse { runs }))
        }
        .instrument(span)
        .await
    }

    async fn get(&self, req: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        let caller = client_of(&req)?;
        let id = req.into_inner().run_id;
        let mut run = self
            .store
            .get_run(caller.scope(), &id)?
            .ok_or_else(|| Status::not_found(format!("no run {id}")))?;
        self.store
            .explain_waiting(std::slice::from_mut(&mut run), self.alive_since())?;
        Ok(Response::new(run))
    }

    async fn list(
        &self,
        req: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let state = match (RunState::from_proto(r.run_state), r.state.as_str()) {
            (Some(state), _) => Some(state),
            (None, "") => None,
            (None, name) => Some(
                name.parse::<RunState>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            let bad =
                || Status::invalid_argument("the page token is not one this control plane gave");
            let (created, id) = r.page_token.split_once('.').ok_or_else(bad)?;
            Some((created.parse::<i64>().map_err(|_| bad())?, id.to_string()))
        };
        let limit = if r.limit == 0 {
            100
        } else {
            r.limit.min(crate::store::MAX_PAGE)
        };
        let mut runs = self.store.list_runs(&RunFilter {
            tenant: caller.scope().map(str::to_string),
            state,
            limit,
            after,
        })?;
        // Summaries are small, but labels and usage add up.
        let full = runs.len() as u32 == limit;
        // Why queued runs wait, counted in the page's bytes.
        self.store.explain_waiting(&mut runs, self.alive_since())?;
        let cut = crate::service::cut_to_page(&mut runs);
        let next_page_token = match runs.last() {
            Some(last) if full || cut => {
                format!("{}.{}", last.created_unix_ms, last.run_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(ListRunsResponse {
            runs,
            next_page_token,
        }))
    }

    async fn cancel(&self, req: Request<CancelRunRequest>) -> Result<Response<Run>, Status> {
        let caller = client_of(&req)?;
        let id = req.into_inner().run_id;
        let run = self
            .store
            .cancel(caller.scope(), &id)?
            .ok_or_else(|| Status::not_found(format!("no run {id}")))?;
        self.audit(&run.tenant, caller.actor(), "cancel", &id, "");
        self.changed.notify_waiters();
        Ok(Response::new(run))
    }

    async fn watch(
        &self,
        req: Request<WatchRunRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = client_of(&req)?;
        let id = req.into_inner().run_id;
        let scope = caller.scope().map(str::to_string);
        let slot = self.stream_slot(&caller)?;
        if self.store.get_run(scope.as_deref(), &id)?.is_none() {
            return Err(Status::not_found(format!("no run {id}")));
        }
        let (tx, rx) = mpsc::channel(16);
        let cp = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut last = None;
            loop {
                let changed = cp.changed.notified();
                // A client that went away ends the watch.
                if tx.is_closed() {
                    return;
                }
                let mut run = match cp.store.get_run(scope.as_deref(), &id) {
                    Ok(Some(run)) => run,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let key = (run.run_state, run.attempt, run.updated_unix_ms);
                let done = RunState::from_proto(run.run_state).is_some_and(RunState::is_terminal);
                if last.as_ref() != Some(&key) {
                    last = Some(key);
                    // Why it waits, when it is sent (not on every wake).
                    let alive_since = cp.alive_since();
                    if let Err(e) = cp
                        .store
                        .explain_waiting(std::slice::from_mut(&mut run), alive_since)
                    {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                    if tx.send(Ok(run)).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(250), changed).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn logs(
        &self,
        req: Request<RunLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let scope = caller.scope().map(str::to_string);
        let slot = self.stream_slot(&caller)?;
        // Where a resumed read starts: after the line it names.
        let start = match r.after_seq {
            Some(seq) => (r.after_attempt, i64::try_from(seq).unwrap_or(i64::MAX)),
            None => (0, -1),
        };
        // The first page now, so a missing run is an error, not a stream.
        let (mut lines, mut ended) = read_logs(&self.store, scope.as_deref(), &r, start)?;
        let (tx, rx) = mpsc::channel(4);
        let cp = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut after = start;
            loop {
                let changed = cp.logs_changed.notified();
                let full = lines.len() as u32 == LOG_PAGE;
                if let Some(last) = lines.last() {
                    after = (last.attempt, last.seq as i64);
                    if tx.send(Ok(RunLogsResponse { lines })).await.is_err() {
                        return;
                    }
                }
                if !full {
                    // Everything was sent; no more will come once the run
                    // has ended (it had before the read: its last lines
                    // were in).
                    if !r.follow || ended || tx.is_closed() {
                        return;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(250), changed).await;
                }
                (lines, ended) = match read_logs(&cp.store, scope.as_deref(), &r, after) {
                    Ok(next) => next,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let tenant = match caller.scope() {
            Some(own) => Some(own.to_string()),
            None => (!r.tenant.is_empty()).then_some(r.tenant),
        };
        let since = match r.since_unix_ms {
            0 => warden_core::utc_day(warden_core::now_ms()) - 6,
            at => warden_core::utc_day(at),
        };
        let agent = (!r.agent.is_empty()).then_some(r.agent);
        let usage = self
            .store
            .usage(tenant.as_deref(), agent.as_deref(), since)?
            .into_iter()
            .map(|u| AgentUsage {
                tenant: u.tenant,
                day: warden_core::day_name(u.day),
                agent: u.agent,
                attempts: u.attempts,
                succeeded: u.succeeded,
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                cost_usd: u.cost_usd,
                fuel: u.fuel,
                wall_time_ms: u.wall_ms,
            })
            .collect();
        Ok(Response::new(UsageResponse { usage }))
    }
}

/// Most log lines in one answer of `Logs`.
const LOG_PAGE: u32 = 1_000;

/// A page of `r`'s log lines after `after` (attempt, seq), and whether the
/// run has ended.
fn read_logs(
    store: &crate::Store,
    scope: Option<&str>,
    r: &RunLogsRequest,
    after: (u32, i64),
) -> Result<(Vec<LogLine>, bool), Status> {
    store
        .run_logs(scope, &r.run_id, r.attempt, after, LOG_PAGE)?
        .ok_or_else(|| Status::not_found(format!("no run {}", r.run_id)))
}
