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

use std::io::Write;

use axum::body::Bytes;
use serde::Serialize;

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

    /// The next event's id.
    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// The whole answer as one event (`--fake-stream`).
    pub fn whole(&mut self, text: &str, summary: &TurnSummary) -> Bytes {
        let id = self.take_id();
        self.text = text.to_string();
        let body = response_body(
            &self.request_id,
            &self.session_id,
            text,
            summary.finish.as_str(),
            Some(summary),
        );
        frame(id, "result", 200, &body)
    }
}

impl FrameWriter for DashScopeFrames {
    fn text(&mut self, piece: &str) -> Option<Bytes> {
        let id = self.take_id();
        self.text.push_str(piece);
        let shown = if self.incremental { piece } else { &self.text };
        let body = response_body(&self.request_id, &self.session_id, shown, "null", None);
        Some(frame(id, "result", 200, &body))
    }

    fn finished(&mut self, summary: &TurnSummary) -> Bytes {
        let id = self.take_id();
        let shown = if self.incremental { "" } else { &self.text };
        let body = response_body(
            &self.request_id,
            &self.session_id,
            shown,
            summary.finish.as_str(),
            Some(summary),
        );
        frame(id, "result", 200, &body)
    }

    fn failed(&mut self, error: &ApiError) -> Bytes {
        let id = self.take_id();
        let body = error.dashscope_body(&self.request_id);
        frame(id, "error", error.status().as_u16(), &body)
    }
}

/// One event, its JSON written straight after `data:` (no intermediate string).
fn frame(id: u64, event: &str, status: u16, data: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, nor can serializing these plain fields.
    let _ = write!(out, "id:{id}\nevent:{event}\n:HTTP_STATUS/{status}\n");
    if status != 200 {
        let _ = writeln!(out, "status:{status}");
    }
    out.extend_from_slice(b"data:");
    serde_json::to_writer(&mut out, data).expect("a frame always serializes");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The JSON of a DashScope answer, streamed or not. Written from borrowed fields (a frame per
/// piece of text), in the order the keys always had.
pub fn response_body<'a>(
    request_id: &'a str,
    session_id: &'a str,
    text: &'a str,
    finish_reason: &'a str,
    summary: Option<&'a TurnSummary>,
) -> AnswerBody<'a> {
    AnswerBody {
        output: Output {
            doc_references: None,
            finish_reason,
            session_id,
            text,
            thoughts: None,
        },
        request_id,
        usage: UsageBody {
            models: summary
                .map(|s| ModelUsage {
                    input_tokens: s.usage.prompt_tokens,
                    model_id: &s.model,
                    output_tokens: s.usage.completion_tokens,
                })
                .into_iter()
                .collect(),
        },
    }
}

#[derive(Serialize)]
pub struct AnswerBody<'a> {
    output: Output<'a>,
    request_id: &'a str,
    usage: UsageBody<'a>,
}

#[derive(Serialize)]
struct Output<'a> {
    doc_references: Option<()>,
    finish_reason: &'a str,
    session_id: &'a str,
    text: &'a str,
    thoughts: Option<()>,
}

#[derive(Serialize)]
struct UsageBody<'a> {
    models: Vec<ModelUsage<'a>>,
}

#[derive(Serialize)]
struct ModelUsage<'a> {
    input_tokens: u64,
    model_id: &'a str,
    output_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::FinishReason;
    use crate::api::error::ErrorKind;
    use crate::llm::Usage;
    use serde_json::Value;

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
