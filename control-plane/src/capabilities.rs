//! The capability manifest: a small TOML file an agent is published with,
//! declaring what it may use (HTTP origins, models, kv, a scratch dir,
//! config keys) and its default budget. A run's grant is the intersection
//! of the manifest, what the submit asks for and the node's policy; asking
//! for more than the manifest declares is refused before the run exists,
//! and a component published without a manifest gets nothing.
//!
//! ```toml
//! [grant]
//! http = ["https://api.example.com", "https://*.wikipedia.org"]
//! models = ["gpt-4o-mini"]
//! kv = true
//! scratch_dir = false
//! config = ["greeting"]
//!
//! [budget]
//! timeout = "30s"
//! max_tokens = 2000
//! ```

use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;
use warden_proto::v1::{Budget, Grant};

/// A parsed capability manifest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub grant: DeclaredGrant,
    #[serde(default)]
    pub budget: DefaultBudget,
}

/// What the agent may use, at most.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredGrant {
    /// HTTP origin patterns, as `--allow-http` takes them.
    #[serde(default)]
    pub http: Vec<String>,
    /// LLM models (`*`: any).
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub kv: bool,
    #[serde(default)]
    pub scratch_dir: bool,
    /// Config keys the agent reads; a submit may set only these.
    #[serde(default)]
    pub config: Vec<String>,
}

/// Budget defaults for runs that do not set their own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultBudget {
    #[serde(default, with = "humantime_serde_opt")]
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    pub max_memory_bytes: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub max_http_requests: Option<u32>,
}

mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 30s: {e}"))
        })
    }
}

impl Manifest {
    /// Parses manifest TOML; the error names the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| format!("invalid capability manifest: {e}"))?;
        for pattern in &m.grant.http {
            Origin::parse(pattern).map_err(|e| format!("invalid capability manifest: {e}"))?;
        }
        Ok(m)
    }

    /// The grant of a run that asks for what the manifest declares.
    pub fn declared(&self) -> Grant {
        Grant {
            http: self.grant.http.clone(),
            models: self.grant.models.clone(),
            kv: self.grant.kv,
            scratch_dir: self.grant.scratch_dir,
            config: Default::default(),
            as_declared: false,
        }
    }

    /// Fills the budget fields a submit left unset from the defaults.
    pub fn apply_defaults(&self, budget: &mut Budget) {
        let d = &self.budget;
        if budget.timeout_ms == 0 {
            budget.timeout_ms = d.timeout.map_or(0, |t| t.as_millis() as u64);
        }
        if budget.fuel.is_none() {
            budget.fuel = d.fuel;
        }
        if budget.max_memory_bytes == 0 {
            budget.max_memory_bytes = d.max_memory_bytes.unwrap_or(0);
        }
        if budget.max_tokens.is_none() {
            budget.max_tokens = d.max_tokens;
        }
        if budget.max_cost_usd.is_none() {
            budget.max_cost_usd = d.max_cost_usd;
        }
        if budget.max_http_requests == 0 {
            budget.max_http_requests = d.max_http_requests.unwrap_or(0);
        }
    }
}

