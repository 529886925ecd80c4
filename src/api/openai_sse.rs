//! OpenAI chat-completion chunks, the one place that writes them.
//!
//! `data: {chunk}` per piece of text (the first carries the assistant role), the client's tool
//! calls in one `delta.tool_calls` chunk when the model called them, a closing chunk with
//! `finish_reason` (`"stop"`, `"length"`, `"tool_calls"`), a usage chunk with empty `choices` when the client asked
//! for `stream_options.include_usage`, then `data: [DONE]`. A failure after the stream began
//! is `data: {"error": {...}}`, which the `openai` SDK raises as `APIError`.

use axum::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::stream::FrameWriter;
use crate::agent::turns::TurnSummary;
use crate::llm::{ToolCall, Usage};

pub struct OpenAiChunks {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    role_sent: bool,
}

impl OpenAiChunks {
    pub fn new(id: String, created: i64, model: String, include_usage: bool) -> OpenAiChunks {
        OpenAiChunks {
            id,
            created,
            model,
            include_usage,
            role_sent: false,
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk
    }
}

/// One event: `data: {json}` and its blank line. Written with `to_writer`, not `Value`'s
/// `Display`, which goes through the formatter a few bytes at a time.
fn data(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"data: ");
    // Serializing these plain fields into a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("a chunk always serializes");
    out.extend_from_slice(b"\n\n");
    out
}

/// The client's tool calls as OpenAI sends them: in a message, or (`indexed`) as the deltas of
/// a stream, each with its `index`.
pub fn tool_calls_json(calls: &[ToolCall], indexed: bool) -> Value {
    let calls = calls.iter().enumerate().map(|(index, call)| {
        let mut json = json!({
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        });
        if indexed {
            json["index"] = json!(index);
        }
        json
    });
    Value::Array(calls.collect())
}

/// OpenAI's usage object.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total(),
    })
}

/// A chunk carrying a piece of answer text, written from borrowed fields: a turn sends one per
/// piece, and building each as a `Value` cost more than the rest of the frame's way out. Its
/// keys are in the order `chunk` writes the others' (OpenAI's own), so every chunk of a stream
/// has the same shape.
#[derive(Serialize)]
struct TextChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [TextChoice<'a>; 1],
}

#[derive(Serialize)]
struct TextChoice<'a> {
    index: u32,
    delta: TextDelta<'a>,
    finish_reason: Option<()>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    content: &'a str,
}

impl FrameWriter for OpenAiChunks {
    fn text(&mut self, piece: &str) -> Option<Bytes> {
        let role = (!std::mem::replace(&mut self.role_sent, true)).then_some("assistant");
        let chunk = TextChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [TextChoice {
                index: 0,
                delta: TextDelta {
                    role,
                    content: piece,
                },
                finish_reason: None,
            }],
        };
        Some(Bytes::from(data(&chunk)))
    }

    fn finished(&mut self, summary: &TurnSummary) -> Bytes {
        let mut out = Vec::new();
        if !summary.tool_calls.is_empty() {
            // Whole calls in one delta: what the SDK's stream helpers and Xiaozhi assemble.
            let mut delta = json!({"tool_calls": tool_calls_json(&summary.tool_calls, true)});
            if !self.role_sent {
                self.role_sent = true;
                delta["role"] = json!("assistant");
                delta["content"] = Value::Null;
            }
            out.extend(data(&self.chunk(
                json!([{"index": 0, "delta": delta, "finish_reason": null}]),
                None,
            )));
        }
        out.extend(data(&self.chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": summary.finish.as_str()}]),
            None,
        )));
        if self.include_usage {
            out.extend(data(
                &self.chunk(json!([]), Some(usage_json(&summary.usage))),
            ));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    fn failed(&mut self, error: &ApiError) -> Bytes {
        Bytes::from(data(&error.openai_body()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::FinishReason;

    fn events(bytes: &Bytes) -> Vec<String> {
        std::str::from_utf8(bytes)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap().to_string())
            .collect()
    }

    #[test]
    fn text_chunks_have_the_shape_of_every_other_chunk() {
        // Each text chunk as `chunk` builds the others: a `Value`.
        let mut w = OpenAiChunks::new("c\"1".into(), -7, "m\\x".into(), false);
        for (i, piece) in ["Hi", "", "\"q\"\n\u{1}", "你好😀", "</s>"]
            .iter()
            .enumerate()
        {
            let delta = if i == 0 {
                json!({"role": "assistant", "content": piece})
            } else {
                json!({"content": piece})
            };
            let expected = data(&w.chunk(
                json!([{"index": 0, "delta": delta, "finish_reason": null}]),
                None,
            ));
            assert_eq!(w.text(piece).unwrap(), Bytes::from(expected));
        }
    }

    #[test]
    fn writes_role_once_then_stop_usage_and_done() {
        let mut w = OpenAiChunks::new("c1".into(), 1, "m".into(), true);
        let first: Value = serde_json::from_str(&events(&w.text("Hi").unwrap())[0]).unwrap();
        let second: Value = serde_json::from_str(&events(&w.text("!").unwrap())[0]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(second["choices"][0]["delta"].get("role").is_none());
        let end = events(&w.finished(&TurnSummary {
            model: "m".into(),
            usage: Usage {
                prompt_tokens: 4,
                completion_tokens: 1,
            },
            finish: FinishReason::Length,
            tool_calls: Vec::new(),
            tools_called: Vec::new(),
        }));
        assert_eq!(end.len(), 3);
        let last: Value = serde_json::from_str(&end[0]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        let usage: Value = serde_json::from_str(&end[1]).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert_eq!(end[2], "[DONE]");
    }

    #[test]
    fn writes_client_tool_calls_then_finish_tool_calls() {
        let mut w = OpenAiChunks::new("c1".into(), 1, "m".into(), false);
        let call = ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: crate::llm::FunctionCall {
                name: "light".into(),
                arguments: r#"{"on":true}"#.into(),
            },
        };
        let end = events(&w.finished(&TurnSummary {
            model: "m".into(),
            usage: Usage::default(),
            finish: FinishReason::ToolCalls,
            tool_calls: vec![call],
            tools_called: Vec::new(),
        }));
        assert_eq!(end.len(), 3);
        let calls: Value = serde_json::from_str(&end[0]).unwrap();
        let delta = &calls["choices"][0]["delta"];
        assert_eq!(delta["role"], "assistant");
        assert_eq!(delta["tool_calls"][0]["index"], 0);
        assert_eq!(delta["tool_calls"][0]["id"], "call_1");
        assert_eq!(
            delta["tool_calls"][0]["function"]["arguments"],
            r#"{"on":true}"#
        );
        let finish: Value = serde_json::from_str(&end[1]).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(end[2], "[DONE]");
    }
}
