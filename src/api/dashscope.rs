//! DashScope's Application API, as Xiaozhi's `AliBL` provider calls it through the official
//! `dashscope` SDK (`../shared/spec/dashscope-app-api.md`).
//!
//! `POST {base}/apps/{app_id}/completion` under every base the SDK builds (`/api/`,
//! `/api/v1/`, none, `/v1/`), and the original server's
//! `/{api/}v1/apps/{app_id}/sessions/{session_id}/responses`. Streaming is chosen by the SDK's
//! headers (`X-DashScope-SSE: enable` or `Accept: text/event-stream`) or by `stream` in the
//! body or parameters.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{parse_json, read_body};
use super::call::{self, AnswerShape, Call, ClientId};
use super::dashscope_sse::{DashScopeFrames, response_body};
use super::dialogue::WireDialogue;
use super::error::ApiError;
use super::request_id::RequestId;
use super::stream::sse_response;
use super::{ApiSettings, AppState};
use crate::agent::profile::Profiles;
use crate::agent::turns::{TurnRequest, TurnSummary};

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
struct AppRequest<'a> {
    #[serde(borrow)]
    input: AppInput<'a>,
    #[serde(default)]
    parameters: Option<AppParameters>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct AppInput<'a> {
    /// Left undecoded: Xiaozhi sends its whole dialogue, and a session call reads only its end.
    #[serde(default, borrow)]
    messages: Option<Vec<&'a RawValue>>,
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
    request_id: RequestId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(app, app_id, None, request_id, headers, body).await
}

async fn session_responses(
    State(app): State<AppState>,
    Path((app_id, session_id)): Path<(String, String)>,
    request_id: RequestId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(app, app_id, Some(session_id), request_id, headers, body).await
}

async fn answer(
    app: AppState,
    app_id: String,
    path_session: Option<String>,
    request_id: RequestId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = request_id.as_str();
    match run(app, app_id, path_session, &headers, body, request_id).await {
        Ok(response) => response,
        Err(error) => error.into_dashscope(request_id),
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
    profiles: &Profiles,
) -> Result<AppCall, ApiError> {
    // The app id picks the assistant (else the default), before anything else is read.
    let profile = Arc::clone(profiles.for_app(app_id));
    let bytes = read_body(body)?;
    let request: AppRequest = parse_json(&bytes)?;
    let parameters = request.parameters.unwrap_or_default();
    let streaming = wants_stream(headers)
        || request.stream.unwrap_or(false)
        || parameters.stream.unwrap_or(false);
    let incremental = parameters.incremental_output.unwrap_or(false);

    let dialogue = WireDialogue {
        messages: request.input.messages.unwrap_or_default(),
        prompt: request.input.prompt,
    };
    let session_id = request
        .input
        .session_id
        .filter(|s| !s.is_empty())
        .or(path_session);
    let turn = Call {
        dialogue,
        session: session_id
            .clone()
            .map(|id| ClientId::new(id, "input.session_id")),
        app: Some(ClientId::new(app_id, "app_id")),
        memory_scope: profile.memory_scope,
        profile,
        // Fake streaming runs the turn collected, then sends it as one event.
        streaming: streaming && !settings.fake_stream,
    }
    .into_turn()?;
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
    let profiles = app.turns.profiles();
    let call = parse_call(
        body,
        headers,
        &app_id,
        path_session,
        &app.settings,
        &profiles,
    )?;
    let shape = DashScopeShape {
        request_id: request_id.to_string(),
        session_id: call.session_id,
        incremental: call.incremental,
        event_stream: call.streaming,
    };
    Ok(call::answer(&app.turns, call.turn, app.settings.keepalive, shape).await)
}

/// How a DashScope answer looks.
struct DashScopeShape {
    request_id: String,
    /// The session the client named; a new thread's id is how the caller continues it.
    session_id: Option<String>,
    incremental: bool,
    /// The client asked for a stream: a collected answer (`--fake-stream`) still comes as one.
    event_stream: bool,
}

impl DashScopeShape {
    /// Xiaozhi expects its own session id back.
    fn session_id<'a>(&'a self, thread_id: &'a str) -> &'a str {
        self.session_id.as_deref().unwrap_or(thread_id)
    }
}

impl AnswerShape for DashScopeShape {
    type Frames = DashScopeFrames;

    fn frames(&self, thread_id: &str) -> DashScopeFrames {
        let session_id = self.session_id(thread_id).to_string();
        DashScopeFrames::new(self.request_id.clone(), session_id, self.incremental)
    }

    fn whole(&self, thread_id: &str, text: &str, summary: &TurnSummary) -> Response {
        if self.event_stream {
            return sse_response(self.frames(thread_id).whole(text, summary).into());
        }
        let session_id = self.session_id(thread_id);
        let finish = summary.finish.as_str();
        let body = response_body(&self.request_id, session_id, text, finish, Some(summary));
        axum::Json(body).into_response()
    }

    fn error(&self, error: ApiError) -> Response {
        error.into_dashscope(&self.request_id)
    }
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
