//! The OpenAI-compatible API: chat completions, models, and memory management.
//!
//! Memory follows the original server's extension: a `thread_id` in the body (what the
//! Python SDK's `extra_body` sends) means the server remembers the thread and only the newest
//! user message is taken; without one the request is stateless, the client's messages are the
//! history, as every OpenAI client expects (the turn is still logged, as a new conversation
//! whose id comes back as `thread_id`).
//!
//! The client's `tools` are offered to the model beside the box's own, and the standard OpenAI
//! loop runs: calls to the client's tools end the answer with `finish_reason: "tool_calls"`
//! (in `message.tool_calls`, or streamed as `delta.tool_calls`), and the client's next request
//! brings the `tool` results. Sampling settings reach the answering model call only
//! ([`super::openai_params`] checks them all).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::body::{parse_json, read_body};
use super::call::{self, AnswerShape, Call, ClientId, check_thread_id};
use super::dialogue::WireDialogue;
use super::error::{ApiError, ErrorKind};
use super::openai_params::{WireParams, check_no_clash};
use super::openai_sse::{OpenAiChunks, tool_calls_json, usage_json};
use crate::agent::profile::Profiles;
use crate::agent::turns::{MemoryScope, TurnRequest, TurnSummary};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/memory", delete(forget_all))
        .route("/v1/memory/{thread_id}", delete(forget_thread))
}

#[derive(Debug, Deserialize)]
struct ChatCompletionRequest<'a> {
    #[serde(default)]
    model: Option<String>,
    /// Left undecoded until the turn's thread says how much of it is needed.
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    thread_id: Option<String>,
    /// Tools, tool choice and sampling settings.
    #[serde(flatten)]
    params: WireParams,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

async fn chat_completions(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match run(app, body).await {
        Ok(response) => response,
        Err(error) => error.into_openai(),
    }
}

/// A chat completion call, parsed and checked: the turn to run and how to answer it.
#[derive(Debug)]
pub struct ChatCall {
    pub turn: TurnRequest,
    /// The model the client named, if any (it gets its name back).
    pub model: Option<String>,
    /// `stream_options.include_usage`: a last chunk carries the usage.
    pub include_usage: bool,
}

/// Reads a call's body into the turn to run. Pure: the handler and the fuzz target
/// (`crate::fuzzing`) run exactly this.
pub fn parse_call(
    body: Result<Bytes, BytesRejection>,
    profiles: &Profiles,
) -> Result<ChatCall, ApiError> {
    let bytes = read_body(body)?;
    let request: ChatCompletionRequest = parse_json(&bytes)?;
    let params = request.params.check()?;
    // `model` names a profile; any other name is the default profile's.
    let profile = Arc::clone(profiles.for_model(request.model.as_deref()));
    let mut turn = Call {
        dialogue: WireDialogue {
            messages: request.messages,
            prompt: None,
        },
        session: request.thread_id.map(|id| ClientId::new(id, "thread_id")),
        app: None,
        // OpenAI calls name no app: a thread id is its own thread.
        memory_scope: MemoryScope::Session,
        profile,
        streaming: request.stream.unwrap_or(false),
    }
    .into_turn()?;
    turn.options.client_tools = params.tools;
    turn.options.tool_choice = params.tool_choice;
    turn.options.sampling = params.sampling;
    Ok(ChatCall {
        turn,
        model: request.model,
        include_usage: request
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

async fn run(app: AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let call = parse_call(body, &app.turns.profiles())?;
    let agent = &call.turn.profile.agent;
    check_no_clash(&call.turn.options.client_tools, &agent.box_tool_names())?;
    // Clients name whatever model they like; they get their name back.
    let model = call
        .model
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| agent.model_name().to_string());
    let shape = OpenAiShape {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: chrono::Utc::now().timestamp(),
        model,
        include_usage: call.include_usage,
    };
    Ok(call::answer(&app.turns, call.turn, app.settings.keepalive, shape).await)
}

/// How an OpenAI chat completion looks.
struct OpenAiShape {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
}

impl AnswerShape for OpenAiShape {
    type Frames = OpenAiChunks;

    fn frames(&self, _thread_id: &str) -> OpenAiChunks {
        OpenAiChunks::new(
            self.id.clone(),
            self.created,
            self.model.clone(),
            self.include_usage,
        )
    }

    fn whole(&self, thread_id: &str, text: &str, summary: &TurnSummary) -> Response {
        let mut message = json!({"role": "assistant", "content": text});
        if !summary.tool_calls.is_empty() {
            // OpenAI's shape: no text is `null` content beside the calls.
            if text.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = tool_calls_json(&summary.tool_calls, false);
        }
        Json(json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": summary.finish.as_str(),
            }],
            "usage": usage_json(&summary.usage),
            "thread_id": thread_id,
        }))
        .into_response()
    }

    fn error(&self, error: ApiError) -> Response {
        error.into_openai()
    }
}

/// The box's profiles, each a "model" a client can name (`model` selects the profile); the
/// default profile first.
async fn models(State(app): State<AppState>) -> Response {
    let profiles = app.turns.profiles();
    let default = profiles.default_profile();
    let others = profiles.all().iter().filter(|p| !Arc::ptr_eq(p, default));
    let data: Vec<Value> = std::iter::once(default)
        .chain(others)
        .map(|p| {
            json!({
                "id": p.name,
                "object": "model",
                "created": 0,
                "owned_by": "lang-agent",
                "default": p.is_default,
                "answering_model": p.agent.model_name(),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn forget_all(State(app): State<AppState>) -> Response {
    forget(app, None).await
}

async fn forget_thread(State(app): State<AppState>, Path(thread_id): Path<String>) -> Response {
    if let Err(e) = check_thread_id(&thread_id, "thread_id") {
        return e.into_openai();
    }
    forget(app, Some(thread_id)).await
}

async fn forget(app: AppState, thread_id: Option<String>) -> Response {
    match app.turns.forget(thread_id.as_deref()).await {
        Ok(n) => Json(json!({"deleted": true, "thread_id": thread_id, "forgotten_messages": n}))
            .into_response(),
        Err(e) => ApiError::new(ErrorKind::Unavailable, e.to_string()).into_openai(),
    }
}
