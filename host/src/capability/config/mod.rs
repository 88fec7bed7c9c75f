//! Config values through `wasi:config/store`: read-only key/values from the
//! grant (the agent's manifest and the submit request), nothing else of the
//! host's environment.

use crate::bindings::config_store::{self, Error};
use std::collections::BTreeMap;

/// The config values of one run.
#[derive(Debug, Default)]
pub struct ConfigCtx {
    values: BTreeMap<String, String>,
}

impl ConfigCtx {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        ConfigCtx { values }
    }
}

impl config_store::Host for ConfigCtx {
    #[tracing::instrument(name = "config.get", skip(self))]
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(Ok(self.values.get(&key).cloned()))
    }

    #[tracing::instrument(name = "config.get_all", skip(self))]
    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        Ok(Ok(self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
