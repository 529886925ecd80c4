//! Streaming a turn to a client as server-sent events.
//!
//! One driver serves both protocols; each protocol's [`FrameWriter`] decides what its frames
//! look like. The driver:
//! - waits for the turn's first event for up to one keep-alive interval before answering, so a
//!   failure known early (model server down, 429) gets a real HTTP status in the protocol's
//!   error shape; a failure after that is sent as the protocol's error frame;
//! - sends a `:` comment whenever nothing else has flowed for a keep-alive interval (SSE
//!   clients ignore comments; proxies and clients with read timeouts see a live connection);
//! - owns the [`TurnHandle`], so a client that goes away drops it and stops the turn;
//! - sends the closing frames only on the turn's `Finished`, which the runner sends after the
//!   turn is stored; a turn that ends without it (its task died, or it dropped a client that
//!   stopped reading) ends the stream with an error frame, never with a success;
//! - ends a turn that a newer turn of the same session interrupted as a finished answer
//!   ([`client_ending`]): a barge-in is normal, and Xiaozhi logs any error as a failure.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use futures::stream;

use super::error::ApiError;
use crate::agent::FinishReason;
use crate::agent::turns::{TurnError, TurnEvent, TurnHandle, TurnSummary};
use crate::llm::Usage;
use crate::metrics::Active;

/// The keep-alive frame: a comment line and the blank line that ends it.
const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// A protocol's SSE frames.
pub trait FrameWriter: Send + 'static {
    /// A frame for a new piece of answer text, or none if this protocol sends nothing for it.
    fn text(&mut self, piece: &str) -> Option<Bytes>;
    /// The closing frames of a finished answer.
    fn finished(&mut self, summary: &TurnSummary) -> Bytes;
    /// The frame reporting a failure after the stream began.
    fn failed(&mut self, error: &ApiError) -> Bytes;
}

/// How the end of a turn answered by `model` is shown to its client: a finished answer, or an
/// error. A turn that a newer turn of its own session interrupted ends as a finished answer
/// with the text it gave (finish reason `stop`, no tokens counted): the client started that
/// turn itself and has moved on, and Xiaozhi logs an error frame or status (409) as a failure.
/// The log still marks the turn interrupted.
pub fn client_ending(
    end: Result<TurnSummary, TurnError>,
    model: &str,
) -> Result<TurnSummary, ApiError> {
    match end {
        Ok(summary) => Ok(summary),
        Err(TurnError::Interrupted) => Ok(TurnSummary {
            model: model.to_string(),
            usage: Usage::default(),
            finish: FinishReason::Stop,
            tool_calls: Vec::new(),
            tools_called: Vec::new(),
        }),
        Err(error) => Err(ApiError::from(&error)),
    }
}

/// Answers a streaming request with the events of a turn answered by `model`. `open` counts
/// the stream as active until its last frame (or until the client goes away).
pub async fn respond<W: FrameWriter>(
    mut turn: TurnHandle,
    writer: W,
    keepalive: Duration,
    model: &str,
    early_error: impl FnOnce(ApiError) -> Response,
    open: Active,
) -> Response {
    let first = match tokio::time::timeout(keepalive, turn.next()).await {
        Ok(Some(TurnEvent::Failed(error))) => match client_ending(Err(error), model) {
            Ok(summary) => Pending::Event(Some(TurnEvent::Finished(Box::new(summary)))),
            Err(error) => return early_error(error),
        },
        Ok(None) => return early_error(ApiError::from(&TurnError::Aborted)),
        Ok(event) => Pending::Event(event),
        Err(_) => Pending::KeepAlive,
    };
    let state = Driver {
        turn,
        writer,
        keepalive,
        model: model.to_string(),
        pending: Some(first),
        done: false,
        open: Some(open),
    };
    let frames = stream::unfold(state, |mut state| async move {
        let frame = state.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(frame), state))
    });
    sse_response(Body::from_stream(frames))
}

/// An SSE response around `body`.
pub fn sse_response(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .expect("static headers are valid")
}

enum Pending {
    Event(Option<TurnEvent>),
    KeepAlive,
}

struct Driver<W> {
    turn: TurnHandle,
    writer: W,
    keepalive: Duration,
    /// The model the turn's answer is credited to, should it end interrupted.
    model: String,
    pending: Option<Pending>,
    done: bool,
    /// Counts the stream in `lang_agent_active_streams` until its last frame is made.
    open: Option<Active>,
}

impl<W: FrameWriter> Driver<W> {
    /// The frame being made is the last: the stream no longer counts as active (before the
    /// client can read that frame, so a scrape after the answer sees it gone).
    fn end(&mut self) {
        self.done = true;
        self.open = None;
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            let pending = match self.pending.take() {
                Some(pending) => pending,
                None => match tokio::time::timeout(self.keepalive, self.turn.next()).await {
                    Ok(event) => Pending::Event(event),
                    Err(_) => Pending::KeepAlive,
                },
            };
            match pending {
                Pending::KeepAlive => return Some(Bytes::from_static(KEEPALIVE)),
                Pending::Event(None) => {
                    self.end();
                    let aborted = ApiError::from(&TurnError::Aborted);
                    return Some(self.writer.failed(&aborted));
                }
                Pending::Event(Some(TurnEvent::Text(piece))) => {
                    if let Some(frame) = self.writer.text(&piece) {
                        return Some(frame);
                    }
                }
                Pending::Event(Some(TurnEvent::Finished(summary))) => {
                    self.end();
                    return Some(self.writer.finished(&summary));
                }
                Pending::Event(Some(TurnEvent::Failed(error))) => {
                    self.end();
                    return Some(match client_ending(Err(error), &self.model) {
                        Ok(summary) => self.writer.finished(&summary),
                        Err(error) => self.writer.failed(&error),
                    });
                }
            }
        }
    }
}
