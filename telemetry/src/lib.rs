//! What operators see of a Warden process: Prometheus metrics and the admin
//! HTTP endpoints, served by [`serve`] on `--admin-addr`:
//!
//! - `GET /metrics`: every metric in the OpenMetrics text format
//!   (Prometheus scrapes it as is).
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 when every [`Component`] is ready, else 503; the
//!   JSON body says what is not ready.
//! - `GET /health`: status and the runs going on now.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::Registry;
use std::sync::Arc;

pub use warden_core::{label_set, metrics};

mod otlp_env;
pub mod otlp_metrics;
mod span_export;
pub mod trace;

/// A part of the process the admin endpoints report on: a node or a
/// control plane.
#[async_trait::async_trait]
pub trait Component: Send + Sync + 'static {
    /// Its name in `/readyz` and `/health` (`node`, `control_plane`).
    fn name(&self) -> &'static str;

    /// What keeps it from serving: empty when ready.
    async fn not_ready(&self) -> Vec<String>;

    /// Brings up to date the gauges read at scrape time (queue depth,
    /// free slots).
    async fn refresh(&self) {}

    /// Runs going on now, for `/health`.
    fn active_runs(&self) -> Option<u64> {
        None
    }
}

/// The metrics and components one admin server reports on.
#[derive(Clone)]
pub struct Admin {
    registry: Arc<Registry>,
    components: Vec<Arc<dyn Component>>,
    /// One scrape at a time: a refresh and its encoding go together.
    scrape: Arc<tokio::sync::Mutex<()>>,
}

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Admin {
    pub fn new(registry: Registry, components: Vec<Arc<dyn Component>>) -> Admin {
        Admin {
            registry: Arc::new(registry),
            components,
            scrape: Default::default(),
        }
    }

    /// Every metric, refreshed, in the OpenMetrics text format.
    pub async fn metrics(&self) -> String {
        let _scrape = self.scrape.lock().await;
        self.refresh().await;
        self.registry.encode().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode metrics");
            String::new()
        })
    }

    /// Every metric's values, refreshed (for the OTLP push).
    pub async fn read(&self) -> Vec<metrics::Reading> {
        let _scrape = self.scrape.lock().await;
        self.refresh().await;
        self.registry.read()
    }

    async fn refresh(&self) {
        for c in &self.components {
            c.refresh().await;
        }
    }

    /// Whether every component is ready, and the JSON `/readyz` answers.
    pub async fn readiness(&self) -> (bool, serde_json::Value) {
        let mut ready = true;
        let mut components = serde_json::Map::new();
        for c in &self.components {
            let problems = c.not_ready().await;
            ready &= problems.is_empty();
            components.insert(
                c.name().into(),
                serde_json::json!({ "ready": problems.is_empty(), "problems": problems }),
            );
        }
        (
            ready,
            serde_json::json!({ "ready": ready, "components": components }),
        )
    }

    fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/health", get(health))
            .with_state(self)
    }
}

/// Prometheus' classic text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics for a scraper that asks for it (Prometheus does), else the
/// classic text format (`curl`, `promtool check metrics`).
async fn metrics(State(admin): State<Admin>, headers: axum::http::HeaderMap) -> Response {
    let text = admin.metrics().await;
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], classic(&text)).into_response()
    }
}

/// OpenMetrics text in Prometheus' classic text format (0.0.4): a
/// counter's HELP and TYPE lines name its `_total` samples, and the
/// `# UNIT` and `# EOF` lines go. (The samples are the same.)
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let named = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match named {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "alive" })).into_response()
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let (ready, body) = admin.readiness().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn health(State(admin): State<Admin>) -> Response {
    let active: u64 = admin
        .components
        .iter()
        .filter_map(|c| c.active_runs())
        .sum();
    axum::Json(serde_json::json!({ "status": "ok", "active_runs": active })).into_response()
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, admin.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Histogram buckets for durations in milliseconds: 1 ms to about 2 min.
pub fn millisecond_buckets() -> impl Iterator<Item = f64> {
    metrics::exponential_buckets(1.0, 2.0, 18)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Counter;

    struct Fixed(&'static str, Vec<String>);

    #[async_trait::async_trait]
    impl Component for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn not_ready(&self) -> Vec<String> {
            self.1.clone()
        }
        fn active_runs(&self) -> Option<u64> {
            Some(3)
        }
    }

    #[tokio::test]
    async fn readiness_names_what_is_not_ready_and_metrics_are_openmetrics() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry
            .prefixed("test")
            .register("things", "Things done", counter.clone());
        counter.inc_by(2);
        let admin = Admin::new(
            registry,
            vec![
                Arc::new(Fixed("a", vec![])),
                Arc::new(Fixed("b", vec!["draining".into()])),
            ],
        );
        let text = admin.metrics().await;
        assert!(
            text.contains("# TYPE test_things counter\ntest_things_total 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            classic(&text),
            "# HELP test_things_total Things done.\n# TYPE test_things_total counter\ntest_things_total 2\n"
        );
        let (ready, body) = admin.readiness().await;
        assert!(!ready);
        assert_eq!(body["components"]["a"]["ready"], true);
        assert_eq!(body["components"]["b"]["problems"][0], "draining");
    }
}
