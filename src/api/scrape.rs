//! `GET /metrics` on the API port (Prometheus, OpenMetrics text), and the middleware that
//! counts every API request by route template and status.
//!
//! The scrape is protected like the API (a Bearer key; a refusal in OpenAI's error shape, as
//! a Prometheus server shows it) unless `--metrics-open`. The route label is the matched
//! route's template (`/api/v1/apps/{app_id}/completion`), never the raw path, so a client
//! cannot grow the label set; a path no route matches counts as [`UNMATCHED`].

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::framework_errors::Protocol;
use super::{AppState, require_key};
use crate::metrics::CONTENT_TYPE;

/// The route label of requests no route matched (404s).
pub const UNMATCHED: &str = "unmatched";

/// `GET /metrics`, behind the API key unless `open`.
pub fn routes(state: &AppState, open: bool) -> Router<AppState> {
    let route = Router::new().route("/metrics", get(scrape));
    if open {
        return route;
    }
    route.route_layer(middleware::from_fn_with_state(
        state.clone(),
        |State(state): State<AppState>, request: Request, next: Next| {
            require_key(state, request, next, Protocol::OpenAi)
        },
    ))
}

async fn scrape(State(state): State<AppState>) -> Response {
    let text = state.turns.metrics().render().await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Middleware: counts the request under its route template and the status it got.
pub async fn count_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_string();
    let response = next.run(request).await;
    state
        .turns
        .metrics()
        .http_request(&route, response.status().as_u16());
    response
}
