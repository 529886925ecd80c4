//! Errors the framework produces, in the protocol's shape.
//!
//! Handlers answer with [`ApiError`]s, but some answers are axum's own: no route (404), a
//! known path with the wrong method (405, empty body), a path parameter that does not decode
//! (400, plain text), any other extractor's rejection. A client library reads only its
//! protocol's error shape, so [`in_protocol_shape`] turns every error answer that is not
//! already JSON into one, by the path: OpenAI's paths (`/v1/chat/...`, `/v1/models`,
//! `/v1/memory...`) and `/metrics` get OpenAI's shape, everything else DashScope's.

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error::{ApiError, ErrorKind};
use super::request_id::RequestId;

/// Plain-text rejection messages are short; a longer body is not one.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Which API a path belongs to, for the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    DashScope,
    OpenAi,
}

impl Protocol {
    pub fn of_path(path: &str) -> Protocol {
        let openai = ["/v1/chat", "/v1/models", "/v1/memory", "/metrics"]
            .iter()
            .any(|prefix| path.starts_with(prefix));
        if openai {
            Protocol::OpenAi
        } else {
            Protocol::DashScope
        }
    }

    /// Its name in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::DashScope => "dashscope",
        }
    }

    /// `error` in this protocol's shape (DashScope's body carries the request id).
    pub fn render(self, error: ApiError, request_id: &RequestId) -> Response {
        match self {
            Protocol::OpenAi => error.into_openai(),
            Protocol::DashScope => error.into_dashscope(request_id.as_str()),
        }
    }
}

/// The API's fallback: no such endpoint, in the shape of the API the path belongs to.
pub async fn not_found(uri: Uri, request_id: RequestId) -> Response {
    Protocol::of_path(uri.path()).render(
        ApiError::new(
            ErrorKind::NotFound,
            format!("no such endpoint: {}", uri.path()),
        ),
        &request_id,
    )
}

/// Middleware: an error answer that is not JSON (axum's own) is rendered again in the
/// protocol's shape, keeping its status and its `Allow` header.
pub async fn in_protocol_shape(request: Request, next: Next) -> Response {
    let protocol = Protocol::of_path(request.uri().path());
    let request_id = request.extensions().get::<RequestId>().cloned();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => format!("{method} is not allowed on {path}"),
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let request_id = request_id.unwrap_or_default();
    let mut shaped = protocol.render(ApiError::new(kind_of(status), message), &request_id);
    *shaped.status_mut() = status;
    for name in [header::ALLOW, header::CONNECTION, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            shaped.headers_mut().insert(name, value.clone());
        }
    }
    shaped
}

/// The error kind (so the protocol's code) of a status the framework answered with.
fn kind_of(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::UNAUTHORIZED => ErrorKind::InvalidApiKey,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorKind::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorKind::RequestTimeout,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::TooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorKind::Throttling,
        s if s.is_client_error() => ErrorKind::InvalidParameter,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_paths_are_told_from_dashscope_ones() {
        for path in [
            "/v1/chat/completions",
            "/v1/chat/x",
            "/v1/models",
            "/v1/memory",
            "/v1/memory/t1",
        ] {
            assert_eq!(Protocol::of_path(path), Protocol::OpenAi, "{path}");
        }
        for path in [
            "/api/apps/a/completion",
            "/v1/apps/a/completion",
            "/apps/a/completion",
            "/",
            "/v1",
        ] {
            assert_eq!(Protocol::of_path(path), Protocol::DashScope, "{path}");
        }
    }
}
