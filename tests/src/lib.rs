//! Support for Warden's integration tests: the guest components (built by
//! `build.rs`), loopback stand-ins for services we don't own
//! ([`http_server::TestServer`], [`fake_openai::FakeOpenAi`],
//! [`otlp::OtlpReceiver`]) and helpers
//! to build a sandbox.

pub mod bombs;
pub mod cluster;
pub mod fake_openai;
pub mod http_server;
pub mod in_process;
pub mod oci_registry;
pub mod otlp;

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

use std::path::Path;
use warden_host::config::NodeConfig;
use warden_host::{AgentComponent, Sandbox};

/// A sandbox whose data lives under `dir`, with an optional LLM provider.
pub fn sandbox(dir: &Path, llm_base_url: Option<String>) -> Sandbox {
    sandbox_with(dir, |c| c.llm.base_url = llm_base_url)
}

/// A sandbox whose data lives under `dir`, with `edit` applied to the
/// default node config first.
pub fn sandbox_with(dir: &Path, edit: impl FnOnce(&mut NodeConfig)) -> Sandbox {
    let mut config = NodeConfig {
        data_dir: dir.to_path_buf(),
        ..NodeConfig::default()
    };
    config.engine.pool_slots = 16;
    config.limits.max_memory_bytes = 256 << 20;
    config.llm.api_key_env = "WARDEN_TEST_LLM_KEY".into();
    edit(&mut config);
    Sandbox::from_config(&config).expect("sandbox builds")
}

/// Loads a component file into `sandbox`.
pub fn load(sandbox: &Sandbox, path: &str) -> AgentComponent {
    let bytes = std::fs::read(path).expect("component was built");
    sandbox
        .engine()
        .load(path, &bytes, &warden_host::engine::Quiet)
        .expect("component loads")
        .0
}
