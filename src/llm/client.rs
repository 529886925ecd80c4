//! Client for any OpenAI-compatible chat-completions API (DashScope compatible-mode, Ollama,
//! vLLM, llama.cpp server).
//!
//! Calls stream by default: text reaches the caller's callback as soon as it exists, which is
//! what lets Xiaozhi start speaking at the first punctuation mark. Failures before the first
//! byte of the answer (connect errors, 429, 5xx) are retried with backoff; once an answer has
//! started, a failure is reported, never retried, because the caller has already passed text on.
//! Dropping the returned future aborts the HTTP request, which is how a turn stops the model
//! when its client goes away.

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sse_stream::SseStream;

use super::message::{ChatMessage, Completion, FunctionCall, Role, ToolCall, Usage};
use crate::config::{LlmConfig, Secret};

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("model server unreachable: {0}")]
    Unreachable(String),
    #[error("model server timed out")]
    Timeout,
    #[error("model server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("model answer broke off: {0}")]
    BrokeOff(String),
    #[error("model answer could not be read: {0}")]
    Invalid(String),
}

/// What to ask the model.
#[derive(Debug, Clone, Copy)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [ChatMessage],
    /// OpenAI `tools` definitions; empty for a plain chat call.
    pub tools: &'a [Value],
    /// Ask for a JSON object answer (`response_format: {"type": "json_object"}`), as the router
    /// does for its structured decision.
    pub json_object: bool,
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: Option<Secret>,
    attempts: u32,
}

impl LlmClient {
    pub fn new(config: &LlmConfig) -> Result<LlmClient, LlmError> {
        // reqwest is built without a TLS crypto default; ring is the small one. Installing it
        // a second time fails harmlessly, so every client may try.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| LlmError::Invalid(format!("HTTP client: {e}")))?;
        Ok(LlmClient {
            http,
            endpoint: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            api_key: config.api_key.clone(),
            attempts: config.attempts.max(1),
        })
    }

    /// Streams a completion, calling `on_text` with each piece of answer text as it arrives.
    pub async fn stream(
        &self,
        request: &ChatRequest<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, LlmError> {
        let body = request_body(request, true);
        let response = self.send(&body).await?;
        let mut events = SseStream::from_bytes_stream(response.bytes_stream());
        let mut answer = AnswerBuilder::default();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| LlmError::BrokeOff(e.to_string()))?;
            let Some(data) = event.data else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(answer.finish());
            }
            if data.is_empty() {
                continue;
            }
            let chunk: StreamChunk =
                serde_json::from_str(data).map_err(|e| LlmError::Invalid(e.to_string()))?;
            if let Some(error) = chunk.error {
                return Err(LlmError::BrokeOff(error_message(&error)));
            }
            answer.add(chunk, on_text);
        }
        // Some servers end the stream without `[DONE]`; a stream that said why it finished is
        // complete, one that did not was cut.
        if answer.finish_reason.is_some() {
            Ok(answer.finish())
        } else {
            Err(LlmError::BrokeOff(
                "stream ended before the answer finished".into(),
            ))
        }
    }

    /// One non-streaming completion.
    pub async fn complete(&self, request: &ChatRequest<'_>) -> Result<Completion, LlmError> {
        let body = request_body(request, false);
        let response = self.send(&body).await?;
        let bytes = response.bytes().await.map_err(classify)?;
        let parsed: FullResponse =
            serde_json::from_slice(&bytes).map_err(|e| LlmError::Invalid(e.to_string()))?;
        let choice = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::Invalid("answer has no choices".into()))?;
        Ok(Completion {
            message: choice.message,
            usage: parsed.usage.unwrap_or_default(),
            finish_reason: choice.finish_reason,
        })
    }

    /// Sends the request, retrying what may succeed on a second try, until a 2xx arrives.
    async fn send(&self, body: &Value) -> Result<reqwest::Response, LlmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = self.http.post(&self.endpoint).json(body);
            if let Some(key) = &self.api_key {
                builder = builder.bearer_auth(key.expose());
            }
            let (error, retry_after) = match builder.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("error").map(error_message))
                        .unwrap_or_else(|| truncate(&text, 200));
                    (LlmError::Status { status, message }, retry_after)
                }
                Err(e) => (classify(e), None),
            };
            if attempt >= self.attempts || !retryable(&error) {
                return Err(error);
            }
            let backoff = Duration::from_millis(200 * (1 << (attempt - 1).min(4)));
            let wait = retry_after.unwrap_or(backoff).min(Duration::from_secs(5));
            tracing::warn!(attempt, "model call failed, retrying in {wait:?}: {error}");
            tokio::time::sleep(wait).await;
        }
    }
}

