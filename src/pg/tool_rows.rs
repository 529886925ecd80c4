//! Tool steps in the documented `messages` columns: how export writes them and how the
//! PostgreSQL viewer reads them back.
//!
//! The documented table has no tool columns, and an AI message that only calls tools has no
//! text, so a plain copy showed empty bubbles. Export therefore writes:
//! - an AI message that calls tools and says nothing: its calls, as the OpenAI-style JSON array
//!   the log keeps (`[{"id":…,"type":"function","function":{"name":"calculator",…}}]`);
//! - a tool result: `{"tool":"calculator","content":"1813"}`, naming the tool that answered.
//!
//! Both are plain JSON a person can read in `psql`, and [`read`] recognises exactly these
//! shapes, so the viewer shows "Calls calculator" and "Tool · calculator" as it does over
//! SQLite. Rows exported before this (a bare tool result) read as they always did.

use serde::{Deserialize, Serialize};

/// A row's content as export writes it: `content` with the tool information folded in.
pub fn written(
    message_type: &str,
    content: String,
    tool_calls: Option<&str>,
    tool_name: Option<&str>,
) -> String {
    match (message_type, tool_calls, tool_name) {
        ("ai", Some(calls), _) if content.is_empty() && is_calls(calls) => calls.to_string(),
        ("tool", _, Some(tool)) => serde_json::to_string(&ToolResult {
            tool: tool.to_string(),
            content,
        })
        .expect("two strings always serialize"),
        _ => content,
    }
}

/// A row as the viewer shows it, read back from the documented columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRow {
    pub content: String,
    /// On an AI row: the calls it made (the JSON array), its `content` then empty.
    pub tool_calls: Option<String>,
    /// On a tool row: the tool that answered.
    pub tool_name: Option<String>,
}

/// What [`written`] folded in, taken out again; any other content is returned as it is.
pub fn read(message_type: &str, content: String) -> ReadRow {
    let plain = |content| ReadRow {
        content,
        tool_calls: None,
        tool_name: None,
    };
    match message_type {
        "ai" if content.starts_with('[') && is_calls(&content) => ReadRow {
            content: String::new(),
            tool_calls: Some(content),
            tool_name: None,
        },
        "tool" if content.starts_with('{') => match serde_json::from_str::<ToolResult>(&content) {
            Ok(result) => ReadRow {
                content: result.content,
                tool_calls: None,
                tool_name: Some(result.tool),
            },
            Err(_) => plain(content),
        },
        _ => plain(content),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolResult {
    tool: String,
    content: String,
}

/// Whether `text` is a non-empty OpenAI-style array of function calls.
fn is_calls(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Call {
        #[serde(rename = "type")]
        kind: String,
        function: Function,
    }
    #[derive(Deserialize)]
    struct Function {
        name: String,
    }
    serde_json::from_str::<Vec<Call>>(text).is_ok_and(|calls| {
        !calls.is_empty()
            && calls
                .iter()
                .all(|c| c.kind == "function" && !c.function.name.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLS: &str = r#"[{"id":"c1","type":"function","function":{"name":"calculator","arguments":"{\"expression\":\"37*49\"}"}}]"#;

    #[test]
    fn tool_steps_are_written_readably_and_read_back_whole() {
        let ai = written("ai", String::new(), Some(CALLS), None);
        assert_eq!(ai, CALLS);
        assert_eq!(
            read("ai", ai),
            ReadRow {
                content: String::new(),
                tool_calls: Some(CALLS.into()),
                tool_name: None
            }
        );
        let tool = written("tool", "1813".into(), None, Some("calculator"));
        assert_eq!(tool, r#"{"tool":"calculator","content":"1813"}"#);
        assert_eq!(
            read("tool", tool),
            ReadRow {
                content: "1813".into(),
                tool_calls: None,
                tool_name: Some("calculator".into())
            }
        );
    }

    #[test]
    fn everything_else_passes_through_untouched() {
        // An answer with text keeps its text; human rows and old bare tool rows are as they were.
        assert_eq!(written("ai", "Sure.".into(), Some(CALLS), None), "Sure.");
        assert_eq!(written("human", "[1, 2]".into(), None, None), "[1, 2]");
        for (kind, text) in [
            ("ai", "[1, 2]"),
            ("ai", "[]"),
            ("tool", "1813"),
            ("tool", r#"{"tool":"x","content":"y","more":1}"#),
            ("human", CALLS),
        ] {
            assert_eq!(read(kind, text.into()).content, text, "{kind} {text}");
        }
    }
}
