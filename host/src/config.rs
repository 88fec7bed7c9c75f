//! Node configuration: [`NodeConfig`], read from a TOML file, overridden by
//! `WARDEN_*` environment variables, overridden by CLI flags (at the edge).

use crate::budget::RunBudget;
use crate::capability::llm::LlmConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its key-value file, compile cache and scratch
    /// directories (env `WARDEN_DATA_DIR`).
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    /// The node's maxima: every run's budget is clamped to these.
    pub limits: RunBudget,
    pub llm: LlmConfig,
    pub kv: KvConfig,
    /// The most any run on this node may be granted.
    pub policy: NodePolicy,
}

/// The node's ceiling on grants: a run keeps only what this allows too
/// (the rest is dropped, and logged). Unset lists allow anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodePolicy {
    /// HTTP patterns (as `--allow-http`) a run's patterns must fall within.
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
    /// `grant` without what this policy does not allow; says what it
    /// dropped.
    pub fn restrict(&self, mut grant: crate::Grant) -> (crate::Grant, Vec<String>) {
        let mut dropped = Vec::new();
        if let Some(allowed) = &self.http {
            grant.http.retain(|h| {
                let ok = allowed
                    .iter()
                    .any(|a| warden_control_plane::capabilities::http_pattern_covers(a, h));
                if !ok {
                    dropped.push(format!("http {h}"));
                }
                ok
            });
        }
        if let Some(allowed) = &self.models {
            grant.models.retain(|m| {
                let ok = allowed.iter().any(|a| a == m || a == "*");
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

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: default_data_dir(),
            policy: NodePolicy::default(),
            engine: EngineConfig::default(),
            limits: RunBudget {
                timeout: std::time::Duration::from_secs(15 * 60),
                fuel: None,
                max_memory_bytes: 1 << 30,
                max_tokens: None,
                max_cost_usd: None,
                max_http_requests: 10_000,
                max_http_response_bytes: 1 << 30,
                max_output_bytes: 16 << 20,
                max_log_bytes: 16 << 20,
            },
            llm: LlmConfig::default(),
            kv: KvConfig::default(),
        }
    }
}

/// `$XDG_DATA_HOME/warden`, else `~/.local/share/warden`, else `./.warden`.
fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("warden");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/warden");
    }
    PathBuf::from(".warden")
}

/// Engine settings: fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Instances the pooling allocator keeps slots for: the most runs this
    /// node can hold at once.
    pub pool_slots: u32,
    /// Meter fuel, so runs can have a CPU budget and report fuel used.
    pub fuel: bool,
    /// Most bytes of wasm stack a run may use.
    pub max_wasm_stack: usize,
    /// Keep precompiled components on disk under the data dir.
    pub cache: bool,
    /// Most bytes the compile cache, and a node's component blobs, may each
    /// hold; least recently used entries are evicted beyond it.
    pub cache_max_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pool_slots: 128,
            fuel: true,
            max_wasm_stack: 1 << 20,
            cache: true,
            cache_max_bytes: 2 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// A SQLite file under the data dir.
    #[default]
    Sqlite,
    /// Process memory: gone when the process exits.
    Memory,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    pub backend: KvBackend,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl NodeConfig {
    /// Loads `path` (or the defaults when `None`), then applies the
    /// `WARDEN_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => NodeConfig::default(),
        };
        config.apply_env(|k| std::env::var(k).ok());
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(dir) = var("WARDEN_DATA_DIR") {
            self.data_dir = dir.into();
        }
        if let Some(url) = var("WARDEN_LLM_BASE_URL") {
            self.llm.base_url = Some(url);
        }
        if let Some(model) = var("WARDEN_LLM_DEFAULT_MODEL") {
            self.llm.default_model = Some(model);
        }
    }
}

/// `Duration` as a humantime string ("30s", "1m 30s") in TOML and JSON.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses a byte size: `65536`, `64KiB`, `64MiB`, `1GiB`, `10MB`, `1.5 GiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    Ok((num * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("10MB").unwrap(), 10_000_000);
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }

    #[test]
    fn toml_round_trips_and_env_overrides() {
        let text = r#"
            data_dir = "/tmp/w"
            [limits]
            timeout = "2m"
            max_tokens = 5000
            [llm]
            base_url = "http://127.0.0.1:1/v1"
            [llm.prices.small]
            input_per_mtok = 0.1
            output_per_mtok = 0.4
        "#;
        let mut c: NodeConfig = toml::from_str(text).unwrap();
        assert_eq!(c.limits.timeout, std::time::Duration::from_secs(120));
        assert_eq!(c.llm.prices["small"].output_per_mtok, 0.4);
        c.apply_env(|k| (k == "WARDEN_DATA_DIR").then(|| "/srv/w".to_string()));
        assert_eq!(c.data_dir, PathBuf::from("/srv/w"));
        assert!(toml::from_str::<NodeConfig>("nonsense = 1").is_err());
    }

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
        let grant = crate::Grant {
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
        let all = crate::Grant {
            kv: true,
            ..Default::default()
        };
        assert_eq!(NodePolicy::default().restrict(all.clone()).0, all);
    }
}
