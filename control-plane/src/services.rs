//! The gRPC services over [`ControlPlane`]: request checks, store calls,
//! and the lease stream with its flow control.

use crate::ControlPlane;
use crate::capabilities::{Manifest, grant_for};
use crate::oci::OciRef;
use crate::store::{
    LeaseCheck, NewRun, Outcome, Published, RunFilter, RunReport, StoreError, is_terminal,
};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use warden_proto::v1::*;

type StreamOf<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Status::internal(e.to_string())
    }
}

/// The answer to a single Complete or Fail.
fn lease_answer(check: LeaseCheck) -> Result<Response<ResultResponse>, Status> {
    match check {
        LeaseCheck::Recorded => Ok(Response::new(ResultResponse { recorded: true })),
        LeaseCheck::AlreadyRecorded => Ok(Response::new(ResultResponse { recorded: false })),
        LeaseCheck::Stale(m) | LeaseCheck::Conflict(m) => Err(Status::failed_precondition(m)),
        LeaseCheck::NotFound => Err(Status::not_found("no such run")),
    }
}

fn parse_reference(reference: &str) -> Result<(&str, &str), Status> {
    crate::split_reference(reference).map_err(Status::invalid_argument)
}

/// A run id: 48 bits of milliseconds then 80 random bits, in hex. Ids made
/// later sort later, so new rows land at the end of the id indexes instead
/// of dirtying pages all over them.
fn new_run_id() -> String {
    let random = rand::random::<u128>() >> 48;
    format!(
        "{:012x}{random:020x}",
        crate::store::now_ms() as u64 & 0xffff_ffff_ffff
    )
}

#[tonic::async_trait]
impl node_service_server::NodeService for ControlPlane {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = req.into_inner();
        if req.node_id.is_empty() {
            return Err(Status::invalid_argument("node_id is empty"));
        }
        self.store.register_node(&req)?;
        tracing::info!(node = %req.node_id, hostname = %req.hostname, "node registered");
        self.changed.notify_waiters();
        Ok(Response::new(RegisterResponse {
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            node_timeout_ms: self.config.node_timeout.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let known = self
            .store
            .heartbeat(&r.node_id, r.active_runs, r.free_slots, r.accepting)?;
        Ok(Response::new(HeartbeatResponse { reregister: !known }))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let r = req.into_inner();
        self.store.deregister_node(&r.node_id)?;
        // Anything still leased to it goes back to the queue now.
        self.store.expire_leases()?;
        self.changed.notify_waiters();
        tracing::info!(node = %r.node_id, "node deregistered");
        Ok(Response::new(DeregisterResponse {}))
    }

    async fn list_nodes(
        &self,
        _req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: self.store.list_nodes()?,
        }))
    }
}

