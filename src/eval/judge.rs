//! The LLM judge: is an answer what the dataset expected? One non-streaming model call per
//! judged row, with the judge model (`--judge-model`, default the chat model).
//!
//! Its system prompt is `<config-dir>/eval/judge_prompt.txt` (built in when the file is
//! missing; the shipped file is the built-in text) and asks for
//! `{"verdict":"correct"|"incorrect","reason":"…"}`. Models wrap JSON in prose or code
//! fences, so the verdict is the first JSON object anywhere in the answer that has one; an
//! answer without one is the verdict `unknown`, with the model's text as the reason, and a
//! failed call is `unknown` with the error. Either way the run goes on.

use std::path::Path;

use serde_json::Value;

use crate::llm::{ChatMessage, ChatRequest, LlmClient, Sampling};

/// The built-in judge prompt, which `configs/eval/judge_prompt.txt` ships. `mock-llm` knows
/// judge calls by its first line.
pub const BUILTIN_JUDGE_PROMPT: &str = include_str!("../../configs/eval/judge_prompt.txt");

/// Where the judge prompt is looked for, under `--config-dir`.
pub const JUDGE_PROMPT_FILE: &str = "eval/judge_prompt.txt";

/// What the judge decided about one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    Correct,
    Incorrect,
    /// The judge's answer held no verdict, or the judge could not be asked.
    Unknown,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Correct => "correct",
            VerdictKind::Incorrect => "incorrect",
            VerdictKind::Unknown => "unknown",
        }
    }
}

/// A verdict and the judge's reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub reason: String,
}

/// The judge: a model client, the model's name and its prompt.
pub struct Judge {
    client: LlmClient,
    model: String,
    prompt: String,
}

impl Judge {
    pub fn new(client: LlmClient, model: String, prompt: String) -> Judge {
        Judge {
            client,
            model,
            prompt,
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The judge prompt from `config_dir`, or the built-in one when there is no file.
    pub fn load_prompt(config_dir: &Path) -> std::io::Result<String> {
        let path = config_dir.join(JUDGE_PROMPT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(BUILTIN_JUDGE_PROMPT.trim().to_string())
            }
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            )),
        }
    }

    /// Asks the judge whether `answer` says what `expected` says, for `question`.
    pub async fn grade(&self, question: &str, expected: &str, answer: &str) -> Verdict {
        let messages = [
            ChatMessage::system(self.prompt.clone()),
            ChatMessage::user(format!(
                "Question:\n{question}\n\nExpected answer:\n{expected}\n\nActual answer:\n{answer}"
            )),
        ];
        let request = ChatRequest {
            model: &self.model,
            messages: &messages,
            tools: &[],
            json_object: false,
            sampling: &Sampling::NONE,
            tool_choice: None,
        };
        match self.client.complete(&request).await {
            Ok(completion) => parse_verdict(&completion.message.content),
            Err(e) => Verdict {
                kind: VerdictKind::Unknown,
                reason: format!("the judge could not be asked: {e}"),
            },
        }
    }
}

/// The first JSON object in `text` with a `verdict`; `unknown` with `text` as the reason when
/// there is none.
pub fn parse_verdict(text: &str) -> Verdict {
    let found = text.match_indices('{').find_map(|(at, _)| {
        let object = serde_json::Deserializer::from_str(&text[at..])
            .into_iter::<Value>()
            .next()?
            .ok()?;
        let verdict = object.get("verdict")?.as_str()?.trim().to_ascii_lowercase();
        let kind = match verdict.as_str() {
            "correct" => VerdictKind::Correct,
            "incorrect" => VerdictKind::Incorrect,
            _ => VerdictKind::Unknown,
        };
        let reason = match object.get("reason") {
            Some(Value::String(reason)) => reason.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Some(Verdict { kind, reason })
    });
    found.unwrap_or_else(|| Verdict {
        kind: VerdictKind::Unknown,
        reason: text.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_verdict_anywhere_in_the_answer() {
        let plain = parse_verdict(r#"{"verdict":"correct","reason":"same number"}"#);
        assert_eq!(plain.kind, VerdictKind::Correct);
        assert_eq!(plain.reason, "same number");
        let fenced = parse_verdict(
            "Sure! {not json} Here it is:\n```json\n{\"verdict\": \"Incorrect\", \"reason\": \"says 41\"}\n```",
        );
        assert_eq!(fenced.kind, VerdictKind::Incorrect);
        assert_eq!(fenced.reason, "says 41");
        let odd = parse_verdict(r#"{"verdict":"partly","reason":"half right"}"#);
        assert_eq!(odd.kind, VerdictKind::Unknown);
        assert_eq!(odd.reason, "half right");
    }

    #[test]
    fn an_answer_without_a_verdict_is_unknown_with_its_text() {
        let none = parse_verdict("  I think it is right.  ");
        assert_eq!(none.kind, VerdictKind::Unknown);
        assert_eq!(none.reason, "I think it is right.");
        let other_object = parse_verdict(r#"{"answer": 42}"#);
        assert_eq!(other_object.kind, VerdictKind::Unknown);
    }

    #[test]
    fn the_prompt_file_wins_over_the_built_in_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Judge::load_prompt(dir.path()).unwrap(),
            BUILTIN_JUDGE_PROMPT.trim()
        );
        std::fs::create_dir(dir.path().join("eval")).unwrap();
        std::fs::write(dir.path().join(JUDGE_PROMPT_FILE), "  be strict\n").unwrap();
        assert_eq!(Judge::load_prompt(dir.path()).unwrap(), "be strict");
    }
}
