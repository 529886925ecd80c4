//! Scripted upstream faults: answers no well-behaved model server gives, for the fault suite.
//!
//! Each is a real HTTP answer built the way a broken or hostile upstream would send it: a
//! stream that never ends (fast or dripping), `data:` lines that are not JSON, a tool-call
//! index far past any sane count, a JSON body that never ends. The endless bodies are lazy
//! streams: nothing is buffered here, and hyper drops them when the client goes away.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use super::script::{CallKind, Fault};

/// The scripted fault's answer, when it applies to this call: the stream faults to streamed
/// answer calls, `huge_body` to non-streaming calls of any kind (the router's).
pub fn respond(fault: Fault, kind: &CallKind, stream: bool, model: &str) -> Option<Response> {
    match fault {
        Fault::HugeBody if !stream => Some(huge_body(model)),
        Fault::HugeBody => None,
        _ if !stream || *kind != CallKind::Answer => None,
        Fault::Endless => Some(endless(model)),
        Fault::Drip(every) => Some(drip(model, every)),
        Fault::Garbage => Some(garbage()),
        Fault::ToolIndex(index) => Some(tool_index(model, index)),
    }
}

fn chunk(model: &str, delta: Value, finish: Value) -> String {
    let c = json!({"id": "mock-1", "object": "chat.completion.chunk", "created": 0,
                   "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

fn sse(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Text forever, 16 chunks of 64 bytes per write, as fast as the client reads.
fn endless(model: &str) -> Response {
    let piece = "la ".repeat(21) + "l";
    let batch = Bytes::from(chunk(model, json!({"content": piece}), Value::Null).repeat(16));
    sse(Body::from_stream(futures::stream::repeat_with(move || {
        Ok::<_, std::io::Error>(batch.clone())
    })))
}

/// One small piece of text every `every`, forever; the first at once.
fn drip(model: &str, every: Duration) -> Response {
    let frame = Bytes::from(chunk(model, json!({"content": "drip "}), Value::Null));
    let frames = futures::stream::unfold(true, move |first| {
        let frame = frame.clone();
        async move {
            if !first {
                tokio::time::sleep(every).await;
            }
            Some((Ok::<_, std::io::Error>(frame), false))
        }
    });
    sse(Body::from_stream(frames))
}

/// An event stream whose `data:` lines are not chat-completion chunks.
fn garbage() -> Response {
    sse(Body::from(
        "data: this is not JSON\n\ndata: {\"nor\": is this\n\ndata: [DONE]\n\n",
    ))
}

/// One tool-call delta at `index`, then a normal end.
fn tool_index(model: &str, index: u64) -> Response {
    let call = json!({"tool_calls": [{"index": index, "id": "call_far", "type": "function",
                                      "function": {"name": "calculator", "arguments": "{}"}}]});
    let body = [
        chunk(
            model,
            json!({"role": "assistant", "content": null}),
            Value::Null,
        ),
        chunk(model, call, Value::Null),
        chunk(model, json!({}), json!("tool_calls")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    sse(Body::from(body))
}

/// A 200 JSON answer whose `content` string never ends.
fn huge_body(model: &str) -> Response {
    let head = format!(
        r#"{{"id":"mock-1","object":"chat.completion","created":0,"model":{},"choices":[{{"index":0,"finish_reason":"stop","message":{{"role":"assistant","content":""#,
        Value::from(model)
    );
    endless_json(StatusCode::OK, head)
}

/// `[[mock:status=CODE]]` with `[[mock:huge_body]]`: an error whose message never ends.
pub fn huge_error(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    endless_json(
        status,
        r#"{"error":{"type":"mock_error","message":""#.to_string(),
    )
}

/// `head`, then `a` forever.
fn endless_json(status: StatusCode, head: String) -> Response {
    let filler = Bytes::from("a".repeat(4096));
    let rest = futures::stream::repeat_with(move || filler.clone());
    let body = futures::stream::once(async move { Bytes::from(head) })
        .chain(rest)
        .map(Ok::<_, std::io::Error>);
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
