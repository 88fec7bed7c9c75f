//! Webhooks: each tenant's allow-list and signing keys, and the delivery
//! of each ended run's result to its webhook URL (at least once: a
//! delivery stays due in the runs table until a try succeeds or the last
//! one fails, so a control plane that stops mid-delivery leaves it for the
//! next poll, on any replica).

use super::sql::{Row, Tx, p};
use super::{Store, StoreError, StoreResult, now_ms};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
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
    /// Its claim's end (Unix ms): a try is recorded only while the claim
    /// it was made under still holds.
    pub claim_until: i64,
}

/// A new key: its id and 256 random bits.
fn new_key() -> StoreResult<(String, [u8; 32])> {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 6];
    let random = SystemRandom::new();
    random
        .fill(&mut secret)
        .and_then(|()| random.fill(&mut id))
        .map_err(|_| StoreError::Corrupt("no randomness for a webhook key".into()))?;
    Ok((format!("whk_{}", hex::encode(id)), secret))
}

/// Stores a key, made after every other key of its tenant (so the newest
/// is the one that signs, even within a millisecond).
fn insert_key(tx: &mut Tx<'_>, tenant: &str, key_id: &str, sealed: &str) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO webhook_keys (tenant, key_id, secret, created)
         SELECT ?1, CAST(?2 AS TEXT), CAST(?3 AS TEXT),
             CASE WHEN max(created) >= CAST(?4 AS BIGINT) THEN max(created) + 1
                  ELSE CAST(?4 AS BIGINT) END
         FROM webhook_keys WHERE tenant = ?1",
        p![tenant, key_id, sealed, now_ms()],
    )?;
    Ok(())
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

    /// Replaces `tenant`'s allow-list. Makes its first signing key if the
    /// list is not empty and it has none: then returns (key id, secret in
    /// hex), the one time the secret is shown.
    pub fn set_webhook_allow(
        &self,
        tenant: &str,
        allow: &[String],
    ) -> StoreResult<Option<(String, String)>> {
        let text = serde_json::to_string(allow).unwrap_or_default();
        let key = new_key()?;
        let sealed = hex::encode(self.seal(&key_aad(tenant, &key.0), &key.1)?);
        self.with_tx(|tx| {
            // The config row first: on PostgreSQL a second call for the
            // tenant waits here for this one, then sees its key.
            tx.execute(
                "INSERT INTO webhook_config (tenant, allow) VALUES (?1, ?2)
                 ON CONFLICT (tenant) DO UPDATE SET allow = excluded.allow",
                p![tenant, text],
            )?;
            let keys: i64 = tx.query_one(
                "SELECT count(*) FROM webhook_keys WHERE tenant = ?1",
                p![tenant],
                |r| r.get(0),
            )?;
            if keys > 0 || allow.is_empty() {
                return Ok(None);
            }
            insert_key(tx, tenant, &key.0, &sealed)?;
            Ok(Some((key.0.clone(), hex::encode(key.1))))
        })
    }

    /// A new signing key for `tenant`'s deliveries from now on: (key id,
    /// secret in hex). Older keys stay, unused, so deliveries signed with
    /// them can still be told apart by their key id.
    pub fn rotate_webhook_key(&self, tenant: &str) -> StoreResult<(String, String)> {
        let (key_id, secret) = new_key()?;
        let sealed = hex::encode(self.seal(&key_aad(tenant, &key_id), &secret)?);
        self.with_tx(|tx| insert_key(tx, tenant, &key_id, &sealed))?;
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
    /// lapses (its deliverer stopped) makes it due again. A tenant with
    /// `per_tenant` tries `in_flight` already (counting those claimed now)
    /// gets no more.
    pub fn claim_due_webhooks(
        &self,
        claim_until: i64,
        limit: u32,
        in_flight: &HashMap<String, usize>,
        per_tenant: usize,
    ) -> StoreResult<Vec<DueWebhook>> {
        let now = now_ms();
        // More than `limit`, so a busy tenant's deliveries do not hide
        // others'.
        let candidates = i64::from(limit) * 4;
        self.with_tx(|tx| {
            let due = tx.query_map(
                &format!(
                    "SELECT id, tenant, webhook_url, webhook_attempts, webhook_next FROM runs
                     WHERE webhook_state = 'pending' AND state IN {ENDED} AND webhook_next <= ?1
                     ORDER BY webhook_next LIMIT ?2"
                ),
                p![now, candidates],
                |r| {
                    Ok((
                        DueWebhook {
                            run_id: r.get(0)?,
                            tenant: r.get(1)?,
                            url: r.get(2)?,
                            attempts: r.get::<i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                            claim_until,
                        },
                        r.get::<i64>(4)?,
                    ))
                },
            )?;
            let mut busy = in_flight.clone();
            let mut claimed = Vec::new();
            for (webhook, next) in due {
                if claimed.len() == limit as usize {
                    break;
                }
                let count = busy.entry(webhook.tenant.clone()).or_default();
                if *count >= per_tenant {
                    continue;
                }
                // Taken only if no one else took it since it was read.
                let taken = tx.execute(
                    "UPDATE runs SET webhook_next = ?1
                     WHERE id = ?2 AND webhook_state = 'pending' AND webhook_next = ?3",
                    p![claim_until, webhook.run_id, next],
                )?;
                if taken == 1 {
                    *count += 1;
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
        webhook: &DueWebhook,
        delivery: &pb::WebhookDelivery,
        retry_at: Option<i64>,
    ) -> StoreResult<()> {
        let run_id = &webhook.run_id;
        let (state, next) = match (delivery.ok, retry_at) {
            (true, _) => ("delivered", None),
            (false, Some(at)) => ("pending", Some(at)),
            (false, None) => ("failed", None),
        };
        self.with_tx(|tx| {
            // Only under the claim the try was made under: a try whose
            // claim lapsed (and was taken again) records nothing.
            let held = tx.execute(
                "UPDATE runs SET webhook_state = ?1, webhook_next = ?2, webhook_attempts = ?3
                 WHERE id = ?4 AND webhook_state = 'pending' AND webhook_next = ?5
                     AND webhook_attempts = ?6",
                p![
                    state,
                    next,
                    i64::from(delivery.attempt),
                    run_id,
                    webhook.claim_until,
                    i64::from(webhook.attempts)
                ],
            )?;
            if held == 0 {
                return Ok(());
            }
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

#[cfg(test)]
mod tests {
    use super::{DueWebhook, HashMap, Store, now_ms};
    use crate::store::RunFilter;
    use crate::store::tests::{new_run, on_both_backends};
    use warden_proto::v1 as pb;

    /// Queues a run of `tenant` with a webhook (and `labels`); its id.
    fn run_with_webhook(
        store: &Store,
        tenant: &str,
        agent: &str,
        labels: &[(&str, &str)],
    ) -> String {
        let run = crate::store::NewRun {
            tenant: tenant.into(),
            agent: agent.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            webhook_url: Some("https://hooks.example.com/x".into()),
            ..new_run(1)
        };
        store.insert_runs(std::slice::from_ref(&run)).unwrap();
        run.id
    }

    fn claim(store: &Store, until: i64, busy: &[(&str, usize)]) -> Vec<DueWebhook> {
        let busy: HashMap<String, usize> = busy.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        store.claim_due_webhooks(until, 10, &busy, 1).unwrap()
    }

    fn tried(webhook: &DueWebhook, ok: bool) -> pb::WebhookDelivery {
        pb::WebhookDelivery {
            attempt: webhook.attempts + 1,
            unix_ms: now_ms(),
            ok,
            http_status: if ok { 204 } else { 503 },
            ..Default::default()
        }
    }

    /// A delivery is due once its run has ended; a claim takes it from
    /// every other deliverer until it lapses; a tenant at its limit gets
    /// no more; a try is recorded only under the claim it was made under.
    fn deliveries_are_claimed_once_and_recorded_under_their_claim(store: &Store) {
        let a1 = run_with_webhook(store, "a", "x@1", &[]);
        let a2 = run_with_webhook(store, "a", "x@1", &[]);
        let b1 = run_with_webhook(store, "b", "x@1", &[]);
        let later = now_ms() + 60_000;
        assert!(
            claim(store, later, &[]).is_empty(),
            "due before the runs ended"
        );
        for id in [&a1, &a2, &b1] {
            store.cancel(None, id).unwrap();
        }
        // One per tenant (the limit is 1 here); b is at its limit elsewhere.
        let first = claim(store, later, &[("b", 1)]);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].tenant, "a");
        let second = claim(store, later, &[]);
        let mut tenants: Vec<&str> = second.iter().map(|w| w.tenant.as_str()).collect();
        tenants.sort();
        assert_eq!(tenants, ["a", "b"], "the claimed one is not taken again");
        assert!(claim(store, later, &[]).is_empty());

        // Recorded: a failure due again at its retry time; a stale try of
        // the same run (another claim) records nothing.
        let webhook = &first[0];
        let retry = now_ms() - 1;
        store
            .record_webhook_delivery(webhook, &tried(webhook, false), Some(retry))
            .unwrap();
        let stale = DueWebhook {
            claim_until: later + 1,
            ..webhook.clone()
        };
        store
            .record_webhook_delivery(&stale, &tried(&stale, true), None)
            .unwrap();
        let run = store.get_run(None, &webhook.run_id).unwrap().unwrap();
        let status = run.webhook.unwrap();
        assert_eq!(status.state, "pending");
        assert_eq!(status.deliveries.len(), 1);
        assert_eq!(status.deliveries[0].http_status, 503);
        // Due again now (its retry time passed): the second try succeeds.
        let again = claim(store, later, &[]);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        store
            .record_webhook_delivery(&again[0], &tried(&again[0], true), None)
            .unwrap();
        let run = store.get_run(None, &webhook.run_id).unwrap().unwrap();
        let status = run.webhook.unwrap();
        assert_eq!(status.state, "delivered");
        assert_eq!(status.deliveries.len(), 2);

        // A claim that lapsed (its deliverer stopped) is due again.
        let lapsed = now_ms() - 1;
        let b = store
            .claim_due_webhooks(lapsed, 10, &HashMap::new(), 10)
            .unwrap_or_default();
        assert!(b.is_empty(), "the other two are still claimed until later");
        let c = run_with_webhook(store, "c", "x@1", &[]);
        store.cancel(None, &c).unwrap();
        assert_eq!(claim(store, lapsed, &[]).len(), 1);
        assert_eq!(
            claim(store, later, &[]).len(),
            1,
            "the lapsed claim is due again"
        );
    }

    /// A key is made with the first non-empty allow-list and only then;
    /// the newest key signs and its secret opens.
    fn the_first_allow_list_makes_one_key_and_rotation_a_newer_one(store: &Store) {
        assert_eq!(store.set_webhook_allow("t", &[]).unwrap(), None);
        let allow = vec!["https://hooks.example.com".to_string()];
        let (id, secret) = store.set_webhook_allow("t", &allow).unwrap().unwrap();
        assert_eq!(store.set_webhook_allow("t", &allow).unwrap(), None);
        let config = store.webhook_config("t").unwrap();
        assert_eq!((config.allow, config.key_id), (allow, Some(id.clone())));
        let (signing, bytes) = store.webhook_key("t").unwrap().unwrap();
        assert_eq!((signing, hex::encode(bytes)), (id.clone(), secret));
        // Rotated twice within a millisecond: the newest signs.
        let (second, _) = store.rotate_webhook_key("t").unwrap();
        let (third, third_secret) = store.rotate_webhook_key("t").unwrap();
        assert_ne!(second, third);
        let (signing, bytes) = store.webhook_key("t").unwrap().unwrap();
        assert_eq!((signing, hex::encode(bytes)), (third, third_secret));
        assert_eq!(store.webhook_key("other").unwrap(), None);
    }

    /// List filters: an agent's name matches its versions, not a longer
    /// name; labels match exactly (with every one given); since.
    fn run_lists_filter_by_agent_label_and_time(store: &Store) {
        let quote = r#"a"b"#;
        run_with_webhook(store, "t", "hello@1", &[("k", "v"), ("x", quote)]);
        run_with_webhook(store, "t", "hello@2", &[("k", "V")]);
        run_with_webhook(store, "t", "hello2@1", &[("k", "v")]);
        let list = |filter: RunFilter| {
            let mut agents: Vec<String> = store
                .list_runs(&RunFilter {
                    tenant: Some("t".into()),
                    limit: 100,
                    ..filter
                })
                .unwrap()
                .into_iter()
                .map(|r| r.agent)
                .collect();
            agents.sort();
            agents
        };
        let by_agent = |a: &str| RunFilter {
            agent: Some(a.into()),
            ..Default::default()
        };
        assert_eq!(list(by_agent("hello")), ["hello@1", "hello@2"]);
        assert_eq!(list(by_agent("hello@2")), ["hello@2"]);
        assert!(list(by_agent("hell")).is_empty());
        let by_labels = |pairs: &[(&str, &str)]| RunFilter {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        assert_eq!(list(by_labels(&[("k", "v")])), ["hello2@1", "hello@1"]);
        assert_eq!(list(by_labels(&[("k", "V")])), ["hello@2"]);
        assert_eq!(list(by_labels(&[("k", "v"), ("x", quote)])), ["hello@1"]);
        assert!(list(by_labels(&[("k", "v"), ("x", "a")])).is_empty());
        let since = |ms: i64| RunFilter {
            since_ms: Some(ms),
            ..Default::default()
        };
        assert_eq!(list(since(0)).len(), 3);
        assert!(list(since(now_ms() + 1000)).is_empty());
    }

    on_both_backends!(
        deliveries_are_claimed_once_and_recorded_under_their_claim,
        the_first_allow_list_makes_one_key_and_rotation_a_newer_one,
        run_lists_filter_by_agent_label_and_time,
    );
}
