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

use crate::budget::BudgetRequest;
use crate::grant::{Grant, any_covers, model_allowed};
use crate::pattern::{HttpPattern, PatternError, parse_patterns};
use serde::Deserialize;
use std::collections::BTreeSet;

/// A parsed capability manifest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub grant: DeclaredGrant,
    /// Budget defaults for runs that do not set their own.
    #[serde(default)]
    pub budget: BudgetRequest,
    /// How the agent is shown as a tool (MCP): a description and JSON
    /// Schemas of its input and output.
    #[serde(default)]
    pub tool: ToolSpec,
}

/// `[tool]`: the agent as a tool for MCP clients. The schemas are JSON
/// Schema documents written as JSON text, each an object's (a tool's
/// arguments are an object, which the run gets as its input; a tool with
/// an output schema answers an object).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<String>,
    #[serde(default)]
    pub output_schema: Option<String>,
}

impl ToolSpec {
    /// The input schema as JSON (an object's schema), if the manifest has
    /// one.
    pub fn input(&self) -> Option<serde_json::Value> {
        self.input_schema
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
    }

    /// The output schema as JSON, if the manifest has one.
    pub fn output(&self) -> Option<serde_json::Value> {
        self.output_schema
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
    }

    fn check(&self) -> Result<(), String> {
        for (key, text) in [
            ("input_schema", &self.input_schema),
            ("output_schema", &self.output_schema),
        ] {
            let Some(text) = text else { continue };
            let schema: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("[tool] {key} is not JSON: {e}"))?;
            let Some(fields) = schema.as_object() else {
                return Err(format!(
                    "[tool] {key} must be a JSON Schema (a JSON object)"
                ));
            };
            if fields.get("type").and_then(|t| t.as_str()) != Some("object") {
                return Err(format!(
                    "[tool] {key} must describe an object (\"type\": \"object\"): MCP tools take and give objects"
                ));
            }
        }
        Ok(())
    }
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

/// Why a manifest or a grant is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrantError {
    #[error("invalid capability manifest: {0}")]
    Manifest(String),
    #[error("{0}")]
    Pattern(#[from] PatternError),
    #[error("{agent} may not have this run's grant: {} {}", if *.has_manifest {
        "its capability manifest does not declare"
    } else {
        "it was published without a capability manifest, so it may use nothing; asked for"
    }, .beyond.join(", "))]
    Beyond {
        agent: String,
        has_manifest: bool,
        beyond: Vec<String>,
    },
}

impl Manifest {
    /// Parses manifest TOML; the error names the problem, down to the HTTP
    /// pattern and why it cannot be enforced.
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        let m: Manifest = toml::from_str(text).map_err(|e| GrantError::Manifest(e.to_string()))?;
        parse_patterns(&m.grant.http).map_err(|e| GrantError::Manifest(e.to_string()))?;
        m.budget
            .check()
            .map_err(|e| GrantError::Manifest(format!("[budget]: {e}")))?;
        m.tool.check().map_err(GrantError::Manifest)?;
        Ok(m)
    }
}

