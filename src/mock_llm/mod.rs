//! `lang-agent mock-llm`: a scripted OpenAI-compatible model server for tests and benchmarks.
//!
//! The real upstream cannot be reached from a test machine, so this stands in for it, and
//! nothing else does. Its answers are deterministic so tests can compare text exactly: the
//! reply to a request whose last user message is X, with user messages u1..un, is
//! `You said: X. I remember: u1 | u2 | ... | un.` streamed in pieces of up to 8 characters.
//! Directives inside X script failures, the router's decision, tool calls and chatty filler
//! (see [`script`]), and upstream faults (see [`faults`]). Calls without directives get the
//! command line's defaults ([`Defaults`]: router answer, tool call, answer length) and its
//! pacing (first-token latency, piece interval, a thinking delay skipped by
//! `"enable_thinking": false`). Every request body is recorded and served back at
//! `GET /mock/requests` so tests can check what the model was shown. `serve --demo` runs it in
//! process with the [`demo`] script.

mod demo;
mod faults;
mod script;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};

pub use script::Defaults;
use script::{Answer, Behaviour, CallKind, Script};

/// How the fake upstream listens and paces its answers (`lang-agent mock-llm`'s flags).
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// A host name or address to listen on.
    pub host: String,
    /// 0 picks a free port; the chosen one is printed.
    pub port: u16,
    /// Delay before the first byte of every answer.
    pub delay: Duration,
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
    /// The only Bearer key model calls are answered for (others get a 401), as a real
    /// upstream checks its key; `None` answers everyone.
    pub api_key: Option<String>,
    /// Extra delay before the first byte of a call that does not turn thinking off
    /// (`"enable_thinking": false`), as hybrid-thinking models think before they answer.
    pub thinking_delay: Duration,
    /// What calls without directives get.
    pub defaults: Defaults,
}

/// Why the fake upstream stopped.
#[derive(Debug, thiserror::Error)]
pub enum MockLlmError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("mock-llm stopped: {0}")]
    Stopped(std::io::Error),
}

#[derive(Clone)]
struct Mock {
    delay: Duration,
    chunk_delay: Duration,
    requests: Arc<Mutex<Vec<Value>>>,
    /// How many times each `fail_first` content has been seen.
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Numbers tool call ids, so that every call of a run has its own.
    next_call_id: Arc<AtomicU64>,
    api_key: Option<Arc<str>>,
    thinking_delay: Duration,
    defaults: Arc<Defaults>,
}

/// Serves the fake upstream until the process is stopped.
pub async fn run(options: MockOptions) -> Result<(), MockLlmError> {
    let (listener, addr) = listen(&options).await?;
    println!("mock-llm listening on http://{addr}/v1");
    serve(listener, options).await
}

/// Starts the fake upstream on a free port of 127.0.0.1 in this process (`serve --demo`);
/// returns its base URL. It serves until the process ends.
pub async fn start_in_process(mut options: MockOptions) -> Result<String, MockLlmError> {
    options.host = "127.0.0.1".into();
    options.port = 0;
    let (listener, addr) = listen(&options).await?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, options).await {
            tracing::error!("the demo upstream stopped: {e}");
        }
    });
    Ok(format!("http://{addr}/v1"))
}

async fn listen(
    options: &MockOptions,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), MockLlmError> {
    let failed = |source| MockLlmError::Listen {
        addr: format!("{}:{}", options.host, options.port),
        source,
    };
    let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

async fn serve(
    listener: tokio::net::TcpListener,
    options: MockOptions,
) -> Result<(), MockLlmError> {
    let mock = Mock {
        delay: options.delay,
        chunk_delay: options.chunk_delay,
        requests: Arc::default(),
        failures: Arc::default(),
        next_call_id: Arc::new(AtomicU64::new(1)),
        api_key: options.api_key.map(Arc::from),
        thinking_delay: options.thinking_delay,
        defaults: Arc::new(options.defaults),
    };
    axum::serve(listener.tap_io(crate::http::no_delay), router(mock))
        .await
        .map_err(MockLlmError::Stopped)
}

fn router(mock: Mock) -> Router {
    let completions = post(chat_completions);
    Router::new()
        .route("/v1/chat/completions", completions.clone())
        .route("/chat/completions", completions.clone())
        .route("/compatible-mode/v1/chat/completions", completions)
        .route("/v1/models", get(models))
        .route("/mock/requests", get(recorded).delete(clear_recorded))
        .with_state(mock)
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "mock"}]}))
}

