//! The node's metrics and health (`docs/OPERATIONS.md` lists them): what
//! `--admin-addr` serves for a node, each named `warden_…`. Labels are
//! bounded: tenants, agent names, failure kinds and fixed words, never run
//! ids.

use crate::NodeAgent;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use warden_telemetry::label_set;
use warden_telemetry::metrics::{
    Counter, Family, Gauge, Histogram, Prefixed, Unit, exponential_buckets,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct AgentLabel {
    /// The run's tenant: two tenants' agents of one name are not one.
    pub(crate) tenant: String,
    pub(crate) agent: String,
}
label_set!(AgentLabel { tenant, agent });

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}
label_set!(KindLabel { kind });

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct AgentKindLabel {
    /// The run's tenant: two tenants' agents of one name are not one.
    pub(crate) tenant: String,
    pub(crate) agent: String,
    pub(crate) kind: String,
}
label_set!(AgentKindLabel {
    tenant,
    agent,
    kind
});

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct TokenLabel {
    /// The run's tenant: two tenants' agents of one name are not one.
    pub(crate) tenant: String,
    pub(crate) agent: String,
    /// `input` or `output`.
    pub(crate) token_type: &'static str,
}
label_set!(TokenLabel {
    tenant,
    agent,
    token_type
});

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct SourceLabel {
    /// Where a component came from: `memory` (loaded before), `disk` (the
    /// compile cache or the blob cache) or `registry` (fetched).
    pub(crate) source: &'static str,
}
label_set!(SourceLabel { source });

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct CompileLabel {
    /// `cache` (the compile cache had it) or `compiled`.
    pub(crate) result: &'static str,
}
label_set!(CompileLabel { result });

type Histograms<L> = Family<L, Histogram>;

fn seconds() -> Histogram {
    // 1 ms to about 2 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

fn dollars() -> Histogram {
    // A hundredth of a cent to about $10.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

fn fuel() -> Histogram {
    Histogram::new(exponential_buckets(1_000.0, 10.0, 9))
}

fn bytes() -> Histogram {
    // 64 KiB to 4 GiB.
    Histogram::new(exponential_buckets(65_536.0, 4.0, 9))
}

/// Everything a node counts.
#[derive(Clone)]
pub(crate) struct NodeMetrics {
    pub(crate) leases_received: Counter,
    pub(crate) leases_acknowledged: Counter,
    pub(crate) leases_completed: Counter,
    pub(crate) leases_failed: Family<KindLabel, Counter>,
    pub(crate) agent_executions: Family<AgentLabel, Counter>,
    pub(crate) agent_execution_errors: Family<AgentKindLabel, Counter>,
    pub(crate) lease_stream_errors: Counter,
    pub(crate) lease_stream_reconnects: Counter,
    pub(crate) lease_processing_duration: Histogram,
    pub(crate) agent_execution_duration: Histograms<AgentLabel>,
    pub(crate) agent_tokens: Family<TokenLabel, Counter>,
    pub(crate) agent_cost_usd: Histograms<AgentLabel>,
    pub(crate) agent_fuel_consumed: Histograms<AgentLabel>,
    pub(crate) agent_peak_memory: Histograms<AgentLabel>,
    pub(crate) component_loads: Family<SourceLabel, Counter>,
    pub(crate) component_load_duration: Histogram,
    pub(crate) compiles: Family<CompileLabel, Counter>,
    pub(crate) compile_duration: Histogram,
    active_runs: Gauge,
    free_slots: Gauge,
    slots: Gauge,
    draining: Gauge,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            leases_received: Counter::default(),
            leases_acknowledged: Counter::default(),
            leases_completed: Counter::default(),
            leases_failed: Family::default(),
            agent_executions: Family::default(),
            agent_execution_errors: Family::default(),
            lease_stream_errors: Counter::default(),
            lease_stream_reconnects: Counter::default(),
            lease_processing_duration: seconds(),
            agent_execution_duration: Family::new(seconds),
            agent_tokens: Family::default(),
            agent_cost_usd: Family::new(dollars),
            agent_fuel_consumed: Family::new(fuel),
            agent_peak_memory: Family::new(bytes),
            component_loads: Family::default(),
            component_load_duration: seconds(),
            compiles: Family::default(),
            compile_duration: seconds(),
            active_runs: Gauge::default(),
            free_slots: Gauge::default(),
            slots: Gauge::default(),
            draining: Gauge::default(),
        }
    }
}

