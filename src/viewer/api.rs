//! The original viewer's JSON API, in the same shapes, plus `/health`.
//!
//! `GET /api/conversations` → `[{conversation_id, message_count, last_updated, stateless,
//! preview}]`, newest first (all of them, as the original did, one-shot stateless ones
//! included; `?limit=&offset=` pages it), and
//! `GET /api/conversations/{id}/messages` → `[{message_type, content, sequence_number,
//! created_at}]`. Times are RFC 3339 UTC.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ViewerState;
use super::model::{ConversationSummary, ListFilter, Message};
use super::render::{preview_line, shown_time};

#[derive(Serialize)]
pub struct ApiConversation {
    conversation_id: String,
    message_count: i64,
    last_updated: String,
    /// Begun by a call without a session or thread id (always false over PostgreSQL).
    stateless: bool,
    /// The newest message on one short line.
    preview: String,
}

impl From<&ConversationSummary> for ApiConversation {
    fn from(c: &ConversationSummary) -> Self {
        ApiConversation {
            conversation_id: c.conversation_id.clone(),
            message_count: c.message_count,
            last_updated: shown_time(c.last_updated).iso,
            stateless: c.stateless,
            preview: preview_line(&c.preview),
        }
    }
}

#[derive(Serialize)]
pub struct ApiMessage {
    message_type: String,
    content: String,
    sequence_number: i64,
    created_at: String,
}

impl From<&Message> for ApiMessage {
    fn from(m: &Message) -> Self {
        ApiMessage {
            message_type: m.message_type.clone(),
            content: m.content.clone(),
            sequence_number: m.sequence_number,
            created_at: shown_time(m.created_at).iso,
        }
    }
}

#[derive(Deserialize)]
pub struct Paging {
    limit: Option<u64>,
    #[serde(default)]
    offset: u64,
}

fn server_error(e: super::ViewerError) -> Response {
    tracing::error!("viewer API: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": "could not read the conversation log" })),
    )
        .into_response()
}

pub async fn conversations(
    State(state): State<ViewerState>,
    Query(paging): Query<Paging>,
) -> Response {
    let filter = ListFilter {
        offset: paging.offset,
        // SQLite and PostgreSQL both take i64 limits; this is "all".
        limit: paging.limit.unwrap_or(i64::MAX as u64).min(i64::MAX as u64),
        // The original API listed every conversation; `stateless` lets a caller tell.
        one_shot_stateless: true,
        ..Default::default()
    };
    match state.source.list(&filter).await {
        Ok(page) => Json(
            page.conversations
                .iter()
                .map(ApiConversation::from)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => server_error(e),
    }
}

pub async fn messages(State(state): State<ViewerState>, Path(id): Path<String>) -> Response {
    match state.source.messages(&id, 0).await {
        Ok(messages) => {
            Json(messages.iter().map(ApiMessage::from).collect::<Vec<_>>()).into_response()
        }
        Err(e) => server_error(e),
    }
}

/// Liveness and whether the log answers; says nothing about any conversation.
pub async fn health(State(state): State<ViewerState>) -> Response {
    match state.source.ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::warn!("viewer health: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "database unavailable" })),
            )
                .into_response()
        }
    }
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found.").into_response()
}