/// The grant a run gets, or an error listing everything asked for beyond
/// `manifest` (no manifest declares nothing).
///
/// With `asked.as_declared` (what the CLI sends), the run starts from the
/// declaration and the ask narrows it: non-empty `http`/`models` replace
/// the declared lists, `kv = false` drops kv, `scratch_dir = true` asks for
/// a scratch dir. Without it, the ask is taken as it is. Config values are
/// always the ask's, and their keys must be declared.
pub fn grant_for(agent: &str, manifest: Option<&Manifest>, asked: &Grant) -> Result<Grant, String> {
    let none = Manifest::default();
    let m = manifest.unwrap_or(&none);
    let mut grant = asked.clone();
    if asked.as_declared {
        let pick = |asked: &Vec<String>, declared: &Vec<String>| {
            if asked.is_empty() {
                declared.clone()
            } else {
                asked.clone()
            }
        };
        grant.http = pick(&asked.http, &m.grant.http);
        grant.models = pick(&asked.models, &m.grant.models);
        grant.kv = asked.kv && m.grant.kv;
        grant.scratch_dir = asked.scratch_dir || m.grant.scratch_dir;
    }
    grant.as_declared = false;

    let mut beyond = Vec::new();
    for h in &grant.http {
        if !m.grant.http.iter().any(|d| http_pattern_covers(d, h)) {
            beyond.push(format!("http {h}"));
        }
    }
    for model in &grant.models {
        if !m.grant.models.iter().any(|d| d == model || d == "*") {
            beyond.push(format!("model {model}"));
        }
    }
    if grant.kv && !m.grant.kv {
        beyond.push("kv".into());
    }
    if grant.scratch_dir && !m.grant.scratch_dir {
        beyond.push("scratch_dir".into());
    }
    let keys: BTreeSet<&String> = m.grant.config.iter().collect();
    for key in grant.config.keys() {
        if !keys.contains(key) {
            beyond.push(format!("config key {key}"));
        }
    }
    if beyond.is_empty() {
        return Ok(grant);
    }
    let what = if manifest.is_some() {
        "its capability manifest does not declare"
    } else {
        "it was published without a capability manifest, so it may use nothing; asked for"
    };
    Err(format!(
        "{agent} may not have this run's grant: {what} {}",
        beyond.join(", ")
    ))
}

/// An HTTP origin pattern, as `--allow-http` takes it:
/// `scheme://host[:port]`, with `*` for any scheme, host or port and
/// `*.example.com` for subdomains; no port means the scheme's default.
#[derive(Debug, Clone, PartialEq)]
struct Origin {
    scheme: Option<String>,
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
enum Host {
    Any,
    /// `*.suffix`: subdomains of suffix.
    Below(String),
    Exact(String),
}

impl Origin {
    fn parse(text: &str) -> Result<Origin, String> {
        let bad = |why: &str| format!("http pattern `{text}`: {why}");
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            bad("expected scheme://host[:port], e.g. https://api.example.com or *://*:*")
        })?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "*" => None,
            s @ ("http" | "https") => Some(s.to_string()),
            _ => return Err(bad("the scheme must be http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (p == "*" || p.parse::<u16>().is_ok()) => {
                (h, Some(p))
            }
            _ => (rest, None),
        };
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse().map_err(|_| bad("bad port"))?),
            None => match scheme.as_deref() {
                Some("http") => Some(80),
                Some("https") => Some(443),
                _ => None,
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            Host::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            Host::Below(suffix.to_string())
        } else if host.is_empty() || host.contains('*') {
            return Err(bad("the host must be a name, *, or *.example.com"));
        } else {
            Host::Exact(host)
        };
        Ok(Origin { scheme, host, port })
    }

    /// Whether every URL `other` admits, this admits too.
    fn covers(&self, other: &Origin) -> bool {
        let below = |h: &str, suffix: &str| h.ends_with(&format!(".{suffix}"));
        let host = match (&self.host, &other.host) {
            (Host::Any, _) => true,
            (Host::Below(s), Host::Below(t)) => s == t || below(t, s),
            (Host::Below(s), Host::Exact(h)) => below(h, s),
            (Host::Exact(a), Host::Exact(b)) => a == b,
            _ => false,
        };
        host && (self.scheme.is_none() || self.scheme == other.scheme)
            && (self.port.is_none() || self.port == other.port)
    }
}

