//! Group commit for Submit: [`SubmitQueue`] and
//! [`ControlPlane::insert_run`]. Runs submitted concurrently are inserted
//! in one transaction.

use crate::{ControlPlane, store};
use tokio::sync::oneshot;
use warden_proto::v1::Run;

type SubmitReply = oneshot::Sender<Result<Run, String>>;

/// Group commit for Submit: runs submitted concurrently are inserted in one
/// transaction. Each submit queues its run, then takes its turn at
/// `commit`; whoever holds the turn inserts everything queued so far.
#[derive(Default)]
pub(crate) struct SubmitQueue {
    queued: std::sync::Mutex<Vec<(store::NewRun, SubmitReply)>>,
    commit: tokio::sync::Mutex<()>,
}

impl ControlPlane {
    /// Inserts a queued run, sharing the transaction with concurrent
    /// submits. Runs in its own task, so a client that goes away cannot
    /// leave a run queued but uncommitted.
    pub(crate) async fn insert_run(&self, run: store::NewRun) -> Result<Run, tonic::Status> {
        let (reply, answer) = oneshot::channel();
        self.submits.queued.lock().unwrap().push((run, reply));
        let cp = self.clone();
        tokio::spawn(async move {
            let _turn = cp.submits.commit.lock().await;
            let batch = std::mem::take(&mut *cp.submits.queued.lock().unwrap());
            if batch.is_empty() {
                return; // an earlier turn took ours
            }
            let (runs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match cp.store.insert_runs(&runs) {
                Ok(rows) => {
                    cp.metrics.runs_submitted.inc_by(rows.len() as u64);
                    for (row, reply) in rows.into_iter().zip(replies) {
                        let _ = reply.send(Ok(row));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, runs = runs.len(), "cannot insert runs");
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            cp.changed.notify_waiters();
        });
        match answer.await {
            Ok(Ok(run)) => Ok(run),
            Ok(Err(e)) => Err(tonic::Status::internal(e)),
            Err(_) => Err(tonic::Status::internal("the submit was dropped")),
        }
    }
}
