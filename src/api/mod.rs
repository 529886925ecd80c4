//! The HTTP surfaces clients call: DashScope's Application API (Xiaozhi), an OpenAI-compatible
//! API, and `/health`; with the authentication, body parsing and error shapes they share.
//!
//! Each surface checks the API key in its own middleware so that a refusal comes back in that
//! protocol's error shape; `/health` is open so a supervisor can probe the box, and tells the
//! truth about the store: a write that failed or a data disk nearly full is a 503. `/metrics`
//! ([`scrape`]) needs the key unless `--metrics-open`.

mod body;
pub(crate) mod call;
pub(crate) mod dashscope;
mod dashscope_sse;
pub(crate) mod dialogue;
pub mod error;
mod framework_errors;
pub(crate) mod openai;
mod openai_params;
mod openai_sse;
mod request_id;
mod scrape;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use self::error::{ApiError, ErrorKind};
use self::framework_errors::Protocol;
use self::request_id::RequestId;
use crate::agent::turns::TurnRunner;
use crate::auth::{ApiKeys, throttle};
use crate::http::{BodyBudget, DEFAULT_BODY_BUDGET_BYTES};

/// Settings the handlers read, the same for every profile.
///
/// What the profiles decide (memory scope, client prompt mode) is each profile's own.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub fake_stream: bool,
    pub keepalive: Duration,
    pub max_body_bytes: usize,
    /// `--metrics-open`: `GET /metrics` without a key.
    pub metrics_open: bool,
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
            require_key(state, request, next, Protocol::DashScope)
        },
    ));
    let openai = openai::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        |State(state): State<AppState>, request: Request, next: Next| {
            require_key(state, request, next, Protocol::OpenAi)
        },
    ));
    let metrics = scrape::routes(&state, state.settings.metrics_open);
    Router::new()
        .merge(dashscope)
        .merge(openai)
        .merge(metrics)
        .route("/health", get(health))
        .fallback(framework_errors::not_found)
        // `limit_body` enforces --max-body-bytes and the port's body budget (reading the rest
        // before the 413 or 503). The budget always has room for one largest body.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn({
            let max_bytes = state.settings.max_body_bytes;
            let budget = BodyBudget::new(DEFAULT_BODY_BUDGET_BYTES.max(max_bytes));
            move |request: Request, next: Next| {
                body::limit_body(max_bytes, budget.clone(), request, next)
            }
        }))
        .layer(middleware::from_fn(framework_errors::in_protocol_shape))
        // Counted outside the shaping, so the status counted is the one the client gets.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            scrape::count_request,
        ))
        // Outermost: every answer, refusals included, carries the request's id.
        .layer(middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// Lets the request through with a valid key; otherwise refuses it in the protocol's shape:
/// 401, or 429 with `Retry-After` once its address sent too many wrong keys.
async fn require_key(
    state: AppState,
    request: Request,
    next: Next,
    protocol: Protocol,
) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_default();
    let refuse = |error| protocol.render(error, &request_id);
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        // A header that is not text is a wrong key, not a missing one.
        .map(|v| v.to_str().unwrap_or(""));
    let client = throttle::client_ip(request.extensions());
    match state
        .keys
        .admit_header(header, client, request.uri().path())
    {
        Ok(()) => next.run(request).await,
        Err(refusal @ throttle::Refusal::Throttled { retry_after }) => {
            let mut response = refuse(ApiError::new(
                ErrorKind::Throttling,
                format!(
                    "Too many failed authentication attempts from this address; try again in {} s.",
                    retry_after.as_secs()
                ),
            ));
            refusal.add_retry_after(&mut response);
            response
        }
        Err(throttle::Refusal::WrongKey) => refuse(ApiError::unauthorized()),
    }
}

async fn health(State(state): State<AppState>) -> Response {
    let health = state.turns.health().await;
    let database = health.database_error.as_deref().unwrap_or("ok");
    if health.is_ok() {
        let body = json!({"status": "ok", "database": database,
                          "disk_free_bytes": health.disk_free_bytes});
        return Json(body).into_response();
    }
    let mut body = json!({"status": "error", "database": database,
                          "disk_free_bytes": health.disk_free_bytes});
    if health.disk_low {
        body["disk"] = format!(
            "free space is below {} MiB: new turns are refused",
            health.disk_floor_bytes >> 20
        )
        .into();
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
