//! Putting a streamed answer back together, within bounds the upstream cannot move.
//!
//! [`assemble_sse`] is the whole path from the upstream's bytes to a [`Completion`]: SSE
//! decoding ([`crate::sse_events`], bounded per event), chunk parsing, and the assembly of text and tool calls (whose ids,
//! names and arguments arrive in pieces, keyed by index). `LlmClient::stream` runs exactly
//! this on the HTTP body, and the fuzz target runs it on arbitrary bytes.
//!
//! Everything the upstream controls is bounded, so no answer can take the process down:
//! - the answer's size (text plus tool-call ids, names and arguments) by `--max-answer-bytes`:
//!   past it, reading stops (which aborts the request) and the answer so far is the result,
//!   with finish reason `length`; the text is cut at a character boundary, and a tool call
//!   being written at the cut is dropped;
//! - tool calls per answer by [`MAX_TOOL_CALLS_PER_STEP`]: an index at or past it is a protocol
//!   error, never an allocation;
//! - choices per chunk: one was asked for, more is a protocol error;
//! - each SSE event by [`AnswerLimits::max_event_bytes`].

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::client::LlmError;
use super::message::{ChatMessage, Completion, FunctionCall, Role, ToolCall, Usage};
use crate::sse_events::{SseError, bounded_events};

/// `--max-answer-bytes`' default: spoken answers are short; 256 KiB is far beyond any.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Tool calls one model answer may make. Real models make a handful; an index at or past this
/// is an upstream protocol error.
pub const MAX_TOOL_CALLS_PER_STEP: usize = 32;

/// The finish reason of an answer cut at the size limit (OpenAI's and DashScope's word).
pub const FINISH_LENGTH: &str = "length";

/// How much of an answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLimits {
    /// Text plus tool-call ids, names and arguments, in bytes.
    pub max_answer_bytes: usize,
}

