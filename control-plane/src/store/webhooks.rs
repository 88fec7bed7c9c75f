//! Webhooks: each tenant's allow-list and signing keys, and the delivery
//! of each ended run's result to its webhook URL (at least once: a
//! delivery stays due in the runs table until a try succeeds or the last
//! one fails, so a control plane that stops mid-delivery leaves it for the
//! next poll, on any replica).

use super::sql::{Row, p};
use super::{Store, StoreError, StoreResult, now_ms};
use ring::rand::{SecureRandom, SystemRandom};
use warden_proto::v1 as pb;

/// Webhooks: each run's URL and how its delivery stands (a partial index
/// holds only runs whose delivery is still due, by run state, so the
/// deliverer seeks to ended runs only); each try; each tenant's allow-list
/// and signing keys (sealed, in hex). A migration both backends run as it
/// is.
pub(super) const MIGRATION: &str = r#"
ALTER TABLE runs ADD COLUMN webhook_url TEXT;
ALTER TABLE runs ADD COLUMN webhook_state TEXT;
ALTER TABLE runs ADD COLUMN webhook_next BIGINT;
ALTER TABLE runs ADD COLUMN webhook_attempts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_webhooks_due ON runs (state, webhook_next) WHERE webhook_state = 'pending';
CREATE TABLE webhook_deliveries (
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    http_status BIGINT NOT NULL,
    error TEXT NOT NULL,
    ok BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE webhook_config (
    tenant TEXT PRIMARY KEY,
    allow TEXT NOT NULL
);
CREATE TABLE webhook_keys (
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    secret TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (tenant, key_id)
);
"#;

/// A tenant's webhook settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookConfig {
    /// HTTP patterns a webhook URL must match.
    pub allow: Vec<String>,
    /// The key signing deliveries now, if there is one.
    pub key_id: Option<String>,
}

/// A delivery that is due, claimed by one deliverer until its claim ends.
#[derive(Debug, Clone)]
pub struct DueWebhook {
    pub run_id: String,
    pub tenant: String,
    pub url: String,
    /// Tries made so far.
    pub attempts: u32,
}

fn key_aad(tenant: &str, key_id: &str) -> Vec<u8> {
    format!("warden webhook key\0{tenant}\0{key_id}").into_bytes()
}

/// States of a run that has ended (a delivery is due once it has).
const ENDED: &str = "('succeeded', 'failed', 'cancelled', 'dead_lettered')";

impl Store {
    /// `tenant`'s webhook settings.
    pub fn webhook_config(&self, tenant: &str) -> StoreResult<WebhookConfig> {
        self.with_conn(|c| {
            let allow: Option<String> = c.query_opt(
                "SELECT allow FROM webhook_config WHERE tenant = ?1",
                p![tenant],
                |r| r.get(0),
            )?;
            let key_id = c.query_opt(
                "SELECT key_id FROM webhook_keys WHERE tenant = ?1
                 ORDER BY created DESC, key_id DESC LIMIT 1",
                p![tenant],
                |r| r.get(0),
            )?;
            Ok(WebhookConfig {
                allow: allow
                    .map(|a| serde_json::from_str(&a).unwrap_or_default())
                    .unwrap_or_default(),
                key_id,
            })
        })
    }

