//! Property tests over the parsers that take outside input: HTTP patterns,
//! capability manifests, agent references and names, and (with `proto`)
//! wire budgets and grants. Each is named `fuzz_*`: CI runs proptest's
//! default number of cases; `scripts/fuzz.sh DURATION` runs them for
//! longer with `PROPTEST_CASES` raised.

use crate::pattern::HttpPattern;
use crate::{BudgetRequest, Grant, Manifest, NodePolicy, RunBudget, grant_for};
use proptest::prelude::*;

/// Origins built from likely parts (most parse), near misses, and noise.
fn pattern_text() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("http"),
        Just("https"),
        Just("*"),
        Just("ftp"),
        Just("")
    ];
    let host = prop_oneof![
        "[a-z]{1,8}(\\.[a-z]{1,5}){0,2}",
        "\\*\\.[a-z]{1,8}\\.[a-z]{2,3}",
        Just("*".to_string()),
        "(10|127|192|0)\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,2})?",
        Just("[::1]".to_string()),
        Just("[fe80::/10]".to_string()),
        Just("0.0.0.0/0".to_string()),
        "[ -~]{0,6}",
    ];
    let port = prop_oneof![
        Just(String::new()),
        Just(":*".to_string()),
        (0u32..70_000).prop_map(|p| format!(":{p}")),
    ];
    let tail = prop_oneof![
        8 => Just(String::new()),
        1 => "/[ -~]{0,6}",
        1 => "\\?[a-z]{0,4}",
    ];
    prop_oneof![
        8 => (scheme, host, port, tail).prop_map(|(s, h, p, t)| format!("{s}://{h}{p}{t}")),
        1 => "[ -~]{0,40}",
        1 => any::<String>(),
    ]
}

/// TOML documents built from the manifest's keys, with values of any kind.
fn manifest_text() -> impl Strategy<Value = String> {
    let patterns = proptest::collection::vec(pattern_text(), 0..3).prop_map(|v| {
        let quoted: Vec<String> = v.iter().map(|p| toml_string(p)).collect();
        format!("http = [{}]", quoted.join(", "))
    });
    let grant_line = prop_oneof![
        4 => patterns,
        1 => "models = \\[(\"[a-z*-]{1,8}\"(, )?){0,2}\\]",
        1 => prop_oneof![Just("kv = true"), Just("kv = false"), Just("kv = 1")].prop_map(String::from),
        1 => prop_oneof![Just("scratch_dir = true"), Just("unknown = 1")].prop_map(String::from),
    ];
    let budget_line = prop_oneof![
        prop_oneof![Just("30s"), Just("0s"), Just("1m"), Just("x"), Just("-1s")]
            .prop_map(|t| format!("timeout = \"{t}\"")),
        any::<u64>().prop_map(|n| format!("fuel = {}", n >> 1)),
        (0u64..1 << 40).prop_map(|n| format!("max_memory_bytes = {n}")),
        prop_oneof![
            Just("nan"),
            Just("-inf"),
            Just("-1.0"),
            Just("0.5"),
            Just("1e300")
        ]
        .prop_map(|c| format!("max_cost_usd = {c}")),
        (0u64..1 << 40).prop_map(|n| format!("max_disk_bytes = {n}")),
    ];
    (
        proptest::collection::vec(grant_line, 0..4),
        proptest::collection::vec(budget_line, 0..3),
    )
        .prop_map(|(grant, budget)| {
            format!(
                "[grant]\n{}\n[budget]\n{}\n",
                grant.join("\n"),
                budget.join("\n")
            )
        })
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #[test]
    fn fuzz_http_patterns_never_panic_and_round_trip(text in pattern_text()) {
        if let Ok(p) = text.parse::<HttpPattern>() {
            let again: HttpPattern = p.to_string().parse().expect("a parsed pattern re-parses");
            prop_assert_eq!(&again, &p);
            prop_assert!(p.covers(&p), "{} does not cover itself", p);
        }
    }

    #[test]
    fn fuzz_manifests_never_panic_and_a_parsed_one_grants_within_itself(
        text in prop_oneof![manifest_text(), any::<String>()],
        http in proptest::collection::vec(pattern_text(), 0..3),
        as_declared in any::<bool>(),
    ) {
        if let Ok(m) = Manifest::parse(&text) {
            prop_assert!(m.budget.check().is_ok());
            let asked = Grant { http, ..Grant::default() };
            if let Ok(grant) = grant_for("agent", Some(&m), &asked, as_declared) {
                // What was granted is within what was declared.
                let declared = crate::pattern::parse_patterns(&m.grant.http).unwrap();
                for p in crate::pattern::parse_patterns(&grant.http).unwrap() {
                    prop_assert!(declared.iter().any(|d| d.covers(&p)), "{} beyond the manifest", p);
                }
            }
        }
    }

    #[test]
    fn fuzz_references_and_names_never_panic(text in any::<String>()) {
        if let Ok((name, version)) = crate::split_reference(&text) {
            prop_assert!(crate::check_name("agent name", name).is_ok());
            prop_assert!(crate::check_name("version", version).is_ok());
        }
        let _ = crate::name_and_version(&text);
        let escaped = crate::escape_controls(&text);
        prop_assert!(!escaped.chars().any(char::is_control));
    }

    #[test]
    fn fuzz_node_policies_never_widen_a_grant(
        policy_http in proptest::collection::vec(pattern_text(), 0..3),
        asked_http in proptest::collection::vec(pattern_text(), 0..3),
    ) {
        let policy = NodePolicy { http: Some(policy_http), ..NodePolicy::default() };
        if policy.check().is_ok() {
            let (grant, _dropped) = policy.restrict(Grant { http: asked_http, ..Grant::default() });
            let allowed = crate::pattern::parse_patterns(policy.http.as_deref().unwrap()).unwrap();
            for p in crate::pattern::parse_patterns(&grant.http).unwrap_or_default() {
                prop_assert!(allowed.iter().any(|a| a.covers(&p)), "{} beyond the policy", p);
            }
        }
    }
}