impl Default for AnswerLimits {
    fn default() -> Self {
        AnswerLimits {
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

impl AnswerLimits {
    /// The largest SSE event or non-streamed body read: the whole answer JSON-escaped (at most
    /// six bytes per byte, `\u0001`) plus room for the envelope.
    pub fn max_event_bytes(&self) -> usize {
        self.max_answer_bytes
            .saturating_mul(6)
            .saturating_add(64 * 1024)
    }

    pub fn too_long(&self) -> LlmError {
        LlmError::Invalid(format!(
            "the model's answer exceeded {} bytes (--max-answer-bytes)",
            self.max_answer_bytes
        ))
    }
}

/// Reads a chat-completions SSE body to the end, or to the size limit, calling `on_text` with
/// each piece of answer text as it arrives. Returning early drops `chunks`, which for an HTTP
/// body aborts the request.
pub async fn assemble_sse<S>(
    chunks: S,
    limits: AnswerLimits,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<Completion, LlmError>
where
    S: Stream<Item = Result<Bytes, LlmError>>,
{
    let events = bounded_events(chunks, limits.max_event_bytes());
    let mut events = std::pin::pin!(events);
    let mut answer = AnswerBuilder::new(limits);
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            SseError::Body(e) => e,
            other => LlmError::Invalid(format!("upstream {other}")),
        })?;
        let Some(data) = event.data else { continue };
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(answer.finish());
        }
        if data.is_empty() {
            continue;
        }
        let chunk: StreamChunk = serde_json::from_str(data).map_err(|e| {
            LlmError::Invalid(format!("upstream sent a chunk that is not an answer: {e}"))
        })?;
        if let Some(error) = chunk.error {
            return Err(LlmError::BrokeOff(error_message(&error)));
        }
        if answer.add(chunk, on_text)? == Progress::Cut {
            return Ok(answer.finish());
        }
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

/// The message of an upstream error object, short enough for a log line and a client.
pub fn error_message(error: &Value) -> String {
    let text = match error.get("message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    };
    truncate(&text, 200)
}

pub fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Token counts as the upstream reports them; a count that is not a number (negative, too
/// large) is left out rather than failing the answer it came with.
pub fn lenient_usage<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Usage>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(|v| serde_json::from_value(v).ok()))
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    #[serde(default, deserialize_with = "lenient_usage")]
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
    index: u64,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    More,
    /// The size limit was reached: the answer is what was kept.
    Cut,
}

/// The answer so far: text, tool calls, finish reason and usage, and its size.
struct AnswerBuilder {
    limits: AnswerLimits,
    text: String,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
    usage: Usage,
    /// Text plus tool-call ids, names and arguments.
    bytes: usize,
}

impl AnswerBuilder {
    fn new(limits: AnswerLimits) -> AnswerBuilder {
        AnswerBuilder {
            limits,
            text: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: Usage::default(),
            bytes: 0,
        }
    }

    fn room(&self) -> usize {
        self.limits.max_answer_bytes.saturating_sub(self.bytes)
    }

    fn add(
        &mut self,
        chunk: StreamChunk,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Progress, LlmError> {
        if let Some(usage) = chunk.usage {
            self.usage = usage;
        }
        if chunk.choices.len() > 1 {
            return Err(LlmError::Invalid(format!(
                "upstream protocol error: {} choices in one chunk, one was asked for",
                chunk.choices.len()
            )));
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(Progress::More);
        };
        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty())
            && self.text_piece(&text, on_text) == Progress::Cut
        {
            return Ok(Progress::Cut);
        }
        for delta in choice.delta.tool_calls {
            if self.tool_call_piece(delta)? == Progress::Cut {
                return Ok(Progress::Cut);
            }
        }
        if choice.finish_reason.is_some() {
            self.finish_reason = choice.finish_reason;
        }
        Ok(Progress::More)
    }

    fn text_piece(&mut self, text: &str, on_text: &mut (dyn FnMut(&str) + Send)) -> Progress {
        let room = self.room();
        let (kept, progress) = if text.len() > room {
            (&text[..text.floor_char_boundary(room)], Progress::Cut)
        } else {
            (text, Progress::More)
        };
        if !kept.is_empty() {
            on_text(kept);
            self.text.push_str(kept);
        }
        self.bytes += kept.len();
        if progress == Progress::Cut {
            self.cut_at(self.tool_calls.len());
        }
        progress
    }

    fn tool_call_piece(&mut self, delta: ToolCallDelta) -> Result<Progress, LlmError> {
        let index = usize::try_from(delta.index)
            .ok()
            .filter(|&i| i < MAX_TOOL_CALLS_PER_STEP)
            .ok_or_else(|| {
                LlmError::Invalid(format!(
                    "upstream protocol error: tool call index {} past the limit of {} calls \
                     per answer",
                    delta.index, MAX_TOOL_CALLS_PER_STEP
                ))
            })?;
        let (name, arguments) = delta
            .function
            .map(|f| (f.name.unwrap_or_default(), f.arguments.unwrap_or_default()))
            .unwrap_or_default();
        let replaced_id = match (&delta.id, self.tool_calls.get(index)) {
            (Some(_), Some(call)) => call.id.len(),
            _ => 0,
        };
        let added = delta.id.as_ref().map_or(0, String::len) + name.len() + arguments.len();
        if added.saturating_sub(replaced_id) > self.room() {
            self.cut_at(index);
            return Ok(Progress::Cut);
        }
        self.bytes = self.bytes - replaced_id + added;
        while self.tool_calls.len() <= index {
            self.tool_calls.push(ToolCall {
                id: String::new(),
                kind: "function".into(),
                function: FunctionCall {
                    name: String::new(),
                    arguments: String::new(),
                },
            });
        }
        let call = &mut self.tool_calls[index];
        if let Some(id) = delta.id {
            call.id = id;
        }
        call.function.name.push_str(&name);
        call.function.arguments.push_str(&arguments);
        Ok(Progress::More)
    }

    /// Ends the answer at the size limit: calls from `index` on may be incomplete and are
    /// dropped (calls arrive in index order, so those before it are whole).
    fn cut_at(&mut self, index: usize) {
        self.tool_calls.truncate(index);
        self.finish_reason = Some(FINISH_LENGTH.to_string());
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

    /// Runs `assemble_sse` on SSE `events` (each sent as its own chunk).
    fn assemble(
        events: &[&str],
        max_answer_bytes: usize,
    ) -> (Result<Completion, LlmError>, String) {
        let chunks: Vec<Result<Bytes, LlmError>> = events
            .iter()
            .map(|e| Ok(Bytes::from(format!("data: {e}\n\n"))))
            .collect();
        let mut spoken = String::new();
        let mut on_text = |t: &str| spoken.push_str(t);
        let limits = AnswerLimits { max_answer_bytes };
        let result = futures::executor::block_on(assemble_sse(
            futures::stream::iter(chunks),
            limits,
            &mut on_text,
        ));
        (result, spoken)
    }

    fn text(piece: &str) -> String {
        serde_json::json!({"choices": [{"delta": {"content": piece}}]}).to_string()
    }

    fn call(index: u64, id: Option<&str>, name: &str, arguments: &str) -> String {
        serde_json::json!({"choices": [{"delta": {"tool_calls": [
            {"index": index, "id": id, "function": {"name": name, "arguments": arguments}}]}}]})
        .to_string()
    }

    #[test]
    fn assembles_text_and_tool_call_pieces() {
        let (done, spoken) = assemble(
            &[
                &text("Hi"),
                &call(0, Some("c1"), "calc", r#"{"e":"#),
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"1+1\"}"}}]},"finish_reason":"tool_calls"}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#,
                "[DONE]",
            ],
            1024,
        );
        let done = done.unwrap();
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
    fn text_past_the_limit_is_cut_at_a_character_boundary_and_reading_stops() {
        // 4 + 3 + 3 bytes: the limit of 8 falls inside the third character.
        let (done, spoken) = assemble(&[&text("abcd"), &text("好的"), &text("never")], 8);
        let done = done.unwrap();
        assert_eq!(done.message.content, "abcd好");
        assert_eq!(spoken, "abcd好");
        assert_eq!(done.finish_reason.as_deref(), Some(FINISH_LENGTH));
        // A limit met exactly is not a cut.
        let (done, _) = assemble(
            &[
                &text("abcd"),
                r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            ],
            4,
        );
        assert_eq!(done.unwrap().finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn tool_call_bytes_count_and_a_call_cut_short_is_dropped() {
        let (done, _) = assemble(
            &[
                &text("ok"),
                &call(0, Some("a"), "clock", "{}"),
                &call(1, Some("b"), "calculator", r#"{"expression": "#),
                &call(1, None, "", &"9".repeat(100)),
            ],
            64,
        );
        let done = done.unwrap();
        assert_eq!(done.finish_reason.as_deref(), Some(FINISH_LENGTH));
        assert_eq!(done.message.content, "ok");
        assert_eq!(
            done.message.tool_calls.len(),
            1,
            "the whole first call stays"
        );
        assert_eq!(done.message.tool_calls[0].function.name, "clock");
        // Repeating an id in every piece does not count twice.
        let pieces: Vec<String> = (0..20).map(|_| call(0, Some("call_1"), "", "1")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (done, _) = assemble(&[&pieces[..], &["[DONE]"]].concat(), 40);
        assert_eq!(
            done.unwrap().message.tool_calls[0].function.arguments.len(),
            20
        );
    }

    #[test]
    fn a_tool_call_index_past_the_bound_is_a_protocol_error() {
        for index in [32, 100_000_000_000, u64::MAX] {
            let (err, _) = assemble(&[&call(index, Some("x"), "f", "{}")], 1024);
            let err = err.unwrap_err().to_string();
            assert!(
                err.contains(&format!("tool call index {index} past the limit of 32")),
                "{err}"
            );
        }
        let (ok, _) = assemble(&[&call(31, Some("x"), "f", "{}"), "[DONE]"], 1024);
        assert_eq!(ok.unwrap().message.tool_calls.len(), 32);
        let (err, _) = assemble(
            &[r#"{"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]}"#],
            1024,
        );
        assert!(matches!(err, Err(LlmError::Invalid(_))));
    }

    #[test]
    fn counts_the_upstream_controls_are_bounded() {
        let two = r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#;
        let (err, _) = assemble(&[two], 1024);
        assert!(err.unwrap_err().to_string().contains("2 choices"));
        // Token counts out of range are dropped, not fatal; sums saturate.
        let (done, _) = assemble(
            &[
                &text("x"),
                r#"{"choices":[],"usage":{"prompt_tokens":-1}}"#,
                "[DONE]",
            ],
            1024,
        );
        assert_eq!(done.unwrap().usage, Usage::default());
        let mut usage = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: u64::MAX,
        };
        usage += usage;
        assert_eq!(usage.total(), u64::MAX);
    }

    #[test]
    fn upstream_errors_and_cut_streams_are_errors() {
        let (err, _) = assemble(&["not json"], 1024);
        assert!(matches!(err, Err(LlmError::Invalid(_))));
        let (err, _) = assemble(&[r#"{"error":{"message":"overloaded"}}"#], 1024);
        assert_eq!(err.unwrap_err(), LlmError::BrokeOff("overloaded".into()));
        let (err, _) = assemble(&[&text("half")], 1024);
        assert!(matches!(err, Err(LlmError::BrokeOff(_))));
        let (done, _) = assemble(
            &[r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#],
            1024,
        );
        assert_eq!(
            done.unwrap().message.content,
            "x",
            "no [DONE], but finished"
        );
    }
}
