//! Outgoing HTTP over `wasi:http`: blocking GET and POST with JSON helpers.
//! The host decides which hosts the run may reach (`--allow-http`); a refused
//! request is an [`HttpError`] naming the reason.
//!
//! ```ignore
//! let page = warden_sdk::http::get("https://example.com/")?;
//! println!("{} {}", page.status, page.text());
//! let created: serde_json::Value =
//!     warden_sdk::http::post_json("https://api.example.com/items", &serde_json::json!({"a": 1}))?.json()?;
//! ```
//!
//! Redirects are not followed: a 3xx comes back as a [`Response`], and
//! following it (a new request, checked by the host again) is up to you.

use crate::__private::wasi::http::outgoing_handler;
use crate::__private::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::__private::wasi::io::streams::StreamError;
use core::fmt;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    message: String,
}

impl HttpError {
    fn new(message: impl Into<String>) -> Self {
        HttpError {
            message: message.into(),
        }
    }

    /// The host refused the request: not on the allow-list, a forbidden
    /// address, or over the request budget.
    pub fn is_denied(&self) -> bool {
        self.message.starts_with("denied")
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => {
            "denied: the URL is not on the run's HTTP allow-list".into()
        }
        ErrorCode::ConnectionLimitReached => {
            "denied: the run's HTTP request budget is spent".into()
        }
        ErrorCode::DestinationIpProhibited => {
            "denied: the destination resolves to an address agents may not reach (loopback, private, link-local or metadata)".into()
        }
        ErrorCode::HttpResponseBodySize(_) => "the run's HTTP response byte budget is spent".into(),
        ErrorCode::DnsTimeout => "the host name did not resolve in time".into(),
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => {
            "the host name does not resolve".into()
        }
        ErrorCode::ConnectionRefused => "the server refused the connection".into(),
        ErrorCode::ConnectionTimeout => "the connection timed out".into(),
        ErrorCode::ConnectionTerminated => "the server closed the connection".into(),
        ErrorCode::HttpResponseTimeout => "the server did not answer in time".into(),
        ErrorCode::TlsCertificateError => {
            "the server's TLS certificate is not valid for its name".into()
        }
        ErrorCode::TlsProtocolError | ErrorCode::TlsAlertReceived(_) => {
            "the TLS handshake with the server failed".into()
        }
        ErrorCode::HttpRequestUriInvalid => "the URL is not valid".into(),
        ErrorCode::InternalError(Some(why)) => format!("the host failed: {why}"),
        other => words(&format!("{other:?}")),
    }
}

/// An error code's name in words: `HttpResponseIncomplete(..)` is "http
/// response incomplete".
fn words(debug: &str) -> String {
    let name = debug.split(['(', ' ', '{']).next().unwrap_or(debug);
    let name = name.rsplit("::").next().unwrap_or(name);
    let mut out = String::new();
    for c in name.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::new(format!("response body is not the expected JSON: {e}")))
    }

    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    send("GET", url, &[], None)
}

/// `POST url` with `body` as JSON.
pub fn post_json<T: serde::Serialize>(url: &str, body: &T) -> Result<Response, HttpError> {
    let bytes = serde_json::to_vec(body).map_err(|e| HttpError::new(e.to_string()))?;
    send(
        "POST",
        url,
        &[("content-type", "application/json")],
        Some(&bytes),
    )
}

struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, HttpError> {
    let bad = || HttpError::new(format!("`{url}` is not an http(s) URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(bad());
    }
    Ok(Url {
        scheme,
        authority,
        path: if path.is_empty() { "/" } else { path },
    })
}

/// Sends one request with `method`, `headers` and an optional body.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let url = parse_url(url)?;
    let fields = Fields::new();
    for (k, v) in headers {
        fields
            .append(k, v.as_bytes())
            .map_err(|e| HttpError::new(format!("bad header {k}: {e:?}")))?;
    }
    let req = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| HttpError::new(format!("invalid {what}"));
    req.set_method(&method).map_err(|_| invalid("method"))?;
    req.set_scheme(Some(&url.scheme))
        .map_err(|_| invalid("scheme"))?;
    req.set_authority(Some(url.authority))
        .map_err(|_| invalid("host"))?;
    req.set_path_with_query(Some(url.path))
        .map_err(|_| invalid("path"))?;
    let out_body = req.body().map_err(|_| invalid("body"))?;

    let pending = outgoing_handler::handle(req, None).map_err(|e| HttpError::new(describe(&e)))?;
    if let Some(bytes) = body {
        let stream = out_body.write().map_err(|_| invalid("body stream"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::new(format!("cannot send the body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(out_body, None).map_err(|e| HttpError::new(describe(&e)))?;

    let response = loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| HttpError::new("the response was already taken"))?
        .map_err(|e| HttpError::new(describe(&e)))?;

    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::new("the response body was already taken"))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::new("the response body stream was already taken"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    let detail = crate::__private::wasi::http::types::http_error_code(&e)
                        .map_or_else(|| e.to_debug_string(), |code| describe(&code));
                    return Err(HttpError::new(format!(
                        "reading the response failed: {detail}"
                    )));
                }
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_words_not_enum_dumps() {
        assert_eq!(
            describe(&ErrorCode::ConnectionRefused),
            "the server refused the connection"
        );
        assert_eq!(
            describe(&ErrorCode::HttpResponseIncomplete),
            "http response incomplete"
        );
        assert_eq!(
            describe(&ErrorCode::HttpRequestHeaderSectionSize(Some(9))),
            "http request header section size"
        );
        assert!(describe(&ErrorCode::HttpRequestDenied).starts_with("denied"));
    }
}
