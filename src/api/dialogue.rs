//! The dialogue a client sends, checked and turned into a [`TurnRequest`].
//!
//! Both protocols carry OpenAI-style messages, and both follow one rule for memory: on a thread
//! the server remembers, only what it has not seen is taken (the newest user turn, as Xiaozhi
//! resends its whole dialogue every time, or the results of the client's own tools); on a new
//! thread, the carried messages are the history. System texts are always taken: on a
//! remembered thread they are the client's prompt for this turn (`--client-prompt`). Everything a client may
//! send is accepted in the shapes real clients use (text parts, `null` content on assistant
//! tool-call messages, several system messages); anything else is a 400 saying which message.
//!
//! Messages arrive undecoded ([`WireDialogue`]: slices of the request body) and are decoded only
//! as far as the turn needs: a remembered thread's call can carry megabytes of dialogue it does
//! not read.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::ApiError;
use std::sync::Arc;

use crate::agent::TurnOptions;
use crate::agent::profile::Profile;
use crate::agent::turns::{ThreadChoice, TurnPlace, TurnRequest};
use crate::llm::{ChatMessage, FunctionCall, Role, ToolCall};
use crate::store::Origin;

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

/// The dialogue as the client sent it, not decoded yet: each message a slice of the request
/// body, and a user turn given apart (DashScope's `input.prompt`). Xiaozhi resends its whole,
/// never trimmed dialogue on every call (megabytes on a long connection); a remembered thread
/// needs only its newest turn, so only what the turn needs is decoded ([`WireDialogue::decode`]).
#[derive(Debug, Default)]
pub struct WireDialogue<'a> {
    pub messages: Vec<&'a RawValue>,
    pub prompt: Option<String>,
}

/// How much of a dialogue a turn needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Every message: a new thread's history is what the client carried.
    Everything,
    /// The newest turn (from the last assistant message or the newest user message, whichever
    /// comes first) and the system texts: a remembered thread's memory is the rest.
    NewestTurn,
}

impl Needed {
    /// What a turn on `thread` needs of the dialogue.
    pub fn on(thread: &ThreadChoice) -> Needed {
        match thread {
            ThreadChoice::Remember(_) => Needed::NewestTurn,
            ThreadChoice::Start | ThreadChoice::Continue(_) => Needed::Everything,
        }
    }
}

impl WireDialogue<'_> {
    /// Decodes what the turn needs into a checked [`Dialogue`], the prompt added and a repeated
    /// last user turn merged. Every message's role is checked; conversation messages before the
    /// newest turn are decoded only when `needed` is everything (their content is never copied
    /// otherwise). System messages are decoded wherever they are.
    pub fn decode(self, needed: Needed) -> Result<Dialogue, ApiError> {
        let roles = roles_of(&self.messages)?;
        let first = match needed {
            Needed::Everything => 0,
            Needed::NewestTurn => newest_turn(&roles),
        };
        let mut dialogue = Dialogue::default();
        for (i, raw) in self.messages.iter().enumerate() {
            if i < first && roles[i] != Role::System {
                continue;
            }
            let message: WireMessage = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::invalid(format!("messages[{i}] is not a message: {e}")))?;
            dialogue.push_wire(i, message)?;
        }
        if let Some(prompt) = self.prompt.filter(|p| !p.is_empty()) {
            dialogue.push_user(prompt);
        }
        dialogue.merge_repeated_last_user();
        Ok(dialogue)
    }
}

/// A message's role alone, borrowed from the body (the rest of the message is skipped).
#[derive(Deserialize)]
struct RoleOnly<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
}

/// Every message's role, read alone from the body (the rest of each message is skipped).
fn roles_of(messages: &[&RawValue]) -> Result<Vec<Role>, ApiError> {
    messages
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let RoleOnly { role } = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::invalid(format!("messages[{i}] is not a message: {e}")))?;
            role_of(&role, i)
        })
        .collect()
}

/// Where a remembered thread's turn starts: at the last assistant message (a client's tool
/// results answer it, see [`Dialogue::unanswered_tail`]) or the newest user message, whichever
/// comes first; with neither, 0 (the whole dialogue is decoded, and says what is missing).
fn newest_turn(roles: &[Role]) -> usize {
    let newest = |role: Role| roles.iter().rposition(|r| *r == role);
    match (newest(Role::User), newest(Role::Assistant)) {
        (Some(user), Some(assistant)) => user.min(assistant),
        (Some(first), None) | (None, Some(first)) => first,
        (None, None) => 0,
    }
}

/// A checked dialogue: system texts apart, the conversation in order.
#[derive(Debug, Default)]
pub struct Dialogue {
    pub system: Vec<String>,
    pub messages: Vec<ChatMessage>,
}

