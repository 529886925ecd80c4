//! DashScope's SSE frames, the one place that writes them.
//!
//! ```text
//! id:1
//! event:result
//! :HTTP_STATUS/200
//! data:{"output":{"text":"Hel","finish_reason":"null","session_id":"s1"},"usage":{...},"request_id":"r1"}
//! ```
//! By default `output.text` is the whole text so far; with `incremental_output` only the new
//! piece, and the last event carries `""`. The flag is honoured exactly: SDK 2.x sends `true`
//! and merges pieces itself, so full text would be doubled. Error frames are `event:error`
//! with both `:HTTP_STATUS/<code>` (DashScope's own form) and `status:<code>`, which is the
//! line the Python SDK actually reads the status from. Every frame's JSON sits on one `data:`
//! line, since the SDK parses each `data:` line on its own.

use axum::body::Bytes;
use serde_json::{Value, json};

use super::error::ApiError;
use super::stream::FrameWriter;
use crate::agent::turns::TurnSummary;

pub struct DashScopeFrames {
    request_id: String,
    session_id: String,
    incremental: bool,
    text: String,
    next_id: u64,
}

impl DashScopeFrames {
    pub fn new(request_id: String, session_id: String, incremental: bool) -> DashScopeFrames {
        DashScopeFrames {
            request_id,
            session_id,
            incremental,
            text: String::new(),
            next_id: 1,
        }
    }

    fn frame(&mut self, event: &str, status: u16, data: &Value) -> Bytes {
        let id = self.next_id;
        self.next_id += 1;
        let status_line = if status == 200 {
            String::new()
        } else {
            format!("status:{status}\n")
        };
        Bytes::from(format!(
            "id:{id}\nevent:{event}\n:HTTP_STATUS/{status}\n{status_line}data:{data}\n\n"
        ))
    }

    /// The whole answer as one event (`--fake-stream`).
    pub fn whole(&mut self, text: &str, summary: &TurnSummary) -> Bytes {
        self.text = text.to_string();
        let body = response_body(
            &self.request_id,
            &self.session_id,
            text,
            summary.finish.as_str(),
            Some(summary),
        );
        self.frame("result", 200, &body)
    }
}

impl FrameWriter for DashScopeFrames {
    fn text(&mut self, piece: &str) -> Option<Bytes> {
        self.text.push_str(piece);
        let shown = if self.incremental { piece } else { &self.text };
        let body = response_body(&self.request_id, &self.session_id, shown, "null", None);
        Some(self.frame("result", 200, &body))
    }

    fn finished(&mut self, summary: &TurnSummary) -> Bytes {
        let shown = if self.incremental { "" } else { &self.text };
        let body = response_body(
            &self.request_id,
            &self.session_id,
            shown,
            summary.finish.as_str(),
            Some(summary),
        );
        self.frame("result", 200, &body)
    }

    fn failed(&mut self, error: &ApiError) -> Bytes {
        let body = error.dashscope_body(&self.request_id);
        self.frame("error", error.status().as_u16(), &body)
    }
}

/// The JSON of a DashScope answer, streamed or not.
pub fn response_body(
    request_id: &str,
    session_id: &str,
    text: &str,
    finish_reason: &str,
    summary: Option<&TurnSummary>,
) -> Value {
    let models = match summary {
        Some(s) => json!([{
            "model_id": s.model,
            "input_tokens": s.usage.prompt_tokens,
            "output_tokens": s.usage.completion_tokens,
        }]),
        None => json!([]),
    };
    json!({
        "output": {
            "text": text,
            "finish_reason": finish_reason,
            "session_id": session_id,
            "thoughts": null,
            "doc_references": null,
        },
        "usage": {"models": models},
        "request_id": request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::FinishReason;
    use crate::api::error::ErrorKind;
    use crate::llm::Usage;

    fn data_of(frame: &Bytes) -> Value {
        let text = std::str::from_utf8(frame).unwrap();
        let line = text.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
        serde_json::from_str(line).unwrap()
    }

    fn summary() -> TurnSummary {
        TurnSummary {
            model: "m".into(),
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
            },
            finish: FinishReason::Stop,
            tool_calls: Vec::new(),
            tools_called: Vec::new(),
        }
    }

    #[test]
    fn full_text_mode_repeats_and_extends() {
        let mut f = DashScopeFrames::new("r".into(), "s".into(), false);
        let a = f.text("Hel").unwrap();
        let b = f.text("lo").unwrap();
        let end = f.finished(&summary());
        assert!(
            std::str::from_utf8(&a)
                .unwrap()
                .starts_with("id:1\nevent:result\n:HTTP_STATUS/200\ndata:")
        );
        assert_eq!(data_of(&b)["output"]["text"], "Hello");
        assert_eq!(data_of(&b)["output"]["finish_reason"], "null");
        assert_eq!(data_of(&end)["output"]["text"], "Hello");
        assert_eq!(data_of(&end)["output"]["finish_reason"], "stop");
        assert_eq!(data_of(&end)["usage"]["models"][0]["output_tokens"], 2);
    }

    #[test]
    fn incremental_mode_sends_pieces_and_ends_empty() {
        let mut f = DashScopeFrames::new("r".into(), "s".into(), true);
        f.text("Hel");
        assert_eq!(data_of(&f.text("lo").unwrap())["output"]["text"], "lo");
        assert_eq!(data_of(&f.finished(&summary()))["output"]["text"], "");
    }

    #[test]
    fn a_cut_answer_ends_with_finish_reason_length() {
        let cut = TurnSummary {
            finish: FinishReason::Length,
            ..summary()
        };
        let mut f = DashScopeFrames::new("r".into(), "s".into(), true);
        assert_eq!(
            data_of(&f.finished(&cut))["output"]["finish_reason"],
            "length"
        );
        assert_eq!(
            data_of(&f.whole("abc", &cut))["output"]["finish_reason"],
            "length"
        );
    }

    #[test]
    fn error_frames_carry_the_status_where_the_sdk_reads_it() {
        let mut f = DashScopeFrames::new("r".into(), "s".into(), false);
        let frame = f.failed(&ApiError::new(ErrorKind::Upstream, "down"));
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(
            text.contains("event:error\n:HTTP_STATUS/502\nstatus:502\ndata:"),
            "{text}"
        );
        assert_eq!(data_of(&frame)["code"], "InternalError");
    }
}
