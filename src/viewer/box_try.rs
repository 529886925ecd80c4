//! The box page's try-it chat: `POST /box/try` starts a turn of a profile through the box's
//! own turn pipeline ([`super::BoxControl::try_turn`]) and streams it back as server-sent
//! events, so a box can be tested without a Xiaozhi device.
//!
//! The form carries `profile`, `text`, the CSRF token and, to go on with an earlier try-it
//! conversation, `conversation`. The events, each with JSON data:
//! - `start` `{"conversation"}`: the turn runs on this conversation;
//! - `text` `{"text"}`: a piece of the answer, as the model gives it;
//! - `done` `{"conversation", "model", "finish", "tools_called"}`: the answer is complete
//!   and logged;
//! - `failed` `{"conversation", "error"}`: the turn did not finish.
//!
//! A request the box refuses before any turn starts (no such profile, empty text) gets 400
//! with `{"error"}`; a missing CSRF token 403. The page's script then loads the logged
//! conversation's rendered messages, so tool steps look as in the conversation view.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use futures::Stream;
use serde::Deserialize;

use super::ViewerState;
use super::box_page::box_of;
use super::session::{Reader, stale_form};
use crate::agent::turns::{TurnError, TurnEvent, TurnHandle};

#[derive(Deserialize)]
pub struct TryForm {
    #[serde(default)]
    profile: String,
    /// An earlier try-it conversation to go on with; empty starts a new one.
    #[serde(default)]
    conversation: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    csrf: String,
}

fn refused(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// `POST /box/try`.
pub async fn try_turn(
    State(state): State<ViewerState>,
    Extension(reader): Extension<Reader>,
    Form(form): Form<TryForm>,
) -> Response {
    if !reader.csrf_matches(&form.csrf) {
        return stale_form();
    }
    let control = box_of(&state);
    let text = form.text.trim();
    if text.is_empty() {
        return refused("say something first".to_string());
    }
    let conversation = Some(form.conversation.trim().to_string()).filter(|c| !c.is_empty());
    match control.try_turn(&form.profile, conversation, text.to_string()) {
        Ok(handle) => Sse::new(turn_events(handle)).into_response(),
        Err(e) => refused(e.to_string()),
    }
}

/// The turn's events as the page reads them: `start`, `text`…, then `done` or `failed`.
/// Dropping the stream (the browser went away) drops the handle, which cancels the turn.
fn turn_events(handle: TurnHandle) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = json_event(
        "start",
        serde_json::json!({ "conversation": handle.thread_id }),
    );
    let rest = futures::stream::unfold(Some(handle), |handle| async move {
        let mut handle = handle?;
        let conversation = handle.thread_id.clone();
        let (event, go_on) = match handle.next().await {
            Some(TurnEvent::Text(piece)) => (
                json_event("text", serde_json::json!({ "text": piece })),
                true,
            ),
            Some(TurnEvent::Finished(summary)) => (
                json_event(
                    "done",
                    serde_json::json!({
                        "conversation": conversation,
                        "model": summary.model,
                        "finish": summary.finish.as_str(),
                        "tools_called": summary.tools_called,
                    }),
                ),
                false,
            ),
            Some(TurnEvent::Failed(error)) => (failed(&conversation, &error), false),
            None => (failed(&conversation, &TurnError::Aborted), false),
        };
        Some((Ok(event), go_on.then_some(handle)))
    });
    futures::StreamExt::chain(futures::stream::once(async { Ok(start) }), rest)
}

fn failed(conversation: &str, error: &TurnError) -> Event {
    json_event(
        "failed",
        serde_json::json!({ "conversation": conversation, "error": error.to_string() }),
    )
}

fn json_event(name: &str, data: serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}
