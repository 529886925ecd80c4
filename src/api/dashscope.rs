//! DashScope's Application API, as Xiaozhi's `AliBL` provider calls it through the official
//! `dashscope` SDK (`../shared/spec/dashscope-app-api.md`).
//!
//! `POST {base}/apps/{app_id}/completion` under every base the SDK builds (`/api/`,
//! `/api/v1/`, none, `/v1/`), and the original server's
//! `/{api/}v1/apps/{app_id}/sessions/{session_id}/responses`. Streaming is chosen by the SDK's
//! headers (`X-DashScope-SSE: enable` or `Accept: text/event-stream`) or by `stream` in the
//! body or parameters.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use super::body::parse_json;
use super::dashscope_sse::{DashScopeFrames, response_body};
use super::dialogue::{Dialogue, WireMessage, check_thread_id, device_of};
use super::error::ApiError;
use super::stream::{self, sse_response};
use super::{ApiSettings, AppState};
use crate::agent::turns::{MemoryScope, ThreadChoice, TurnRequest};

pub fn routes() -> Router<AppState> {
    let completion = post(completion);
    let responses = post(session_responses);
    Router::new()
        .route("/api/apps/{app_id}/completion", completion.clone())
        .route("/api/v1/apps/{app_id}/completion", completion.clone())
        .route("/apps/{app_id}/completion", completion.clone())
        .route("/v1/apps/{app_id}/completion", completion)
        .route(
            "/api/v1/apps/{app_id}/sessions/{session_id}/responses",
            responses.clone(),
        )
        .route(
            "/v1/apps/{app_id}/sessions/{session_id}/responses",
            responses,
        )
}

#[derive(Debug, Deserialize)]
struct AppRequest {
    input: AppInput,
    #[serde(default)]
    parameters: Option<AppParameters>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct AppInput {
    #[serde(default)]
    messages: Option<Vec<WireMessage>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AppParameters {
    #[serde(default)]
    incremental_output: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
}

async fn completion(
    State(app): State<AppState>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(app, app_id, None, headers, body).await
}

async fn session_responses(
    State(app): State<AppState>,
    Path((app_id, session_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(app, app_id, Some(session_id), headers, body).await
}

async fn answer(
    app: AppState,
    app_id: String,
    path_session: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    match run(app, app_id, path_session, &headers, body, &request_id).await {
        Ok(response) => response,
        Err(error) => error.into_dashscope(&request_id),
    }
}

/// A DashScope call, parsed and checked: the turn to run and how to answer it.
#[derive(Debug)]
pub struct AppCall {
    pub turn: TurnRequest,
    /// The session id the client named (in the body or the path), echoed back in every answer.
    pub session_id: Option<String>,
    /// The client asked for a stream (by header, in the body or in `parameters`).
    pub streaming: bool,
    /// Each event carries only the new text (`parameters.incremental_output`).
    pub incremental: bool,
}

/// Reads a call from its body, headers and path parts into the turn to run. Pure: the handler
/// and the fuzz target (`crate::fuzzing`) run exactly this.
pub fn parse_call(
    body: Result<Bytes, BytesRejection>,
    headers: &HeaderMap,
    app_id: &str,
    path_session: Option<String>,
    settings: &ApiSettings,
) -> Result<AppCall, ApiError> {
    let request: AppRequest = parse_json(body)?;
    let parameters = request.parameters.unwrap_or_default();
    let streaming = wants_stream(headers)
        || request.stream.unwrap_or(false)
        || parameters.stream.unwrap_or(false);
    let incremental = parameters.incremental_output.unwrap_or(false);

    let mut dialogue = Dialogue::from_wire(request.input.messages.unwrap_or_default())?;
    if let Some(prompt) = request.input.prompt.filter(|p| !p.is_empty()) {
        dialogue.push_user(prompt);
    }
    dialogue.merge_repeated_last_user();

    let session_id = request
        .input
        .session_id
        .filter(|s| !s.is_empty())
        .or(path_session);
    if let Some(id) = &session_id {
        check_thread_id(id, "input.session_id")?;
    }
    check_thread_id(app_id, "app_id")?;
    let device = session_id.as_deref().and_then(device_of);
    let thread = match (&session_id, settings.memory_scope) {
        (None, _) => ThreadChoice::Start,
        (Some(id), MemoryScope::Session) => ThreadChoice::Remember(id.clone()),
        (Some(_), MemoryScope::App) => {
            ThreadChoice::for_app(app_id, device).map_err(|e| ApiError::invalid(e.to_string()))?
        }
    };
    let device = device.map(str::to_string);
    let mut turn = dialogue.into_turn(thread, device)?;
    turn.streaming = streaming && !settings.fake_stream;
    Ok(AppCall {
        turn,
        session_id,
        streaming,
        incremental,
    })
}

async fn run(
    app: AppState,
    app_id: String,
    path_session: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    request_id: &str,
) -> Result<Response, ApiError> {
    let call = parse_call(body, headers, &app_id, path_session, &app.settings)?;
    let streaming = call.streaming;
    let turn = app.turns.start(call.turn);
    // Xiaozhi expects its own session id back; a new thread's id is how the caller continues it.
    let session_id = call.session_id.unwrap_or_else(|| turn.thread_id.clone());
    let request_id = request_id.to_string();
    let mut frames = DashScopeFrames::new(request_id.clone(), session_id.clone(), call.incremental);

    if streaming && !app.settings.fake_stream {
        let early = {
            let request_id = request_id.clone();
            move |error: ApiError| error.into_dashscope(&request_id)
        };
        return Ok(stream::respond(turn, frames, app.settings.keepalive, early).await);
    }
    let (text, summary) = turn.collect().await.map_err(|e| ApiError::from(&e))?;
    if streaming {
        return Ok(sse_response(frames.whole(&text, &summary).into()));
    }
    let finish = summary.finish.as_str();
    let body = response_body(&request_id, &session_id, &text, finish, Some(&summary));
    Ok(axum::Json(body).into_response())
}

/// The SDK asks for a stream with headers, not in the body.
fn wants_stream(headers: &HeaderMap) -> bool {
    let sse_header = headers
        .get("x-dashscope-sse")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("enable"));
    let accepts_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    sse_header || accepts_sse
}
