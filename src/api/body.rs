//! Reading a JSON request body into a typed request, with errors a client can act on.
//!
//! Handlers take the body as raw bytes (so axum's plain-text rejections never reach a client)
//! and call [`parse_json`], which tells apart a body that is too large (413), empty, not UTF-8,
//! not JSON, or JSON of the wrong shape (400), always as an [`ApiError`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorKind};

pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::TooLarge,
                "request body is larger than this server accepts",
            )
        } else {
            ApiError::invalid(format!(
                "request body could not be read: {}",
                rejection.body_text()
            ))
        }
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
