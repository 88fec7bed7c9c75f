//! `warden tokens` (client tokens of a tenant) and `warden whoami`.
//! A command that makes a secret prints it alone on the last line of
//! stdout, so a script can take it with `tail -n 1`.

use crate::output::{safe, when};
use crate::remote::{Remote, status};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use warden_proto::v1 as pb;
use warden_proto::v1::auth_service_client::AuthServiceClient;

/// Manage access tokens: each is scoped to a tenant and a role.
#[derive(Debug, Args)]
pub(crate) struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Make a token; prints it once, alone on the last line.
    ///
    /// Roles, each allowed what the ones before it are: viewer (reads runs,
    /// agents, usage), submitter (submits and cancels runs), publisher
    /// (publishes components), admin (manages its tenant's tokens,
    /// concurrency limits and registry credentials), system (manages nodes,
    /// quotas and every tenant).
    Create {
        /// The tenant the token acts for. Default: your own.
        #[arg(long)]
        tenant: Option<String>,
        /// viewer, submitter, publisher, admin or system.
        #[arg(long)]
        role: warden_core::Role,
        /// Expires after this long (e.g. 30d, 12h). Default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// What the token is for, shown by `tokens list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Tokens of your tenant (every tenant's, for the system role).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once, by its id (tok_…).
    Revoke { id: String },
}

