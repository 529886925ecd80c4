//! What the mock says: the deterministic reply and the directives that script failures.
//!
//! Directives are written inside the last user message, so each test scripts its own turn
//! and tests can run in parallel against one mock:
//! - `[[mock:reply=TEXT]]` answer exactly TEXT;
//! - `[[mock:status=CODE]]` answer with that HTTP status and an OpenAI error body;
//! - `[[mock:cut]]` stream the first half of the reply, then drop the connection;
//! - `[[mock:delay=MS]]` wait MS milliseconds before answering;
//! - `[[mock:fail_first=N]]` the first N requests with this exact last user message get 500.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    Status(u16),
    Cut,
    FailFirst(u32),
}

#[derive(Debug, Clone)]
pub struct Script {
    pub last_user: String,
    pub users: Vec<String>,
    pub reply_override: Option<String>,
    pub behaviour: Behaviour,
    pub delay: Option<Duration>,
    /// Characters in all messages, for a plausible token count.
    pub prompt_chars: usize,
}

impl Script {
    pub fn read(body: &Value) -> Script {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut users = Vec::new();
        let mut prompt_chars = 0;
        for m in &messages {
            let text = content_text(m.get("content"));
            prompt_chars += text.chars().count();
            if m.get("role").and_then(Value::as_str) == Some("user") {
                users.push(text);
            }
        }
        let last_user = users.last().cloned().unwrap_or_default();
        let mut script = Script {
            last_user: last_user.clone(),
            users,
            reply_override: None,
            behaviour: Behaviour::Answer,
            delay: None,
            prompt_chars,
        };
        for (name, value) in directives(&last_user) {
            match name {
                "reply" => script.reply_override = Some(value.to_string()),
                "status" => script.behaviour = Behaviour::Status(value.parse().unwrap_or(500)),
                "cut" => script.behaviour = Behaviour::Cut,
                "fail_first" => script.behaviour = Behaviour::FailFirst(value.parse().unwrap_or(1)),
                "delay" => script.delay = value.parse().ok().map(Duration::from_millis),
                _ => {}
            }
        }
        script
    }

    pub fn reply(&self) -> String {
        match &self.reply_override {
            Some(text) => text.clone(),
            None => format!(
                "You said: {}. I remember: {}.",
                self.last_user,
                self.users.join(" | ")
            ),
        }
    }
}

/// `[[mock:name=value]]` and `[[mock:name]]` directives, in order.
fn directives(text: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("[[mock:") {
        let after = &rest[start + 7..];
        let Some(end) = after.find("]]") else { break };
        let body = &after[..end];
        found.push(body.split_once('=').unwrap_or((body, "")));
        rest = &after[end + 2..];
    }
    found
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// `text` in pieces of at most `n` characters.
pub fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn echoes_and_remembers_user_turns() {
        let s = Script::read(&json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "b"},
        ]}));
        assert_eq!(s.reply(), "You said: b. I remember: a | b.");
    }

    #[test]
    fn reads_directives() {
        let s = Script::read(&json!({"messages": [
            {"role": "user", "content": "hi [[mock:delay=20]] [[mock:reply=Hello, 世界！]] [[mock:cut]]"}]}));
        assert_eq!(s.reply(), "Hello, 世界！");
        assert_eq!(s.behaviour, Behaviour::Cut);
        assert_eq!(s.delay, Some(Duration::from_millis(20)));
        assert_eq!(pieces("abcdefghij", 8), vec!["abcdefgh", "ij"]);
    }
}
