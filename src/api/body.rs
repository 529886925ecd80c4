//! Reading a JSON request body into a typed request, with errors a client can act on.
//!
//! Handlers take the body as raw bytes (so axum's plain-text rejections never reach a client)
//! and call [`parse_json`], which tells apart a body that is too large (413), late (408),
//! empty, not UTF-8, not JSON, or JSON of the wrong shape (400), always as an [`ApiError`].
//! [`limit_body`] enforces `--max-body-bytes` so that the client can read the 413.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorKind};
use crate::http::{BodyError, LimitedBody};

/// Middleware: a body over `max_bytes` fails to read, but only once its rest has been read
/// (up to a bound, within the body deadline), so that a client that sends its whole body
/// before reading (Python's `requests`) reads the 413 instead of a broken pipe. After a 413
/// the connection is closed: what is left of the body, if any, is never read.
pub async fn limit_body(max_bytes: usize, request: Request, next: Next) -> Response {
    let request = request.map(|body| Body::new(LimitedBody::new(body, max_bytes)));
    let mut response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| match BodyError::find(&rejection) {
        Some(BodyError::TooLarge { limit }) => ApiError::new(
            ErrorKind::TooLarge,
            format!("request body is larger than this server accepts ({limit} bytes)"),
        ),
        Some(late @ BodyError::TimedOut(_)) => {
            ApiError::new(ErrorKind::RequestTimeout, late.to_string())
        }
        None if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorKind::TooLarge,
            "request body is larger than this server accepts",
        ),
        None => ApiError::invalid(format!(
            "request body could not be read: {}",
            rejection.body_text()
        )),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty; send a JSON object",
        ));
    }
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(ApiError::invalid(format!(
            "request body is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
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
        parse_json(Ok(Bytes::from_static(bytes)))
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
