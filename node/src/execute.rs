//! Leases: the pull stream, renewals and expiry of the leases in hand,
//! and running one lease in the sandbox through to its report.

use super::*;

impl NodeAgent {
    pub(crate) async fn pull_loop(self: Arc<Self>) {
        let mut failures = 0;
        loop {
            let stream = self
                .leases()
                .pull(pb::PullRequest {
                    node_id: self.opts.node_id.clone(),
                })
                .await;
            let mut stream = match stream {
                Ok(s) => {
                    failures = 0;
                    s.into_inner()
                }
                // `run` ends on the refusal (and must not drain first).
                Err(e) if self.refuses_us(&e) => std::future::pending().await,
                Err(e) => {
                    failures += 1;
                    self.metrics.lease_stream_errors.inc();
                    tracing::warn!(error = %e.message(), "cannot open the lease stream; retrying");
                    tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
                    continue;
                }
            };
            self.stream_up.store(true, Ordering::SeqCst);
            loop {
                match stream.message().await {
                    Ok(Some(lease)) => {
                        self.metrics.leases_received.inc();
                        let span = lease_span(&lease, &self.opts.node_id);
                        tokio::spawn(self.clone().execute(lease).instrument(span));
                    }
                    Ok(None) => break,
                    Err(e) if self.refuses_us(&e) => std::future::pending().await,
                    Err(e) => {
                        self.metrics.lease_stream_errors.inc();
                        tracing::warn!(error = %e.message(), "lease stream broke");
                        break;
                    }
                }
            }
            self.stream_up.store(false, Ordering::SeqCst);
            self.metrics.lease_stream_reconnects.inc();
            failures += 1;
            tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
            // The control plane may have restarted or marked us lost.
            self.register().await;
        }
    }
    /// Renews every active lease twice a second, and stops runs the control
    /// plane cancelled or no longer leases to us.
    pub(crate) async fn renew_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let leases: Vec<pb::LeaseRef> = self
                .active
                .lock()
                .unwrap()
                .values()
                .map(|a| a.lease.clone())
                .collect();
            if leases.is_empty() {
                continue;
            }
            let req = pb::RenewRequest {
                node_id: self.opts.node_id.clone(),
                leases,
            };
            let Ok(resp) = self.leases().renew(req).await else {
                continue;
            };
            let active = self.active.lock().unwrap();
            for r in resp.into_inner().results {
                let Some(lease) = r.lease else { continue };
                let Some(run) = active.get(&lease.run_id) else {
                    continue;
                };
                match RenewStatus::from_wire(r.renew_status, &r.status) {
                    Some(RenewStatus::Ok) => {}
                    Some(RenewStatus::Cancelled) => run.cancel.cancel(CancelReason::Cancelled),
                    Some(RenewStatus::Lost) => run.cancel.cancel(CancelReason::LeaseLost),
                    None => continue,
                }
                run.expires_unix_ms
                    .fetch_max(r.expires_unix_ms, Ordering::Relaxed);
            }
        }
    }
    /// Stops runs whose lease has expired: renewals did not reach the
    /// control plane in time, which has (or soon will have) re-queued
    /// them, so their results would be stale.
    pub(crate) async fn expiry_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            // The control plane's time now, on whose clock expiries are.
            let now = warden_core::now_ms() + self.clock_offset_ms.load(Ordering::Relaxed);
            for run in self.active.lock().unwrap().values() {
                if run.expires_unix_ms.load(Ordering::Relaxed) <= now {
                    run.cancel.cancel(CancelReason::LeaseLost);
                }
            }
        }
    }
    /// Runs one lease (in its [`lease_span`]) and reports its result.
    pub(crate) async fn execute(self: Arc<Self>, lease: pb::Lease) {
        let received = std::time::Instant::now();
        let Ok(_permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let lease_ref = pb::LeaseRef {
            run_id: lease.run_id.clone(),
            attempt: lease.attempt,
            token: lease.token,
        };
        let cancel = CancelToken::default();
        self.active.lock().unwrap().insert(
            lease.run_id.clone(),
            ActiveRun {
                lease: lease_ref.clone(),
                cancel: cancel.clone(),
                // 0: a control plane that sets no expiry.
                expires_unix_ms: Arc::new(AtomicI64::new(match lease.expires_unix_ms {
                    0 => i64::MAX,
                    at => at,
                })),
            },
        );
        // Ack without waiting: the run starts at once, and a lease that is no
        // longer current is caught by the renew loop or rejected on report.
        let _ = self.acks.send(lease_ref.clone());
        let tap = self.logs.tap(&lease_ref);
        let outcome = match self
            .components
            .get(&self.sandbox, &lease.component_digest)
            .await
        {
            Ok(component) => {
                let req = RunRequest {
                    // The key-value namespace: a tenant's agents apart from
                    // every other tenant's (the default tenant's keep the
                    // bare name they had before tenants).
                    agent_name: match lease.tenant.as_str() {
                        "" | "default" => lease.agent_name.clone(),
                        tenant => format!("{tenant}/{}", lease.agent_name),
                    },
                    input: lease.input.clone(),
                    budget: RunBudget::from(lease.budget),
                    grant: lease.grant.clone().unwrap_or_default().into(),
                    run_id: lease.run_id.clone(),
                    attempt: lease.attempt,
                    echo_logs: false,
                    log_tap: Some(tap.tap.clone()),
                    cancel: cancel.clone(),
                };
                self.sandbox.run(&component, req).await
            }
            Err(failure) => RunOutcome {
                result: Err(failure),
                usage: Default::default(),
                logs: Vec::new(),
            },
        };
        // Its last lines before its result: a run seen ended has its whole
        // log (kept for attempts whose lease was lost too).
        self.logs.flush(tap, outcome.logs.len() as u64).await;
        self.active.lock().unwrap().remove(&lease.run_id);
        self.count_execution(&lease.tenant, &lease.agent_name, &outcome);
        if cancel.reason() == Some(CancelReason::LeaseLost) {
            tracing::warn!(
                run = %lease.run_id,
                kind = %FailureKind::LeaseLost,
                "lease lost while running (expired, or leased elsewhere); the result is not reported"
            );
            return;
        }
        self.report(lease_ref, outcome, cancel.reason()).await;
        self.metrics
            .lease_processing_duration
            .observe(received.elapsed().as_secs_f64());
    }
    /// Counts a run the sandbox ended (by tenant and agent, never by run).
    pub(crate) fn count_execution(&self, tenant: &str, agent: &str, outcome: &RunOutcome) {
        let m = &self.metrics;
        let label = metrics::AgentLabel {
            tenant: tenant.to_string(),
            agent: agent.to_string(),
        };
        let usage = &outcome.usage;
        m.agent_executions.get_or_create(&label).inc();
        m.agent_execution_duration
            .get_or_create(&label)
            .observe(usage.wall_time_ms / 1000.0);
        if let Err(f) = &outcome.result {
            m.agent_execution_errors
                .get_or_create(&metrics::AgentKindLabel {
                    tenant: tenant.to_string(),
                    agent: agent.to_string(),
                    kind: f.kind.to_string(),
                })
                .inc();
        }
        for (token_type, n) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            if n > 0 {
                m.agent_tokens
                    .get_or_create(&metrics::TokenLabel {
                        tenant: tenant.to_string(),
                        agent: agent.to_string(),
                        token_type,
                    })
                    .inc_by(n);
            }
        }
        if usage.llm_calls > 0 {
            m.agent_cost_usd
                .get_or_create(&label)
                .observe(usage.cost_usd);
        }
        if let Some(fuel) = usage.fuel_used {
            m.agent_fuel_consumed
                .get_or_create(&label)
                .observe(fuel as f64);
        }
        m.agent_peak_memory
            .get_or_create(&label)
            .observe(usage.peak_memory_bytes as f64);
    }
    /// Stops every active run; returns how many.
    pub(crate) fn cancel_all(&self, reason: CancelReason) -> usize {
        let active = self.active.lock().unwrap();
        for run in active.values() {
            run.cancel.cancel(reason);
        }
        active.len()
    }
}

/// The span of one attempt on this node, from the lease to its report: a
/// child of the run's submit (the lease's traceparent).
fn lease_span(lease: &pb::Lease, node_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "lease",
        warden.run_id = lease.run_id.as_str(),
        warden.attempt = lease.attempt,
        warden.agent = lease.agent_name.as_str(),
        warden.tenant = lease.tenant.as_str(),
        warden.node_id = node_id,
        warden.component.source = tracing::field::Empty,
    );
    warden_telemetry::trace::set_parent(&span, &lease.traceparent);
    span
}
