//! Acks and results to the control plane, batched: an ack loop and a
//! report loop, each with one call in flight carrying everything queued
//! meanwhile (up to [`MAX_BATCH`]); results are retried until the control
//! plane answers them, and one it can never accept is recorded as failed
//! rather than retried for ever.

use crate::{CancelReason, MAX_BATCH, NodeAgent, PendingResult};
use prost::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use warden_core::{Backoff, FailureKind};
use warden_host::RunOutcome;
use warden_proto::v1 as pb;

impl NodeAgent {
    /// Acks leases in batches: whatever arrived while the last call was in
    /// flight goes in the next. Acks are not retried: a run acked late or
    /// never is still recorded by its result. A run that has ended by the
    /// time its ack would go is not acked (its result says more, and an ack
    /// would only wait on it for the run's row).
    pub(crate) async fn ack_loop(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<pb::LeaseRef>,
    ) {
        let mut leases = Vec::new();
        while queue.recv_many(&mut leases, MAX_BATCH).await > 0 {
            {
                let active = self.active.lock().unwrap();
                leases.retain(|l| active.get(&l.run_id).is_some_and(|run| run.lease == *l));
            }
            if leases.is_empty() {
                continue;
            }
            let req = pb::AckRequest {
                leases: std::mem::take(&mut leases),
            };
            let sent = req.leases.len();
            match self.leases().ack(req).await {
                Ok(r) => {
                    let stale = r.into_inner().stale;
                    self.metrics
                        .leases_acknowledged
                        .inc_by(sent.saturating_sub(stale.len()) as u64);
                    for lease in stale {
                        tracing::debug!(run_id = %lease.run_id, "acked a lease that is no longer current");
                    }
                }
                Err(e) => tracing::debug!(error = %e.message(), "ack failed"),
            }
        }
    }

    /// Reports results in batches of at most [`MAX_BATCH`] results and
    /// [`MAX_BATCH_BYTES`], each retried with backoff while the control
    /// plane cannot be reached. A result it can never accept does not hold
    /// the loop: a batch it refuses as a whole is split and sent result by
    /// result, and a result refused alone is recorded as a failure with
    /// the reason instead (see [`refused`]).
    pub(crate) async fn report_loop(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<PendingResult>,
    ) {
        let mut incoming = Vec::new();
        while queue.recv_many(&mut incoming, MAX_BATCH).await > 0 {
            let mut batches: VecDeque<Vec<PendingResult>> = by_bytes(incoming.drain(..).map(fit));
            while let Some(mut batch) = batches.pop_front() {
                let req = pb::ReportRequest {
                    results: batch.iter().map(|p| p.result.clone()).collect(),
                };
                let mut failures = 0;
                let refusal = loop {
                    match self.leases().report(req.clone()).await {
                        Ok(r) => {
                            for (a, pending) in r.into_inner().answers.iter().zip(&batch) {
                                if a.status == pb::ReportStatus::Rejected as i32 {
                                    tracing::warn!(run = Self::run_of(&pending.result), error = %a.message, "result rejected");
                                } else if a.status == pb::ReportStatus::Recorded as i32 {
                                    self.count_recorded(&pending.result);
                                }
                            }
                            break None;
                        }
                        Err(e) if permanent(e.code()) => break Some(e),
                        Err(e) => {
                            failures += 1;
                            tracing::debug!(error = %e.message(), "cannot report results yet; retrying");
                            tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
                        }
                    }
                };
                match refusal {
                    None => {}
                    Some(e) if batch.len() > 1 => {
                        tracing::warn!(error = %e.message(), results = batch.len(), "the control plane refused a batch of results; sending them one by one");
                        for one in batch.drain(..).rev() {
                            batches.push_front(vec![one]);
                        }
                        continue;
                    }
                    Some(e) => {
                        let mut one = batch.pop().expect("one result");
                        match refused(&one.result, &e) {
                            Some(failure) => {
                                tracing::error!(run = Self::run_of(&one.result), error = %e.message(), "the control plane refused a result; recording the run as failed instead");
                                one.result = failure;
                                batches.push_front(vec![one]);
                            }
                            None => {
                                tracing::error!(run = Self::run_of(&one.result), error = %e.message(), "the control plane refused a result and its failure record; dropped");
                                let _ = one.done.send(());
                            }
                        }
                        continue;
                    }
                }
                for pending in batch.drain(..) {
                    let _ = pending.done.send(());
                }
            }
        }
    }

    /// The run a result is for, for the log.
    fn run_of(result: &pb::RunResult) -> &str {
        let lease = match &result.result {
            Some(pb::run_result::Result::Complete(c)) => c.lease.as_ref(),
            Some(pb::run_result::Result::Fail(f)) => f.lease.as_ref(),
            None => None,
        };
        lease.map_or("", |l| l.run_id.as_str())
    }

