//! The HTTP/JSON API (`/v1/...`), served beside gRPC on its own port
//! (`warden control-plane --http-listen`), with TLS like gRPC.
//!
//! Every route is one gRPC method: it authorizes the request by that
//! method's rule ([`crate::auth::rules`]: same tokens, roles, tenants, rate
//! limit and audit of denials as over gRPC) before it reads anything else
//! of the request (query, path, body), and then calls the method's own
//! handler, so nothing is reachable over HTTP that the same token could not
//! do over gRPC, and the answers say the same. Documents are those of
//! `warden-api`; errors are `application/problem+json` carrying the gRPC
//! status code and message.

/// The gRPC method path of `Service.Method`.
macro_rules! method {
    ($service:literal, $method:literal) => {
        concat!("/warden.v1.", $service, "/", $method)
    };
}

mod admin;
mod console;
mod mcp;
mod openapi;
mod problem;
mod routes;
mod serve;
mod streams;
mod uploads;

pub(crate) use problem::code_name;
pub use serve::HttpApi;

use crate::ControlPlane;
use crate::auth::Caller;
use http::{HeaderMap, StatusCode};
use problem::ApiError;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::Duration;

/// How long a client may take to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Who is calling the gRPC method `method` (its path,
/// `/warden.v1.RunService/Submit`) with this HTTP request's headers, if
/// the method's rule lets them. Nodes do not use HTTP: no certificate is
/// looked at.
fn authorize(cp: &ControlPlane, method: &str, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(cp.authorize(method, headers, &http::Extensions::new())?)
}

/// Calls a gRPC handler as `caller`, with `message`.
async fn invoke<M, R, F, Fut>(
    cp: &ControlPlane,
    caller: &Caller,
    message: M,
    handler: F,
) -> Result<R, ApiError>
where
    F: FnOnce(ControlPlane, tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(caller.clone());
    Ok(handler(cp.clone(), request).await?.into_inner())
}

/// The query parameters of `uri` as `T` (read once the caller is
/// authorized).
fn query<T: DeserializeOwned>(uri: &http::Uri) -> Result<T, ApiError> {
    Ok(axum::extract::Query::<T>::try_from_uri(uri)?.0)
}

/// A request's JSON body as `T`, read once its caller is authorized:
/// `application/json`, at most `limit` bytes, sent within
/// [`BODY_TIMEOUT`].
async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<T, ApiError> {
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_argument",
            "the body must be JSON: send `content-type: application/json`".into(),
        ));
    }
    let too_large = |size: &str| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "out_of_range",
            format!("the body is {size} bytes; this route takes at most {limit}"),
        )
    };
    if let Some(length) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(too_large(&length.to_string()));
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return Err(too_large("more than that")),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "deadline_exceeded",
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_argument",
            format!("the body does not fit: {e}"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("the body is not valid JSON: {e}"),
        ),
    })
}
