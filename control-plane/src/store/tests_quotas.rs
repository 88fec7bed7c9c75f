//! Unit tests of admission in lease polls: slots go fairly across tenants;
//! concurrency limits (per agent, per run label) and a tenant's running
//! quota make runs wait, never fail; a spent daily budget closes a tenant
//! and no other.

use super::tests::{TTL, complete, lease, lease_ref, new_run, on_both_backends, register};
use super::*;
use warden_proto::v1 as pb;

/// Queues one run of `tenant`, agent `agent`, with `labels`; its id.
fn submit(store: &Store, tenant: &str, agent: &str, labels: &[(&str, &str)]) -> String {
    let run = NewRun {
        tenant: tenant.into(),
        agent: agent.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..new_run(1)
    };
    store.insert_runs(&[run]).unwrap().remove(0).run_id
}

/// Which tenant each lease is for, in order.
fn tenants(leases: &[pb::Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.tenant.as_str()).collect()
}

fn agents(leases: &[pb::Lease]) -> Vec<&str> {
    let mut names: Vec<&str> = leases.iter().map(|l| l.agent_name.as_str()).collect();
    names.sort();
    names
}

fn each_free_slot_goes_to_the_tenant_with_the_fewest_runs_in_flight(store: &Store) {
    register(store, "n1", 4);
    for _ in 0..10 {
        submit(store, "a", "x@1", &[]);
    }
    submit(store, "b", "x@1", &[]);
    submit(store, "b", "x@1", &[]);
    // b's runs came last, yet take every other slot.
    let first = lease(store, "n1", 64, TTL);
    assert_eq!(tenants(&first), ["a", "b", "a", "b"]);
    // With b's runs all out, a's backlog takes what frees.
    complete(store, &lease_ref(&first[1]), "1");
    assert_eq!(tenants(&lease(store, "n1", 64, TTL)), ["a"]);
}

/// Past the first two tenants with queued runs (read with the node), the
/// rest are found too.
fn every_tenant_with_queued_runs_gets_slots(store: &Store) {
    register(store, "n1", 4);
    for tenant in ["d", "c", "b", "a"] {
        submit(store, tenant, "x@1", &[]);
        submit(store, tenant, "x@1", &[]);
    }
    let leases = lease(store, "n1", 64, TTL);
    let mut got = tenants(&leases);
    got.sort();
    assert_eq!(got, ["a", "b", "c", "d"]);
}

fn concurrency_limits_make_runs_wait_not_fail(store: &Store) {
    register(store, "n1", 10);
    store
        .set_limit("a", &Scope::Agent("x".into()), Some(2))
        .unwrap();
    let manager = Scope::Label("role".into(), "manager".into());
    store.set_limit("a", &manager, Some(1)).unwrap();
    for _ in 0..3 {
        submit(store, "a", "x@1", &[]);
    }
    submit(store, "a", "y@2", &[("role", "manager")]);
    let late_manager = submit(store, "a", "y@2", &[("role", "manager")]);
    submit(store, "a", "z@1", &[("role", "inspector")]);
    // Another tenant's limits are its own: its x runs are not counted.
    submit(store, "b", "x@1", &[]);
    let first = lease(store, "n1", 64, TTL);
    assert_eq!(agents(&first), ["x", "x", "x", "y", "z"], "{first:?}");
    assert_eq!(first.iter().filter(|l| l.tenant == "b").count(), 1);
    assert!(lease(store, "n1", 64, TTL).is_empty(), "both limits full");

    // A slot of each limit frees: the waiting run of each starts.
    let x = first
        .iter()
        .find(|l| l.agent_name == "x" && l.tenant == "a")
        .unwrap();
    let y = first.iter().find(|l| l.agent_name == "y").unwrap();
    complete(store, &lease_ref(x), "1");
    complete(store, &lease_ref(y), "1");
    let next = lease(store, "n1", 64, TTL);
    assert_eq!(agents(&next), ["x", "y"], "{next:?}");
    assert!(next.iter().any(|l| l.run_id == late_manager));

    // Removing a limit lets the queue go.
    store.set_limit("a", &manager, None).unwrap();
    assert_eq!(store.limits("a").unwrap().len(), 1);
}

