//! The web console: a page and its modules, style and icon, built into the
//! binary and served at `/` and `/console/*` beside the API. It holds no
//! secret and needs no token to load; it signs in with a token the user
//! gives it (kept in the tab's session storage) and reads everything
//! through the API, so it can do exactly what that token can.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

/// What a console asset may do: only its own scripts and style, fetches
/// to its own origin, never framed (clickjacking), no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The files under `/console/`: name, content type, content.
macro_rules! assets {
    ($($name:literal => $type:literal),* $(,)?) => {
        const ASSETS: &[(&str, &str, &str)] = &[
            $(($name, $type, include_str!(concat!("console/", $name)))),*
        ];
    };
}

assets! {
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "ui.js" => "text/javascript; charset=utf-8",
    "runs.js" => "text/javascript; charset=utf-8",
    "run.js" => "text/javascript; charset=utf-8",
    "agents.js" => "text/javascript; charset=utf-8",
    "nodes.js" => "text/javascript; charset=utf-8",
    "usage.js" => "text/javascript; charset=utf-8",
    "charts.js" => "text/javascript; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // A new build serves its own assets at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the console's page.
pub(super) async fn index() -> Response {
    serve(
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    )
}

/// `GET /console/{file}`.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => super::problem::problem(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the console has no file {file:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    /// Every file in the console's directory is served, and every one
    /// served is there: a module added without a line above would load
    /// as a 404.
    #[test]
    fn every_console_file_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http_api/console");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "index.html")
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = super::ASSETS
            .iter()
            .map(|(n, _, _)| n.to_string())
            .collect();
        served.sort();
        assert_eq!(on_disk, served);
    }
}
