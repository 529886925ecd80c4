//! The load itself: requests as a DashScope or OpenAI client makes them, `concurrency` at a
//! time, each on its own session so that no turn waits behind another on the same thread.
//!
//! A request succeeds when the answer arrives whole: HTTP 200 and, streamed, the final frame
//! (DashScope's `finish_reason` `"stop"`; OpenAI's `"stop"` chunk and then `[DONE]`), or, not
//! streamed, a body whose `finish_reason` is `"stop"`. Its latency runs until that end; its time
//! to first byte until the first SSE event with data (streamed) or the first body byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::StressApi;
use crate::sse_events::bounded_events;

/// Largest SSE event read from the server; a bigger one fails the request.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// What is sent, where, and how.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's base URL, without a trailing `/`.
    pub url: String,
    pub api: StressApi,
    /// Sent as `Authorization: Bearer <key>`; `None` sends no such header.
    pub key: Option<String>,
    pub prompt: String,
    pub stream: bool,
    /// Longest a request may take to its answer's end.
    pub timeout: Duration,
}

/// How one request went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub latency: Duration,
    pub first_byte: Option<Duration>,
    /// Why the answer did not arrive whole; `None` on success.
    pub error: Option<String>,
}

/// Sends `requests` requests, `concurrency` at a time, and returns how each went with the
/// wall time of the whole level. `on_done` is called as each request ends (progress).
/// Sessions are named `<session_prefix>-<n>`.
pub async fn run_level(
    client: &reqwest::Client,
    target: &Arc<Target>,
    concurrency: usize,
    requests: usize,
    session_prefix: &str,
    on_done: Arc<dyn Fn(&Outcome) + Send + Sync>,
) -> (Vec<Outcome>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(requests) {
        let (client, target, next, on_done) = (
            client.clone(),
            target.clone(),
            next.clone(),
            on_done.clone(),
        );
        let prefix = session_prefix.to_string();
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return outcomes;
                }
                let outcome = one_request(&client, &target, &format!("{prefix}-{n}")).await;
                on_done(&outcome);
                outcomes.push(outcome);
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(requests);
    for worker in workers {
        match worker.await {
            Ok(done) => outcomes.extend(done),
            Err(e) => outcomes.push(Outcome {
                latency: started.elapsed(),
                first_byte: None,
                error: Some(format!("load worker failed: {e}")),
            }),
        }
    }
    (outcomes, started.elapsed())
}

/// One request on session `session`, to its answer's end or the target's timeout.
pub async fn one_request(client: &reqwest::Client, target: &Target, session: &str) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(target.timeout, exchange(client, target, session, started))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no whole answer within {} s",
                target.timeout.as_secs_f64()
            ))
        });
    let latency = started.elapsed();
    match result {
        Ok(first_byte) => Outcome {
            latency,
            first_byte: Some(first_byte),
            error: None,
        },
        Err(error) => Outcome {
            latency,
            first_byte: None,
            error: Some(error),
        },
    }
}

/// Sends the request and reads its answer; `Ok` holds the time to first byte.
async fn exchange(
    client: &reqwest::Client,
    target: &Target,
    session: &str,
    started: Instant,
) -> Result<Duration, String> {
    let response = request(client, target, session)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    if target.stream {
        read_events(response, target.api, started).await
    } else {
        read_whole(response, target.api, started).await
    }
}

fn request(client: &reqwest::Client, target: &Target, session: &str) -> reqwest::RequestBuilder {
    let mut request = match target.api {
        StressApi::Dashscope => {
            let r = client
                .post(format!("{}/api/v1/apps/stress/completion", target.url))
                .json(&json!({
                    "input": {"prompt": target.prompt, "session_id": session},
                    "parameters": {"incremental_output": true},
                }));
            if target.stream {
                r.header("X-DashScope-SSE", "enable")
            } else {
                r
            }
        }
        StressApi::Openai => client
            .post(format!("{}/v1/chat/completions", target.url))
            .json(&json!({
                "model": "stress",
                "messages": [{"role": "user", "content": target.prompt}],
                "stream": target.stream,
                "thread_id": session,
            })),
    };
    if let Some(key) = &target.key {
        request = request.bearer_auth(key);
    }
    request
}

/// A streamed answer, event by event, until its end frame.
async fn read_events(
    response: reqwest::Response,
    api: StressApi,
    started: Instant,
) -> Result<Duration, String> {
    let mut events = std::pin::pin!(bounded_events(response.bytes_stream(), MAX_EVENT_BYTES));
    let mut first_data = None;
    let mut stopped = false;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("stream broke: {e}"))?;
        let Some(data) = event.data else { continue };
        first_data.get_or_insert_with(|| started.elapsed());
        if event.event.as_deref() == Some("error") {
            return Err(format!("error frame: {}", shorten(&data)));
        }
        if api == StressApi::Openai && data.trim() == "[DONE]" {
            return match (stopped, first_data) {
                (true, Some(first)) => Ok(first),
                _ => Err("[DONE] without a \"stop\" chunk".into()),
            };
        }
        let frame: Value =
            serde_json::from_str(&data).map_err(|_| format!("not JSON: {}", shorten(&data)))?;
        if frame.get("error").is_some() {
            return Err(format!("error frame: {}", shorten(&data)));
        }
        if finish_reason(&frame, api) == Some("stop") {
            stopped = true;
            if api == StressApi::Dashscope {
                return Ok(first_data.unwrap_or_default());
            }
        }
    }
    Err(match api {
        StressApi::Dashscope => "stream ended without a \"stop\" frame".into(),
        StressApi::Openai => "stream ended without [DONE]".into(),
    })
}

/// A whole (not streamed) answer.
async fn read_whole(
    response: reqwest::Response,
    api: StressApi,
    started: Instant,
) -> Result<Duration, String> {
    let mut body = response.bytes_stream();
    let mut first_byte = None;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("body broke: {}", e.without_url()))?;
        if !chunk.is_empty() {
            first_byte.get_or_insert_with(|| started.elapsed());
        }
        bytes.extend_from_slice(&chunk);
    }
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|_| format!("not JSON: {}", shorten(&String::from_utf8_lossy(&bytes))))?;
    match finish_reason(&answer, api) {
        Some("stop") => Ok(first_byte.unwrap_or_default()),
        other => Err(format!("answer not finished (finish_reason {other:?})")),
    }
}

/// The `finish_reason` of a DashScope frame (`output`) or an OpenAI one (first choice).
fn finish_reason(frame: &Value, api: StressApi) -> Option<&str> {
    match api {
        StressApi::Dashscope => frame["output"]["finish_reason"].as_str(),
        StressApi::Openai => frame["choices"][0]["finish_reason"].as_str(),
    }
}

/// At most 200 bytes of `text`, for an error message.
fn shorten(text: &str) -> String {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