    /// Replaces `tenant`'s allow-list. Makes its first signing key if it
    /// has none: then returns (key id, secret in hex), the one time the
    /// secret is shown.
    pub fn set_webhook_allow(
        &self,
        tenant: &str,
        allow: &[String],
    ) -> StoreResult<Option<(String, String)>> {
        let text = serde_json::to_string(allow).unwrap_or_default();
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO webhook_config (tenant, allow) VALUES (?1, ?2)
                 ON CONFLICT (tenant) DO UPDATE SET allow = excluded.allow",
                p![tenant, text],
            )?;
            Ok(())
        })?;
        if self.webhook_config(tenant)?.key_id.is_some() {
            return Ok(None);
        }
        self.rotate_webhook_key(tenant).map(Some)
    }

    /// A new signing key for `tenant`'s deliveries from now on: (key id,
    /// secret in hex). Older keys stay, unused, so deliveries signed with
    /// them can still be told apart by their key id.
    pub fn rotate_webhook_key(&self, tenant: &str) -> StoreResult<(String, String)> {
        let mut secret = [0u8; 32];
        let mut id = [0u8; 6];
        let random = SystemRandom::new();
        random
            .fill(&mut secret)
            .and_then(|()| random.fill(&mut id))
            .map_err(|_| StoreError::Corrupt("no randomness for a webhook key".into()))?;
        let key_id = format!("whk_{}", hex::encode(id));
        let sealed = hex::encode(self.seal(&key_aad(tenant, &key_id), &secret)?);
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO webhook_keys (tenant, key_id, secret, created) VALUES (?1, ?2, ?3, ?4)",
                p![tenant, key_id, sealed, now_ms()],
            )?;
            Ok(())
        })?;
        Ok((key_id, hex::encode(secret)))
    }

    /// The key that signs `tenant`'s deliveries now: (key id, secret).
    pub fn webhook_key(&self, tenant: &str) -> StoreResult<Option<(String, Vec<u8>)>> {
        let row: Option<(String, String)> = self.with_conn(|c| {
            c.query_opt(
                "SELECT key_id, secret FROM webhook_keys WHERE tenant = ?1
                 ORDER BY created DESC, key_id DESC LIMIT 1",
                p![tenant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        let Some((key_id, sealed)) = row else {
            return Ok(None);
        };
        let secret = hex::decode(&sealed)
            .ok()
            .and_then(|blob| self.unseal(&key_aad(tenant, &key_id), &blob))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "tenant {tenant}'s webhook key {key_id} cannot be opened with this data dir's \
                     key; make a new one (`warden webhooks rotate-key`)"
                ))
            })?;
        Ok(Some((key_id, secret)))
    }

    /// Up to `limit` deliveries due now, each claimed until `claim_until`
    /// (Unix ms), so no other deliverer takes it meanwhile; a claim that
    /// lapses (its deliverer stopped) makes it due again.
    pub fn claim_due_webhooks(&self, claim_until: i64, limit: u32) -> StoreResult<Vec<DueWebhook>> {
        let now = now_ms();
        self.with_tx(|tx| {
            let due = tx.query_map(
                &format!(
                    "SELECT id, tenant, webhook_url, webhook_attempts, webhook_next FROM runs
                     WHERE webhook_state = 'pending' AND state IN {ENDED} AND webhook_next <= ?1
                     ORDER BY webhook_next LIMIT ?2"
                ),
                p![now, i64::from(limit)],
                |r| {
                    Ok((
                        DueWebhook {
                            run_id: r.get(0)?,
                            tenant: r.get(1)?,
                            url: r.get(2)?,
                            attempts: r.get::<i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                        },
                        r.get::<i64>(4)?,
                    ))
                },
            )?;
            let mut claimed = Vec::with_capacity(due.len());
            for (webhook, next) in due {
                // Taken only if no one else took it since it was read.
                let taken = tx.execute(
                    "UPDATE runs SET webhook_next = ?1
                     WHERE id = ?2 AND webhook_state = 'pending' AND webhook_next = ?3",
                    p![claim_until, webhook.run_id, next],
                )?;
                if taken == 1 {
                    claimed.push(webhook);
                }
            }
            Ok(claimed)
        })
    }

    /// Records try `delivery` of `run_id`'s webhook: delivered if it
    /// succeeded; otherwise due again at `retry_at`, or failed for good
    /// without one.
    pub fn record_webhook_delivery(
        &self,
        run_id: &str,
        delivery: &pb::WebhookDelivery,
        retry_at: Option<i64>,
    ) -> StoreResult<()> {
        let (state, next) = match (delivery.ok, retry_at) {
            (true, _) => ("delivered", None),
            (false, Some(at)) => ("pending", Some(at)),
            (false, None) => ("failed", None),
        };
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO webhook_deliveries
                     (run_id, attempt, at, http_status, error, ok, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, attempt) DO NOTHING",
                p![
                    run_id,
                    i64::from(delivery.attempt),
                    delivery.unix_ms,
                    i64::from(delivery.http_status),
                    delivery.error,
                    i64::from(delivery.ok),
                    i64::from(delivery.duration_ms)
                ],
            )?;
            tx.execute(
                "UPDATE runs SET webhook_state = ?1, webhook_next = ?2,
                     webhook_attempts = ?3
                 WHERE id = ?4 AND webhook_state = 'pending'",
                p![state, next, i64::from(delivery.attempt), run_id],
            )?;
            Ok(())
        })
    }
}

/// A row of `webhook_deliveries` (attempt, at, http_status, error, ok,
/// duration_ms).
pub(super) fn delivery_from_row(r: &Row<'_>) -> StoreResult<pb::WebhookDelivery> {
    Ok(pb::WebhookDelivery {
        attempt: r.get(0)?,
        unix_ms: r.get(1)?,
        http_status: r.get(2)?,
        error: r.get(3)?,
        ok: r.get(4)?,
        duration_ms: r.get(5)?,
    })
}