async fn recorded(State(mock): State<Mock>) -> Json<Value> {
    Json(Value::Array(mock.requests.lock().unwrap().clone()))
}

async fn clear_recorded(State(mock): State<Mock>) -> StatusCode {
    mock.requests.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

async fn chat_completions(
    State(mock): State<Mock>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(key) = &mock.api_key {
        let sent = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key) {
            let error = json!({"error": {"message": "Incorrect API key provided.",
                "type": "invalid_request_error", "code": "invalid_api_key"}});
            return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
        }
    }
    mock.requests.lock().unwrap().push(body.clone());
    let script = Script::read_with(&body, &mock.defaults);
    // A hybrid-thinking model thinks first unless the call turns thinking off.
    if !mock.thinking_delay.is_zero() && body.get("enable_thinking") != Some(&Value::Bool(false)) {
        tokio::time::sleep(mock.thinking_delay).await;
    }
    let delay = match script.kind {
        CallKind::Router => script.route_delay.or(script.delay),
        _ => script.delay,
    }
    .unwrap_or(mock.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = script.fault {
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let model = body.get("model").and_then(Value::as_str).unwrap_or("mock");
        if let Some(response) = faults::respond(fault, &script.kind, stream, model) {
            return response;
        }
    }
    let (answer, behaviour) = match script.kind {
        CallKind::Router => match script.route_reply() {
            Ok(text) => (Answer::Text(text), Behaviour::Answer),
            Err(code) => return error_status(code),
        },
        CallKind::Chatty => (Answer::Text(script.filler_reply()), Behaviour::Answer),
        CallKind::Judge => (Answer::Text(script.judge_reply()), Behaviour::Answer),
        CallKind::Answer => {
            let behaviour = match script.behaviour.clone() {
                Behaviour::FailFirst(n) => {
                    let mut seen = mock.failures.lock().unwrap();
                    let count = seen.entry(script.last_user.clone()).or_insert(0);
                    *count += 1;
                    if *count <= n {
                        Behaviour::Status(500)
                    } else {
                        Behaviour::Answer
                    }
                }
                other => other,
            };
            if let Behaviour::Status(code) = behaviour {
                if script.fault == Some(script::Fault::HugeBody) {
                    return faults::huge_error(code);
                }
                return error_status(code);
            }
            (script.answer(), behaviour)
        }
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_string();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let reply = match answer {
        Answer::Text(text) => text,
        Answer::ToolCalls(calls) => {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|(name, arguments)| {
                    let id = format!("call_{}", mock.next_call_id.fetch_add(1, Ordering::Relaxed));
                    json!({"id": id, "type": "function",
                           "function": {"name": name, "arguments": arguments}})
                })
                .collect();
            let usage = usage(&script, "");
            return if stream {
                stream_tool_calls(&mock, calls, usage, model)
            } else {
                Json(json!({
                    "id": "mock-1", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "finish_reason": "tool_calls",
                                 "message": {"role": "assistant", "content": null, "tool_calls": calls}}],
                    "usage": usage,
                }))
                .into_response()
            };
        }
    };
    let usage = usage(&script, &reply);
    if !stream {
        return Json(json!({
            "id": "mock-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let shape = StreamShape {
        piece_chars: script.piece_chars(),
        cut: behaviour == Behaviour::Cut,
        hang_after: script.hang_after,
    };
    stream_reply(&mock, reply, shape, usage, model)
}

/// How a streamed reply is cut into frames and how it ends.
struct StreamShape {
    piece_chars: usize,
    /// Drop the connection after the first half (`cut`).
    cut: bool,
    /// Go silent after this many pieces (`hang_after`).
    hang_after: Option<usize>,
}

fn error_status(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": format!("mock-llm scripted status {code}"),
                                 "type": "mock_error", "code": code}});
    (status, Json(body)).into_response()
}

