//! [`EngineValidator`]: checks that bytes are a component of the agent
//! world with a compile-only engine; the control plane's publish check, and
//! `inspect`'s.

use warden_control_plane::ComponentValidator;
use warden_host::AgentEngine;
use warden_host::config::EngineConfig;
use warden_host::engine::Quiet;

/// Validates published components with a compile-only engine.
pub(crate) struct EngineValidator(AgentEngine);

impl EngineValidator {
    /// A validator with its own one-slot engine and no compile cache.
    pub(crate) fn new() -> anyhow::Result<Self> {
        let config = EngineConfig {
            pool_slots: 1,
            cache: false,
            ..EngineConfig::default()
        };
        Ok(EngineValidator(AgentEngine::new(&config, 64 << 20, None)?))
    }

    /// A validator on an existing engine (the control plane's, which keeps
    /// a compile cache).
    pub(crate) fn with_engine(engine: AgentEngine) -> Self {
        EngineValidator(engine)
    }

    /// Loads `bytes` as an agent; its imports and exports.
    pub(crate) fn load(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let (agent, _) = self
            .0
            .load(name, bytes, &Quiet)
            .map_err(|e| e.to_string())?;
        Ok(agent.interface(self.0.engine()))
    }
}

impl ComponentValidator for EngineValidator {
    fn validate(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.0
            .load(name, bytes, &Quiet)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn inspect(&self, name: &str, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
        self.load(name, bytes)
    }
}
