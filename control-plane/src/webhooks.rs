//! Webhooks: once a run submitted with a webhook URL ends, its result is
//! POSTed there, signed with its tenant's key, and tried again with
//! backoff until the receiver answers 2xx or the last try fails. Each try
//! is recorded on the run.
//!
//! The URL must match the tenant's allow-list (HTTP patterns, set by the
//! system role), checked when the run is submitted and again at every try;
//! every address the host resolves to passes the same check agents' HTTP
//! requests do (loopback, private and metadata ranges only when the list
//! names them as IPs), and the request goes only to an address that
//! passed, without following redirects or proxies.
//!
//! A delivery is `POST URL` with the body `{"event": "run.ended", "run":
//! RUN}` (the run as `GET /v1/runs/ID` shows it) and the headers
//! `Warden-Webhook-Id` (the run id: the same on every try, to drop
//! repeats), `Warden-Delivery-Attempt` and `Warden-Signature: t=UNIX
//! SECONDS,k=KEY ID,v1=HEX`, where `v1` is HMAC-SHA256 under the key's
//! secret of `t`, a `.`, and the body, so a receiver can check who sent it
//! and refuse old replays.

use crate::ControlPlane;
use crate::store::{DueWebhook, WebhookConfig};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Status;
use warden_core::HttpPolicy;
use warden_proto::v1 as pb;

/// The waits before each retry: a receiver that is down gets about four
/// hours to come back.
pub const RETRY_DELAYS: [Duration; 8] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
];
/// The longest URL a run may name.
const MAX_URL: usize = 2048;
/// A whole try (resolving the host, connecting, sending, the answer's
/// status) within this.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A claim outlasts a try, so two deliverers never try one run at once.
const CLAIM: Duration = Duration::from_secs(60);
/// Tries in flight at once on one control plane; a dead receiver holds
/// one for at most [`TRY_TIMEOUT`].
const IN_FLIGHT: usize = 32;
/// Tries of one tenant in flight at once, so one tenant's dead receivers
/// never hold every slot.
const IN_FLIGHT_PER_TENANT: usize = 4;
/// How often due deliveries are looked for when nothing wakes the loop.
const POLL: Duration = Duration::from_millis(500);

/// The parts of a webhook URL the checks look at: as reqwest reads the
/// URL it then requests, so the host and port checked are the ones it
/// connects to.
struct Target {
    scheme: String,
    /// A name, or an IP address (without brackets).
    host: String,
    port: u16,
    ip: Option<IpAddr>,
}