fn usage(script: &Script, reply: &str) -> Value {
    json!({
        "prompt_tokens": script.prompt_chars / 4 + 1,
        "completion_tokens": reply.chars().count() / 4 + 1,
        "total_tokens": script.prompt_chars / 4 + reply.chars().count() / 4 + 2,
    })
}

/// Tool calls streamed as real servers do: each call's id and name first, then its arguments
/// in a second piece, then `finish_reason: tool_calls`.
fn stream_tool_calls(mock: &Mock, calls: Vec<Value>, usage: Value, model: String) -> Response {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "mock-1", "object": "chat.completion.chunk", "created": 0,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Ok::<_, std::io::Error>(Bytes::from(format!("data: {c}\n\n")))
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": null}),
        Value::Null,
    )];
    for (index, call) in calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": call["function"]["name"], "arguments": ""}}]}),
            Value::Null,
        ));
        frames.push(chunk(
            json!({"tool_calls": [{"index": index,
                                   "function": {"arguments": call["function"]["arguments"]}}]}),
            Value::Null,
        ));
    }
    frames.push(chunk(json!({}), json!("tool_calls")));
    let c = json!({"id": "mock-1", "object": "chat.completion.chunk", "created": 0,
                   "choices": [], "usage": usage});
    frames.push(Ok(Bytes::from(format!("data: {c}\n\ndata: [DONE]\n\n"))));
    let chunk_delay = mock.chunk_delay;
    let body = futures::stream::iter(frames).then(move |frame| async move {
        if !chunk_delay.is_zero() {
            tokio::time::sleep(chunk_delay).await;
        }
        frame
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn stream_reply(
    mock: &Mock,
    reply: String,
    shape: StreamShape,
    usage: Value,
    model: String,
) -> Response {
    let StreamShape {
        piece_chars,
        cut,
        hang_after,
    } = shape;
    let pieces = script::pieces(&reply, piece_chars);
    let keep = if let Some(n) = hang_after {
        n.min(pieces.len())
    } else if cut {
        pieces.len().div_ceil(2)
    } else {
        pieces.len()
    };
    let chunk = move |delta: Value, finish: Value| {
        let c = json!({"id": "mock-1", "object": "chat.completion.chunk", "created": 0,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut frames: Vec<Result<Bytes, std::io::Error>> = pieces[..keep]
        .iter()
        .map(|p| Ok(chunk(json!({"content": p}), Value::Null)))
        .collect();
    if hang_after.is_some() {
        // Nothing more is pushed; the stream below then never ends.
    } else if cut {
        // An error item makes hyper abort the connection mid-body, as a crashed upstream does.
        frames.push(Err(std::io::Error::other("mock-llm scripted cut")));
    } else {
        frames.push(Ok(chunk(json!({}), json!("stop"))));
        let c = json!({"id": "mock-1", "object": "chat.completion.chunk", "created": 0,
                       "choices": [], "usage": usage});
        frames.push(Ok(Bytes::from(format!("data: {c}\n\ndata: [DONE]\n\n"))));
    }
    let chunk_delay = mock.chunk_delay;
    let body = futures::stream::iter(frames).then(move |frame| async move {
        // A cut must come after the first half has left, or it is a refused request rather
        // than an answer that broke off.
        let pause = if frame.is_err() {
            chunk_delay.max(Duration::from_millis(50))
        } else {
            chunk_delay
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        frame
    });
    let body: futures::stream::BoxStream<'static, _> = if hang_after.is_some() {
        body.chain(futures::stream::pending()).boxed()
    } else {
        body.boxed()
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
