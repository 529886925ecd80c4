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
    /// What the last text frame showed, as it stands inside a JSON string: the text so far,
    /// or with `incremental` only the last piece. Each piece is escaped once as it arrives, so
    /// a full-text frame copies the answer rather than escaping all of it again (Xiaozhi asks
    /// for full text: that made a turn's frames quadratic in escaping).
    escaped_text: Vec<u8>,
    text_frame: TextFrameJson,
    next_id: u64,
}

impl DashScopeFrames {
    pub fn new(request_id: String, session_id: String, incremental: bool) -> DashScopeFrames {
        let text_frame = TextFrameJson::new(&request_id, &session_id);
        DashScopeFrames {
            request_id,
            session_id,
            incremental,
            text: String::new(),
            escaped_text: Vec::new(),
            text_frame,
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
        frame(id, "result", 200, |out| json_into(out, &body))
    }
}

impl FrameWriter for DashScopeFrames {
    fn text(&mut self, piece: &str) -> Option<Bytes> {
        let id = self.take_id();
        self.text.push_str(piece);
        if self.incremental {
            self.escaped_text.clear();
        }
        escape_into(&mut self.escaped_text, piece);
        let (json, escaped) = (&self.text_frame, &self.escaped_text);
        Some(frame(id, "result", 200, |out| json.write(out, escaped)))
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
        frame(id, "result", 200, |out| json_into(out, &body))
    }

    fn failed(&mut self, error: &ApiError) -> Bytes {
        let id = self.take_id();
        let body = error.dashscope_body(&self.request_id);
        frame(id, "error", error.status().as_u16(), |out| {
            json_into(out, &body)
        })
    }
}

/// One event; `data` writes its JSON straight after `data:` (no intermediate string).
fn frame(id: u64, event: &str, status: u16, data: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "id:{id}\nevent:{event}\n:HTTP_STATUS/{status}\n");
    if status != 200 {
        let _ = writeln!(out, "status:{status}");
    }
    out.extend_from_slice(b"data:");
    data(&mut out);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn json_into(out: &mut Vec<u8>, data: &impl Serialize) {
    // Serializing these plain fields into a Vec cannot fail.
    serde_json::to_writer(out, data).expect("a frame always serializes");
}

/// Appends `text` as it stands between a JSON string's quotes. JSON escapes each character on
/// its own, so the escaped pieces of a text, joined, are the escaped text.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    json_into(out, &text);
    out.pop();
    out.remove(start);
}

/// The JSON of a text frame (a piece of the answer, not yet finished) around its text: the
/// frame serialized once with an empty text and split where the text goes. The frame's shape
/// stays the one `response_body` gives.
struct TextFrameJson {
    before_text: Vec<u8>,
    after_text: Vec<u8>,
}

impl TextFrameJson {
    fn new(request_id: &str, session_id: &str) -> TextFrameJson {
        let mut json = Vec::new();
        json_into(
            &mut json,
            &response_body(request_id, session_id, "", "null", None),
        );
        // The first `"text":""` is the key: inside an id's string value every `"` is escaped.
        let key = b"\"text\":\"\"";
        let at = json
            .windows(key.len())
            .position(|w| w == key)
            .expect("a text frame has a text")
            + key.len()
            - 1;
        let after_text = json.split_off(at);
        TextFrameJson {
            before_text: json,
            after_text,
        }
    }

    fn write(&self, out: &mut Vec<u8>, escaped_text: &[u8]) {
        out.reserve(self.before_text.len() + escaped_text.len() + self.after_text.len());
        out.extend_from_slice(&self.before_text);
        out.extend_from_slice(escaped_text);
        out.extend_from_slice(&self.after_text);
    }
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

    /// The text frames as serde writes them from `response_body`, field by field.
    fn serde_text_frames(ids: (&str, &str), pieces: &[&str], incremental: bool) -> Vec<Bytes> {
        let mut text = String::new();
        (1..)
            .zip(pieces)
            .map(|(id, piece)| {
                text.push_str(piece);
                let shown = if incremental { piece } else { text.as_str() };
                let body = response_body(ids.0, ids.1, shown, "null", None);
                frame(id, "result", 200, |out| json_into(out, &body))
            })
            .collect()
    }

    #[test]
    fn text_frames_are_what_serializing_each_frame_whole_gives() {
        let pieces = [
            "He",
            "said \"hi\"",
            "\\",
            "\n\t\u{1}\u{1f}",
            "你好",
            "😀",
            "\"text\":\"\"",
            "</s>",
            "",
        ];
        for ids in [
            ("r", "s"),
            ("r\"text\":\"\"", "s\"text\":\"\"\\"),
            ("", "\u{7f}\u{0}"),
        ] {
            for incremental in [false, true] {
                let mut f = DashScopeFrames::new(ids.0.into(), ids.1.into(), incremental);
                let ours: Vec<Bytes> = pieces.iter().map(|p| f.text(p).unwrap()).collect();
                assert_eq!(
                    ours,
                    serde_text_frames(ids, &pieces, incremental),
                    "{ids:?}"
                );
            }
        }
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
