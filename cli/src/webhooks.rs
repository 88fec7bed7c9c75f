//! `warden webhooks`: where a tenant's runs may send their results, and
//! the key that signs them. A command that makes a secret prints it alone
//! on the last line of stdout, so a script can take it with `tail -n 1`.

use crate::output::safe;
use crate::remote::{Remote, status};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use warden_proto::v1 as pb;
use warden_proto::v1::auth_service_client::AuthServiceClient;

/// Webhooks: `warden submit --webhook URL` POSTs a run's result to URL once
/// it ends, signed with the tenant's key (header `Warden-Signature:
/// t=UNIX_SECONDS,k=KEY_ID,v1=HEX`, HMAC-SHA256 of "t.BODY"), retried
/// with backoff until the receiver answers 2xx. The URL must match the
/// tenant's allow-list, which the system role sets.
#[derive(Debug, Args)]
pub(crate) struct WebhooksArgs {
    #[command(subcommand)]
    command: WebhooksCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// The tenant's allow-list and signing key id.
    Show {
        /// Another tenant's (system role). Default: your own.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Replace the tenant's allow-list (system role): the origins its
    /// webhook URLs may name, as in a grant (https://hooks.example.com,
    /// https://*.example.com, https://* for any public host; a loopback or
    /// private address only as an IP, e.g. http://10.0.0.5:8080). None:
    /// no webhooks. Makes the tenant's first signing key if it has none
    /// and prints its secret once, alone on the last line.
    Allow {
        #[arg(long)]
        tenant: String,
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Make a new signing key (admin): deliveries from now on are signed
    /// with it. Prints its secret once, alone on the last line.
    RotateKey {
        /// Another tenant's (system role). Default: your own.
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn print(config: &pb::WebhookConfig, tenant: &str) {
    let allow = if config.allow.is_empty() {
        "(none: no webhooks)".to_string()
    } else {
        config
            .allow
            .iter()
            .map(|p| safe(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("tenant {}: webhooks may go to {allow}", safe(tenant));
    match config.key_id.as_str() {
        "" => println!("no signing key yet"),
        id => println!("signing key {id}"),
    }
}

pub(crate) async fn webhooks(args: WebhooksArgs) -> anyhow::Result<ExitCode> {
    let mut client = AuthServiceClient::new(args.remote.channel().await?);
    let (config, tenant) = match args.command {
        WebhooksCommand::Show { tenant } => {
            let tenant = tenant.unwrap_or_default();
            let request = pb::GetWebhookConfigRequest {
                tenant: tenant.clone(),
            };
            let config = client.get_webhook_config(request).await.map_err(status)?;
            (config.into_inner(), tenant)
        }
        WebhooksCommand::Allow { tenant, patterns } => {
            let request = pb::SetWebhookConfigRequest {
                tenant: tenant.clone(),
                allow: patterns,
            };
            let config = client.set_webhook_config(request).await.map_err(status)?;
            (config.into_inner(), tenant)
        }
        WebhooksCommand::RotateKey { tenant } => {
            let tenant = tenant.unwrap_or_default();
            let request = pb::RotateWebhookKeyRequest {
                tenant: tenant.clone(),
            };
            let config = client.rotate_webhook_key(request).await.map_err(status)?;
            (config.into_inner(), tenant)
        }
    };
    print(
        &config,
        if tenant.is_empty() {
            "(yours)"
        } else {
            &tenant
        },
    );
    if !config.new_secret.is_empty() {
        println!(
            "new signing key {}; its secret (shown once: give it to your receivers):",
            config.key_id
        );
        println!("{}", config.new_secret);
    }
    Ok(ExitCode::SUCCESS)
}
