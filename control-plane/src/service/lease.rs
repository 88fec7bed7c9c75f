//! `LeaseService`: the lease stream (never more in flight than a node's
//! free slots), acks, renewals and results (Complete, Fail, Report).

use super::{StreamOf, lease_answer};
use crate::ControlPlane;
use crate::auth::{calling_node, node_of};
use crate::store::{LeaseCheck, Outcome, RunReport};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use warden_proto::v1::*;

#[tonic::async_trait]
impl lease_service_server::LeaseService for ControlPlane {
    type PullStream = StreamOf<Lease>;

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let node = node_of(&req, &req.get_ref().node_id)?;
        let (node_id, fingerprint) = (node.id, node.fingerprint);
        let (tx, rx) = mpsc::channel(64);
        let cp = self.clone();
        tokio::spawn(async move {
            cp.metrics.lease_streams.inc();
            let _open = OpenStream(cp.metrics.lease_streams.clone());
            let ttl = cp.config.lease_ttl.as_millis() as i64;
            let alive_window = cp.alive_window_ms();
            // The node was checked when the call came in.
            let mut checked = Instant::now();
            loop {
                // Wake on any change, or poll: a retry's backoff ends silently.
                let changed = cp.changed.notified();
                // A node revoked meanwhile loses its stream within a second
                // (checked at most that often: a busy stream polls far more).
                if let Some(fp) = &fingerprint
                    && checked.elapsed() >= Duration::from_secs(1)
                {
                    checked = Instant::now();
                    if !matches!(cp.store.node_identity(fp), Ok(Some(_))) {
                        let _ = tx
                            .send(Err(Status::unauthenticated("this node was revoked")))
                            .await;
                        return;
                    }
                }
                let alive_since = crate::store::now_ms() - alive_window;
                let leases = match cp.store.lease_runs(&node_id, 64, ttl, alive_since) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let got = !leases.is_empty();
                let now = crate::store::now_ms();
                for lease in &leases {
                    cp.metrics.leases_granted.inc();
                    if lease.attempt == 1 {
                        cp.metrics
                            .submit_to_start
                            .observe((now - lease.created_unix_ms).max(0) as f64 / 1000.0);
                    }
                }
                for lease in leases {
                    let run_id = lease.run_id.clone();
                    if tx.send(Ok(lease)).await.is_err() {
                        // The node went away with leases in hand; they
                        // expire and are re-queued by the reaper.
                        tracing::info!(node = %node_id, run = %run_id, "lease stream closed");
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                if !got {
                    let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack(&self, req: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let node = calling_node(&req)?;
        let stale = self.store.ack(node.bound(), &req.into_inner().leases)?;
        Ok(Response::new(AckResponse { stale }))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let node = node_of(&req, &req.get_ref().node_id)?;
        let r = req.into_inner();
        let ttl = self.config.lease_ttl.as_millis() as i64;
        let results = self
            .store
            .renew(&node.id, &r.leases, ttl)?
            .into_iter()
            .map(|(lease, status, expires)| RenewResult {
                lease: Some(lease),
                status: status.as_str().to_string(),
                expires_unix_ms: expires,
                renew_status: warden_proto::v1::RenewStatus::from(status) as i32,
            })
            .collect();
        Ok(Response::new(RenewResponse { results }))
    }

    async fn complete(
        &self,
        req: Request<CompleteRequest>,
    ) -> Result<Response<ResultResponse>, Status> {
        let node = calling_node(&req)?;
        let r = RunResult {
            result: Some(run_result::Result::Complete(req.into_inner())),
        };
        lease_answer(self.record_one(node.bound(), r)?)
    }

    async fn fail(&self, req: Request<FailRequest>) -> Result<Response<ResultResponse>, Status> {
        let node = calling_node(&req)?;
        let r = RunResult {
            result: Some(run_result::Result::Fail(req.into_inner())),
        };
        lease_answer(self.record_one(node.bound(), r)?)
    }

    async fn report(
        &self,
        req: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let node = calling_node(&req)?;
        let results = req.into_inner().results;
        let mut answers: Vec<Option<ReportAnswer>> = vec![None; results.len()];
        let mut valid = Vec::with_capacity(results.len());
        for (i, r) in results.iter().enumerate() {
            match as_report(r) {
                Ok(report) => valid.push((i, report)),
                Err(message) => {
                    answers[i] = Some(ReportAnswer {
                        lease: None,
                        status: ReportStatus::Rejected as i32,
                        message,
                    })
                }
            }
        }
        let reports: Vec<RunReport<'_>> = valid.iter().map(|(_, r)| *r).collect();
        let checks = self.store.record(node.bound(), &reports)?;
        self.changed.notify_waiters();
        for ((i, report), check) in valid.iter().zip(checks) {
            self.count_result(&check);
            let (status, message) = match check {
                LeaseCheck::Recorded => (ReportStatus::Recorded, String::new()),
                LeaseCheck::AlreadyRecorded => (ReportStatus::AlreadyRecorded, String::new()),
                LeaseCheck::Stale(m) | LeaseCheck::Conflict(m) => (ReportStatus::Rejected, m),
                LeaseCheck::NotFound => (ReportStatus::Rejected, "no such run".to_string()),
            };
            answers[*i] = Some(ReportAnswer {
                lease: Some(report.lease.clone()),
                status: status as i32,
                message,
            });
        }
        Ok(Response::new(ReportResponse {
            answers: answers.into_iter().flatten().collect(),
        }))
    }

    async fn append_logs(
        &self,
        req: Request<AppendLogsRequest>,
    ) -> Result<Response<AppendLogsResponse>, Status> {
        let node = calling_node(&req)?;
        let chunks = req.into_inner().chunks;
        let refused = self
            .store
            .append_logs(node.bound(), &chunks, self.config.max_log_bytes)?;
        if refused > 0 {
            tracing::debug!(node = %node.id, refused, "log lines for attempts not this node's");
        }
        self.logs_changed.notify_waiters();
        Ok(Response::new(AppendLogsResponse {}))
    }
}

/// A reported result as the store takes it; the error names what is missing.
fn as_report(r: &RunResult) -> Result<RunReport<'_>, String> {
    static NO_USAGE: std::sync::LazyLock<Usage> = std::sync::LazyLock::new(Usage::default);
    let (lease, usage, outcome) = match &r.result {
        Some(run_result::Result::Complete(c)) => {
            (&c.lease, &c.usage, Outcome::Succeeded { output: &c.output })
        }
        Some(run_result::Result::Fail(f)) => (
            &f.lease,
            &f.usage,
            Outcome::Failed {
                // A kind this control plane does not know is a host fault.
                kind: warden_core::FailureKind::from_proto(f.kind)
                    .unwrap_or(warden_core::FailureKind::HostError),
                message: &f.message,
            },
        ),
        None => return Err("a result must be a complete or a fail".into()),
    };
    Ok(RunReport {
        lease: lease.as_ref().ok_or("missing lease")?,
        outcome,
        usage: usage.as_ref().unwrap_or(&NO_USAGE),
    })
}

impl ControlPlane {
    /// Records a single Complete or Fail.
    fn record_one(&self, node_id: Option<&str>, r: RunResult) -> Result<LeaseCheck, Status> {
        let report = as_report(&r).map_err(Status::invalid_argument)?;
        let check = self.store.record(node_id, &[report])?.remove(0);
        self.changed.notify_waiters();
        self.count_result(&check);
        Ok(check)
    }

    fn count_result(&self, check: &LeaseCheck) {
        let outcome = match check {
            LeaseCheck::Recorded => "recorded",
            LeaseCheck::AlreadyRecorded => "already_recorded",
            _ => "rejected",
        };
        self.metrics
            .results
            .get_or_create(&crate::metrics::OutcomeLabel { outcome })
            .inc();
    }
}

/// Counts a lease stream as open until dropped.
struct OpenStream(warden_telemetry::metrics::Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