fn a_spent_daily_budget_closes_its_tenant_only(store: &Store) {
    register(store, "n1", 10);
    store
        .set_quotas(
            "a",
            &Quotas {
                max_running: Some(1),
                max_cost_usd_per_day: Some(0.01),
                ..Default::default()
            },
        )
        .unwrap();
    for _ in 0..3 {
        submit(store, "a", "x@1", &[]);
    }
    let first = lease(store, "n1", 64, TTL);
    assert_eq!(tenants(&first), ["a"], "max_running 1");
    // The run spends more than the day's budget.
    let usage = pb::Usage {
        cost_usd: 0.02,
        prompt_tokens: 10,
        completion_tokens: 5,
        ..Default::default()
    };
    store
        .record(
            None,
            &[RunReport {
                lease: &lease_ref(&first[0]),
                outcome: Outcome::Succeeded { output: "1" },
                usage: &usage,
            }],
        )
        .unwrap();
    let (cost, tokens) = store.spent_today("a").unwrap();
    assert!((cost - 0.02).abs() < 1e-9, "{cost}");
    assert_eq!(tokens, 15);
    // a's queued runs wait; b's go.
    submit(store, "b", "x@1", &[]);
    assert_eq!(tenants(&lease(store, "n1", 64, TTL)), ["b"]);
    // A nonsense cost from a node adds nothing.
    let second = submit(store, "c", "x@1", &[]);
    let leased = lease(store, "n1", 64, TTL);
    assert_eq!(leased[0].run_id, second);
    let nan = pb::Usage {
        cost_usd: f64::NAN,
        ..Default::default()
    };
    store
        .record(
            None,
            &[RunReport {
                lease: &lease_ref(&leased[0]),
                outcome: Outcome::Succeeded { output: "1" },
                usage: &nan,
            }],
        )
        .unwrap();
    assert_eq!(store.spent_today("c").unwrap(), (0.0, 0));
}

fn usage_is_summed_per_tenant_agent_and_day_once_per_result(store: &Store) {
    register(store, "n1", 10);
    for (tenant, agent) in [("a", "x@1"), ("a", "x@2"), ("a", "y@1"), ("b", "x@1")] {
        submit(store, tenant, agent, &[]);
    }
    let leased = lease(store, "n1", 64, TTL);
    assert_eq!(leased.len(), 4);
    let usage = pb::Usage {
        cost_usd: 0.5,
        prompt_tokens: 10,
        completion_tokens: 5,
        fuel_used: Some(u64::MAX),
        wall_time_ms: 250.0,
        ..Default::default()
    };
    let refs: Vec<_> = leased.iter().map(lease_ref).collect();
    let reports: Vec<RunReport<'_>> = refs
        .iter()
        .zip(&leased)
        .map(|(l, leased)| RunReport {
            lease: l,
            // y fails; the others succeed.
            outcome: if leased.agent_name == "y" {
                Outcome::Failed {
                    kind: warden_core::FailureKind::GuestError,
                    message: "no",
                }
            } else {
                Outcome::Succeeded { output: "1" }
            },
            usage: &usage,
        })
        .collect();
    store.record(None, &reports).unwrap();
    // A retried report adds nothing.
    store.record(None, &reports).unwrap();
    let today = warden_core::utc_day(now_ms());
    let rows = store.usage(None, None, today).unwrap();
    let summary: Vec<_> = rows
        .iter()
        .map(|u| (u.tenant.as_str(), u.agent.as_str(), u.attempts, u.succeeded))
        .collect();
    // Versions of one agent are one agent.
    assert_eq!(
        summary,
        [("a", "x", 2, 2), ("a", "y", 1, 0), ("b", "x", 1, 1)]
    );
    let ax = &rows[0];
    assert_eq!(
        (ax.day, ax.prompt_tokens, ax.completion_tokens),
        (today, 20, 10)
    );
    assert!((ax.cost_usd - 1.0).abs() < 1e-9 && (ax.wall_ms - 500.0).abs() < 1e-9);
    // Fuel stops at i64::MAX rather than overflow.
    assert_eq!(ax.fuel, i64::MAX as u64);
    // By tenant and agent; not before `since`.
    assert_eq!(store.usage(Some("b"), None, today).unwrap().len(), 1);
    assert_eq!(store.usage(Some("a"), Some("y"), today).unwrap().len(), 1);
    assert!(store.usage(None, None, today + 1).unwrap().is_empty());
}

/// The daily token quota closes a tenant as the cost quota does: one
/// token under it, the tenant's next run is leased; at it, the tenant's
/// queued runs wait and another tenant's go. Without the token check in
/// admission (`Room::spent`), the last lease would be `a`'s.
fn a_spent_daily_token_quota_closes_its_tenant_only(store: &Store) {
    register(store, "n1", 10);
    store
        .set_quotas(
            "a",
            &Quotas {
                max_running: Some(1),
                max_tokens_per_day: Some(15),
                ..Default::default()
            },
        )
        .unwrap();
    for _ in 0..3 {
        submit(store, "a", "x@1", &[]);
    }
    let spend = |leased: &pb::Lease, tokens: u64| {
        let usage = pb::Usage {
            prompt_tokens: tokens,
            ..Default::default()
        };
        store
            .record(
                None,
                &[RunReport {
                    lease: &lease_ref(leased),
                    outcome: Outcome::Succeeded { output: "1" },
                    usage: &usage,
                }],
            )
            .unwrap();
    };
    let first = lease(store, "n1", 64, TTL);
    assert_eq!(tenants(&first), ["a"], "max_running 1");
    spend(&first[0], 14);
    let second = lease(store, "n1", 64, TTL);
    assert_eq!(tenants(&second), ["a"], "14 of 15 tokens spent");
    spend(&second[0], 1);
    assert_eq!(store.spent_today("a").unwrap(), (0.0, 15));
    // a's last queued run waits; b's goes.
    submit(store, "b", "x@1", &[]);
    assert_eq!(tenants(&lease(store, "n1", 64, TTL)), ["b"]);
}