#[cfg(feature = "proto")]
mod wire {
    use super::*;
    use warden_proto::v1 as pb;

    fn any_float() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(-1.0)),
            any::<f64>().prop_map(Some),
        ]
    }

    fn any_budget() -> impl Strategy<Value = pb::Budget> {
        (any::<[Option<u64>; 8]>(), any::<Option<u32>>(), any_float()).prop_map(
            |(n, requests, cost)| pb::Budget {
                timeout_ms: n[0],
                fuel: n[1],
                max_memory_bytes: n[2],
                max_tokens: n[3],
                max_cost_usd: cost,
                max_http_requests: requests,
                max_http_response_bytes: n[4],
                max_output_bytes: n[5],
                max_log_bytes: n[6],
                max_disk_bytes: n[7],
            },
        )
    }

    proptest! {
        #[test]
        fn fuzz_wire_budgets_are_checked_and_clamp_within_the_node(b in any_budget()) {
            let request = BudgetRequest::from(Some(b));
            if request.check().is_ok() {
                let node = RunBudget {
                    max_cost_usd: Some(1.0),
                    ..RunBudget::default()
                };
                let run = request.resolve().clamp_to(&node);
                prop_assert!(run.max_cost_usd.is_some_and(|c| c <= 1.0));
                prop_assert!(run.max_memory_bytes <= node.max_memory_bytes);
                prop_assert!(run.max_disk_bytes <= node.max_disk_bytes);
                prop_assert!(run.timeout <= node.timeout);
            } else {
                // Refused only for a reason: a zero or a bad cost.
                let cost_bad = request.max_cost_usd.is_some_and(|c| !c.is_finite() || c < 0.0);
                prop_assert!(
                    cost_bad || request.timeout.is_some_and(|t| t.is_zero()) || request.max_memory_bytes == Some(0),
                    "refused {:?}", request
                );
            }
        }

        #[test]
        fn fuzz_wire_grants_never_panic(
            http in proptest::collection::vec(pattern_text(), 0..3),
            models in proptest::collection::vec(any::<String>(), 0..3),
            kv in any::<bool>(),
            scratch in any::<bool>(),
            config in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..3),
        ) {
            let g = Grant::from(pb::Grant {
                http,
                models,
                kv,
                scratch_dir: scratch,
                config: config.into_iter().collect(),
                as_declared: false,
            });
            let _ = grant_for("agent", None, &g, false);
            let back = Grant::from(pb::Grant::from(&g));
            prop_assert_eq!(back, g);
        }
    }
}
