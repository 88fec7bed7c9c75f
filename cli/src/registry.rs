//! `warden publish` and `warden inspect`: components into and out of the
//! built-in registry or an OCI registry.

use crate::args::read_manifest;
use crate::oci::{Bar, OciArgs};
use crate::output;
use crate::remote::{Remote, status};
use crate::validator::EngineValidator;
use anyhow::Context;
use clap::Args;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warden_control_plane::ComponentValidator;
use warden_oci::OciRef;
use warden_proto::v1 as pb;
use warden_proto::v1::registry_service_client::RegistryServiceClient;

/// Publish a component: to the control plane's registry as NAME@VERSION,
/// or to an OCI registry as oci://HOST/REPO:TAG (the wasm artifact layout
/// of `wkg oci push`). The component is checked first (a component of the
/// warden:agent/agent world); built-in versions are immutable.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// NAME@VERSION (e.g. hello@1.0.0) or oci://HOST/REPO:TAG.
    reference: String,
    /// The agent's capability manifest (TOML): what it may use and its
    /// default budget. Without one, the agent may use nothing.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Publish for this tenant (the system role); default: your token's.
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    remote: Remote,
    #[command(flatten)]
    oci: OciArgs,
}

/// Show what a component is before running it: its world, imports and
/// exports, size, digest and capability manifest.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// A .wasm file, NAME@VERSION in the control plane's registry, or
    /// oci://HOST/REPO:TAG.
    reference: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
    #[command(flatten)]
    oci: OciArgs,
}

pub(crate) async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let (bytes, capabilities) = if let Some(oci) = OciRef::parse(&args.reference) {
        let pulled = warden_oci::pull(&oci?, &args.oci.options(), &Bar::new("downloading")).await?;
        (pulled.bytes, pulled.capabilities.unwrap_or_default())
    } else if args.reference.ends_with(".wasm") || Path::new(&args.reference).is_file() {
        let bytes = std::fs::read(&args.reference)
            .with_context(|| format!("cannot read component {}", args.reference))?;
        (bytes, String::new())
    } else {
        let channel = args.remote.channel().await?;
        let resolved = RegistryServiceClient::new(channel.clone())
            .resolve(pb::ResolveRequest {
                reference: args.reference.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut stream = RegistryServiceClient::new(channel)
            .fetch(pb::FetchRequest {
                digest: resolved.digest,
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(status)? {
            bytes.extend_from_slice(&chunk.data);
        }
        (bytes, resolved.capabilities)
    };
    let validator = EngineValidator::new()?;
    let (world, imports, exports) = match validator.load(&args.reference, &bytes) {
        Ok((imports, exports)) => ("warden:agent/agent".to_string(), imports, exports),
        Err(e) => (format!("not runnable here: {e}"), Vec::new(), Vec::new()),
    };
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "reference": args.reference, "digest": digest, "size": bytes.len(),
                "world": world, "imports": imports, "exports": exports,
                "capabilities": (!capabilities.is_empty()).then_some(&capabilities),
            })
        );
    } else {
        println!("reference  {}", args.reference);
        println!("digest     {digest}");
        println!("size       {}", output::bytes(bytes.len() as u64));
        println!("world      {world}");
        println!("imports    {}", imports.join("\n           "));
        println!("exports    {}", exports.join("\n           "));
        if capabilities.is_empty() {
            println!("manifest   none: runs of this component may use nothing");
        } else {
            println!("manifest");
            for line in capabilities.lines() {
                println!("  {line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read component {}", args.file.display()))?;
    let capabilities = match &args.manifest {
        Some(path) => read_manifest(path)?.0,
        None => String::new(),
    };
    if let Some(oci) = OciRef::parse(&args.reference) {
        let oci = oci?;
        if args.tenant.is_some() {
            anyhow::bail!(
                "--tenant is for the control plane's registry; an OCI registry has no tenants \
                 (a tenant submits oci:// references with its own registry credentials)"
            );
        }
        check_component(&args.file, &bytes)?;
        let pushed = warden_oci::push(
            &oci,
            &bytes,
            (!capabilities.is_empty()).then_some(capabilities.as_str()),
            &args.oci.options(),
            &Bar::new("uploading"),
        )
        .await?;
        println!(
            "pushed {oci} {} ({}), manifest {}",
            pushed.digest,
            output::bytes(bytes.len() as u64),
            pushed.manifest_digest
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (name, version) = warden_core::split_reference(&args.reference)?;
    let resp = publish_to(
        args.remote.channel().await?,
        name,
        version,
        &bytes,
        capabilities,
        args.tenant.clone().unwrap_or_default(),
    )
    .await?;
    let note = if resp.created {
        ""
    } else {
        " (already published, unchanged)"
    };
    let whose = args
        .tenant
        .map(|t| format!(" for tenant {}", output::safe(&t)))
        .unwrap_or_default();
    println!(
        "published {name}@{version}{whose} {} ({}){note}",
        resp.digest,
        output::bytes(resp.size)
    );
    Ok(ExitCode::SUCCESS)
}

/// Publishes `bytes` as `name@version` to the control plane's registry
/// (for `tenant`, empty for the caller's own).
pub(crate) async fn publish_to(
    channel: crate::remote::Conn,
    name: &str,
    version: &str,
    bytes: &[u8],
    capabilities: String,
    tenant: String,
) -> anyhow::Result<pb::PublishResponse> {
    let mut chunks = vec![pb::PublishChunk {
        part: Some(pb::publish_chunk::Part::Header(pb::PublishHeader {
            name: name.into(),
            version: version.into(),
            size: bytes.len() as u64,
            capabilities,
            tenant,
        })),
    }];
    chunks.extend(bytes.chunks(1 << 20).map(|c| pb::PublishChunk {
        part: Some(pb::publish_chunk::Part::Data(c.to_vec())),
    }));
    Ok(RegistryServiceClient::new(channel)
        .publish(tokio_stream::iter(chunks))
        .await
        .map_err(status)?
        .into_inner())
}

/// Checks that `bytes` are a component of the agent world, without a
/// compile cache or pool; the error says what is wrong.
fn check_component(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    EngineValidator::new()?
        .validate(&path.display().to_string(), bytes)
        .map_err(anyhow::Error::msg)
}
