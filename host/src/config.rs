//! Node configuration: [`NodeConfig`], read from a TOML file, overridden by
//! `WARDEN_*` environment variables, overridden by CLI flags (at the edge).

use crate::capability::llm::LlmConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use warden_core::{NodePolicy, RunBudget};

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
                max_disk_bytes: 1 << 30,
            },
            llm: LlmConfig::default(),
            kv: KvConfig::default(),
        }
    }
}

/// `$XDG_DATA_HOME/warden`, else `~/.local/share/warden`, else `./.warden`:
/// where nodes and `warden run` keep their data unless told otherwise.
pub fn default_data_dir() -> PathBuf {
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
    /// Most host resources (handles: HTTP fields, requests, bodies,
    /// streams, kv buckets, ...) one run may hold at once; past it the run
    /// fails `resource_limit`.
    pub max_handles: usize,
    /// Most bytes one host resource may hold: a `fields` map's names and
    /// values, an outgoing body's buffer. A run may hold at most its memory
    /// budget / this many resources (at least 256, at most `max_handles`),
    /// so what a guest makes the host hold is counted against its memory
    /// budget.
    pub max_handle_bytes: usize,
    /// Most files, directories and links one run's scratch directory may
    /// hold (its bytes are the budget's `max_disk_bytes`).
    pub max_scratch_entries: usize,
    /// Bounds on compiling a component (`[engine.compile]`).
    pub compile: crate::compile::CompileLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pool_slots: 128,
            fuel: true,
            max_wasm_stack: 1 << 20,
            cache: true,
            cache_max_bytes: 2 << 30,
            max_handles: 10_000,
            max_handle_bytes: 32 << 10,
            max_scratch_entries: 10_000,
            compile: Default::default(),
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
    /// A PostgreSQL database (`url`) that nodes share: an agent's state
    /// follows it from node to node.
    Postgres,
    /// A Redis server (`url`) that nodes share, likewise.
    Redis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    pub backend: KvBackend,
    /// For `postgres` (postgres://USER:PASSWORD@HOST:PORT/DB) and `redis`
    /// (redis://[:PASSWORD@]HOST:PORT[/DB]).
    pub url: Option<String>,
    /// For `redis`: put before every key.
    pub prefix: String,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            backend: KvBackend::Sqlite,
            url: None,
            prefix: "warden:kv:".into(),
        }
    }
}

impl KvConfig {
    /// The `url` a shared backend needs, or why it cannot be used.
    fn check(&self) -> Result<(), ConfigError> {
        let shared = matches!(self.backend, KvBackend::Postgres | KvBackend::Redis);
        if shared && self.url.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid(format!(
                "[kv] backend = \"{}\" needs url = \"...\" (the server all nodes share)",
                if self.backend == KvBackend::Redis {
                    "redis"
                } else {
                    "postgres"
                }
            )));
        }
        if !shared && self.url.is_some() {
            return Err(ConfigError::Invalid(
                "[kv] url is for backend = \"postgres\" or \"redis\"; this backend is local".into(),
            ));
        }
        Ok(())
    }
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
    #[error("invalid [policy] in the node config: {0}")]
    Policy(#[from] warden_core::PatternError),
    #[error("invalid [limits] in the node config: {0}")]
    Limits(#[from] warden_core::BudgetError),
    #[error("invalid node config: {0}")]
    Invalid(String),
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
        config.policy.check()?;
        config.limits.check()?;
        config.kv.check()?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A node config whose `[limits]` make no sense is refused when it is
    /// loaded, naming the key, rather than clamping every run into it.
    #[test]
    fn nonsense_limits_in_a_config_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let load = |limits: &str| {
            std::fs::write(&path, format!("[limits]\n{limits}\n")).unwrap();
            NodeConfig::load(Some(&path))
        };
        for (limits, names) in [
            ("timeout = \"0s\"", "timeout must be more than 0"),
            (
                "max_memory_bytes = 0",
                "max_memory_bytes must be more than 0",
            ),
            ("max_cost_usd = nan", "max_cost_usd"),
            ("max_cost_usd = inf", "max_cost_usd"),
            ("max_cost_usd = -1.0", "max_cost_usd"),
        ] {
            match load(limits) {
                Err(e @ ConfigError::Limits(_)) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("invalid [limits]") && e.contains(names),
                        "{limits}: {e}"
                    );
                }
                other => panic!("{limits}: loaded as {other:?}"),
            }
        }
        // Out of a field's range: refused by the parser, naming the key.
        let e = load("max_output_bytes = -1").unwrap_err().to_string();
        assert!(e.contains("max_output_bytes"), "{e}");
        // Sensible limits load.
        let c = load("timeout = \"1m\"\nmax_cost_usd = 0.5").unwrap();
        assert_eq!(c.limits.max_cost_usd, Some(0.5));
    }
}
