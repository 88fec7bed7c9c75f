//! The control plane's config file (`warden control-plane --config`): its
//! own format, not the node's. The control plane keeps its data in
//! `data_dir` and checks published and submitted components with an
//! engine built from `[engine]` (its compile bounds above all); `[limits]`,
//! `[policy]`, `[llm]` and `[kv]` are a node's and are refused here.

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use warden_host::config::{EngineConfig, NodeConfig};

/// What the control plane reads from its config file and the environment.
#[derive(Debug, Clone)]
pub(super) struct ServerConfig {
    /// Where the control plane keeps its database, CA, keys and compile
    /// cache.
    pub(super) data_dir: PathBuf,
    /// The engine components are checked with.
    pub(super) engine: EngineConfig,
}

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    engine: EngineConfig,
}

impl ServerConfig {
    /// Reads `path` (none: defaults). The data dir is `--data-dir`
    /// (`flag`), else `WARDEN_DATA_DIR`, else the file's `data_dir`, else
    /// the default a node has too.
    pub(super) fn load(path: Option<&Path>, flag: Option<&PathBuf>) -> anyhow::Result<Self> {
        let file: File = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text).map_err(|e| {
                    let node_setting = ["limits", "policy", "llm", "kv"]
                        .iter()
                        .any(|s| e.message().starts_with(&format!("unknown field `{s}`")));
                    let hint = if node_setting {
                        "\n(a control plane's config has data_dir and [engine] only: \
                         [limits], [policy], [llm] and [kv] are set on each node)"
                    } else {
                        ""
                    };
                    anyhow::anyhow!("{}: {e}{hint}", path.display())
                })?
            }
            None => File::default(),
        };
        let data_dir = flag
            .cloned()
            .or_else(|| std::env::var_os("WARDEN_DATA_DIR").map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| NodeConfig::default().data_dir);
        Ok(ServerConfig {
            data_dir,
            engine: file.engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ServerConfig;

    #[test]
    fn a_node_setting_in_a_control_plane_config_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/warden\"\n[engine.compile]\ntimeout = \"30s\"\n",
        )
        .unwrap();
        let config = ServerConfig::load(Some(&path), None).unwrap();
        assert_eq!(config.engine.compile.timeout.as_secs(), 30);
        let flag = dir.path().join("flagged");
        assert_eq!(
            ServerConfig::load(Some(&path), Some(&flag))
                .unwrap()
                .data_dir,
            flag
        );

        std::fs::write(&path, "[kv]\nbackend = \"redis\"\n").unwrap();
        let e = ServerConfig::load(Some(&path), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `kv`"), "{e}");
        assert!(e.contains("[kv] are set on each node"), "{e}");
    }
}
