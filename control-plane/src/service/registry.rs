//! `RegistryService`: the built-in registry: publish (validated, immutable
//! versions), resolve (`NAME@VERSION` or `oci://`), fetch by digest, list.

use super::{StreamOf, parse_reference};
use crate::ControlPlane;
use crate::auth::{Client, client_of, node_or_client};
use crate::store::Published;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};
use warden_core::Manifest;
use warden_core::Role;
use warden_oci::OciRef;
use warden_proto::v1::*;

#[tonic::async_trait]
impl registry_service_server::RegistryService for ControlPlane {
    type FetchStream = StreamOf<FetchChunk>;

    async fn publish(
        &self,
        req: Request<Streaming<PublishChunk>>,
    ) -> Result<Response<PublishResponse>, Status> {
        let caller = client_of(&req)?;
        let (header, data) = self.read_upload(req.into_inner()).await?;
        let published = self
            .compiling(move |cp| cp.publish_upload(&caller, header, data))
            .await??;
        Ok(Response::new(published))
    }

    async fn validate(
        &self,
        req: Request<Streaming<PublishChunk>>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let caller = client_of(&req)?;
        let (header, data) = self.read_upload(req.into_inner()).await?;
        let found = self
            .compiling(move |cp| cp.validate_upload(&caller, header, data))
            .await??;
        Ok(Response::new(found))
    }

    async fn resolve(
        &self,
        req: Request<ResolveRequest>,
    ) -> Result<Response<ResolveResponse>, Status> {
        let oci = OciRef::parse(&req.get_ref().reference);
        let caller = node_or_client(&req)?;
        // Importing from a registry is work done for the caller.
        if let (Some(client), Some(_)) = (&caller, &oci) {
            self.require(
                client,
                Role::Submitter,
                "RegistryService.Resolve",
                "importing agents from an OCI registry",
            )?;
        }
        // Nodes resolve (to prewarm) in the default tenant.
        let tenant = caller.map_or(crate::auth::DEFAULT_TENANT.to_string(), |c| c.tenant);
        let reference = req.into_inner().reference;
        if let Some(oci) = oci {
            let oci = oci.map_err(|e| Status::invalid_argument(e.to_string()))?;
            let (agent, digest, capabilities) = self.import_oci(&tenant, &oci).await?;
            let size = self.store.component_size(&digest)?.unwrap_or(0);
            let (name, version) = agent.split_once('@').unwrap_or((&agent, ""));
            return Ok(Response::new(ResolveResponse {
                name: name.to_string(),
                version: version.to_string(),
                digest,
                size,
                capabilities,
                ..Default::default()
            }));
        }
        let (name, version) = parse_reference(&reference)?;
        match self.store.resolve(&tenant, name, version)? {
            Ok(r) => Ok(Response::new(r)),
            Err(known) => Err(crate::service::agent_not_found(
                &tenant, name, version, known,
            )),
        }
    }

