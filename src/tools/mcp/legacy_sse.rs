//! The legacy HTTP+SSE MCP transport (protocol 2024-11-05), as an rmcp Sink/Stream transport.
//!
//! Xiaozhi's tool server, which exposes the devices' controls, still speaks it at
//! `http://<xiaozhi>:8805/sse`, and rmcp no longer ships a client for it. The protocol itself
//! stays rmcp's: this file only moves JSON-RPC messages. The client GETs the SSE URL; the
//! server's first event, `endpoint`, names the URL to POST messages to; every later `message`
//! event carries one message from the server. rmcp takes a `(Sink, Stream)` pair of messages as
//! a transport, so [`connect`] returns exactly that, and the session, requests, responses and
//! notifications are all handled by rmcp as for any other transport.
//!
//! When the SSE stream ends (the server went away), the message stream ends, which ends the
//! rmcp session; the client reconnects from scratch.

use std::pin::Pin;

use futures::{Sink, Stream, StreamExt};
use reqwest::Url;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};

use crate::sse_events::bounded_events;

/// The largest message (one SSE event) a server may send: tool lists and answers are far
/// smaller; past it the connection fails rather than buffering without end.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Why the legacy SSE transport failed.
#[derive(Debug, thiserror::Error)]
pub enum LegacySseError {
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the SSE stream {0}")]
    Stream(String),
    #[error("the endpoint {0:?} is not on the SSE URL's server")]
    ForeignEndpoint(String),
}

/// Messages to the server: each is POSTed to the endpoint.
pub type MessageSink = Pin<Box<dyn Sink<ClientJsonRpcMessage, Error = LegacySseError> + Send>>;
/// Messages from the server, in order; ends when the SSE stream does.
pub type MessageStream = Pin<Box<dyn Stream<Item = ServerJsonRpcMessage> + Send>>;

/// Opens the SSE stream at `url` and waits for the server to name its message endpoint.
pub async fn connect(
    http: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
) -> Result<(MessageSink, MessageStream), LegacySseError> {
    let base = Url::parse(url).map_err(|e| LegacySseError::Stream(format!("URL: {e}")))?;
    let response = http
        .get(base.clone())
        .headers(headers.clone())
        .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        .send()
        .await?
        .error_for_status()?;
    let mut events = Box::pin(bounded_events(response.bytes_stream(), MAX_EVENT_BYTES));
    let endpoint = loop {
        match events.next().await {
            Some(Ok(event)) if event.event.as_deref() == Some("endpoint") => {
                break event.data.unwrap_or_default();
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(LegacySseError::Stream(format!("broke: {e}"))),
            None => {
                return Err(LegacySseError::Stream(
                    "ended before naming its endpoint".into(),
                ));
            }
        }
    };
    let post_url = base
        .join(endpoint.trim())
        .map_err(|e| LegacySseError::Stream(format!("endpoint {endpoint:?}: {e}")))?;
    // The endpoint comes from the server; messages (tool arguments, headers with tokens) must
    // not be sent anywhere the operator did not configure.
    if post_url.origin() != base.origin() {
        return Err(LegacySseError::ForeignEndpoint(endpoint));
    }

    let messages = events.filter_map(|event| async move {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::debug!("legacy SSE stream error: {e}");
                return None;
            }
        };
        if !matches!(event.event.as_deref(), None | Some("message")) {
            return None;
        }
        let data = event.data?;
        match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
            Ok(message) => Some(message),
            Err(e) => {
                tracing::warn!("legacy SSE: ignoring a message that is not MCP JSON-RPC: {e}");
                None
            }
        }
    });
    let sink = futures::sink::unfold(
        (http.clone(), post_url, headers.clone()),
        |(http, post_url, headers), message: ClientJsonRpcMessage| async move {
            http.post(post_url.clone())
                .headers(headers.clone())
                .json(&message)
                .send()
                .await?
                .error_for_status()?;
            Ok::<_, LegacySseError>((http, post_url, headers))
        },
    );
    Ok((Box::pin(sink), Box::pin(messages)))
}