#[tonic::async_trait]
impl lease_service_server::LeaseService for ControlPlane {
    type PullStream = StreamOf<Lease>;

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let node_id = req.into_inner().node_id;
        let (tx, rx) = mpsc::channel(64);
        let cp = self.clone();
        tokio::spawn(async move {
            let ttl = cp.config.lease_ttl.as_millis() as i64;
            let alive_window = 3 * cp.config.heartbeat_interval.as_millis() as i64;
            loop {
                // Wake on any change, or poll: a retry's backoff ends silently.
                let changed = cp.changed.notified();
                let alive_since = crate::store::now_ms() - alive_window;
                let leases = match cp.store.lease_runs(&node_id, 64, ttl, alive_since) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let got = !leases.is_empty();
                for lease in leases {
                    let run_id = lease.run_id.clone();
                    if tx.send(Ok(lease)).await.is_err() {
                        // The node went away with leases in hand; they
                        // expire and are re-queued by the reaper.
                        tracing::info!(node = %node_id, run = %run_id, "lease stream closed");
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                if !got {
                    let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack(&self, req: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let stale = self.store.ack(&req.into_inner().leases)?;
        Ok(Response::new(AckResponse { stale }))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let r = req.into_inner();
        let ttl = self.config.lease_ttl.as_millis() as i64;
        let results = self
            .store
            .renew(&r.node_id, &r.leases, ttl)?
            .into_iter()
            .map(|(lease, status, expires)| RenewResult {
                lease: Some(lease),
                status: status.to_string(),
                expires_unix_ms: expires,
            })
            .collect();
        Ok(Response::new(RenewResponse { results }))
    }

    async fn complete(
        &self,
        req: Request<CompleteRequest>,
    ) -> Result<Response<ResultResponse>, Status> {
        let r = RunResult {
            result: Some(run_result::Result::Complete(req.into_inner())),
        };
        lease_answer(self.record_one(r)?)
    }

    async fn fail(&self, req: Request<FailRequest>) -> Result<Response<ResultResponse>, Status> {
        let r = RunResult {
            result: Some(run_result::Result::Fail(req.into_inner())),
        };
        lease_answer(self.record_one(r)?)
    }

    async fn report(
        &self,
        req: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let results = req.into_inner().results;
        let mut answers: Vec<Option<ReportAnswer>> = vec![None; results.len()];
        let mut valid = Vec::with_capacity(results.len());
        for (i, r) in results.iter().enumerate() {
            match as_report(r) {
                Ok(report) => valid.push((i, report)),
                Err(message) => {
                    answers[i] = Some(ReportAnswer {
                        lease: None,
                        status: ReportStatus::Rejected as i32,
                        message,
                    })
                }
            }
        }
        let reports: Vec<RunReport<'_>> = valid.iter().map(|(_, r)| *r).collect();
        let checks = self.store.record(&reports)?;
        self.changed.notify_waiters();
        for ((i, report), check) in valid.iter().zip(checks) {
            let (status, message) = match check {
                LeaseCheck::Recorded => (ReportStatus::Recorded, String::new()),
                LeaseCheck::AlreadyRecorded => (ReportStatus::AlreadyRecorded, String::new()),
                LeaseCheck::Stale(m) | LeaseCheck::Conflict(m) => (ReportStatus::Rejected, m),
                LeaseCheck::NotFound => (ReportStatus::Rejected, "no such run".to_string()),
            };
            answers[*i] = Some(ReportAnswer {
                lease: Some(report.lease.clone()),
                status: status as i32,
                message,
            });
        }
        Ok(Response::new(ReportResponse {
            answers: answers.into_iter().flatten().collect(),
        }))
    }
}

/// A reported result as the store takes it; the error names what is missing.
fn as_report(r: &RunResult) -> Result<RunReport<'_>, String> {
    static NO_USAGE: std::sync::LazyLock<Usage> = std::sync::LazyLock::new(Usage::default);
    let (lease, usage, outcome) = match &r.result {
        Some(run_result::Result::Complete(c)) => {
            (&c.lease, &c.usage, Outcome::Succeeded { output: &c.output })
        }
        Some(run_result::Result::Fail(f)) => (
            &f.lease,
            &f.usage,
            Outcome::Failed {
                kind: FailureKind::try_from(f.kind).unwrap_or(FailureKind::HostError),
                message: &f.message,
            },
        ),
        None => return Err("a result must be a complete or a fail".into()),
    };
    Ok(RunReport {
        lease: lease.as_ref().ok_or("missing lease")?,
        outcome,
        usage: usage.as_ref().unwrap_or(&NO_USAGE),
    })
}

impl ControlPlane {
    /// Records a single Complete or Fail.
    fn record_one(&self, r: RunResult) -> Result<LeaseCheck, Status> {
        let report = as_report(&r).map_err(Status::invalid_argument)?;
        let check = self.store.record(&[report])?.remove(0);
        self.changed.notify_waiters();
        Ok(check)
    }
}

/// Most runs in one SubmitBatch.
const MAX_SUBMIT_BATCH: usize = 10_000;

impl ControlPlane {
    /// The agent a submit names, as (agent, component digest, capability
    /// manifest): a published NAME@VERSION, or an OCI reference resolved
    /// (and pulled if new) now.
    async fn resolve_agent(&self, reference: &str) -> Result<(String, String, String), Status> {
        if let Some(oci) = OciRef::parse(reference) {
            let oci = oci.map_err(|e| Status::invalid_argument(e.to_string()))?;
            return self.import_oci(&oci).await;
        }
        let (name, version) = parse_reference(reference)?;
        match self.resolve_cached(name, version)? {
            Ok(resolved) => Ok((
                format!("{name}@{version}"),
                resolved.digest,
                resolved.capabilities,
            )),
            Err(true) => Err(Status::not_found(format!(
                "agent {name} has no version {version}"
            ))),
            Err(false) => Err(Status::not_found(format!(
                "no agent named {name} is published"
            ))),
        }
    }

    /// Checks a submit (input JSON, grant within the capability manifest)
    /// of the agent `resolved` (from [`Self::resolve_agent`]) and makes its
    /// run.
    fn new_run(
        &self,
        r: SubmitRequest,
        resolved: (String, String, String),
    ) -> Result<NewRun, Status> {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&r.input) {
            return Err(Status::invalid_argument(format!(
                "the input is not valid JSON: {e}"
            )));
        }
        let (agent, digest, capabilities) = resolved;
        let manifest = if capabilities.is_empty() {
            None
        } else {
            // Checked on publish; a bad one here is a stored record gone bad.
            Some(Manifest::parse(&capabilities).map_err(Status::internal)?)
        };
        let grant = grant_for(&agent, manifest.as_ref(), &r.grant.unwrap_or_default())
            .map_err(Status::permission_denied)?;
        let mut budget = r.budget.unwrap_or_default();
        if let Some(m) = &manifest {
            m.apply_defaults(&mut budget);
        }
        Ok(NewRun {
            id: new_run_id(),
            agent,
            digest,
            input: r.input,
            budget,
            grant,
            selector: r.node_selector.into_iter().collect(),
            max_attempts: if r.max_attempts == 0 {
                self.config.default_max_attempts
            } else {
                r.max_attempts
            },
            traceparent: r.traceparent,
        })
    }

    /// Resolves an OCI reference to a digest once, pulls the component if
    /// this control plane does not have it yet (verified, validated), and
    /// returns (agent, digest, capability manifest).
    async fn import_oci(&self, oci: &OciRef) -> Result<(String, String, String), Status> {
        let unavailable = |e: crate::oci::OciError| match e {
            crate::oci::OciError::Registry { .. } => Status::unavailable(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        };
        let opts = &self.config.oci;
        let resolved = crate::oci::resolve(oci, opts).await.map_err(unavailable)?;
        let capabilities = resolved.capabilities().unwrap_or_default().to_string();
        if !capabilities.is_empty() {
            Manifest::parse(&capabilities)
                .map_err(|e| Status::invalid_argument(format!("{oci}: {e}")))?;
        }
        let layer = resolved.digest().map_err(unavailable)?.to_string();
        let digest = if self.store.component_size(&layer)?.is_some() {
            layer
        } else {
            let pulled = resolved
                .pull(opts, &crate::oci::Quiet)
                .await
                .map_err(unavailable)?;
            self.validator
                .validate(&oci.to_string(), &pulled.bytes)
                .map_err(Status::invalid_argument)?;
            self.store.put_component(&pulled.digest, &pulled.bytes)?;
            tracing::info!(reference = %oci, digest = %pulled.digest, size = pulled.bytes.len(), "component pulled from OCI");
            pulled.digest
        };
        let agent = format!("oci://{}@{}", oci.name(), resolved.manifest_digest);
        Ok((agent, digest, capabilities))
    }
}

#[tonic::async_trait]
impl run_service_server::RunService for ControlPlane {
    type WatchStream = StreamOf<Run>;

    async fn submit(
        &self,
        req: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let r = req.into_inner();
        let resolved = self.resolve_agent(&r.agent).await?;
        let run = self.new_run(r, resolved)?;
        let run = self.insert_run(run).await?;
        Ok(Response::new(SubmitResponse { run: Some(run) }))
    }

    async fn submit_batch(
        &self,
        req: Request<SubmitBatchRequest>,
    ) -> Result<Response<SubmitBatchResponse>, Status> {
        let requests = req.into_inner().runs;
        if requests.len() > MAX_SUBMIT_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} runs in one batch; the most is {MAX_SUBMIT_BATCH}",
                requests.len()
            )));
        }
        // Each distinct agent is resolved once per batch.
        let mut resolved = std::collections::HashMap::new();
        let mut runs = Vec::with_capacity(requests.len());
        for (i, r) in requests.into_iter().enumerate() {
            let at = |e: Status| Status::new(e.code(), format!("run {i}: {}", e.message()));
            if !resolved.contains_key(&r.agent) {
                let agent = self.resolve_agent(&r.agent).await.map_err(at)?;
                resolved.insert(r.agent.clone(), agent);
            }
            let agent = resolved[&r.agent].clone();
            runs.push(self.new_run(r, agent).map_err(at)?);
        }
        let runs = self.store.insert_runs(&runs)?;
        self.changed.notify_waiters();
        Ok(Response::new(SubmitBatchResponse { runs }))
    }

