//! `GET /api/events`: live updates as server-sent events, pushed the moment the log changes.
//!
//! Each event is named as in the original viewer (`conversation_new`, `conversation_updated`,
//! `conversation_deleted`) with data `{"conversation_id": "…"}`. The stream follows the
//! source's broadcast feed, which is fed by the store itself or by a watcher (see
//! `source.rs`), so nothing here polls the database. A reader too slow to keep up skips
//! ahead; the script then reloads the list anyway.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::ViewerState;
use crate::store::StoreEvent;

/// The SSE event for a change to the log.
pub fn sse_event(change: &StoreEvent) -> Event {
    let (name, id) = match change {
        StoreEvent::ConversationNew(id) => ("conversation_new", id),
        StoreEvent::ConversationUpdated(id) => ("conversation_updated", id),
        StoreEvent::ConversationDeleted(id) => ("conversation_deleted", id),
    };
    Event::default()
        .event(name)
        .data(serde_json::json!({ "conversation_id": id }).to_string())
}

pub async fn events(
    State(state): State<ViewerState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = BroadcastStream::new(state.source.subscribe()).filter_map(|change| async move {
        match change {
            Ok(change) => Some(Ok(sse_event(&change))),
            // Lagged: some changes were missed; say "something changed" without an id.
            Err(_) => Some(Ok(Event::default()
                .event("conversation_updated")
                .data("{\"conversation_id\":null}"))),
        }
    });
    // An opening comment makes the browser's EventSource report "open" at once.
    let opening = futures::stream::once(async { Ok(Event::default().comment("live")) });
    Sse::new(opening.chain(changes)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