    async fn fetch(
        &self,
        req: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let caller = node_or_client(&req)?;
        let digest = req.into_inner().digest;
        // A client reads only what its tenant published or ran; the same
        // answer as for a digest nobody has.
        if let Some(tenant) = caller.as_ref().and_then(|c| c.scope())
            && !self.store.tenant_uses(tenant, &digest)?
        {
            return Err(Status::not_found(format!("no component {digest}")));
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = self
            .store
            .component(&digest)?
            .ok_or_else(|| Status::not_found(format!("no component {digest}")))?;
        let chunks: Vec<Result<FetchChunk, Status>> = data
            .chunks(1 << 20)
            .map(|c| Ok(FetchChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn list(
        &self,
        req: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentsResponse>, Status> {
        let caller = client_of(&req)?;
        let r = req.into_inner();
        let tenant = if r.tenant.is_empty() {
            caller.scope().map(str::to_string)
        } else {
            Some(self.tenant_for(
                &caller,
                &r.tenant,
                "RegistryService.List",
                "listing another tenant's agents",
            )?)
        };
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let after = if r.page_token.is_empty() {
            None
        } else {
            // `TENANT/NAME@VERSION` of the last one listed.
            let bad =
                || Status::invalid_argument("the page token is not one this control plane gave");
            let (tenant, reference) = r.page_token.split_once('/').ok_or_else(bad)?;
            let (name, version) = reference.split_once('@').ok_or_else(bad)?;
            Some((tenant, name, version))
        };
        let limit = if r.limit == 0 {
            100
        } else {
            r.limit.min(crate::store::MAX_PAGE)
        };
        let mut components = self
            .store
            .list_components(tenant.as_deref(), name, after, limit)?;
        let full = components.len() as u32 == limit;
        let cut = crate::service::cut_to_page(&mut components);
        let next_page_token = match components.last() {
            Some(last) if full || cut => format!("{}/{}@{}", last.tenant, last.name, last.version),
            _ => String::new(),
        };
        Ok(Response::new(ListComponentsResponse {
            components,
            next_page_token,
        }))
    }
}

/// The world every agent implements.
const AGENT_WORLD: &str = "warden:agent/agent";

impl ControlPlane {
    /// A Publish or Validate stream read whole: its header, then at most
    /// `--max-component` bytes.
    async fn read_upload(
        &self,
        mut stream: Streaming<PublishChunk>,
    ) -> Result<(PublishHeader, Vec<u8>), Status> {
        let header = match stream.message().await?.and_then(|c| c.part) {
            Some(publish_chunk::Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the header",
                ));
            }
        };
        let max = self.config.max_component_bytes;
        let mut data = Vec::with_capacity((header.size as usize).min(max));
        while let Some(chunk) = stream.message().await? {
            if let Some(publish_chunk::Part::Data(bytes)) = chunk.part {
                if data.len() + bytes.len() > max {
                    return Err(too_large(max));
                }
                data.extend_from_slice(&bytes);
            }
        }
        if header.size != 0 && header.size != data.len() as u64 {
            return Err(Status::data_loss(format!(
                "upload ended after {} of {} bytes",
                data.len(),
                header.size
            )));
        }
        Ok((header, data))
    }

    /// Publishes `data` as `header` says, for `caller` (`RegistryService.
    /// Publish`, by stream or by HTTP upload).
    pub(crate) fn publish_upload(
        &self,
        caller: &Client,
        header: PublishHeader,
        data: Vec<u8>,
    ) -> Result<PublishResponse, Status> {
        let tenant = self.tenant_for(
            caller,
            &header.tenant,
            "RegistryService.Publish",
            "publishing for another tenant",
        )?;
        let reference = format!("{}@{}", header.name, header.version);
        parse_reference(&reference)?;
        if !header.capabilities.is_empty() {
            Manifest::parse(&header.capabilities)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        if data.len() > self.config.max_component_bytes {
            return Err(too_large(self.config.max_component_bytes));
        }
        self.validator
            .validate(&reference, &data)
            .map_err(Status::invalid_argument)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let created = match self.store.publish(
            &tenant,
            &header.name,
            &header.version,
            &digest,
            &data,
            &header.capabilities,
        )? {
            Published::Created => true,
            Published::Unchanged => false,
            Published::Conflict { existing_digest } if existing_digest == digest => {
                return Err(Status::already_exists(format!(
                    "{reference} is already published with these bytes but another manifest \
                     (its grants); versions are immutable: publish a new version, or give the \
                     manifest it was published with"
                )));
            }
            Published::Conflict { existing_digest } => {
                return Err(Status::already_exists(format!(
                    "{reference} is already published as {existing_digest}; versions are immutable, publish a new version"
                )));
            }
        };
        tracing::info!(%reference, %digest, size = data.len(), created, "component published");
        self.audit(&tenant, caller.actor(), "publish", &reference, &digest);
        Ok(PublishResponse {
            digest,
            size: data.len() as u64,
            created,
        })
    }

    /// Every problem publishing `data` as `header` says would meet, and
    /// what the component imports and exports; publishes nothing
    /// (`RegistryService.Validate`).
    pub(crate) fn validate_upload(
        &self,
        caller: &Client,
        header: PublishHeader,
        data: Vec<u8>,
    ) -> Result<ValidateResponse, Status> {
        let tenant = self.tenant_for(
            caller,
            &header.tenant,
            "RegistryService.Validate",
            "validating for another tenant",
        )?;
        let mut problems = Vec::new();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let reference = format!("{}@{}", header.name, header.version);
        let named = !(header.name.is_empty() && header.version.is_empty());
        if named {
            match parse_reference(&reference) {
                Ok((name, version)) => {
                    if let Ok(r) = self.store.resolve(&tenant, name, version)?
                        && r.digest != digest
                    {
                        problems.push(Status::already_exists(format!(
                            "{reference} is already published as {}; versions are immutable, publish a new version",
                            r.digest
                        )));
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        if !header.capabilities.is_empty()
            && let Err(e) = Manifest::parse(&header.capabilities)
        {
            problems.push(Status::invalid_argument(e.to_string()));
        }
        let (mut imports, mut exports) = (Vec::new(), Vec::new());
        if data.len() > self.config.max_component_bytes {
            problems.push(too_large(self.config.max_component_bytes));
        } else {
            let name = if named { reference.as_str() } else { "upload" };
            match self.validator.inspect(name, &data) {
                Ok((i, e)) => (imports, exports) = (i, e),
                Err(e) => problems.push(Status::invalid_argument(e)),
            }
        }
        Ok(ValidateResponse {
            digest,
            size: data.len() as u64,
            world: AGENT_WORLD.to_string(),
            imports,
            exports,
            problems: crate::service::listed(&problems),
        })
    }
}

fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "the component is larger than this control plane's limit of {max} bytes (--max-component)"
    ))
}
