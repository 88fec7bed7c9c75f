//! [`ComponentStore`]: components by digest for this node: in memory
//! (compiled, pre-instantiated), on disk (`data_dir/blobs`, verified against
//! the digest on every read), fetched from the registry once, with
//! concurrent fetches of one digest deduplicated.

use crate::cache::sha256_hex;
use crate::engine::{AgentComponent, LoadError, Quiet};
use crate::failure::{FailureKind, RunFailure};
use crate::run::Sandbox;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use tonic::transport::Channel;
use warden_proto::v1 as pb;
use warden_proto::v1::registry_service_client::RegistryServiceClient;

pub(super) struct ComponentStore {
    dir: PathBuf,
    channel: Channel,
    loaded: Mutex<HashMap<String, Arc<OnceCell<AgentComponent>>>>,
}

fn host_error(message: String) -> RunFailure {
    RunFailure::new(FailureKind::HostError, message)
}

impl ComponentStore {
    pub(super) fn new(dir: PathBuf, channel: Channel) -> Self {
        ComponentStore {
            dir,
            channel,
            loaded: Mutex::default(),
        }
    }

    pub(super) async fn get(
        &self,
        sandbox: &Sandbox,
        digest: &str,
    ) -> Result<AgentComponent, RunFailure> {
        let cell = self
            .loaded
            .lock()
            .unwrap()
            .entry(digest.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.load(sandbox, digest))
            .await
            .cloned()
    }

    async fn load(&self, sandbox: &Sandbox, digest: &str) -> Result<AgentComponent, RunFailure> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let path = self.dir.join(format!("{hex}.wasm"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) if sha256_hex(&bytes) == hex => bytes,
            _ => {
                let bytes = self.fetch(digest).await?;
                if sha256_hex(&bytes) != hex {
                    return Err(host_error(format!(
                        "component {digest} failed its digest check"
                    )));
                }
                std::fs::create_dir_all(&self.dir)
                    .and_then(|()| std::fs::write(&path, &bytes))
                    .map_err(|e| host_error(format!("cannot store component {digest}: {e}")))?;
                bytes
            }
        };
        let sandbox = sandbox.clone();
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || sandbox.engine().load(&digest, &bytes, &Quiet))
            .await
            .map_err(|e| host_error(e.to_string()))?
            .map(|(component, _)| component)
            .map_err(|e| match e {
                LoadError::Invalid(m) => RunFailure::new(FailureKind::InvalidComponent, m),
                LoadError::Host(m) => host_error(m),
            })
    }

    async fn fetch(&self, digest: &str) -> Result<Vec<u8>, RunFailure> {
        let mut client =
            RegistryServiceClient::new(self.channel.clone()).max_decoding_message_size(8 << 20);
        let mut stream = client
            .fetch(pb::FetchRequest {
                digest: digest.to_string(),
            })
            .await
            .map_err(|e| host_error(format!("cannot fetch component {digest}: {}", e.message())))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| host_error(format!("fetching component {digest}: {}", e.message())))?
        {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }
}
