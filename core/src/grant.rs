//! What a run may use: [`Grant`] (deny by default), the model allow-list
//! rule ([`model_allowed`]) and the node's ceiling on grants
//! ([`NodePolicy`]), which clamps with the same covering rule as manifests
//! ([`crate::pattern::HttpPattern::covers`]).

use crate::pattern::{HttpPattern, PatternError, parse_patterns};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one run may use. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Grant {
    /// Outgoing HTTP: origin patterns (see [`crate::pattern`]).
    pub http: Vec<String>,
    /// LLM models the run may use; `*` allows the provider's every model.
    pub models: Vec<String>,
    /// Key-value storage in the agent's own namespace.
    pub kv: bool,
    /// A fresh scratch directory, preopened at `/scratch`.
    pub scratch_dir: bool,
    /// Config values the agent reads through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
}

/// Whether `model` is on the allow-list `allowed` (`*` allows any model).
pub fn model_allowed(allowed: &[String], model: &str) -> bool {
    allowed.iter().any(|a| a == "*" || a == model)
}

/// Whether some pattern of `outer` covers `inner`.
pub(crate) fn any_covers(outer: &[HttpPattern], inner: &HttpPattern) -> bool {
    outer.iter().any(|o| o.covers(inner))
}

/// The node's ceiling on grants: a run keeps only what this allows too
/// (the rest is dropped, and logged). Unset lists allow anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodePolicy {
    /// HTTP patterns a run's patterns must fall within. `*://*:*` admits
    /// public hosts only; an IP or CIDR grant must be named here literally.
    pub http: Option<Vec<String>>,
    /// Models a run may be granted (`*`: any).
    pub models: Option<Vec<String>>,
    pub kv: bool,
    pub scratch_dir: bool,
}

impl Default for NodePolicy {
    fn default() -> Self {
        NodePolicy {
            http: None,
            models: None,
            kv: true,
            scratch_dir: true,
        }
    }
}

impl NodePolicy {
    /// Checks the policy's own patterns (at config load).
    pub fn check(&self) -> Result<(), PatternError> {
        if let Some(http) = &self.http {
            parse_patterns(http)?;
        }
        Ok(())
    }

    /// `grant` without what this policy does not allow; says what it
    /// dropped. An HTTP pattern that does not parse is dropped too.
    pub fn restrict(&self, mut grant: Grant) -> (Grant, Vec<String>) {
        let mut dropped = Vec::new();
        if let Some(allowed) = &self.http {
            let allowed: Vec<HttpPattern> = allowed.iter().filter_map(|a| a.parse().ok()).collect();
            grant.http.retain(|h| {
                let ok = h
                    .parse::<HttpPattern>()
                    .is_ok_and(|h| any_covers(&allowed, &h));
                if !ok {
                    dropped.push(format!("http {h}"));
                }
                ok
            });
        }
        if let Some(allowed) = &self.models {
            grant.models.retain(|m| {
                let ok = model_allowed(allowed, m);
                if !ok {
                    dropped.push(format!("model {m}"));
                }
                ok
            });
        }
        if grant.kv && !self.kv {
            grant.kv = false;
            dropped.push("kv".into());
        }
        if grant.scratch_dir && !self.scratch_dir {
            grant.scratch_dir = false;
            dropped.push("scratch_dir".into());
        }
        (grant, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_policy_drops_what_it_does_not_allow() {
        let policy: NodePolicy = toml::from_str(
            r#"
            http = ["https://*.example.com"]
            models = ["small"]
            kv = false
        "#,
        )
        .unwrap();
        let grant = Grant {
            http: vec!["https://api.example.com".into(), "https://evil.net".into()],
            models: vec!["small".into(), "big".into()],
            kv: true,
            scratch_dir: true,
            ..Default::default()
        };
        let (kept, dropped) = policy.restrict(grant);
        assert_eq!(kept.http, ["https://api.example.com"]);
        assert_eq!(kept.models, ["small"]);
        assert!(!kept.kv && kept.scratch_dir);
        assert_eq!(dropped, ["http https://evil.net", "model big", "kv"]);
        // The default policy keeps everything.
        let all = Grant {
            kv: true,
            ..Default::default()
        };
        assert_eq!(NodePolicy::default().restrict(all.clone()).0, all);
    }

    #[test]
    fn a_public_hosts_policy_does_not_admit_addresses() {
        let policy = NodePolicy {
            http: Some(vec!["*://*:*".into()]),
            ..NodePolicy::default()
        };
        let grant = Grant {
            http: vec![
                "http://0.0.0.0/0:*".into(),
                "http://127.0.0.1:8080".into(),
                "http://intranet.internal:8080".into(),
                "https://api.example.com/v1".into(),
            ],
            ..Grant::default()
        };
        let (kept, dropped) = policy.restrict(grant);
        assert_eq!(kept.http, ["http://intranet.internal:8080"]);
        assert_eq!(dropped.len(), 3, "{dropped:?}");
        let bad = NodePolicy {
            http: Some(vec!["https://x/path".into()]),
            ..NodePolicy::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn models() {
        let list = ["small".to_string()];
        assert!(model_allowed(&list, "small"));
        assert!(!model_allowed(&list, "big"));
        assert!(model_allowed(&["*".to_string()], "big"));
        assert!(!model_allowed(&[], "small"));
    }
}
