//! Acks and results to the control plane, batched: an ack loop and a
//! report loop, each with one call in flight carrying everything queued
//! meanwhile (up to [`MAX_BATCH`]); results are retried until the control
//! plane answers them.

use crate::{CancelReason, MAX_BATCH, NodeAgent, PendingResult};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use warden_core::{Backoff, FailureKind};
use warden_host::RunOutcome;
use warden_proto::v1 as pb;

impl NodeAgent {
    /// Acks leases in batches: whatever arrived while the last call was in
    /// flight goes in the next. Acks are not retried: a run acked late or
    /// never is still recorded by its result.
    pub(crate) async fn ack_loop(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<pb::LeaseRef>,
    ) {
        let mut leases = Vec::new();
        while queue.recv_many(&mut leases, MAX_BATCH).await > 0 {
            let req = pb::AckRequest {
                leases: std::mem::take(&mut leases),
            };
            match self.leases().ack(req).await {
                Ok(r) => {
                    for lease in r.into_inner().stale {
                        tracing::debug!(run_id = %lease.run_id, "acked a lease that is no longer current");
                    }
                }
                Err(e) => tracing::debug!(error = %e.message(), "ack failed"),
            }
        }
    }

    /// Reports results in batches, each batch retried with backoff until
    /// the control plane answers it.
    pub(crate) async fn report_loop(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<PendingResult>,
    ) {
        let mut batch = Vec::new();
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let req = pb::ReportRequest {
                results: batch.iter().map(|p| p.result.clone()).collect(),
            };
            let mut failures = 0;
            loop {
                match self.leases().report(req.clone()).await {
                    Ok(r) => {
                        for a in r.into_inner().answers {
                            if a.status == pb::ReportStatus::Rejected as i32 {
                                tracing::warn!(error = %a.message, "result rejected");
                            }
                        }
                        break;
                    }
                    Err(e) if e.code() == Code::InvalidArgument => {
                        tracing::error!(error = %e.message(), "results rejected");
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::debug!(error = %e.message(), "cannot report results yet; retrying");
                        tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
                    }
                }
            }
            for pending in batch.drain(..) {
                let _ = pending.done.send(());
            }
        }
    }

    /// Queues a result for the report loop and waits until the control
    /// plane has recorded or rejected it.
    pub(crate) async fn report(
        &self,
        lease: pb::LeaseRef,
        outcome: RunOutcome,
        cancelled: Option<CancelReason>,
    ) {
        let usage = Some(pb::Usage::from(&outcome.usage));
        let result = match outcome.result {
            Ok(output) => pb::run_result::Result::Complete(pb::CompleteRequest {
                lease: Some(lease),
                output,
                usage,
            }),
            Err(f) => {
                let kind = match (f.kind, cancelled) {
                    (FailureKind::Cancelled, Some(CancelReason::Shutdown)) => {
                        FailureKind::NodeShutdown
                    }
                    (kind, _) => kind,
                };
                pb::run_result::Result::Fail(pb::FailRequest {
                    lease: Some(lease),
                    kind: pb::FailureKind::from(kind) as i32,
                    message: f.message,
                    usage,
                })
            }
        };
        let (done, recorded) = oneshot::channel();
        let pending = PendingResult {
            result: pb::RunResult {
                result: Some(result),
            },
            done,
        };
        if self.results.send(pending).is_ok() {
            let _ = recorded.await;
        }
    }
}