/// Whether the HTTP pattern `declared` admits every URL `asked` admits
/// (an unparsable pattern admits and is admitted by nothing).
pub fn http_pattern_covers(declared: &str, asked: &str) -> bool {
    match (Origin::parse(declared), Origin::parse(asked)) {
        (Ok(d), Ok(a)) => d.covers(&a),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        [grant]
        http = ["https://api.example.com"]
        models = ["small"]
        kv = true
        config = ["greeting"]
        [budget]
        timeout = "30s"
        max_tokens = 100
    "#;

    #[test]
    fn asking_within_the_manifest_is_granted_and_beyond_is_refused() {
        let m = Manifest::parse(TEXT).unwrap();
        let cli_default = Grant {
            as_declared: true,
            kv: true,
            ..Grant::default()
        };
        let declared = grant_for("a@1", Some(&m), &cli_default).unwrap();
        assert_eq!(declared.http, ["https://api.example.com"]);
        assert_eq!(declared.models, ["small"]);
        assert!(declared.kv && !declared.scratch_dir);
        let no_kv = Grant {
            as_declared: true,
            ..Grant::default()
        };
        assert!(!grant_for("a@1", Some(&m), &no_kv).unwrap().kv);

        let narrower = Grant {
            models: vec!["small".into()],
            config: [("greeting".to_string(), "hi".to_string())].into(),
            ..Grant::default()
        };
        assert_eq!(grant_for("a@1", Some(&m), &narrower).unwrap(), narrower);

        let more = Grant {
            http: vec!["https://evil.example".into()],
            models: vec!["big".into()],
            scratch_dir: true,
            config: [("secret".to_string(), "x".to_string())].into(),
            ..Grant::default()
        };
        let err = grant_for("a@1", Some(&m), &more).unwrap_err();
        for part in [
            "http https://evil.example",
            "model big",
            "scratch_dir",
            "config key secret",
        ] {
            assert!(err.contains(part), "{err}");
        }
    }

    #[test]
    fn wildcards_cover_what_they_name() {
        assert!(http_pattern_covers("*://*:*", "http://127.0.0.1:8080"));
        assert!(http_pattern_covers(
            "https://*.example.com",
            "https://api.example.com"
        ));
        assert!(http_pattern_covers(
            "https://*.example.com",
            "https://api.example.com:443"
        ));
        assert!(http_pattern_covers(
            "https://*.example.com",
            "https://*.api.example.com"
        ));
        assert!(!http_pattern_covers(
            "https://*.example.com",
            "https://example.com"
        ));
        assert!(!http_pattern_covers(
            "https://*.example.com",
            "https://example.com.evil.net"
        ));
        assert!(!http_pattern_covers(
            "https://*.example.com",
            "http://api.example.com"
        ));
        assert!(!http_pattern_covers(
            "https://api.example.com",
            "https://api.example.com:8443"
        ));
        assert!(!http_pattern_covers(
            "https://a.example.com",
            "https://b.example.com"
        ));
        assert!(!http_pattern_covers("https://a.example.com", "*://*:*"));
        assert!(Manifest::parse("[grant]\nhttp = [\"example.com\"]").is_err());
    }

    #[test]
    fn no_manifest_gets_nothing() {
        let cli_default = Grant {
            as_declared: true,
            kv: true,
            ..Grant::default()
        };
        assert_eq!(
            grant_for("a@1", None, &cli_default).unwrap(),
            Grant::default()
        );
        let err = grant_for(
            "a@1",
            None,
            &Grant {
                kv: true,
                ..Grant::default()
            },
        )
        .unwrap_err();
        assert!(err.contains("without a capability manifest"), "{err}");
    }

    #[test]
    fn budget_defaults_fill_only_what_is_unset() {
        let m = Manifest::parse(TEXT).unwrap();
        let mut b = Budget {
            max_tokens: Some(5),
            ..Budget::default()
        };
        m.apply_defaults(&mut b);
        assert_eq!((b.timeout_ms, b.max_tokens), (30_000, Some(5)));
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let err = Manifest::parse("[grant]\nhttp = 3").unwrap_err();
        assert!(err.contains("invalid capability manifest"), "{err}");
        let err = Manifest::parse("[grnat]").unwrap_err();
        assert!(err.contains("grnat"), "{err}");
        let err = Manifest::parse("[budget]\ntimeout = \"soon\"").unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
    }
}
