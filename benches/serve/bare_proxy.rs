//! The stack's floor: the least a server built on lang-agent's crates can do to answer a
//! DashScope call the way the `route` graph does.
//!
//! It answers `POST /api/apps/{app}/completion` (and `/api/v1/…`, which `lang-agent stress`
//! calls) by making the two upstream calls a chat turn
//! makes, at once (the router's, asking for a JSON object, and the chat model's, both streamed
//! and read as server-sent events), waits for the router's answer, and relays the chat
//! answer as DashScope JSON or frames. It has the box's HTTP server (hyper through axum),
//! upstream client (reqwest, keeping idle connections as the box does) and runtime (tokio,
//! one worker per core); it has none of the box's work: no authentication, request ids,
//! memory, log writes, deadlines or bounds. The serve bench runs it as a process of its own
//! beside the box, so that the box's overhead, CPU and memory can be set against what the
//! crates alone cost on the same machine in the same run.
//!
//! To run it alone, under `lang-agent stress` or `heaptrack`: build the bench
//! (`cargo bench --no-run --bench serve` prints its path) and start it with
//! `BENCH_BARE_PROXY_UPSTREAM=http://127.0.0.1:PORT/v1` (a `lang-agent mock-llm`); it prints
//! the address it listens on.
//!
//! Bench code only: it trusts its input and unwraps what fails.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde_json::{Value, json};

/// Set to the upstream's base URL, the bench's own program serves as the bare proxy.
pub const UPSTREAM_ENV: &str = "BENCH_BARE_PROXY_UPSTREAM";
/// What the proxy prints once it listens, followed by its base URL.
pub const LISTENING: &str = "bare proxy listening on ";

struct Upstream {
    http: reqwest::Client,
    endpoint: String,
}

/// Serves until killed; prints [`LISTENING`] and the address.
pub async fn serve(upstream: String) {
    // The box's TLS provider (it is not chosen by a feature).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let state = Arc::new(Upstream {
        http,
        endpoint: format!("{}/chat/completions", upstream.trim_end_matches('/')),
    });
    let app = axum::Router::new()
        .route(
            "/api/apps/{app}/completion",
            axum::routing::post(completion),
        )
        .route(
            "/api/v1/apps/{app}/completion",
            axum::routing::post(completion),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{LISTENING}http://{}", listener.local_addr().unwrap());
    // As the box's: a frame goes out when written, not after the client's delayed ACK.
    let listener = listener.tap_io(|tcp| tcp.set_nodelay(true).unwrap());
    axum::serve(listener, app).await.unwrap();
}

async fn completion(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    let call: Value = serde_json::from_slice(&body).unwrap();
    let question = call["input"]["messages"][0]["content"].clone();
    let session = call["input"]["session_id"].clone();
    let stream = headers
        .get("x-dashscope-sse")
        .is_some_and(|v| v == "enable");
    let messages =
        json!([{"role": "system", "content": "s"}, {"role": "user", "content": question}]);
    let router = up.http.post(&up.endpoint).json(&json!({
        "model": "m", "messages": messages, "stream": true,
        "response_format": {"type": "json_object"},
    }));
    let chat = up.http.post(&up.endpoint).json(&json!({
        "model": "m", "messages": messages, "stream": true,
    }));
    let (router, chat) = tokio::join!(router.send(), chat.send());
    // As the box: the chat answer waits for the router's decision.
    let decision: String = text_of(router.unwrap()).collect::<Vec<_>>().await.concat();
    assert!(decision.contains("chat"), "router said {decision}");
    let pieces = text_of(chat.unwrap());
    if !stream {
        let text: String = pieces.collect::<Vec<_>>().await.concat();
        let body = json!({
            "output": {"text": text, "finish_reason": "stop", "session_id": session},
            "usage": {}, "request_id": "bare",
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
    }
    let last = json!({
        "output": {"text": "", "finish_reason": "stop", "session_id": session},
        "usage": {}, "request_id": "bare",
    });
    let data = pieces
        .map(move |piece| {
            json!({
                "output": {"text": piece, "finish_reason": "null", "session_id": session},
                "request_id": "bare",
            })
        })
        .chain(futures::stream::once(async { last }));
    let frames = data.enumerate().map(|(i, data)| {
        Ok::<_, std::convert::Infallible>(Bytes::from(format!(
            "id:{}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n",
            i + 1
        )))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(frames))
        .unwrap()
}

/// The text pieces of a streamed OpenAI-style answer, parsed as server-sent events.
fn text_of(response: reqwest::Response) -> impl futures::Stream<Item = String> {
    sse_stream::SseStream::from_bytes_stream(response.bytes_stream()).filter_map(|event| async {
        let data = event.unwrap().data?;
        if data == "[DONE]" {
            return None;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        chunk["choices"][0]["delta"]["content"]
            .as_str()
            .map(str::to_string)
    })
}