impl Dialogue {
    /// Checks message `i` and adds it: to the system texts, or to the conversation.
    fn push_wire(&mut self, i: usize, m: WireMessage) -> Result<(), ApiError> {
        let role = role_of(&m.role, i)?;
        let content = content_text(m.content, i)?;
        if role == Role::System {
            self.system.push(content);
            return Ok(());
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
        self.messages.push(message);
        Ok(())
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

    /// The turn to run at `place`: on a remembered thread only what the thread has not seen
    /// (the newest user turn, or the results of the client's tools that answer the last
    /// assistant message, see [`Dialogue::unanswered_tail`]) with the system text as
    /// `client_prompt` says; on a new one the whole dialogue with its system text as the
    /// client's instructions.
    pub fn into_turn(
        mut self,
        place: TurnPlace,
        streaming: bool,
        profile: Arc<Profile>,
    ) -> Result<TurnRequest, ApiError> {
        let client_prompt = profile.client_prompt;
        let TurnPlace {
            thread,
            device_id,
            session,
        } = place;
        let remembered = matches!(thread, ThreadChoice::Remember(_));
        let tail = self.unanswered_tail();
        let new_messages = match tail {
            Some(start) if remembered => self.messages.split_off(start),
            _ => {
                let Some(newest_user) = self.messages.iter().rposition(|m| m.role == Role::User)
                else {
                    return Err(ApiError::invalid(
                        if self.messages.is_empty() && self.system.is_empty() {
                            "messages is empty; send at least one user message"
                        } else {
                            "no user message; send at least one message with role \"user\""
                        },
                    ));
                };
                if remembered {
                    vec![self.messages.swap_remove(newest_user)]
                } else {
                    std::mem::take(&mut self.messages)
                }
            }
        };
        let system = (!self.system.is_empty()).then(|| self.system.join("\n\n"));
        let (instructions, client_system) = match thread {
            ThreadChoice::Remember(_) => (None, client_prompt.apply(system)),
            ThreadChoice::Start | ThreadChoice::Continue(_) => (system, None),
        };
        Ok(TurnRequest {
            thread,
            resent: Vec::new(),
            new_messages,
            options: TurnOptions {
                device_id,
                instructions,
                client_system,
                streaming,
                ..TurnOptions::default()
            },
            session,
            profile,
            origin: Origin::Api,
        })
    }

    /// Where the client's tool results start, when the dialogue continues a tool call: the
    /// messages after the last assistant message begin with `tool` results (a user turn may
    /// follow them). A remembered thread holds the assistant message that made the calls, so
    /// these messages are what it has not seen, in order.
    fn unanswered_tail(&self) -> Option<usize> {
        let start = self
            .messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)?
            + 1;
        (self.messages.get(start)?.role == Role::Tool).then_some(start)
    }
}

fn role_of(role: &str, i: usize) -> Result<Role, ApiError> {
    match role {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => Err(ApiError::invalid(format!(
            "messages[{i}].role {other:?} is not one of system, user, assistant, tool"
        ))),
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
            session: None,
        }
    }

    /// The messages `v` as a client sends them, with `prompt`, decoded as far as `needed`.
    fn decode(v: Value, prompt: Option<&str>, needed: Needed) -> Result<Dialogue, ApiError> {
        let body = v.to_string();
        let wire = WireDialogue {
            messages: serde_json::from_str(&body).unwrap(),
            prompt: prompt.map(str::to_string),
        };
        wire.decode(needed)
    }

    fn all(v: Value) -> Result<Dialogue, ApiError> {
        decode(v, None, Needed::Everything)
    }

    fn profile() -> Arc<Profile> {
        Arc::new(Profile::for_parsing(
            "default",
            true,
            crate::agent::turns::MemoryScope::Session,
            crate::agent::ClientPromptMode::Append,
        ))
    }