    async fn get(&self, req: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        let id = req.into_inner().run_id;
        self.store
            .get_run(&id)?
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no run {id}")))
    }

    async fn list(
        &self,
        req: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        let r = req.into_inner();
        let runs = self.store.list_runs(&RunFilter {
            state: (!r.state.is_empty()).then_some(r.state),
            limit: r.limit,
        })?;
        Ok(Response::new(ListRunsResponse { runs }))
    }

    async fn cancel(&self, req: Request<CancelRunRequest>) -> Result<Response<Run>, Status> {
        let id = req.into_inner().run_id;
        let run = self
            .store
            .cancel(&id)?
            .ok_or_else(|| Status::not_found(format!("no run {id}")))?;
        self.changed.notify_waiters();
        Ok(Response::new(run))
    }

    async fn watch(
        &self,
        req: Request<WatchRunRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = req.into_inner().run_id;
        if self.store.get_run(&id)?.is_none() {
            return Err(Status::not_found(format!("no run {id}")));
        }
        let (tx, rx) = mpsc::channel(16);
        let cp = self.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let changed = cp.changed.notified();
                let run = match cp.store.get_run(&id) {
                    Ok(Some(run)) => run,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let key = (run.state.clone(), run.attempt, run.updated_unix_ms);
                let done = is_terminal(&run.state);
                if last.as_ref() != Some(&key) {
                    last = Some(key);
                    if tx.send(Ok(run)).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(250), changed).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl registry_service_server::RegistryService for ControlPlane {
    type FetchStream = StreamOf<FetchChunk>;

    async fn publish(
        &self,
        req: Request<Streaming<PublishChunk>>,
    ) -> Result<Response<PublishResponse>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.message().await?.and_then(|c| c.part) {
            Some(publish_chunk::Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the header",
                ));
            }
        };
        let reference = format!("{}@{}", header.name, header.version);
        parse_reference(&reference)?;
        if !header.capabilities.is_empty() {
            Manifest::parse(&header.capabilities).map_err(Status::invalid_argument)?;
        }
        let max = self.config.max_component_bytes;
        let mut data = Vec::with_capacity((header.size as usize).min(max));
        while let Some(chunk) = stream.message().await? {
            if let Some(publish_chunk::Part::Data(bytes)) = chunk.part {
                if data.len() + bytes.len() > max {
                    return Err(Status::resource_exhausted(format!(
                        "component is larger than the registry's limit of {max} bytes"
                    )));
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
        self.validator
            .validate(&reference, &data)
            .map_err(Status::invalid_argument)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let created = match self.store.publish(
            &header.name,
            &header.version,
            &digest,
            &data,
            &header.capabilities,
        )? {
            Published::Created => true,
            Published::Unchanged => false,
            Published::Conflict { existing_digest } => {
                return Err(Status::already_exists(format!(
                    "{reference} is already published as {existing_digest}; versions are immutable, publish a new version"
                )));
            }
        };
        tracing::info!(%reference, %digest, size = data.len(), created, "component published");
        Ok(Response::new(PublishResponse {
            digest,
            size: data.len() as u64,
            created,
        }))
    }

    async fn resolve(
        &self,
        req: Request<ResolveRequest>,
    ) -> Result<Response<ResolveResponse>, Status> {
        let reference = req.into_inner().reference;
        if let Some(oci) = OciRef::parse(&reference) {
            let oci = oci.map_err(|e| Status::invalid_argument(e.to_string()))?;
            let (agent, digest, capabilities) = self.import_oci(&oci).await?;
            let size = self.store.component_size(&digest)?.unwrap_or(0);
            let (name, version) = agent.split_once('@').unwrap_or((&agent, ""));
            return Ok(Response::new(ResolveResponse {
                name: name.to_string(),
                version: version.to_string(),
                digest,
                size,
                capabilities,
            }));
        }
        let (name, version) = parse_reference(&reference)?;
        match self.store.resolve(name, version)? {
            Ok(r) => Ok(Response::new(r)),
            Err(true) => Err(Status::not_found(format!(
                "agent {name} has no version {version}"
            ))),
            Err(false) => Err(Status::not_found(format!(
                "no agent named {name} is published"
            ))),
        }
    }

    async fn fetch(
        &self,
        req: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let digest = req.into_inner().digest;
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
        _req: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentsResponse>, Status> {
        Ok(Response::new(ListComponentsResponse {
            components: self.store.list_components()?,
        }))
    }
}