/// The grant a run gets, or an error listing everything asked for beyond
/// `manifest` (no manifest declares nothing).
///
/// With `as_declared` (what the CLI sends), the run starts from the
/// declaration and the ask narrows it: non-empty `http`/`models` replace
/// the declared lists, `kv = false` drops kv, `scratch_dir = true` asks for
/// a scratch dir. Without it, the ask is taken as it is. Config values are
/// always the ask's, and their keys must be declared. An HTTP pattern that
/// does not parse is refused with the reason.
pub fn grant_for(
    agent: &str,
    manifest: Option<&Manifest>,
    asked: &Grant,
    as_declared: bool,
) -> Result<Grant, GrantError> {
    let none = Manifest::default();
    let m = manifest.unwrap_or(&none);
    let mut grant = asked.clone();
    if as_declared {
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

    let declared = parse_patterns(&m.grant.http)?;
    let mut beyond = Vec::new();
    for h in &grant.http {
        let asked: HttpPattern = h.parse()?;
        if !any_covers(&declared, &asked) {
            beyond.push(format!("http {h}"));
        }
    }
    for model in &grant.models {
        if !model_allowed(&m.grant.models, model) {
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
    Err(GrantError::Beyond {
        agent: agent.to_string(),
        has_manifest: manifest.is_some(),
        beyond,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        [grant]
        http = ["https://api.example.com", "*://*:*"]
        models = ["small"]
        kv = true
        config = ["greeting"]
        [budget]
        timeout = "30s"
        max_tokens = 100
    "#;

    #[test]
    fn a_tool_section_describes_the_agent_and_its_schemas_are_checked() {
        let m = Manifest::parse(
            r#"
            [tool]
            description = "Greets someone"
            input_schema = '{"type": "object", "properties": {"name": {"type": "string"}}}'
            output_schema = '{"type": "object"}'
            "#,
        )
        .unwrap();
        assert_eq!(m.tool.description.as_deref(), Some("Greets someone"));
        assert_eq!(
            m.tool.input().unwrap()["properties"]["name"]["type"],
            "string"
        );
        assert_eq!(m.tool.output().unwrap()["type"], "object");
        for (bad, says) in [
            ("input_schema = '{not json'", "is not JSON"),
            ("input_schema = '[1]'", "a JSON object"),
            (
                "input_schema = '{\"type\": \"string\"}'",
                "must describe an object",
            ),
            (
                "output_schema = '{\"type\": \"array\"}'",
                "must describe an object",
            ),
            ("colour = 'red'", "unknown field"),
        ] {
            let e = Manifest::parse(&format!("[tool]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn asking_within_the_manifest_is_granted_and_beyond_is_refused() {
        let m = Manifest::parse(TEXT).unwrap();
        let cli_default = Grant {
            kv: true,
            ..Grant::default()
        };
        let declared = grant_for("a@1", Some(&m), &cli_default, true).unwrap();
        assert_eq!(declared.http, ["https://api.example.com", "*://*:*"]);
        assert_eq!(declared.models, ["small"]);
        assert!(declared.kv && !declared.scratch_dir);
        assert!(
            !grant_for("a@1", Some(&m), &Grant::default(), true)
                .unwrap()
                .kv
        );

        let narrower = Grant {
            models: vec!["small".into()],
            config: [("greeting".to_string(), "hi".to_string())].into(),
            ..Grant::default()
        };
        assert_eq!(
            grant_for("a@1", Some(&m), &narrower, false).unwrap(),
            narrower
        );

        let more = Grant {
            http: vec!["http://127.0.0.1:8080".into()],
            models: vec!["big".into()],
            scratch_dir: true,
            config: [("secret".to_string(), "x".to_string())].into(),
            ..Grant::default()
        };
        let err = grant_for("a@1", Some(&m), &more, false)
            .unwrap_err()
            .to_string();
        for part in [
            "http http://127.0.0.1:8080",
            "model big",
            "scratch_dir",
            "config key secret",
        ] {
            assert!(err.contains(part), "{err}");
        }
    }

    #[test]
    fn patterns_the_runtime_cannot_enforce_are_refused_at_publish_and_submit() {
        let err = Manifest::parse("[grant]\nhttp = [\"https://api.example.com/v1\"]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("https://api.example.com/v1")
                && err.contains("paths are not allowed in an origin pattern"),
            "{err}"
        );
        let m = Manifest::parse(TEXT).unwrap();
        let ask = Grant {
            http: vec!["https://api.example.com/v1".into()],
            ..Grant::default()
        };
        let err = grant_for("a@1", Some(&m), &ask, false).unwrap_err();
        assert!(matches!(err, GrantError::Pattern(_)), "{err}");
        assert!(err.to_string().contains("paths are not allowed"), "{err}");
    }

    #[test]
    fn no_manifest_gets_nothing() {
        let cli_default = Grant {
            kv: true,
            ..Grant::default()
        };
        assert_eq!(
            grant_for("a@1", None, &cli_default, true).unwrap(),
            Grant::default()
        );
        let err = grant_for("a@1", None, &cli_default, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a capability manifest"), "{err}");
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let err = Manifest::parse("[grant]\nhttp = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid capability manifest"), "{err}");
        let err = Manifest::parse("[grnat]").unwrap_err().to_string();
        assert!(err.contains("grnat"), "{err}");
        let err = Manifest::parse("[budget]\ntimeout = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a duration"), "{err}");
        let err = Manifest::parse("[budget]\nmax_cost_usd = -1.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_cost_usd"), "{err}");
    }
}
