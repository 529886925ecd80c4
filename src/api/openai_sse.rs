//! OpenAI chat-completion chunks, the one place that writes them.
//!
//! `data: {chunk}` per piece of text (the first carries the assistant role), a closing chunk
//! with `finish_reason: "stop"`, a usage chunk with empty `choices` when the client asked
//! for `stream_options.include_usage`, then `data: [DONE]`. A failure after the stream began
//! is `data: {"error": {...}}`, which the `openai` SDK raises as `APIError`.

use axum::body::Bytes;
use serde_json::{Value, json};

use super::error::ApiError;
use super::stream::FrameWriter;
use crate::agent::turns::TurnSummary;
use crate::llm::Usage;

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

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// OpenAI's usage object.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total(),
    })
}

impl FrameWriter for OpenAiChunks {
    fn text(&mut self, piece: &str) -> Option<Bytes> {
        let delta = if self.role_sent {
            json!({"content": piece})
        } else {
            self.role_sent = true;
            json!({"role": "assistant", "content": piece})
        };
        let chunk = self.chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            None,
        );
        Some(Bytes::from(data(&chunk)))
    }

    fn finished(&mut self, summary: &TurnSummary) -> Bytes {
        let mut out = data(&self.chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": summary.finish.as_str()}]),
            None,
        ));
        if self.include_usage {
            out.push_str(&data(
                &self.chunk(json!([]), Some(usage_json(&summary.usage))),
            ));
        }
        out.push_str("data: [DONE]\n\n");
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
        }));
        assert_eq!(end.len(), 3);
        let last: Value = serde_json::from_str(&end[0]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        let usage: Value = serde_json::from_str(&end[1]).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert_eq!(end[2], "[DONE]");
    }
}
