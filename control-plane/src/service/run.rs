//! `RunService`: submit (one or a batch, or a dry run; the checks before a
//! run exists are in `submit.rs`), get, list, cancel, watch, logs and
//! usage.

use super::StreamOf;
use crate::ControlPlane;
use crate::auth::client_of;
use crate::store::RunFilter;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use warden_core::RunState;
use warden_proto::v1::*;

/// Most runs in one SubmitBatch.
const MAX_SUBMIT_BATCH: usize = 10_000;

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
                return Ok(Response::new(SubmitResponse {
                    run: None,
                    problems: crate::service::listed(&problems),
                    warnings: crate::service::listed(&warnings),
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
        if r.since_unix_ms < 0 {
            return Err(Status::invalid_argument(
                "since_unix_ms is a time after 1970 (Unix ms), or 0 for any time",
            ));
        }
        let mut runs = self.store.list_runs(&RunFilter {
            tenant: caller.scope().map(str::to_string),
            state,
            agent: (!r.agent.is_empty()).then_some(r.agent),
            labels: r.labels.into_iter().collect(),
            since_ms: (r.since_unix_ms > 0).then_some(r.since_unix_ms),
            // One more than the page: whether there is a next one, so the
            // last page says it is the last.
            limit: limit + 1,
            after,
        })?;
        let full = runs.len() as u32 > limit;
        runs.truncate(limit as usize);
        // Summaries are small, but labels and usage add up.
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
