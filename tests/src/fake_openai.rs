//! [`FakeOpenAi`]: a stand-in for an OpenAI-compatible provider on loopback
//! (the one boundary Warden does not own). It records every request and
//! answers with the script of `warden dev --mock-llm`
//! (`warden_cli::mock_llm`: deterministic, so budgets can be asserted
//! exactly), and serves the same page at `/docs/wasm`.

use crate::http_server::{Request, Response, TestServer};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

pub struct FakeOpenAi {
    server: TestServer,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// The document served at `/docs/wasm`.
pub const WASM_DOC: &str = warden_cli::mock_llm::SAMPLE_PAGE;

impl FakeOpenAi {
    pub fn start() -> Self {
        Self::start_on(0)
    }

    pub fn start_on(port: u16) -> Self {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = requests.clone();
        let server = TestServer::start_on(port, move |req| respond(req, &log));
        FakeOpenAi { server, requests }
    }

    /// Base URL to configure as the provider: `http://127.0.0.1:PORT/v1`.
    /// A node config (TOML) that uses this provider, with model `small`
    /// priced at $1,000 per million tokens either way.
    pub fn node_config(&self) -> String {
        format!(
            "[llm]\nbase_url = \"{}\"\n[llm.prices.small]\ninput_per_mtok = 1000.0\noutput_per_mtok = 1000.0\n",
            self.base_url()
        )
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.url())
    }

    pub fn server(&self) -> &TestServer {
        &self.server
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn respond(req: &Request, log: &Mutex<Vec<Recorded>>) -> Response {
    if req.method == "GET" && req.path == "/docs/wasm" {
        return Response::text(200, WASM_DOC);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return Response::json(400, &json!({ "error": { "message": "body is not JSON" } }));
    };
    log.lock().unwrap().push(Recorded {
        path: req.path.clone(),
        authorization: req.header("authorization").map(str::to_string),
        body: body.clone(),
    });
    match warden_cli::mock_llm::answer(&req.path, &body) {
        Some(answer) => Response::json(200, &answer),
        None => Response::json(404, &json!({ "error": { "message": "no such endpoint" } })),
    }
}