fn parse(url: &str) -> Result<Target, String> {
    if url.len() > MAX_URL {
        return Err(format!("it is longer than {MAX_URL} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("it is not a URL ({e})"))?;
    let scheme = match parsed.scheme() {
        s @ ("http" | "https") => s.to_string(),
        _ => return Err("it must start http:// or https://".into()),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("user info (user:password@) is not allowed in it".into());
    }
    let (host, ip) = match parsed.host() {
        Some(url::Host::Domain(name)) => (name.to_string(), None),
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
        None => return Err("it has no host".into()),
    };
    let port = parsed.port_or_known_default().ok_or("it has no port")?;
    Ok(Target {
        scheme,
        host,
        port,
        ip,
    })
}

/// Whether `tenant` may send its runs' results to `url`.
pub(crate) fn check_url(tenant: &str, url: &str, config: &WebhookConfig) -> Result<(), Status> {
    let target = parse(url)
        .map_err(|why| Status::invalid_argument(format!("the webhook URL {url:?}: {why}")))?;
    let policy = HttpPolicy::new(&config.allow).map_err(|e| {
        Status::failed_precondition(format!("tenant {tenant}'s webhook allow-list: {e}"))
    })?;
    policy
        .check_url(&target.scheme, &target.host, target.port)
        .map_err(|_| {
            Status::permission_denied(format!(
                "the webhook URL {url:?} is not on tenant {tenant}'s webhook allow-list{}",
                if config.allow.is_empty() {
                    " (it has none: the system role sets one with `warden webhooks allow`)"
                        .to_string()
                } else {
                    format!(" ({})", config.allow.join(", "))
                }
            ))
        })
}

/// `Warden-Signature` of `body` sent at `unix_s` under key `key_id`.
pub fn signature(key_id: &str, secret: &[u8], unix_s: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = format!("{unix_s}.").into_bytes();
    signed.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &signed);
    format!("t={unix_s},k={key_id},v1={}", hex::encode(tag.as_ref()))
}

impl ControlPlane {
    /// Delivers due webhooks until the control plane stops: woken when a
    /// run changes here, and every [`POLL`] for those due on a timer (or
    /// ended on another replica).
    pub(crate) async fn deliver_webhooks(self) {
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        // Tries in flight, by tenant.
        let busy: Arc<std::sync::Mutex<HashMap<String, usize>>> = Default::default();
        loop {
            let changed = self.changed.notified();
            let free = slots.available_permits() as u32;
            if free > 0 {
                let claim_until = crate::store::now_ms() + CLAIM.as_millis() as i64;
                let in_flight = busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let claimed = self.store.claim_due_webhooks(
                    claim_until,
                    free,
                    &in_flight,
                    IN_FLIGHT_PER_TENANT,
                );
                match claimed {
                    Ok(due) => {
                        for webhook in due {
                            let Ok(slot) = slots.clone().try_acquire_owned() else {
                                break;
                            };
                            let tenant = webhook.tenant.clone();
                            *busy
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(tenant.clone())
                                .or_default() += 1;
                            let (cp, busy) = (self.clone(), busy.clone());
                            tokio::spawn(async move {
                                cp.deliver(webhook).await;
                                let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some(n) = busy.get_mut(&tenant) {
                                    *n -= 1;
                                    if *n == 0 {
                                        busy.remove(&tenant);
                                    }
                                }
                                drop(slot);
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "webhooks: reading due deliveries"),
                }
            }
            let _ = tokio::time::timeout(POLL, changed).await;
        }
    }

    /// One try at `webhook`, recorded on its run.
    async fn deliver(&self, webhook: DueWebhook) {
        let attempt = webhook.attempts + 1;
        let started = Instant::now();
        let unix_ms = crate::store::now_ms();
        let tried = tokio::time::timeout(TRY_TIMEOUT, self.try_delivery(&webhook, attempt)).await;
        let (http_status, error) = match tried {
            Ok(Ok(status)) => (status, None),
            Ok(Err(Failure { status, why, again })) => (status, Some((why, again))),
            Err(_) => (
                0,
                Some((
                    format!("no answer within {} s", TRY_TIMEOUT.as_secs()),
                    true,
                )),
            ),
        };
        let retry_at = match &error {
            Some((_, true)) => self
                .config
                .webhook_retries
                .get(webhook.attempts as usize)
                .map(|wait| crate::store::now_ms() + wait.as_millis() as i64),
            _ => None,
        };
        let delivery = pb::WebhookDelivery {
            attempt,
            unix_ms,
            http_status: u32::from(http_status),
            ok: error.is_none(),
            error: error
                .as_ref()
                .map(|(why, _)| why.clone())
                .unwrap_or_default(),
            duration_ms: started.elapsed().as_millis().min(u32::MAX as u128) as u32,
        };
        match &error {
            None => tracing::info!(run = %webhook.run_id, attempt, "webhook delivered"),
            Some((why, _)) => tracing::warn!(
                run = %webhook.run_id, attempt, error = %why,
                retry = retry_at.is_some(), "webhook delivery failed"
            ),
        }
        self.metrics.webhook_delivery(match (&error, retry_at) {
            (None, _) => "delivered",
            (Some(_), Some(_)) => "retry",
            (Some(_), None) => "failed",
        });
        if let Err(e) = self
            .store
            .record_webhook_delivery(&webhook, &delivery, retry_at)
        {
            // The claim lapses and the delivery is tried again.
            tracing::error!(run = %webhook.run_id, error = %e, "webhooks: recording a try");
        }
    }

    /// One try; the receiver's (2xx) status.
    async fn try_delivery(&self, webhook: &DueWebhook, attempt: u32) -> Result<u16, Failure> {
        let config = self
            .store
            .webhook_config(&webhook.tenant)
            .map_err(store_failed)?;
        check_url(&webhook.tenant, &webhook.url, &config)
            .map_err(|e| Failure::final_(e.message().to_string()))?;
        let target = parse(&webhook.url).map_err(Failure::final_)?;
        let policy = HttpPolicy::new(&config.allow).map_err(|e| Failure::final_(e.to_string()))?;
        let addrs = resolve_checked(&policy, &target).await?;
        let (key_id, secret) = self
            .store
            .webhook_key(&webhook.tenant)
            .map_err(store_failed)?
            .ok_or_else(|| {
                Failure::final_(format!(
                    "tenant {} has no webhook signing key (`warden webhooks rotate-key`)",
                    webhook.tenant
                ))
            })?;
        let mut run = self
            .store
            .get_run(None, &webhook.run_id)
            .map_err(store_failed)?
            .ok_or_else(|| Failure::final_("the run is gone".into()))?;
        run.webhook = None;
        let body = serde_json::to_vec(&serde_json::json!({
            "event": "run.ended",
            "run": warden_api::Run::full(&run),
        }))
        .map_err(|e| Failure::final_(e.to_string()))?;
        let unix_s = crate::store::now_ms() / 1000;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(TRY_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("warden-webhook/", env!("CARGO_PKG_VERSION")))
            // Only to the addresses checked above (a name resolved again
            // could answer otherwise; an IP is connected to as it is).
            .resolve_to_addrs(&target.host, &addrs)
            .build()
            .map_err(|e| Failure::again(e.to_string()))?;
        let response = client
            .post(&webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("warden-webhook-id", &webhook.run_id)
            .header("warden-delivery-attempt", attempt.to_string())
            .header(
                "warden-signature",
                signature(&key_id, &secret, unix_s, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::again(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        Err(Failure {
            status: status.as_u16(),
            why: match status.is_redirection() {
                true => format!("the receiver answered {status} (redirects are not followed)"),
                false => format!("the receiver answered {status}"),
            },
            again: true,
        })
    }
}

/// Why a try failed, and whether another could succeed.
struct Failure {
    status: u16,
    why: String,
    again: bool,
}

impl Failure {
    fn again(why: impl Into<String>) -> Self {
        Failure {
            status: 0,
            why: why.into(),
            again: true,
        }
    }

    /// A failure no retry mends (the URL is no longer allowed).
    fn final_(why: String) -> Self {
        Failure {
            status: 0,
            why,
            again: false,
        }
    }
}

/// A store error, in the log; the tenant reads only that it happened.
fn store_failed(e: crate::store::StoreError) -> Failure {
    tracing::error!(error = %e, "webhooks: the store");
    Failure::again("the control plane could not read its store; tried again later")
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", TRY_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect to the receiver".into()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }
}

/// The addresses `target`'s host resolves to, each allowed by `policy`
/// (one refused address refuses the name: a name mixing public and
/// private answers is a rebinding attempt). What the tenant reads on its
/// run says no more than that: which names the control plane's own
/// network resolves, and to what, stays in its log.
async fn resolve_checked(policy: &HttpPolicy, target: &Target) -> Result<Vec<SocketAddr>, Failure> {
    let addrs: Vec<SocketAddr> = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                tracing::warn!(host = %target.host, error = %e, "webhook host does not resolve");
                return Err(Failure::again("cannot resolve the receiver's host"));
            }
        },
    };
    if addrs.is_empty() {
        return Err(Failure::again("cannot resolve the receiver's host"));
    }
    for addr in &addrs {
        if let Err(denied) = policy.check_ip(&target.scheme, &target.host, target.port, addr.ip()) {
            tracing::warn!(%denied, "webhook refused after DNS resolution");
            return Err(Failure::final_(format!(
                "{} resolves to an address webhooks may not reach (loopback, private, link-local \
                 or another special range) unless the tenant's allow-list names it as an IP",
                target.host
            )));
        }
    }
    Ok(addrs)
}