pub(crate) async fn tokens(args: TokensArgs) -> anyhow::Result<ExitCode> {
    let mut client = AuthServiceClient::new(args.remote.channel().await?);
    match args.command {
        TokensCommand::Create {
            tenant,
            role,
            ttl,
            description,
        } => {
            let ttl_ms = ttl.map_or(0, |d| d.as_millis().max(1) as u64);
            let made = client
                .create_token(pb::CreateTokenRequest {
                    tenant: tenant.unwrap_or_default(),
                    role: role.to_string(),
                    description,
                    ttl_ms,
                })
                .await
                .map_err(status)?
                .into_inner();
            let info = made.info.unwrap_or_default();
            println!(
                "token {} for tenant {}, role {}, expires {}",
                info.id,
                safe(&info.tenant),
                info.role,
                when(info.expires_unix_ms)
            );
            println!("{}", made.token);
        }
        TokensCommand::List { json } => {
            let tokens = client
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .tokens;
            if json {
                let docs: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "tenant": t.tenant, "role": t.role,
                            "description": t.description,
                            "created_unix_ms": t.created_unix_ms,
                            "expires_unix_ms": t.expires_unix_ms,
                            "revoked_unix_ms": t.revoked_unix_ms,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(docs));
            } else {
                let mut table = crate::output::Table::new(&[
                    "ID",
                    "TENANT",
                    "ROLE",
                    "EXPIRES",
                    "REVOKED",
                    "DESCRIPTION",
                ]);
                for t in &tokens {
                    table.row(vec![
                        t.id.clone(),
                        safe(&t.tenant).into_owned(),
                        t.role.to_string(),
                        when(t.expires_unix_ms),
                        when(t.revoked_unix_ms),
                        safe(&t.description).into_owned(),
                    ]);
                }
                table.print();
            }
        }
        TokensCommand::Revoke { id } => {
            client
                .revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(status)?;
            println!("token {} revoked", safe(&id));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who your token says you are: tenant and role.
#[derive(Debug, Args)]
pub(crate) struct WhoAmIArgs {
    #[command(flatten)]
    remote: Remote,
}

pub(crate) async fn whoami(args: WhoAmIArgs) -> anyhow::Result<ExitCode> {
    let me = AuthServiceClient::new(args.remote.channel().await?)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let token = if me.token_id.is_empty() {
        "no token: authentication is off".to_string()
    } else {
        me.token_id
    };
    println!("tenant {}, role {} ({token})", safe(&me.tenant), me.role);
    Ok(ExitCode::SUCCESS)
}

/// The audit log: token and node changes, publishes, cancels and denied
/// requests, oldest first. Admins see their tenant's; the system role all.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// The newest entries.
    List {
        /// How many (at most 1,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let AuditCommand::List { limit, json } = args.command;
    let entries = AuthServiceClient::new(args.remote.channel().await?)
        .list_audit(pb::ListAuditRequest { limit })
        .await
        .map_err(status)?
        .into_inner()
        .entries;
    if json {
        let docs: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "at_unix_ms": e.at_unix_ms, "tenant": e.tenant, "actor": e.actor,
                    "action": e.action, "target": e.target, "detail": e.detail,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(docs));
    } else {
        let mut table =
            crate::output::Table::new(&["AT", "TENANT", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
        for e in &entries {
            table.row(vec![
                when(e.at_unix_ms),
                safe(&e.tenant).into_owned(),
                safe(&e.actor).into_owned(),
                e.action.to_string(),
                safe(&e.target).into_owned(),
                safe(&e.detail).into_owned(),
            ]);
        }
        table.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// A tenant's quotas and concurrency limits: runs at once (more wait in
/// the queue); runs queued, input size and LLM cost and tokens per UTC day
/// (past them a submit fails quota_exceeded).
#[derive(Debug, Args)]
pub(crate) struct QuotasArgs {
    #[command(subcommand)]
    command: QuotasCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum QuotasCommand {
    /// Show a tenant's quotas, concurrency limits and what it spent today
    /// (default tenant: your own).
    Get {
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a tenant's quotas (system role); a quota not given is no
    /// limit.
    Set {
        #[arg(long)]
        tenant: String,
        /// Runs leased or running at once; more wait in the queue.
        #[arg(long)]
        max_running: Option<u32>,
        /// Runs queued at once; a submit past it fails quota_exceeded.
        #[arg(long)]
        max_queued: Option<u32>,
        /// Largest input (e.g. 64KiB); a submit past it fails
        /// quota_exceeded.
        #[arg(long, value_parser = warden_core::parse_bytes)]
        max_input: Option<u64>,
        /// LLM cost per UTC day, in dollars, over every attempt. Once
        /// spent, submits fail quota_exceeded and queued runs wait for the
        /// next day; runs already leased finish within their own budgets.
        #[arg(long, value_parser = parse_dollars)]
        max_cost_usd_per_day: Option<f64>,
        /// LLM tokens (prompt + completion) per UTC day; likewise.
        #[arg(long)]
        max_tokens_per_day: Option<u64>,
    },
    /// Limit how many runs of one agent, or with one run label (`warden
    /// submit --label`), are leased or running at once in a tenant (admin
    /// of the tenant). More wait in the queue and start as slots free.
    Limit {
        /// Default: your own.
        #[arg(long)]
        tenant: Option<String>,
        /// The agent's name (as published).
        #[arg(long, conflicts_with = "label", required_unless_present = "label")]
        agent: Option<String>,
        /// A run label, KEY=VALUE (e.g. role=manager).
        #[arg(long)]
        label: Option<String>,
        /// Runs at once.
        #[arg(long, required_unless_present = "clear")]
        max_running: Option<u32>,
        /// Remove the limit instead.
        #[arg(long, conflicts_with = "max_running")]
        clear: bool,
    },
}

fn parse_dollars(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not an amount of dollars (0 or more)")),
    }
}

/// A tenant as named on the command line; empty: the caller's.
fn shown(tenant: &str) -> &str {
    if tenant.is_empty() { "(yours)" } else { tenant }
}

fn show_quotas(tenant: &str, q: &pb::Quotas) {
    let limit = |v: Option<u64>| v.map_or("no limit".to_string(), |n| n.to_string());
    println!("tenant {}", safe(tenant));
    println!(
        "  max_running           {}",
        limit(q.max_running.map(u64::from))
    );
    println!(
        "  max_queued            {}",
        limit(q.max_queued.map(u64::from))
    );
    println!("  max_input_bytes       {}", limit(q.max_input_bytes));
    println!(
        "  max_cost_usd_per_day  {}  (spent today: ${:.6})",
        q.max_cost_usd_per_day
            .map_or("no limit".to_string(), |c| format!("${c}")),
        q.cost_usd_today
    );
    println!(
        "  max_tokens_per_day    {}  (spent today: {})",
        limit(q.max_tokens_per_day),
        q.tokens_today
    );
    for l in &q.limits {
        let scope = if l.agent.is_empty() {
            format!("label {}", safe(&l.label))
        } else {
            format!("agent {}", safe(&l.agent))
        };
        println!("  limit {scope}: max_running {}", l.max_running);
    }
}

fn quotas_json(q: &pb::Quotas) -> serde_json::Value {
    serde_json::json!({
        "max_running": q.max_running,
        "max_queued": q.max_queued,
        "max_input_bytes": q.max_input_bytes,
        "max_cost_usd_per_day": q.max_cost_usd_per_day,
        "max_tokens_per_day": q.max_tokens_per_day,
        "cost_usd_today": q.cost_usd_today,
        "tokens_today": q.tokens_today,
        "limits": q.limits.iter().map(|l| serde_json::json!({
            "agent": (!l.agent.is_empty()).then_some(&l.agent),
            "label": (!l.label.is_empty()).then_some(&l.label),
            "max_running": l.max_running,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) async fn quotas(args: QuotasArgs) -> anyhow::Result<ExitCode> {
    let mut client = AuthServiceClient::new(args.remote.channel().await?);
    match args.command {
        QuotasCommand::Get { tenant, json } => {
            let tenant = tenant.unwrap_or_default();
            let q = client
                .get_quotas(pb::GetQuotasRequest {
                    tenant: tenant.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                println!("{}", quotas_json(&q));
            } else {
                show_quotas(shown(&tenant), &q);
            }
        }
        QuotasCommand::Set {
            tenant,
            max_running,
            max_queued,
            max_input,
            max_cost_usd_per_day,
            max_tokens_per_day,
        } => {
            let q = client
                .set_quotas(pb::SetQuotasRequest {
                    tenant: tenant.clone(),
                    quotas: Some(pb::Quotas {
                        max_running,
                        max_queued,
                        max_input_bytes: max_input,
                        max_cost_usd_per_day,
                        max_tokens_per_day,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status)?
                .into_inner();
            show_quotas(&tenant, &q);
        }
        QuotasCommand::Limit {
            tenant,
            agent,
            label,
            max_running,
            clear,
        } => {
            let tenant = tenant.unwrap_or_default();
            let q = client
                .set_concurrency_limit(pb::SetConcurrencyLimitRequest {
                    tenant: tenant.clone(),
                    agent: agent.unwrap_or_default(),
                    label: label.unwrap_or_default(),
                    max_running: if clear { None } else { max_running },
                })
                .await
                .map_err(status)?
                .into_inner();
            show_quotas(shown(&tenant), &q);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A tenant's registry credentials: the control plane pulls the tenant's
/// `oci://` references with them, and no other tenant's (admin of the
/// tenant).
#[derive(Debug, Args)]
pub(crate) struct CredentialsArgs {
    #[command(subcommand)]
    command: CredentialsCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// Set (or replace) the credentials for a registry. The password is read
    /// from stdin (--password-stdin) or WARDEN_REGISTRY_PASSWORD, never
    /// from a flag; the control plane keeps it sealed and never shows it.
    Set {
        /// HOST or HOST:PORT, as in oci://HOST/REPO:TAG.
        registry: String,
        #[arg(long)]
        username: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Default: your own.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The registries with credentials (never the passwords).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget the credentials for a registry.
    Delete {
        registry: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub(crate) async fn credentials(args: CredentialsArgs) -> anyhow::Result<ExitCode> {
    let mut client = AuthServiceClient::new(args.remote.channel().await?);
    match args.command {
        CredentialsCommand::Set {
            registry,
            username,
            password_stdin,
            tenant,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                std::env::var("WARDEN_REGISTRY_PASSWORD").map_err(|_| {
                    anyhow::anyhow!(
                        "no password: pass --password-stdin and write it to stdin, or set WARDEN_REGISTRY_PASSWORD"
                    )
                })?
            };
            let set = client
                .set_registry_credential(pb::SetRegistryCredentialRequest {
                    tenant: tenant.unwrap_or_default(),
                    registry,
                    username,
                    password,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "credentials for {} set (username {})",
                safe(&set.registry),
                safe(&set.username)
            );
        }
        CredentialsCommand::List { tenant, json } => {
            let list = client
                .list_registry_credentials(pb::ListRegistryCredentialsRequest {
                    tenant: tenant.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .credentials;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "registry": c.registry,
                            "username": c.username,
                            "created_unix_ms": c.created_unix_ms,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::from(rows));
            } else if list.is_empty() {
                println!("no registry credentials");
            } else {
                let mut table = crate::output::Table::new(&["REGISTRY", "USERNAME", "CREATED"]);
                for c in &list {
                    table.row(vec![
                        safe(&c.registry).into_owned(),
                        safe(&c.username).into_owned(),
                        when(c.created_unix_ms),
                    ]);
                }
                table.print();
            }
        }
        CredentialsCommand::Delete { registry, tenant } => {
            client
                .delete_registry_credential(pb::DeleteRegistryCredentialRequest {
                    tenant: tenant.unwrap_or_default(),
                    registry: registry.clone(),
                })
                .await
                .map_err(status)?;
            println!("credentials for {} deleted", safe(&registry));
        }
    }
    Ok(ExitCode::SUCCESS)
}
