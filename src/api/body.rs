//! Reading a JSON request body into a typed request, with errors a client can act on.
//!
//! Handlers take the body as raw bytes (so axum's plain-text rejections never reach a client),
//! call [`read_body`], which tells apart a body that is too large (413), late (408) or one the
//! port has no room for now (503), then [`parse_json`], which tells apart a body that is empty,
//! not UTF-8, not JSON, or JSON of the wrong shape (400), always as an [`ApiError`]. The typed
//! request may borrow from the bytes (a dialogue's messages stay slices of the body until a turn
//! needs them). [`limit_body`] enforces `--max-body-bytes` and the port's body budget so that
//! the client can read the 413 or 503.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;

use super::error::{ApiError, ErrorKind};
use crate::http::{BodyBudget, BodyError, LimitedBody};

/// Middleware: a body over `max_bytes`, or one `budget` has no room for, fails to read, but
/// only once its rest has been read (up to a bound, within the body deadline), so that a client
/// that sends its whole body before reading (Python's `requests`) reads the 413 or 503 instead
/// of a broken pipe. After such a refusal the connection is closed: what is left of the body,
/// if any, is never read.
pub async fn limit_body(
    max_bytes: usize,
    budget: BodyBudget,
    request: Request,
    next: Next,
) -> Response {
    let body = request.map(|body| LimitedBody::new(body, max_bytes, budget.claim()));
    let refused = body.body().refused();
    let mut response = next.run(body.map(Body::new)).await;
    if refused.is_set() || response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The whole body, or why it could not be read.
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match BodyError::find(&rejection) {
        Some(BodyError::TooLarge { limit }) => ApiError::new(
            ErrorKind::TooLarge,
            format!("request body is larger than this server accepts ({limit} bytes)"),
        ),
        Some(late @ BodyError::TimedOut(_)) => {
            ApiError::new(ErrorKind::RequestTimeout, late.to_string())
        }
        Some(busy @ BodyError::Busy { .. }) => {
            ApiError::new(ErrorKind::Unavailable, busy.to_string())
        }
        None if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorKind::TooLarge,
            "request body is larger than this server accepts",
        ),
        None => ApiError::invalid(format!(
            "request body could not be read: {}",
            rejection.body_text()
        )),
    })
}

/// The request in `bytes`, which it may borrow from.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty; send a JSON object",
        ));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::invalid(format!(
            "request body is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::invalid(format!("request body is not valid JSON: {e}"))
            }
            Category::Data => ApiError::invalid(format!(
                "request body has a field of the wrong type or value: {e}"
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Probe {
        #[allow(dead_code)]
        messages: Vec<String>,
    }

    fn parse(bytes: &'static [u8]) -> Result<Probe, ApiError> {
        parse_json(bytes)
    }

    #[test]
    fn says_what_is_wrong_with_a_body() {
        assert!(parse(b"").unwrap_err().message.contains("empty"));
        assert!(
            parse(b"{\"messages\": [\"\xff\"]}")
                .unwrap_err()
                .message
                .contains("UTF-8")
        );
        assert!(
            parse(b"{nope")
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
        assert!(
            parse(b"{\"messages\": \"x\"}")
                .unwrap_err()
                .message
                .contains("wrong type")
        );
        assert!(parse(b"{\"messages\": [\"x\"]}").is_ok());
    }
}
