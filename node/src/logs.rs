//! Agents' log lines on their way to the control plane: a [`LogShipper`]
//! gives each run a tap (called as the guest logs), and one loop sends
//! whatever lines are waiting in one `AppendLogs` call, one call in flight,
//! so lines arrive live and a busy node makes few calls. Lines wait in
//! memory up to [`MAX_PENDING_BYTES`] for the whole node; past it (the
//! control plane is away) new lines are dropped, and the control plane
//! marks the gap. A run's last lines are sent before its result
//! ([`LogShipper::flush`]), so a run that has ended has its whole log.

use crate::upstream::Upstream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use warden_core::Backoff;
use warden_host::capability::logging::{LogLine, LogSource, LogTap};
use warden_proto::v1 as pb;
use warden_proto::v1::lease_service_client::LeaseServiceClient;

/// Most bytes of lines waiting to be sent, for the whole node.
const MAX_PENDING_BYTES: u64 = 16 << 20;
/// Most bytes of lines in one call.
const MAX_CALL_BYTES: u64 = 1 << 20;
/// How long a run's result waits for its last lines to be sent.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

pub(crate) enum Event {
    Line(Arc<pb::LeaseRef>, pb::LogLine),
    /// The run's log ended with `end` lines; `done` fires once every line
    /// before this event was sent (or given up on).
    End {
        lease: Arc<pb::LeaseRef>,
        end: u64,
        done: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
pub(crate) struct LogShipper {
    tx: mpsc::UnboundedSender<Event>,
    pending: Arc<AtomicU64>,
}

/// A run's tap and what it dropped.
pub(crate) struct RunTap {
    pub tap: LogTap,
    lease: Arc<pb::LeaseRef>,
    dropped: Arc<AtomicU64>,
}

impl LogShipper {
    /// The shipper and its loop's receiving end (for [`Self::run`]).
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            LogShipper {
                tx,
                pending: Arc::default(),
            },
            rx,
        )
    }

    /// A tap sending the lines of the attempt `lease` names.
    pub(crate) fn tap(&self, lease: &pb::LeaseRef) -> RunTap {
        let lease = Arc::new(lease.clone());
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, pending, for_tap, dropped_by_tap) = (
            self.tx.clone(),
            self.pending.clone(),
            lease.clone(),
            dropped.clone(),
        );
        let tap = LogTap(Arc::new(move |seq, line: &LogLine| {
            let line = to_wire(seq, line);
            let size = (line.message.len() + line.context.len()) as u64;
            if pending.load(Ordering::Relaxed) + size > MAX_PENDING_BYTES {
                dropped_by_tap.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending.fetch_add(size, Ordering::Relaxed);
            let _ = tx.send(Event::Line(for_tap.clone(), line));
        }));
        RunTap {
            tap,
            lease,
            dropped,
        }
    }

    /// Waits (at most [`FLUSH_WAIT`]) until the run's lines are sent; its
    /// log ended with `lines` lines. A run that logged nothing waits for
    /// nothing.
    pub(crate) async fn flush(&self, run: RunTap, lines: u64) {
        if lines == 0 {
            return;
        }
        let (done, sent) = oneshot::channel();
        // Said only when lines were dropped: the control plane then marks
        // the ones missing at the end too.
        let end = if run.dropped.load(Ordering::Relaxed) > 0 {
            lines
        } else {
            0
        };
        let event = Event::End {
            lease: run.lease,
            end,
            done,
        };
        if self.tx.send(event).is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, sent).await;
        }
    }

    /// Sends lines until the node stops.
    pub(crate) async fn run(self, mut rx: mpsc::UnboundedReceiver<Event>, channel: Upstream) {
        let mut client = LeaseServiceClient::new(channel);
        let mut told_unimplemented = false;
        while let Some(first) = rx.recv().await {
            let mut batch = Batch::default();
            batch.add(first);
            while batch.bytes < MAX_CALL_BYTES {
                match rx.try_recv() {
                    Ok(event) => batch.add(event),
                    Err(_) => break,
                }
            }
            let bytes = batch.bytes;
            let (request, done) = batch.into_request();
            let mut failures = 0;
            // Only log ends, with nothing dropped: nothing to send.
            while !request.chunks.is_empty() {
                match client.append_logs(request.clone()).await {
                    Ok(_) => break,
                    // The control plane is away: the lines wait (new ones
                    // are dropped past the bound) until it is back.
                    Err(e) if e.code() == tonic::Code::Unavailable && failures < 30 => {
                        failures += 1;
                        tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
                    }
                    // A control plane older than run logs: said once.
                    Err(e) if e.code() == tonic::Code::Unimplemented => {
                        if !told_unimplemented {
                            told_unimplemented = true;
                            tracing::warn!(
                                "the control plane does not keep run logs (an older version); agents' log lines are dropped"
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "cannot send agents' log lines; dropped");
                        break;
                    }
                }
            }
            self.pending.fetch_sub(bytes, Ordering::Relaxed);
            for d in done {
                let _ = d.send(());
            }
        }
    }
}

