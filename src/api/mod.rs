//! The HTTP surfaces clients call: DashScope's Application API (Xiaozhi), an OpenAI-compatible
//! API, and `/health`; with the authentication, body parsing and error shapes they share.
//!
//! Each surface checks the API key in its own middleware so that a refusal comes back in that
//! protocol's error shape; `/health` is open so a supervisor can probe the box.

pub mod auth;
mod body;
pub(crate) mod dashscope;
mod dashscope_sse;
pub(crate) mod dialogue;
pub mod error;
pub(crate) mod openai;
mod openai_sse;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use self::auth::ApiKeys;
use self::error::{ApiError, ErrorKind};
use crate::agent::turns::TurnRunner;
use crate::cli::MemoryScope;

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub memory_scope: MemoryScope,
    pub fake_stream: bool,
    pub keepalive: Duration,
    pub max_body_bytes: usize,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub turns: Arc<TurnRunner>,
    pub keys: ApiKeys,
    pub settings: Arc<ApiSettings>,
}

/// The API server's routes.
pub fn router(state: AppState) -> Router {
    let dashscope = dashscope::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        |State(state): State<AppState>, request: Request, next: Next| {
            require_key(state, request, next, |e| {
                e.into_dashscope(&uuid::Uuid::new_v4().to_string())
            })
        },
    ));
    let openai = openai::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        |State(state): State<AppState>, request: Request, next: Next| {
            require_key(state, request, next, ApiError::into_openai)
        },
    ));
    Router::new()
        .merge(dashscope)
        .merge(openai)
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .with_state(state)
}

/// Lets the request through with a valid key; otherwise refuses it in the protocol's shape.
async fn require_key(
    state: AppState,
    request: Request,
    next: Next,
    refuse: fn(ApiError) -> Response,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.keys.verify_header(header) {
        next.run(request).await
    } else {
        refuse(ApiError::unauthorized())
    }
}

async fn health(State(state): State<AppState>) -> Response {
    match state.turns.store().ping().await {
        Ok(()) => Json(json!({"status": "ok", "database": "ok"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "database": e.to_string()})),
        )
            .into_response(),
    }
}

async fn not_found(uri: Uri) -> Response {
    let error = ApiError::new(
        ErrorKind::NotFound,
        format!("no such endpoint: {}", uri.path()),
    );
    if uri.path().starts_with("/v1/chat") || uri.path().starts_with("/v1/models") {
        error.into_openai()
    } else {
        error.into_dashscope(&uuid::Uuid::new_v4().to_string())
    }
}
