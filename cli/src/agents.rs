//! `warden agents list|get`: what a tenant has published to the control
//! plane's registry.

use crate::output::{self, safe, when};
use crate::remote::{Conn, Remote, status};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use warden_proto::v1 as pb;
use warden_proto::v1::registry_service_client::RegistryServiceClient;

/// The agents published to the control plane's registry: names, versions,
/// digests, sizes, manifests. Your tenant's; the system role sees every
/// tenant's, or one with --tenant.
#[derive(Debug, Args)]
pub(crate) struct AgentsArgs {
    #[command(subcommand)]
    command: AgentsCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Every published version, by tenant, name and version.
    List {
        /// Only this tenant's (the system role; others see their own).
        #[arg(long)]
        tenant: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One agent's versions (NAME), or one version with its manifest
    /// (NAME@VERSION).
    Get {
        /// NAME or NAME@VERSION.
        reference: String,
        /// The tenant whose agent it is (the system role; others see their
        /// own).
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON: an array of versions, or one object.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn agents(args: AgentsArgs) -> anyhow::Result<ExitCode> {
    let mut client = RegistryServiceClient::new(args.remote.channel().await?);
    match args.command {
        AgentsCommand::List { tenant, json } => {
            let found = list(&mut client, tenant.unwrap_or_default(), String::new()).await?;
            print_versions(&found, json);
        }
        AgentsCommand::Get {
            reference,
            tenant,
            json,
        } => {
            let (name, version) = match reference.split_once('@') {
                Some((name, version)) => (name, Some(version)),
                None => (reference.as_str(), None),
            };
            warden_core::check_name("agent", name)?;
            let found = list(&mut client, tenant.clone().unwrap_or_default(), name.into()).await?;
            if found.is_empty() {
                match &tenant {
                    Some(t) => anyhow::bail!("tenant {} has no agent named {name}", safe(t)),
                    None => anyhow::bail!(
                        "no agent named {name} is published in a tenant your token sees"
                    ),
                }
            }
            match version {
                None => print_versions(&found, json),
                Some(version) => {
                    let matching: Vec<_> = found.iter().filter(|c| c.version == version).collect();
                    if matching.len() > 1 {
                        let tenants: Vec<_> = matching.iter().map(|c| safe(&c.tenant)).collect();
                        anyhow::bail!(
                            "{name}@{} is published by tenants {}: say which with --tenant",
                            safe(version),
                            tenants.join(", ")
                        );
                    }
                    let Some(one) = matching.first() else {
                        anyhow::bail!(
                            "agent {name} has no version {}; it has {}",
                            safe(version),
                            found
                                .iter()
                                .map(|c| c.version.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    };
                    print_one(one, json);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every page of the list for `tenant` (empty: the caller's, or all) and
/// agent `name` (empty: all).
async fn list(
    client: &mut RegistryServiceClient<Conn>,
    tenant: String,
    name: String,
) -> anyhow::Result<Vec<pb::ResolveResponse>> {
    let mut found = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list(pb::ListComponentsRequest {
                tenant: tenant.clone(),
                name: name.clone(),
                limit: 1000,
                page_token,
            })
            .await
            .map_err(status)?
            .into_inner();
        found.extend(page.components);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return Ok(found);
        }
    }
}

fn print_versions(found: &[pb::ResolveResponse], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_value(
                found
                    .iter()
                    .map(warden_api::AgentVersion::from)
                    .collect::<Vec<_>>()
            )
            .unwrap_or_default()
        );
        return;
    }
    if found.is_empty() {
        println!("no agents published");
        return;
    }
    let mut table = output::Table::new(&[
        "TENANT",
        "AGENT",
        "VERSION",
        "DIGEST",
        ">SIZE",
        "PUBLISHED",
        "MANIFEST",
    ]);
    for c in found {
        table.row(vec![
            safe(&c.tenant).into_owned(),
            safe(&c.name).into_owned(),
            safe(&c.version).into_owned(),
            c.digest.get(..19).unwrap_or(&c.digest).to_string(),
            output::bytes(c.size),
            when(c.created_unix_ms),
            if c.capabilities.is_empty() {
                "none"
            } else {
                "yes"
            }
            .to_string(),
        ]);
    }
    table.print();
}

fn print_one(c: &pb::ResolveResponse, json: bool) {
    if json {
        let doc = serde_json::to_value(warden_api::AgentVersion::from(c)).unwrap_or_default();
        println!("{doc}");
        return;
    }
    println!("agent      {}@{}", safe(&c.name), safe(&c.version));
    println!("tenant     {}", safe(&c.tenant));
    println!("digest     {}", c.digest);
    println!("size       {}", output::bytes(c.size));
    println!("published  {}", when(c.created_unix_ms));
    if c.capabilities.is_empty() {
        println!("manifest   none: its runs may use nothing");
    } else {
        println!("manifest");
        for line in c.capabilities.lines() {
            println!("  {}", safe(line));
        }
    }
}