impl NodeMetrics {
    /// Adds every metric to `registry`.
    pub(crate) fn register(&self, r: &mut Prefixed<'_>) {
        let m = self.clone();
        r.register(
            "leases_received",
            "Leases this node received",
            m.leases_received,
        );
        r.register(
            "leases_acknowledged",
            "Leases the control plane confirmed as started",
            m.leases_acknowledged,
        );
        r.register(
            "leases_completed",
            "Runs whose success the control plane recorded",
            m.leases_completed,
        );
        r.register(
            "leases_failed",
            "Runs whose failure the control plane recorded, by failure kind",
            m.leases_failed,
        );
        r.register(
            "agent_executions",
            "Agent runs started, by agent",
            m.agent_executions,
        );
        r.register(
            "agent_execution_errors",
            "Agent runs that failed, by agent and failure kind",
            m.agent_execution_errors,
        );
        r.register(
            "lease_stream_errors",
            "Times the lease stream could not be opened or broke",
            m.lease_stream_errors,
        );
        r.register(
            "lease_stream_reconnects",
            "Times the lease stream was opened again after it ended",
            m.lease_stream_reconnects,
        );
        r.register_with_unit(
            "lease_processing_duration",
            "From a lease's arrival to its result being recorded",
            Unit::Seconds,
            m.lease_processing_duration,
        );
        r.register_with_unit(
            "agent_execution_duration",
            "Agent run wall time in the sandbox, by agent",
            Unit::Seconds,
            m.agent_execution_duration,
        );
        r.register(
            "agent_tokens",
            "LLM tokens agent runs used, by agent and token_type (input, output)",
            m.agent_tokens,
        );
        r.register(
            "agent_cost_usd",
            "LLM cost of each agent run in US dollars, by agent",
            m.agent_cost_usd,
        );
        r.register(
            "agent_fuel_consumed",
            "Fuel each agent run used, by agent",
            m.agent_fuel_consumed,
        );
        r.register_with_unit(
            "agent_peak_memory",
            "Most linear memory each agent run held, by agent",
            Unit::Bytes,
            m.agent_peak_memory,
        );
        r.register(
            "component_loads",
            "Components a run needed, by source: memory (loaded before), disk (the compile cache or the blob cache) or registry (fetched)",
            m.component_loads,
        );
        r.register_with_unit(
            "component_load_duration",
            "Loading a component not in memory: fetch or read, verify, compile or read the compiled artifact",
            Unit::Seconds,
            m.component_load_duration,
        );
        r.register(
            "component_compiles",
            "Components made ready to run, by result: cache (the compiled artifact was in the compile cache) or compiled (Cranelift ran)",
            m.compiles,
        );
        r.register_with_unit(
            "component_compile_duration",
            "Compiling a component (in a child process, under the compile bounds), when not in the compile cache",
            Unit::Seconds,
            m.compile_duration,
        );
        r.register("active_runs", "Runs going on now", m.active_runs);
        r.register("free_slots", "Slots free for more runs", m.free_slots);
        r.register("slots", "Runs this node takes at once", m.slots);
        r.register("node_draining", "1 while the node drains", m.draining);
    }
}

/// The node as the admin endpoints see it.
pub(crate) struct NodeHealth(pub(crate) Arc<NodeAgent>);

#[async_trait::async_trait]
impl warden_telemetry::Component for NodeHealth {
    fn name(&self) -> &'static str {
        "node"
    }

    async fn not_ready(&self) -> Vec<String> {
        let node = &self.0;
        let mut problems = Vec::new();
        if !node.accepting.load(Ordering::SeqCst) {
            problems.push("draining: takes no new runs".to_string());
        }
        if !node.registered.load(Ordering::SeqCst) {
            problems.push("not registered with the control plane".to_string());
        }
        if !node.stream_up.load(Ordering::SeqCst) {
            problems.push("the lease stream is not open".to_string());
        }
        problems
    }

    async fn refresh(&self) {
        let node = &self.0;
        let m = &node.metrics;
        m.active_runs.set(node.active.lock().unwrap().len() as i64);
        m.free_slots.set(node.slots.available_permits() as i64);
        m.slots.set(i64::from(node.opts.slots));
        m.draining
            .set(i64::from(!node.accepting.load(Ordering::SeqCst)));
    }

    fn active_runs(&self) -> Option<u64> {
        Some(self.0.active.lock().unwrap().len() as u64)
    }
}