    /// Counts a result the control plane recorded.
    fn count_recorded(&self, result: &pb::RunResult) {
        match &result.result {
            Some(pb::run_result::Result::Complete(_)) => {
                self.metrics.leases_completed.inc();
            }
            Some(pb::run_result::Result::Fail(f)) => {
                let kind = FailureKind::from_proto(f.kind)
                    .map_or_else(|| "unknown".to_string(), |k| k.to_string());
                self.metrics
                    .leases_failed
                    .get_or_create(&crate::metrics::KindLabel { kind })
                    .inc();
            }
            None => {}
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

/// Most encoded bytes of one report: the control plane's message limit,
/// less room for the request's own framing.
const MAX_BATCH_BYTES: usize = warden_core::wire::MAX_MESSAGE_BYTES - (64 << 10);

/// The bytes `result` takes in a report.
fn size(result: &pb::RunResult) -> usize {
    // The field tag and length prefix of a repeated message: at most 11.
    result.encoded_len() + 11
}

/// A status that sending the same request again cannot change.
fn permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::Unimplemented
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::DataLoss
    )
}

/// `pending`, or, if its result alone is over [`MAX_BATCH_BYTES`] (an
/// output the node's limits allowed but no report can carry), a failure
/// record saying so.
fn fit(mut pending: PendingResult) -> PendingResult {
    let bytes = size(&pending.result);
    if bytes > MAX_BATCH_BYTES {
        let message = format!(
            "the result is {bytes} bytes; a report to the control plane carries at most {MAX_BATCH_BYTES}"
        );
        pending.result = failure(&pending.result, FailureKind::OutputTooLarge, message);
    }
    pending
}

/// Splits results into reports of at most [`MAX_BATCH_BYTES`] each.
fn by_bytes(results: impl Iterator<Item = PendingResult>) -> VecDeque<Vec<PendingResult>> {
    let mut batches = VecDeque::new();
    let (mut batch, mut bytes) = (Vec::new(), 0);
    for pending in results {
        let n = size(&pending.result);
        if !batch.is_empty() && bytes + n > MAX_BATCH_BYTES {
            batches.push_back(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += n;
        batch.push(pending);
    }
    if !batch.is_empty() {
        batches.push_back(batch);
    }
    batches
}

/// What to report instead of `result`, which the control plane refused
/// with `status`: the run failed, with the reason. `None` if `result` is
/// already such a record (the refusal is not about its content).
fn refused(result: &pb::RunResult, status: &tonic::Status) -> Option<pb::RunResult> {
    if let Some(pb::run_result::Result::Fail(f)) = &result.result
        && f.message.starts_with(REFUSED)
    {
        return None;
    }
    // A refusal for size is the output's doing: not retried. Any other
    // (say, a control plane of another version) might pass elsewhere.
    let kind = if status.code() == Code::OutOfRange || status.message().contains("too large") {
        FailureKind::OutputTooLarge
    } else {
        FailureKind::HostError
    };
    let reason: String = status.message().chars().take(1024).collect();
    Some(failure(result, kind, format!("{REFUSED}: {reason}")))
}

/// How a failure record for a refused result begins.
const REFUSED: &str = "the control plane refused this run's result";

/// A failure of `kind` for the run `result` reports, with its usage.
fn failure(result: &pb::RunResult, kind: FailureKind, message: String) -> pb::RunResult {
    let (lease, usage) = match &result.result {
        Some(pb::run_result::Result::Complete(c)) => (c.lease.clone(), c.usage),
        Some(pb::run_result::Result::Fail(f)) => (f.lease.clone(), f.usage),
        None => (None, None),
    };
    pb::RunResult {
        result: Some(pb::run_result::Result::Fail(pb::FailRequest {
            lease,
            kind: pb::FailureKind::from(kind) as i32,
            message,
            usage,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(output_bytes: usize) -> PendingResult {
        PendingResult {
            result: pb::RunResult {
                result: Some(pb::run_result::Result::Complete(pb::CompleteRequest {
                    lease: Some(pb::LeaseRef::default()),
                    output: "x".repeat(output_bytes),
                    usage: Some(pb::Usage::default()),
                })),
            },
            done: oneshot::channel().0,
        }
    }

    fn fail_message(result: &pb::RunResult) -> (FailureKind, &str) {
        match &result.result {
            Some(pb::run_result::Result::Fail(f)) => {
                (FailureKind::from_proto(f.kind).unwrap(), f.message.as_str())
            }
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn reports_are_split_by_bytes_and_an_oversized_result_becomes_a_failure() {
        let third = MAX_BATCH_BYTES / 3;
        let batches = by_bytes(
            [
                complete(third),
                complete(third),
                complete(third),
                complete(10),
            ]
            .into_iter(),
        );
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        for batch in &batches {
            let bytes: usize = batch.iter().map(|p| size(&p.result)).sum();
            assert!(bytes <= MAX_BATCH_BYTES);
        }
        let fitted = fit(complete(MAX_BATCH_BYTES));
        let (kind, message) = fail_message(&fitted.result);
        assert_eq!(kind, FailureKind::OutputTooLarge);
        assert!(message.contains("carries at most"), "{message}");
        assert!(size(&fitted.result) < 1024);
        // Small results pass unchanged.
        assert!(matches!(
            fit(complete(10)).result.result,
            Some(pb::run_result::Result::Complete(_))
        ));
    }

    #[test]
    fn a_refused_result_is_replaced_once_then_dropped() {
        let status = tonic::Status::out_of_range("decoded message length too large");
        let record = refused(&complete(10).result, &status).expect("a failure record");
        let (kind, message) = fail_message(&record);
        assert_eq!(kind, FailureKind::OutputTooLarge);
        assert!(message.starts_with(REFUSED), "{message}");
        assert!(refused(&record, &status).is_none(), "refused records loop");
        let other = tonic::Status::invalid_argument("something else");
        let (kind, _) = fail_message(&refused(&complete(10).result, &other).unwrap());
        assert_eq!(kind, FailureKind::HostError);
        assert!(permanent(Code::InvalidArgument) && !permanent(Code::Unavailable));
    }
}