/// Lines (and log ends) for one call, by attempt in arrival order.
#[derive(Default)]
struct Batch {
    chunks: Vec<pb::LogChunk>,
    done: Vec<oneshot::Sender<()>>,
    bytes: u64,
}

impl Batch {
    fn chunk(&mut self, lease: &pb::LeaseRef) -> &mut pb::LogChunk {
        // Runs log in bursts: the last chunk is most often the one.
        let i = match self
            .chunks
            .iter()
            .rposition(|c| c.lease.as_ref() == Some(lease))
        {
            Some(i) => i,
            None => {
                self.chunks.push(pb::LogChunk {
                    lease: Some(lease.clone()),
                    ..Default::default()
                });
                self.chunks.len() - 1
            }
        };
        &mut self.chunks[i]
    }

    fn add(&mut self, event: Event) {
        match event {
            Event::Line(lease, line) => {
                self.bytes += (line.message.len() + line.context.len()) as u64;
                self.chunk(&lease).lines.push(line);
            }
            Event::End { lease, end, done } => {
                if end > 0 {
                    self.chunk(&lease).end = end;
                }
                self.done.push(done);
            }
        }
    }

    fn into_request(self) -> (pb::AppendLogsRequest, Vec<oneshot::Sender<()>>) {
        (
            pb::AppendLogsRequest {
                chunks: self.chunks,
            },
            self.done,
        )
    }
}

/// `line` as sent: long messages cut as the control plane would.
fn to_wire(seq: u64, line: &LogLine) -> pb::LogLine {
    pb::LogLine {
        seq,
        unix_ms: line.unix_ms,
        source: match line.source {
            LogSource::Log => pb::LogSource::Log,
            LogSource::Stdout => pb::LogSource::Stdout,
            LogSource::Stderr => pb::LogSource::Stderr,
        } as i32,
        level: line.level.clone().unwrap_or_default(),
        context: warden_core::cut_text(&line.context, warden_core::wire::MAX_LOG_CONTEXT_BYTES)
            .into_owned(),
        message: warden_core::cut_text(&line.message, warden_core::wire::MAX_LOG_LINE_BYTES)
            .into_owned(),
        attempt: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the control plane away, lines wait in memory up to 16 MiB for
    /// the whole node; past it new lines are dropped (not queued), and the
    /// run's log end says how many lines it had so the control plane marks
    /// the gap.
    #[tokio::test]
    async fn lines_waiting_past_16_mib_are_dropped_and_the_gap_is_said() {
        let (shipper, mut rx) = LogShipper::new();
        let run = shipper.tap(&pb::LeaseRef {
            run_id: "r-1".into(),
            attempt: 1,
            token: "t".into(),
        });
        // Each line at the wire's longest (16 KiB): 1,024 fill the bound.
        let line = LogLine {
            source: LogSource::Stdout,
            level: None,
            context: String::new(),
            message: "x".repeat(warden_core::wire::MAX_LOG_LINE_BYTES),
            unix_ms: 0,
        };
        let fit = (MAX_PENDING_BYTES / warden_core::wire::MAX_LOG_LINE_BYTES as u64) as usize;
        let logged = fit + 500;
        for seq in 0..logged {
            (run.tap.0)(seq as u64, &line);
        }
        assert_eq!(shipper.pending.load(Ordering::Relaxed), MAX_PENDING_BYTES);
        assert_eq!(run.dropped.load(Ordering::Relaxed), 500);

        // What waits is the first lines, in order, then the log's end.
        let reader = tokio::spawn(async move {
            let mut seqs = Vec::new();
            while let Some(event) = rx.recv().await {
                match event {
                    Event::Line(_, line) => seqs.push(line.seq),
                    Event::End { end, done, .. } => {
                        let _ = done.send(());
                        return (seqs, end);
                    }
                }
            }
            panic!("the shipper's channel closed");
        });
        shipper.flush(run, logged as u64).await;
        let (seqs, end) = reader.await.unwrap();
        assert_eq!(seqs, (0..fit as u64).collect::<Vec<_>>());
        assert_eq!(end, logged as u64, "the gap at the end is not said");
    }
}