    #[test]
    fn accepts_what_xiaozhi_sends() {
        let d = all(json!([
            {"role": "system", "content": "persona"},
            {"role": "system", "content": "time and <memory>"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "content": "ok", "tool_call_id": "c1"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ]))
        .unwrap();
        assert_eq!(d.system.len(), 2);
        assert_eq!(d.messages.len(), 4);
        assert_eq!(d.messages[1].tool_calls[0].function.arguments, r#"{"a":1}"#);
        assert_eq!(d.messages[3].content, "again");
    }

    #[test]
    fn a_remembered_thread_takes_only_the_newest_user_turn() {
        let dialogue = json!([
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "two"},
        ]);
        for needed in [Needed::Everything, Needed::NewestTurn] {
            let d = decode(dialogue.clone(), Some("two"), needed).unwrap();
            let turn = d
                .into_turn(place(ThreadChoice::Remember("t".into())), false, profile())
                .unwrap();
            assert_eq!(turn.new_messages, vec![ChatMessage::user("two")]);
        }
    }

    #[test]
    fn for_the_newest_turn_only_the_end_of_the_dialogue_is_decoded() {
        let d = decode(
            json!([
                {"role": "system", "content": "persona"},
                {"role": "user", "content": {"not": "read"}},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f"}}]},
                {"role": "tool", "content": "done", "tool_call_id": "c1"},
            ]),
            None,
            Needed::NewestTurn,
        )
        .unwrap();
        let contents: Vec<_> = d.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["two", "", "done"]);
        // The persona is this turn's client prompt: decoded wherever it stands.
        assert_eq!(d.system, ["persona"]);
        // Every role is still checked, and errors name the message's place in the dialogue.
        let bad_role = json!([{"role": "wizard"}, {"role": "user", "content": "x"}]);
        let err = decode(bad_role, None, Needed::NewestTurn).unwrap_err();
        assert!(
            err.message.contains("messages[0].role \"wizard\""),
            "{}",
            err.message
        );
        let bad_tail = json!([{"role": "user", "content": "x"}, {"role": "tool", "content": 7}]);
        let err = decode(bad_tail, None, Needed::NewestTurn).unwrap_err();
        assert!(
            err.message.contains("messages[1].content"),
            "{}",
            err.message
        );
        let not_a_message = json!([{"role": "user", "content": "x"}, "text"]);
        let err = decode(not_a_message, None, Needed::NewestTurn).unwrap_err();
        assert!(
            err.message.contains("messages[1] is not a message"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_new_thread_keeps_the_carried_dialogue_and_instructions() {
        let d = all(json!([
            {"role": "system", "content": "classify intent"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "two"},
        ]))
        .unwrap();
        let turn = d
            .into_turn(place(ThreadChoice::Start), true, profile())
            .unwrap();
        assert_eq!(turn.new_messages.len(), 3);
        assert_eq!(
            turn.options.instructions.as_deref(),
            Some("classify intent")
        );
        assert!(turn.options.streaming);
    }

    #[test]
    fn a_remembered_thread_takes_the_client_tool_results_in_order() {
        let dialogue = |tail: Value, needed: Needed| {
            let mut messages = json!([
                {"role": "user", "content": "lights on"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "light", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "fan", "arguments": "{}"}}]},
            ]);
            messages
                .as_array_mut()
                .unwrap()
                .extend(tail.as_array().unwrap().iter().cloned());
            decode(messages, None, needed).unwrap()
        };
        let results = json!([
            {"role": "tool", "content": "on", "tool_call_id": "c1"},
            {"role": "tool", "content": "off", "tool_call_id": "c2"},
        ]);
        let turn = dialogue(results.clone(), Needed::NewestTurn)
            .into_turn(place(ThreadChoice::Remember("t".into())), false, profile())
            .unwrap();
        let ids: Vec<_> = turn
            .new_messages
            .iter()
            .map(|m| m.tool_call_id.as_deref())
            .collect();
        assert_eq!(ids, vec![Some("c1"), Some("c2")]);
        assert_eq!(turn.new_messages[1].content, "off");
        // Results and a new user turn after them: all of it, in order.
        let mut with_user = results.as_array().unwrap().clone();
        with_user.push(json!({"role": "user", "content": "thanks"}));
        let turn = dialogue(Value::Array(with_user), Needed::NewestTurn)
            .into_turn(place(ThreadChoice::Remember("t".into())), false, profile())
            .unwrap();
        assert_eq!(turn.new_messages.len(), 3);
        assert_eq!(turn.new_messages[2], ChatMessage::user("thanks"));
        // A new thread keeps everything, the call included.
        let turn = dialogue(results, Needed::Everything)
            .into_turn(place(ThreadChoice::Start), false, profile())
            .unwrap();
        assert_eq!(turn.new_messages.len(), 4);
    }

    #[test]
    fn rejects_what_cannot_be_answered() {
        let err = all(json!([{"role": "wizard", "content": "x"}])).unwrap_err();
        assert!(err.message.contains("wizard"));
        let only_system = decode(
            json!([{"role": "system", "content": "x"}]),
            None,
            Needed::NewestTurn,
        )
        .unwrap();
        assert!(
            only_system
                .into_turn(place(ThreadChoice::Start), false, profile())
                .unwrap_err()
                .message
                .contains("no user")
        );
        assert!(
            Dialogue::default()
                .into_turn(place(ThreadChoice::Start), false, profile())
                .unwrap_err()
                .message
                .contains("empty")
        );
    }
}