/// Why each queued run waits, as `runs get` and `runs list` say it.
fn a_queued_run_says_what_holds_it_back(store: &Store) {
    let waiting = |id: &str| {
        let mut run = store.get_run(None, id).unwrap().unwrap();
        store
            .explain_waiting(std::slice::from_mut(&mut run), 0)
            .unwrap();
        run.waiting
    };
    let first = submit(store, "a", "x@1", &[]);
    assert_eq!(waiting(&first), "no node is ready");

    let labelled = |id: &str, slots: u32, zone: &str| {
        store
            .register_node(&pb::RegisterRequest {
                node_id: id.into(),
                hostname: "test".into(),
                labels: [("zone".to_string(), zone.to_string())].into(),
                capacity: Some(pb::NodeCapacity {
                    slots,
                    ..Default::default()
                }),
            })
            .unwrap();
    };
    labelled("n1", 1, "one");
    assert_eq!(
        waiting(&first),
        "waiting its turn: 1 free slot on the nodes it may run on"
    );
    let in_zone = |tenant: &str, zone: &str| {
        let run = NewRun {
            tenant: tenant.into(),
            selector: [("zone".to_string(), zone.to_string())].into(),
            ..new_run(1)
        };
        store.insert_runs(&[run]).unwrap().remove(0).run_id
    };
    let gpu = in_zone("a", "gpu");
    assert_eq!(waiting(&gpu), "no ready node has the labels zone=gpu");

    // Tenant a may run one at a time; n1 runs `first`.
    store
        .set_quotas(
            "a",
            &Quotas {
                max_running: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(lease(store, "n1", 1, TTL)[0].run_id, first);
    let second = submit(store, "a", "x@1", &[]);
    assert_eq!(
        waiting(&second),
        "tenant a is at its max_running (1 running, at most 1)"
    );
    // n1 is full, and is the only node in zone one.
    let busy = in_zone("c", "one");
    assert_eq!(
        waiting(&busy),
        "the one node it may run on is busy (no free slot)"
    );

    // Tenant b's agent y runs one at a time, on n2.
    labelled("n2", 4, "two");
    store
        .set_limit("b", &Scope::Agent("y".into()), Some(1))
        .unwrap();
    let y1 = submit(store, "b", "y@1", &[]);
    let leased = lease(store, "n2", 4, TTL);
    assert!(leased.iter().any(|l| l.run_id == y1), "{leased:?}");
    let y2 = submit(store, "b", "y@1", &[]);
    assert_eq!(
        waiting(&y2),
        "agent y is at its concurrency limit (1 running, at most 1)"
    );

    // A retry waits out its backoff.
    let retried = NewRun {
        tenant: "d".into(),
        ..new_run(3)
    };
    let retried = store.insert_runs(&[retried]).unwrap().remove(0).run_id;
    let leased = lease(store, "n2", 4, TTL);
    let lease = leased.iter().find(|l| l.run_id == retried).expect("leased");
    store
        .record(
            None,
            &[RunReport {
                lease: &lease_ref(lease),
                outcome: Outcome::Failed {
                    kind: warden_core::FailureKind::HostError,
                    message: "the host failed",
                },
                usage: &pb::Usage::default(),
            }],
        )
        .unwrap();
    assert!(
        waiting(&retried).starts_with("retry backoff after attempt 1: next attempt in "),
        "{}",
        waiting(&retried)
    );

    // A list says the same; runs not queued say nothing.
    let mut listed = store
        .list_runs(&RunFilter {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    store.explain_waiting(&mut listed, 0).unwrap();
    let said = |id: &str| &listed.iter().find(|r| r.run_id == id).unwrap().waiting;
    assert_eq!(said(&y2), &waiting(&y2));
    assert_eq!(said(&gpu), &waiting(&gpu));
    assert_eq!(said(&first), "");

    // A node that stopped heartbeating takes nothing: it does not count.
    let now = now_ms();
    let listed_since = |since: i64| {
        let mut run = store.get_run(None, &busy).unwrap().unwrap();
        store
            .explain_waiting(std::slice::from_mut(&mut run), since)
            .unwrap();
        run.waiting
    };
    assert_eq!(
        listed_since(now + 60_000),
        "no node is ready",
        "no node heartbeat in the future"
    );
}

on_both_backends!(
    a_queued_run_says_what_holds_it_back,
    usage_is_summed_per_tenant_agent_and_day_once_per_result,
    a_spent_daily_token_quota_closes_its_tenant_only,
    each_free_slot_goes_to_the_tenant_with_the_fewest_runs_in_flight,
    every_tenant_with_queued_runs_gets_slots,
    concurrency_limits_make_runs_wait_not_fail,
    a_spent_daily_budget_closes_its_tenant_only,
);
