//! The request id: one per API request, given back to the client and carried by every log line
//! the request causes.
//!
//! [`assign`] (the API router's outermost layer) takes the caller's own `x-request-id` when it
//! is a plain token, else makes one (a UUID), and opens the `request` span with it and the
//! protocol. The turn's task runs inside that span (`TurnRunner::start`), so the per-turn
//! `turn` line at info and the router's, tools' and store's lines at debug all say which
//! request they belong to. The client gets the id in the `x-request-id` header of every answer
//! and, on DashScope, as the body's `request_id`, errors included, so a user's "it said X at
//! 10:02" finds its log lines.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::framework_errors::Protocol;

/// The header the id comes in (when a proxy or client set one) and goes back in.
pub const HEADER: &str = "x-request-id";

/// Longest client-chosen id kept; a longer one is replaced.
const MAX_CLIENT_ID_BYTES: usize = 64;

/// The id of the request being answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

/// A fresh id (a UUID).
impl Default for RequestId {
    fn default() -> RequestId {
        RequestId(uuid::Uuid::new_v4().to_string().into())
    }
}

impl RequestId {
    /// A client's own id, if it is a plain token: it goes into log lines and headers as is.
    fn from_client(value: &HeaderValue) -> Option<RequestId> {
        let text = value.to_str().ok()?;
        let plain = !text.is_empty()
            && text.len() <= MAX_CLIENT_ID_BYTES
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        plain.then(|| RequestId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A handler's request id: the one [`assign`] gave the request (a fresh one for a router
/// served without the layer, as some unit tests do).
impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<RequestId, Infallible> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::default))
    }
}

/// Middleware: gives the request its id, answers it inside the `request` span, and sends the
/// id back in the `x-request-id` header.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::default);
    let protocol = Protocol::of_path(request.uri().path());
    let span = tracing::info_span!(
        "request",
        request_id = id.as_str(),
        protocol = protocol.as_str()
    );
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_only_when_it_is_a_plain_token() {
        let kept = |v: &str| RequestId::from_client(&HeaderValue::from_str(v).unwrap());
        assert_eq!(kept("abc-123_x.y:z").unwrap().as_str(), "abc-123_x.y:z");
        for bad in ["", "has space", "new\tline", "quote\"", &"x".repeat(65)] {
            assert_eq!(kept(bad), None, "{bad:?}");
        }
        assert_eq!(kept(&"x".repeat(64)).unwrap().as_str().len(), 64);
    }

    #[test]
    fn fresh_ids_differ() {
        assert_ne!(RequestId::default(), RequestId::default());
    }
}
