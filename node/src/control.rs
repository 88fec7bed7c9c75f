//! The node's standing with the control plane: registering (again after
//! it forgets the node), heartbeats with the clock offset they measure,
//! the control plane refusing this node's certificate (then the node
//! exits), and draining on shutdown.

use super::*;

impl NodeAgent {
    pub(crate) fn register_request(&self) -> pb::RegisterRequest {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let accelerators = self.accelerators.get().cloned().unwrap_or_default();
        let mut labels = self.opts.labels.clone();
        if let Some(gpu) = capacity::gpu_label(&accelerators) {
            labels.entry("gpu".into()).or_insert(gpu);
        }
        pb::RegisterRequest {
            node_id: self.opts.node_id.clone(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
            labels: labels.into_iter().collect(),
            capacity: Some(pb::NodeCapacity {
                slots: self.opts.slots,
                cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                memory_bytes: sys.total_memory(),
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
                warden_version: env!("CARGO_PKG_VERSION").into(),
                wasmtime_version: warden_host::WASMTIME_VERSION.into(),
                disk_free_bytes: capacity::disk_free(&self.data_dir),
                accelerators,
            }),
        }
    }
    /// Registers, retrying with backoff until the control plane answers.
    pub(crate) async fn register(&self) -> Duration {
        let mut failures = 0;
        loop {
            let sent = warden_core::now_ms();
            match self.nodes().register(self.register_request()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.note_clock(sent, r.now_unix_ms);
                    self.registered.store(true, Ordering::SeqCst);
                    tracing::info!(node = %self.opts.node_id, "registered with the control plane");
                    return Duration::from_millis(r.heartbeat_interval_ms.max(100));
                }
                // `run` ends on the refusal; nothing more to do here.
                Err(e) if self.refuses_us(&e) => std::future::pending().await,
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e.message(), "control plane unreachable; retrying");
                    }
                    failures += 1;
                    tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
                }
            }
        }
    }
    /// Whether `e` is the control plane refusing this node's certificate
    /// (revoked, unknown there, another node's), not a passing failure:
    /// if so, [`NodeAgent::run`] ends with it.
    pub(crate) fn refuses_us(&self, e: &tonic::Status) -> bool {
        let refused = matches!(
            e.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        );
        if refused {
            self.refused.send_if_modified(|why| {
                if why.is_some() {
                    return false;
                }
                *why = Some(e.message().to_string());
                true
            });
        }
        refused
    }
    pub(crate) async fn heartbeat_loop(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let active = self.active.lock().unwrap().len() as u32;
            let req = pb::HeartbeatRequest {
                node_id: self.opts.node_id.clone(),
                active_runs: active,
                free_slots: self.slots.available_permits() as u32,
                accepting: self.accepting.load(Ordering::SeqCst),
            };
            let sent = warden_core::now_ms();
            let answer = self.nodes().heartbeat(req).await;
            if let Ok(r) = &answer {
                self.note_clock(sent, r.get_ref().now_unix_ms);
            }
            match answer {
                Ok(r) if r.get_ref().reregister => {
                    self.registered.store(false, Ordering::SeqCst);
                    tracing::warn!("the control plane lost track of this node; registering again");
                    self.register().await;
                }
                Ok(_) => {}
                Err(e) if self.refuses_us(&e) => return,
                Err(e) => tracing::debug!(error = %e.message(), "heartbeat failed"),
            }
        }
    }
    /// Records the control plane's clock from an answer to a call sent at
    /// `sent_ms` (our clock); warns once when the two differ by more than a
    /// second.
    pub(crate) fn note_clock(&self, sent_ms: i64, cp_now_ms: i64) {
        let Some(offset) = clock_offset_ms(sent_ms, warden_core::now_ms(), cp_now_ms) else {
            return;
        };
        let before = self.clock_offset_ms.swap(offset, Ordering::Relaxed);
        if offset.abs() > 1_000 && before.abs() <= 1_000 {
            tracing::warn!(
                offset_ms = offset,
                "this node's clock differs from the control plane's; lease expiries use the control plane's"
            );
        }
    }
    /// Stops taking leases, waits for in-flight runs up to the grace
    /// period, fails the rest as `node_shutdown`, and deregisters.
    pub(crate) async fn drain(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        let active_runs = self.active.lock().unwrap().len() as u32;
        let _ = self
            .nodes()
            .heartbeat(pb::HeartbeatRequest {
                node_id: self.opts.node_id.clone(),
                active_runs,
                free_slots: 0,
                accepting: false,
            })
            .await;
        let all = self.opts.slots;
        let waited =
            tokio::time::timeout(self.opts.drain_grace, self.slots.acquire_many(all)).await;
        if waited.is_err() {
            let stopped = self.cancel_all(CancelReason::Shutdown);
            tracing::warn!(
                runs = stopped,
                "grace period over; failing the rest as node_shutdown"
            );
            // They report as they stop.
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.slots.acquire_many(all)).await;
        }
        let _ = self
            .nodes()
            .deregister(pb::DeregisterRequest {
                node_id: self.opts.node_id.clone(),
            })
            .await;
        tracing::info!("node drained and deregistered");
    }
}

/// The control plane's clock minus ours, from a call sent at `sent_ms` and
/// answered at `received_ms` (our clock) with the control plane's
/// `cp_now_ms`, taken to be read halfway. `None` when the control plane
/// sent no time (an older one).
fn clock_offset_ms(sent_ms: i64, received_ms: i64, cp_now_ms: i64) -> Option<i64> {
    (cp_now_ms != 0).then(|| cp_now_ms - (sent_ms + (received_ms - sent_ms) / 2))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_offset_is_measured_at_the_midpoint_of_the_call() {
        use super::clock_offset_ms;
        // Control plane 5 s ahead, a 100 ms round trip.
        assert_eq!(clock_offset_ms(1_000, 1_100, 6_050), Some(5_000));
        // Behind, and in step.
        assert_eq!(clock_offset_ms(10_000, 10_020, 7_010), Some(-3_000));
        assert_eq!(clock_offset_ms(500, 500, 500), Some(0));
        // An older control plane sends no time: no correction.
        assert_eq!(clock_offset_ms(500, 600, 0), None);
    }
}
