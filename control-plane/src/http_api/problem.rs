//! Errors as `application/problem+json` (RFC 9457): the gRPC status the
//! same call would give, as an HTTP status, its code and its message.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tonic::Code;

/// An error answer: HTTP status, code name and message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: String,
    detail: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, detail: String) -> Self {
        ApiError {
            status,
            code: code.into(),
            detail,
        }
    }

    /// The problem document of this error.
    pub(crate) fn document(&self) -> warden_api::Problem {
        warden_api::Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").into(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.clone(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        ApiError::new(
            http_status(status.code()),
            &code_name(status.code()),
            status.message().to_string(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        tonic::Status::invalid_argument(e.body_text()).into()
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        tonic::Status::invalid_argument(e.body_text()).into()
    }
}

/// The HTTP status for a gRPC code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `not_found` for [`Code::NotFound`].
pub(crate) fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// A problem document for `status`, `code` and `detail`.
pub(crate) fn problem(status: StatusCode, code: &str, detail: String) -> Response {
    ApiError::new(status, code, detail).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.document())).into_response();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_in_snake_case() {
        assert_eq!(code_name(Code::NotFound), "not_found");
        assert_eq!(code_name(Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(Code::Ok), "ok");
        assert_eq!(code_name(Code::ResourceExhausted), "resource_exhausted");
    }
}
