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
use crate::agent::turns::{ThreadChoice, TurnRequest};
use crate::llm::{ChatMessage, FunctionCall, Role, ToolCall};

/// Longest thread / session id accepted, in bytes.
pub const MAX_THREAD_ID_BYTES: usize = 256;

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

    /// The turn to run on `thread`.
    pub fn into_turn(
        mut self,
        thread: ThreadChoice,
        device_id: Option<String>,
    ) -> Result<TurnRequest, ApiError> {
        let Some(newest_user) = self.messages.iter().rposition(|m| m.role == Role::User) else {
            return Err(ApiError::invalid(
                if self.messages.is_empty() && self.system.is_empty() {
                    "messages is empty; send at least one user message"
                } else {
                    "no user message; send at least one message with role \"user\""
                },
            ));
        };
        let (new_messages, instructions) = match thread {
            ThreadChoice::Remember(_) => (vec![self.messages.swap_remove(newest_user)], None),
            ThreadChoice::Start => {
                let instructions = (!self.system.is_empty()).then(|| self.system.join("\n\n"));
                (self.messages, instructions)
            }
        };
        Ok(TurnRequest {
            thread,
            device_id,
            new_messages,
            instructions,
            streaming: false,
        })
    }
}

/// Checks a client-chosen thread or session id.
pub fn check_thread_id(id: &str, field: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid(format!("{field} is empty")));
    }
    if id.len() > MAX_THREAD_ID_BYTES {
        return Err(ApiError::invalid(format!(
            "{field} is {} bytes long; at most {MAX_THREAD_ID_BYTES} are accepted",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// The device a session id names: `<conversation>_<device>`.
pub fn device_of(session_id: &str) -> Option<&str> {
    let (conversation, device) = session_id.rsplit_once('_')?;
    (!conversation.is_empty() && !device.is_empty()).then_some(device)
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
            .into_turn(ThreadChoice::Remember("t".into()), None)
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
        let turn = d.into_turn(ThreadChoice::Start, None).unwrap();
        assert_eq!(turn.new_messages.len(), 3);
        assert_eq!(turn.instructions.as_deref(), Some("classify intent"));
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
                .into_turn(ThreadChoice::Start, None)
                .unwrap_err()
                .message
                .contains("no user")
        );
        assert!(
            Dialogue::default()
                .into_turn(ThreadChoice::Start, None)
                .unwrap_err()
                .message
                .contains("empty")
        );
        assert!(check_thread_id(&"x".repeat(300), "session_id").is_err());
        assert!(check_thread_id("a\u{0}b", "session_id").is_err());
        assert!(check_thread_id("sess_aa:bb", "session_id").is_ok());
    }

    #[test]
    fn session_ids_name_devices_after_the_last_underscore() {
        assert_eq!(device_of("conv_aa:bb:cc"), Some("aa:bb:cc"));
        assert_eq!(device_of("my_conv_dev1"), Some("dev1"));
        assert_eq!(device_of("3f2b-uuid"), None);
        assert_eq!(device_of("_dev"), None);
        assert_eq!(device_of("conv_"), None);
    }
}