fn request_body(request: &ChatRequest<'_>, stream: bool) -> Value {
    let mut body = json!({
        "model": request.model,
        "messages": request.messages,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if !request.tools.is_empty() {
        body["tools"] = Value::Array(request.tools.to_vec());
    }
    if request.json_object {
        body["response_format"] = json!({"type": "json_object"});
    }
    body
}

fn retryable(error: &LlmError) -> bool {
    match error {
        LlmError::Unreachable(_) => true,
        LlmError::Status { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

fn classify(error: reqwest::Error) -> LlmError {
    if error.is_connect() {
        LlmError::Unreachable(root_cause(&error))
    } else if error.is_timeout() {
        LlmError::Timeout
    } else if error.is_body() || error.is_decode() {
        LlmError::BrokeOff(root_cause(&error))
    } else {
        LlmError::Unreachable(root_cause(&error))
    }
}

/// The innermost error text: reqwest's own message hides the useful part ("connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn error_message(error: &Value) -> String {
    error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string())
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[derive(Deserialize)]
struct FullResponse {
    #[serde(default)]
    choices: Vec<FullChoice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct FullChoice {
    message: ChatMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

/// Puts a streamed answer back together: text, tool calls (whose names and arguments arrive in
/// pieces, keyed by index), finish reason and usage.
#[derive(Default)]
struct AnswerBuilder {
    text: String,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
    usage: Usage,
}

impl AnswerBuilder {
    fn add(&mut self, chunk: StreamChunk, on_text: &mut (dyn FnMut(&str) + Send)) {
        if let Some(usage) = chunk.usage {
            self.usage = usage;
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                on_text(&text);
                self.text.push_str(&text);
            }
            for delta in choice.delta.tool_calls {
                while self.tool_calls.len() <= delta.index {
                    self.tool_calls.push(ToolCall {
                        id: String::new(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: String::new(),
                            arguments: String::new(),
                        },
                    });
                }
                let call = &mut self.tool_calls[delta.index];
                if let Some(id) = delta.id {
                    call.id = id;
                }
                if let Some(function) = delta.function {
                    call.function
                        .name
                        .push_str(function.name.as_deref().unwrap_or(""));
                    call.function
                        .arguments
                        .push_str(function.arguments.as_deref().unwrap_or(""));
                }
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
    }

    fn finish(self) -> Completion {
        let mut message = ChatMessage::new(Role::Assistant, self.text);
        message.tool_calls = self.tool_calls;
        Completion {
            message,
            usage: self.usage,
            finish_reason: self.finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(json: &str) -> StreamChunk {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn assembles_text_and_tool_call_pieces() {
        let mut answer = AnswerBuilder::default();
        let mut spoken = String::new();
        let mut on_text = |t: &str| spoken.push_str(t);
        answer.add(
            chunk(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#),
            &mut on_text,
        );
        answer.add(
            chunk(
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"calc","arguments":"{\"e\":"}}]}}]}"#,
            ),
            &mut on_text,
        );
        answer.add(
            chunk(
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"1+1\"}"}}]},"finish_reason":"tool_calls"}]}"#,
            ),
            &mut on_text,
        );
        answer.add(
            chunk(r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#),
            &mut on_text,
        );
        let done = answer.finish();
        assert_eq!(spoken, "Hi");
        assert_eq!(done.message.content, "Hi");
        assert_eq!(done.message.tool_calls[0].id, "c1");
        assert_eq!(done.message.tool_calls[0].function.name, "calc");
        assert_eq!(
            done.message.tool_calls[0].function.arguments,
            r#"{"e":"1+1"}"#
        );
        assert_eq!(done.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(done.usage.prompt_tokens, 7);
    }

    #[test]
    fn retries_only_what_can_succeed_later() {
        assert!(retryable(&LlmError::Unreachable("refused".into())));
        assert!(retryable(&LlmError::Status {
            status: 429,
            message: String::new()
        }));
        assert!(retryable(&LlmError::Status {
            status: 503,
            message: String::new()
        }));
        assert!(!retryable(&LlmError::Status {
            status: 400,
            message: String::new()
        }));
        assert!(!retryable(&LlmError::Timeout));
    }
}
