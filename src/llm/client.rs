//! Client for any OpenAI-compatible chat-completions API (DashScope compatible-mode, Ollama,
//! vLLM, llama.cpp server).
//!
//! Calls stream by default: text reaches the caller's callback as soon as it exists, which is
//! what lets Xiaozhi start speaking at the first punctuation mark. Failures before the first
//! byte of the answer (connect errors, 429, 5xx) are retried with backoff; once an answer has
//! started, a failure is reported, never retried, because the caller has already passed text on.
//! Dropping the returned future aborts the HTTP request, which is how a turn stops the model
//! when its client goes away.
//!
//! No read is unbounded: a streamed answer stops at `--max-answer-bytes` (see
//! [`super::assemble`]), a non-streamed body past the same bound is an error, and an error
//! body is read up to 64 KiB. A read timeout anywhere (headers, body, mid-stream) is
//! [`LlmError::Timeout`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::assemble::{AnswerLimits, assemble_sse, error_message, lenient_usage, truncate};
use super::message::{ChatMessage, Completion, Usage};
use super::request_body::request_body;
use super::sampling::{Sampling, ToolChoice};
use crate::metrics::{Metrics, UpstreamRole};
use crate::redact::Secret;

/// `--llm-connect-timeout-secs`' default.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
/// `--llm-read-timeout-secs`' default: the longest silence between bytes.
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 60;
/// `--llm-attempts`' default: attempts per call that fails before the first token.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// Settings of the upstream OpenAI-compatible model server.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL ending before `/chat/completions`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub attempts: u32,
    /// `--max-answer-bytes`: text plus tool calls of one model answer.
    pub max_answer_bytes: usize,
    /// `--thinking`: whether hybrid-thinking models may think before answering.
    pub thinking: Thinking,
}

/// Whether the upstream's hybrid-thinking models (Qwen 3) think before they answer: a voice
/// user hears nothing while they do, so the box turns it off where it can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Thinking {
    /// Off on DashScope (`"enable_thinking": false` on every call); elsewhere nothing is sent
    /// and the model server decides.
    #[default]
    Auto,
    /// Every call sends `"enable_thinking": false`.
    Off,
    /// Every call sends `"enable_thinking": true`.
    On,
}

impl LlmConfig {
    /// What every call's body carries beside the request itself.
    pub fn extra_body(&self) -> serde_json::Map<String, Value> {
        let enable = match self.thinking {
            Thinking::Auto if self.is_dashscope() => Some(false),
            Thinking::Auto => None,
            Thinking::Off => Some(false),
            Thinking::On => Some(true),
        };
        enable
            .map(|on| ("enable_thinking".to_string(), Value::Bool(on)))
            .into_iter()
            .collect()
    }

    /// The upstream is Alibaba's DashScope (any region's `*.aliyuncs.com`): the only place the
    /// default helper model names (`qwen-flash`) exist. A local server (Ollama, vLLM,
    /// llama.cpp) answers 404 for them, so elsewhere every model defaults to `--llm-name`.
    pub fn is_dashscope(&self) -> bool {
        reqwest::Url::parse(&self.base_url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
            .is_some_and(|host| host == "aliyuncs.com" || host.ends_with(".aliyuncs.com"))
    }
}

/// How much of an error answer (non-2xx) is read: enough for any error message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

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
    /// The client's settings for the answering call; [`Sampling::NONE`] for the box's own calls.
    pub sampling: &'a Sampling,
    /// The tool the model must call, if the client asked for one (only sent with tools).
    pub tool_choice: Option<&'a ToolChoice>,
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    /// Parsed once: reqwest would parse a string on every call.
    endpoint: reqwest::Url,
    /// `Bearer <key>`, made once and marked sensitive (never shown by a header dump).
    authorization: Option<reqwest::header::HeaderValue>,
    attempts: u32,
    limits: AnswerLimits,
    /// Sent on every call as it is ([`LlmConfig::extra_body`]).
    extra_body: Arc<serde_json::Map<String, Value>>,
    /// Where each call's duration is counted, under the job this client's calls do.
    observer: Option<(Arc<Metrics>, UpstreamRole)>,
}

