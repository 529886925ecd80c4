//! Between the model's messages and the log's rows.
//!
//! The log speaks the documented `human` / `ai` / `tool` kinds; the model speaks OpenAI roles.
//! Tool calls travel as JSON text in the log so that a thread's memory rebuilds the exact
//! messages the model saw.

use crate::llm::{ChatMessage, Role, ToolCall};
use crate::store::{MessageKind, NewMessage, StoredMessage};

/// The log row for a model message; `None` for system messages, which are never logged.
pub fn to_log(message: &ChatMessage) -> Option<NewMessage> {
    let kind = match message.role {
        Role::System => return None,
        Role::User => MessageKind::Human,
        Role::Assistant => MessageKind::Ai,
        Role::Tool => MessageKind::Tool,
    };
    let mut row = NewMessage::new(kind, message.content.clone());
    if !message.tool_calls.is_empty() {
        row.tool_calls = serde_json::to_string(&message.tool_calls).ok();
    }
    row.tool_call_id = message.tool_call_id.clone();
    row.tool_name = message.name.clone();
    Some(row)
}

/// The model messages a thread's memory holds, ready to follow the system prompt.
///
/// The memory window may start in the middle of a tool exchange; the model rejects tool
/// results whose call it has not seen, so the window is moved up to the first human turn.
pub fn from_log(rows: &[StoredMessage]) -> Vec<ChatMessage> {
    let start = rows
        .iter()
        .position(|r| r.message.kind == MessageKind::Human)
        .unwrap_or(rows.len());
    rows[start..]
        .iter()
        .map(|row| {
            let m = &row.message;
            let role = match m.kind {
                MessageKind::Human => Role::User,
                MessageKind::Ai => Role::Assistant,
                MessageKind::Tool => Role::Tool,
            };
            let mut message = ChatMessage::new(role, m.content.clone());
            message.tool_calls = m
                .tool_calls
                .as_deref()
                .and_then(|json| serde_json::from_str::<Vec<ToolCall>>(json).ok())
                .unwrap_or_default();
            message.tool_call_id = m.tool_call_id.clone();
            message.name = m.tool_name.clone();
            message
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::FunctionCall;

    fn stored(message: NewMessage) -> StoredMessage {
        StoredMessage {
            id: 0,
            conversation_id: "c".into(),
            sequence_number: 0,
            created_at: String::new(),
            message,
        }
    }

    #[test]
    fn round_trips_tool_exchanges_and_drops_system() {
        let mut call = ChatMessage::assistant("");
        call.tool_calls = vec![ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "calc".into(),
                arguments: "{}".into(),
            },
        }];
        let mut result = ChatMessage::new(Role::Tool, "2");
        result.tool_call_id = Some("c1".into());
        let dialogue = [
            ChatMessage::system("secret prompt"),
            ChatMessage::user("1+1?"),
            call,
            result,
            ChatMessage::assistant("It is 2."),
        ];
        let rows: Vec<_> = dialogue.iter().filter_map(to_log).map(stored).collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(from_log(&rows), dialogue[1..].to_vec());
    }

    #[test]
    fn a_window_starting_mid_exchange_starts_at_the_next_human_turn() {
        let rows = vec![
            stored(NewMessage::new(MessageKind::Tool, "orphan")),
            stored(NewMessage::new(MessageKind::Ai, "answer")),
            stored(NewMessage::new(MessageKind::Human, "next")),
        ];
        assert_eq!(from_log(&rows), vec![ChatMessage::user("next")]);
    }
}
