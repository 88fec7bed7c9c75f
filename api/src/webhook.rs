//! A run's webhook as the API shows it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_proto::v1 as pb;

/// Where a run's result is POSTed once it ends, and each try so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub url: String,
    /// `waiting` (the run has not ended), `pending` (a try is due),
    /// `delivered` or `failed` (every try failed).
    pub state: String,
    /// When the next try is due, while one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_unix_ms: Option<i64>,
    /// Absent in a list's summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<WebhookDelivery>>,
}

/// One try at delivering a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    pub attempt: u32,
    pub unix_ms: i64,
    /// The receiver's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ok: bool,
    pub duration_ms: u32,
}

impl Webhook {
    /// The webhook of a run, with its tries if `full`.
    pub fn of(w: &pb::WebhookStatus, full: bool) -> Self {
        Webhook {
            url: w.url.clone(),
            state: w.state.clone(),
            next_attempt_unix_ms: (w.next_attempt_unix_ms > 0).then_some(w.next_attempt_unix_ms),
            deliveries: full.then(|| {
                w.deliveries
                    .iter()
                    .map(|d| WebhookDelivery {
                        attempt: d.attempt,
                        unix_ms: d.unix_ms,
                        http_status: u16::try_from(d.http_status).ok().filter(|s| *s > 0),
                        error: (!d.error.is_empty()).then(|| d.error.clone()),
                        ok: d.ok,
                        duration_ms: d.duration_ms,
                    })
                    .collect()
            }),
        }
    }
}
