//! The dialogue a client sends, checked and turned into a [`TurnRequest`].
//!
//! Both protocols carry OpenAI-style messages, and both follow one rule for memory: on a thread
//! the server remembers, only the newest user turn is taken (Xiaozhi resends its whole dialogue
//! every time); on a new thread, the carried messages are the history. Everything a client may
//! send is accepted in the shapes real clients use (text parts, `null` content on assistant
//! tool-call messages, several system messages); anything else is a 400 saying which message.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::agent::TurnOptions;
use crate::agent::turns::{ThreadChoice, TurnPlace, TurnRequest};
use crate::llm::{ChatMessage, FunctionCall, Role, ToolCall};

/// A message as a client sends it.
#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A checked dialogue: system texts apart, the conversation in order.
#[derive(Debug, Default)]
pub struct Dialogue {
    pub system: Vec<String>,
    pub messages: Vec<ChatMessage>,
}

impl Dialogue {
    pub fn from_wire(wire: Vec<WireMessage>) -> Result<Dialogue, ApiError> {
        let mut dialogue = Dialogue::default();
        for (i, m) in wire.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(ApiError::invalid(format!(
                        "messages[{i}].role {other:?} is not one of system, user, assistant, tool"
                    )));
                }
            };
            let content = content_text(m.content, i)?;
            if role == Role::System {
                dialogue.system.push(content);
                continue;
            }
            let mut message = ChatMessage::new(role, content);
            message.tool_calls = m
                .tool_calls
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(j, call)| tool_call(call, i, j))
                .collect::<Result<_, _>>()?;
            message.tool_call_id = m.tool_call_id;
            message.name = m.name;
            dialogue.messages.push(message);
        }
        Ok(dialogue)
    }

    /// Adds a user turn given apart from the messages (DashScope's `input.prompt`).
    pub fn push_user(&mut self, text: String) {
        self.messages.push(ChatMessage::user(text));
    }

    /// Treats an identical repeated last user turn as one: Xiaozhi passes the last user text
    /// both in `messages` and as `prompt`, and the SDK appends it again.
    pub fn merge_repeated_last_user(&mut self) {
        let n = self.messages.len();
        if n >= 2 {
            let (a, b) = (&self.messages[n - 2], &self.messages[n - 1]);
            if a.role == Role::User && b.role == Role::User && a.content == b.content {
                self.messages.pop();
            }
        }
    }

    /// The turn to run at `place`: on a remembered thread only the newest user turn, on a new
    /// one the whole dialogue with its system text as the client's instructions.
    pub fn into_turn(mut self, place: TurnPlace, streaming: bool) -> Result<TurnRequest, ApiError> {
        let Some(newest_user) = self.messages.iter().rposition(|m| m.role == Role::User) else {
            return Err(ApiError::invalid(
                if self.messages.is_empty() && self.system.is_empty() {
                    "messages is empty; send at least one user message"
                } else {
                    "no user message; send at least one message with role \"user\""
                },
            ));
        };
        let TurnPlace { thread, device_id } = place;
        let (new_messages, instructions) = match thread {
            ThreadChoice::Remember(_) => (vec![self.messages.swap_remove(newest_user)], None),
            ThreadChoice::Start | ThreadChoice::Continue(_) => {
                let instructions = (!self.system.is_empty()).then(|| self.system.join("\n\n"));
                (self.messages, instructions)
            }
        };
        Ok(TurnRequest {
            thread,
            resent: Vec::new(),
            new_messages,
            options: TurnOptions {
                device_id,
                instructions,
                streaming,
            },
        })
    }
}

fn content_text(content: Option<Value>, i: usize) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text),
        // OpenAI content parts: keep the text parts, in order.
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in &parts {
                match part.get("text").and_then(Value::as_str) {
                    Some(t) => text.push_str(t),
                    None => {
                        return Err(ApiError::invalid(format!(
                            "messages[{i}].content has a part without text; only text parts are supported"
                        )));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid(format!(
            "messages[{i}].content must be a string, a list of text parts, or null"
        ))),
    }
}

fn tool_call(call: &Value, i: usize, j: usize) -> Result<ToolCall, ApiError> {
    let function = call.get("function").ok_or_else(|| {
        ApiError::invalid(format!("messages[{i}].tool_calls[{j}] has no function"))
    })?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "messages[{i}].tool_calls[{j}].function has no name"
            ))
        })?;
    // Some clients send arguments as an object rather than JSON text.
    let arguments = match function.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    };
    Ok(ToolCall {
        id: call
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        kind: "function".into(),
        function: FunctionCall {
            name: name.to_string(),
            arguments,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn place(thread: ThreadChoice) -> TurnPlace {
        TurnPlace {
            thread,
            device_id: None,
        }
    }

    fn wire(v: Value) -> Vec<WireMessage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn accepts_what_xiaozhi_sends() {
        let d = Dialogue::from_wire(wire(json!([
            {"role": "system", "content": "persona"},
            {"role": "system", "content": "time and <memory>"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "content": "ok", "tool_call_id": "c1"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ])))
        .unwrap();
        assert_eq!(d.system.len(), 2);
        assert_eq!(d.messages.len(), 4);
        assert_eq!(d.messages[1].tool_calls[0].function.arguments, r#"{"a":1}"#);
        assert_eq!(d.messages[3].content, "again");
    }

    #[test]
    fn a_remembered_thread_takes_only_the_newest_user_turn() {
        let mut d = Dialogue::from_wire(wire(json!([
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "two"},
        ])))
        .unwrap();
        d.push_user("two".into());
        d.merge_repeated_last_user();
        let turn = d
            .into_turn(place(ThreadChoice::Remember("t".into())), false)
            .unwrap();
        assert_eq!(turn.new_messages, vec![ChatMessage::user("two")]);
    }

    #[test]
    fn a_new_thread_keeps_the_carried_dialogue_and_instructions() {
        let d = Dialogue::from_wire(wire(json!([
            {"role": "system", "content": "classify intent"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "two"},
        ])))
        .unwrap();
        let turn = d.into_turn(place(ThreadChoice::Start), true).unwrap();
        assert_eq!(turn.new_messages.len(), 3);
        assert_eq!(
            turn.options.instructions.as_deref(),
            Some("classify intent")
        );
        assert!(turn.options.streaming);
    }

    #[test]
    fn rejects_what_cannot_be_answered() {
        let err =
            Dialogue::from_wire(wire(json!([{"role": "wizard", "content": "x"}]))).unwrap_err();
        assert!(err.message.contains("wizard"));
        let only_system =
            Dialogue::from_wire(wire(json!([{"role": "system", "content": "x"}]))).unwrap();
        assert!(
            only_system
                .into_turn(place(ThreadChoice::Start), false)
                .unwrap_err()
                .message
                .contains("no user")
        );
        assert!(
            Dialogue::default()
                .into_turn(place(ThreadChoice::Start), false)
                .unwrap_err()
                .message
                .contains("empty")
        );
    }
}