impl LlmClient {
    pub fn new(config: &LlmConfig) -> Result<LlmClient, LlmError> {
        crate::http::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            // Idle upstream connections are kept for reuse (a new one costs a handshake per
            // turn), but each is a descriptor: a burst leaves at most 256 behind, for 30 s.
            // Fewer made a load of a few hundred turns close and reopen connections all along
            // (connect and shutdown were 3% of the box's CPU at 200 concurrent turns).
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| LlmError::Invalid(format!("HTTP client: {e}")))?;
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint).map_err(|e| {
            LlmError::Invalid(format!(
                "upstream URL {}: {e}",
                crate::redact::redact_url(&endpoint)
            ))
        })?;
        let authorization = match &config.api_key {
            Some(key) => {
                let mut value =
                    reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose()))
                        .map_err(|_| {
                            LlmError::Invalid("the upstream API key is not a header value".into())
                        })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(LlmClient {
            http,
            endpoint,
            authorization,
            attempts: config.attempts.max(1),
            limits: AnswerLimits {
                max_answer_bytes: config.max_answer_bytes,
            },
            extra_body: Arc::new(config.extra_body()),
            observer: None,
        })
    }

    /// This client (sharing its connections), its calls counted in `metrics` as `role`'s.
    pub fn observed(&self, metrics: &Arc<Metrics>, role: UpstreamRole) -> LlmClient {
        LlmClient {
            observer: Some((Arc::clone(metrics), role)),
            ..self.clone()
        }
    }

    /// This client with `extra` merged over what its calls carry (a profile's `extra_body` for
    /// one model role: its keys win).
    pub fn with_extra_body(self, extra: &serde_json::Map<String, Value>) -> LlmClient {
        if extra.is_empty() {
            return self;
        }
        let mut body = (*self.extra_body).clone();
        body.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        LlmClient {
            extra_body: Arc::new(body),
            ..self
        }
    }

    /// Counts a call that ended (answered or failed) `started` ago.
    fn ended<T>(&self, started: Instant, result: Result<T, LlmError>) -> Result<T, LlmError> {
        if let Some((metrics, role)) = &self.observer {
            metrics.upstream_call(*role, started.elapsed());
        }
        result
    }

    /// Streams a completion, calling `on_text` with each piece of answer text as it arrives.
    /// An answer that reaches `--max-answer-bytes` is stopped there and returned with finish
    /// reason `length`.
    pub async fn stream(
        &self,
        request: &ChatRequest<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let body = request_body(request, true, &self.extra_body).into();
        let answer = async {
            let response = self.send(&body).await?;
            let chunks = response.bytes_stream().map(|r| r.map_err(classify));
            assemble_sse(chunks, self.limits, on_text).await
        };
        self.ended(started, answer.await)
    }

    /// One non-streaming completion; an answer over `--max-answer-bytes` is an error.
    pub async fn complete(&self, request: &ChatRequest<'_>) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let result = self.complete_once(request).await;
        self.ended(started, result)
    }

    async fn complete_once(&self, request: &ChatRequest<'_>) -> Result<Completion, LlmError> {
        let body = request_body(request, false, &self.extra_body).into();
        let mut response = self.send(&body).await?;
        let (bytes, whole) = read_at_most(&mut response, self.limits.max_event_bytes()).await?;
        if !whole {
            return Err(self.limits.too_long());
        }
        let parsed: FullResponse = serde_json::from_slice(&bytes)
            .map_err(|e| LlmError::Invalid(format!("upstream answer is not JSON: {e}")))?;
        let choice = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::Invalid("answer has no choices".into()))?;
        let message = choice.message;
        let size = message.content.len()
            + message
                .tool_calls
                .iter()
                .map(|c| c.id.len() + c.function.name.len() + c.function.arguments.len())
                .sum::<usize>();
        if size > self.limits.max_answer_bytes {
            return Err(self.limits.too_long());
        }
        Ok(Completion {
            message,
            usage: parsed.usage.unwrap_or_default(),
            finish_reason: choice.finish_reason,
        })
    }

    /// Sends the request, retrying what may succeed on a second try, until a 2xx arrives.
    async fn send(&self, body: &bytes::Bytes) -> Result<reqwest::Response, LlmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = self
                .http
                .post(self.endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(authorization) = &self.authorization {
                builder = builder.header(reqwest::header::AUTHORIZATION, authorization.clone());
            }
            let (error, retry_after) = match builder.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = match read_at_most(&mut response, MAX_ERROR_BODY_BYTES).await {
                        Ok((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
                        Err(_) => String::new(),
                    };
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

/// Reads the body up to `max` bytes; `false` when there was more (the rest is not read, and
/// dropping the response aborts it).
async fn read_at_most(
    response: &mut reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), LlmError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

#[derive(Deserialize)]
struct FullResponse {
    #[serde(default)]
    choices: Vec<FullChoice>,
    #[serde(default, deserialize_with = "lenient_usage")]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct FullChoice {
    message: ChatMessage,
    finish_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
