//! The control plane's metrics and health (`docs/OPERATIONS.md` lists
//! them): what `--admin-addr` serves for a control plane. Counters count
//! what this replica did; gauges read at scrape time (runs by state, queue
//! age, nodes) are the whole cluster's, from the store.

use crate::ControlPlane;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use warden_telemetry::label_set;
use warden_telemetry::metrics::{
    Counter, Family, Gauge, Histogram, Prefixed, Unit, exponential_buckets,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct OutcomeLabel {
    /// `recorded`, `already_recorded` or `rejected` (results); `delivered`,
    /// `retry` or `failed` (webhook tries).
    pub(crate) outcome: &'static str,
}
label_set!(OutcomeLabel { outcome });

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RunsLabel {
    state: &'static str,
    tenant: String,
    agent: String,
}
label_set!(RunsLabel {
    state,
    tenant,
    agent
});

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct StateLabel {
    state: String,
}
label_set!(StateLabel { state });

/// Everything a control plane counts.
#[derive(Clone)]
pub(crate) struct ControlPlaneMetrics {
    pub(crate) runs_submitted: Counter,
    pub(crate) results: Family<OutcomeLabel, Counter>,
    pub(crate) leases_granted: Counter,
    pub(crate) submit_to_start: Histogram,
    pub(crate) lease_streams: Gauge,
    webhook_deliveries: Family<OutcomeLabel, Counter>,
    runs: Family<RunsLabel, Gauge>,
    queue_oldest_age: Gauge<f64, AtomicU64>,
    nodes: Family<StateLabel, Gauge>,
    store_up: Gauge,
}

impl Default for ControlPlaneMetrics {
    fn default() -> Self {
        ControlPlaneMetrics {
            runs_submitted: Counter::default(),
            results: Family::default(),
            leases_granted: Counter::default(),
            // 1 ms to about 2 min.
            submit_to_start: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            lease_streams: Gauge::default(),
            webhook_deliveries: Family::default(),
            runs: Family::default(),
            queue_oldest_age: Gauge::default(),
            nodes: Family::default(),
            store_up: Gauge::default(),
        }
    }
}

impl ControlPlaneMetrics {
    /// A webhook try: `delivered`, `retry` (failed, tried again later) or
    /// `failed` (the last try failed).
    pub(crate) fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(crate) fn register(&self, r: &mut Prefixed<'_>) {
        let m = self.clone();
        r.register(
            "runs_submitted",
            "Runs submitted to this replica",
            m.runs_submitted,
        );
        r.register(
            "run_results",
            "Results nodes reported to this replica, by outcome (recorded, already_recorded, rejected)",
            m.results,
        );
        r.register(
            "leases_granted",
            "Leases this replica handed to nodes",
            m.leases_granted,
        );
        r.register_with_unit(
            "submit_to_start",
            "From submit to a run's first lease",
            Unit::Seconds,
            m.submit_to_start,
        );
        r.register(
            "lease_streams",
            "Nodes' lease streams open on this replica",
            m.lease_streams,
        );
        r.register(
            "webhook_deliveries",
            "Webhook tries this replica made, by outcome (delivered, retry, failed)",
            m.webhook_deliveries,
        );
        r.register(
            "runs",
            "Runs queued, leased or running now, by state, tenant and agent (the whole cluster)",
            m.runs,
        );
        r.register_with_unit(
            "queue_oldest_age",
            "How long the oldest queued run has waited (0 with none)",
            Unit::Seconds,
            m.queue_oldest_age,
        );
        r.register(
            "nodes",
            "Nodes by state (ready, draining, lost, gone)",
            m.nodes,
        );
        r.register(
            "store_up",
            "1 when the last scrape reached the store",
            m.store_up,
        );
    }
}

/// The control plane as the admin endpoints see it.
pub(crate) struct ControlPlaneHealth(pub(crate) ControlPlane);

/// How long a readiness check or a scrape waits for the store.
const STORE_WAIT: Duration = Duration::from_secs(2);

impl ControlPlaneHealth {
    /// Runs `f` on the store off the async workers, for at most
    /// [`STORE_WAIT`].
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::Store) -> crate::store::StoreResult<T> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.0.store.clone();
        match tokio::time::timeout(STORE_WAIT, tokio::task::spawn_blocking(move || f(&store))).await
        {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", STORE_WAIT.as_secs())),
        }
    }
}

#[async_trait::async_trait]
impl warden_telemetry::Component for ControlPlaneHealth {
    fn name(&self) -> &'static str {
        "control_plane"
    }

    async fn not_ready(&self) -> Vec<String> {
        // The schema was migrated when the store opened; a store that
        // answers is ready.
        match self.store(|s| s.ping()).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!(
                "the store ({}) is unreachable: {e}",
                self.0.store.name()
            )],
        }
    }

    async fn refresh(&self) {
        let m = &self.0.metrics;
        let stats = match self.store(|s| s.stats()).await {
            Ok(stats) => stats,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the store");
                m.store_up.set(0);
                return;
            }
        };
        m.store_up.set(1);
        m.runs.clear();
        let now = crate::store::now_ms();
        let mut oldest: Option<i64> = None;
        for (state, tenant, agent, count, first) in stats.runs {
            let agent = warden_core::name_and_version(&agent).0.to_string();
            m.runs
                .get_or_create(&RunsLabel {
                    state,
                    tenant,
                    agent,
                })
                .inc_by(count as i64);
            if state == "queued" {
                oldest = Some(oldest.map_or(first, |o| o.min(first)));
            }
        }
        m.queue_oldest_age
            .set(oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0));
        m.nodes.clear();
        for (state, count) in stats.nodes {
            m.nodes
                .get_or_create(&StateLabel { state })
                .set(count as i64);
        }
    }
}
