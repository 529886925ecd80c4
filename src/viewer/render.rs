//! Turning conversations and messages into what the templates show: links, titles, times,
//! pretty-printed tool output.
//!
//! All of it is plain text; askama escapes it when it is written into HTML, so nothing here
//! ever builds markup.

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::model::{ConversationSummary, Message, box_of};

/// Tool output longer than this many lines (or characters) starts collapsed.
const COLLAPSE_LINES: usize = 12;
const COLLAPSE_CHARS: usize = 800;

/// Everything but RFC 3986 unreserved characters, so a conversation id (which may contain
/// `/`, `?`, `#`, spaces) stays one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` as one URL path segment.
pub fn path_segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// The page of one conversation, keeping the list's filters (`filter_qs`, already encoded).
pub fn conversation_href(conversation_id: &str, filter_qs: &str) -> String {
    with_query(&format!("/c/{}", path_segment(conversation_id)), filter_qs)
}

/// `path` with `query` appended when there is one.
pub fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// A time as the page shows it before the script turns it into the reader's local time:
/// machine-readable for `<time datetime>`, and readable UTC for readers without JavaScript.
pub struct ShownTime {
    pub iso: String,
    pub text: String,
}

pub fn shown_time(t: DateTime<Utc>) -> ShownTime {
    ShownTime {
        iso: t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        text: t.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// One entry of the conversation list.
pub struct ConversationRow {
    pub id: String,
    pub href: String,
    /// The id without its fleet box prefix.
    pub title: String,
    pub box_badge: Option<String>,
    pub device: Option<String>,
    pub message_count: i64,
    pub updated: ShownTime,
    pub selected: bool,
    /// Begun by a call without a session or thread id.
    pub stateless: bool,
    /// The newest message, on one line and short ([`preview_line`]).
    pub preview: String,
}

/// Characters of the newest message a list entry shows.
pub const PREVIEW_CHARS: usize = 80;

/// `text` as a one-line preview: whitespace runs (newlines too) become one space, and past
/// [`PREVIEW_CHARS`] characters it is cut with an ellipsis.
pub fn preview_line(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    match line.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line,
    }
}

pub fn conversation_row(
    c: &ConversationSummary,
    boxes: &[String],
    filter_qs: &str,
    selected: Option<&str>,
) -> ConversationRow {
    let box_badge = box_of(&c.conversation_id, boxes).map(str::to_string);
    let title = match &box_badge {
        Some(b) => c.conversation_id[b.len() + 1..].to_string(),
        None => c.conversation_id.clone(),
    };
    ConversationRow {
        id: c.conversation_id.clone(),
        href: conversation_href(&c.conversation_id, filter_qs),
        title,
        box_badge,
        device: c.device_id.clone(),
        message_count: c.message_count,
        updated: shown_time(c.last_updated),
        selected: selected == Some(c.conversation_id.as_str()),
        stateless: c.stateless,
        preview: preview_line(&c.preview),
    }
}

/// One chat bubble.
pub struct MessageBubble {
    /// `human`, `ai` or `tool`: the bubble's side and colour.
    pub kind: String,
    pub label: String,
    pub seq: i64,
    pub time: ShownTime,
    /// The text; for a tool, pretty-printed when it is JSON.
    pub body: String,
    pub is_tool: bool,
    /// A long tool output starts folded; `summary` then says what it is.
    pub collapsed: bool,
    pub summary: String,
    pub line_count: usize,
    pub tool_calls: Option<String>,
    /// The functions an ai message called, for the folded tool-call summary.
    pub called: String,
    pub interrupted: bool,
    /// Contains the searched text.
    pub matches: bool,
}

pub fn message_bubble(m: &Message, search: Option<&str>) -> MessageBubble {
    let is_tool = m.message_type == "tool";
    let body = if is_tool {
        pretty_json(&m.content)
    } else {
        m.content.clone()
    };
    let line_count = body.lines().count();
    let collapsed = is_tool && (line_count > COLLAPSE_LINES || body.len() > COLLAPSE_CHARS);
    let label = match m.message_type.as_str() {
        "human" => "Human".to_string(),
        "ai" => "AI".to_string(),
        "tool" => match &m.tool_name {
            Some(name) => format!("Tool · {name}"),
            None => "Tool".to_string(),
        },
        other => other.to_string(),
    };
    let summary = if is_tool {
        let flat: String = m.content.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut short: String = flat.chars().take(80).collect();
        if flat.chars().count() > 80 {
            short.push('…');
        }
        short
    } else {
        String::new()
    };
    let matches = search.is_some_and(|s| contains_ignoring_case(&m.content, s));
    MessageBubble {
        kind: match m.message_type.as_str() {
            "human" | "ai" | "tool" => m.message_type.clone(),
            _ => "tool".to_string(),
        },
        label,
        seq: m.sequence_number,
        time: shown_time(m.created_at),
        body,
        is_tool,
        collapsed,
        summary,
        line_count,
        tool_calls: m.tool_calls.as_deref().map(pretty_json),
        called: m
            .tool_calls
            .as_deref()
            .map(called_functions)
            .unwrap_or_default(),
        interrupted: m.interrupted,
        matches,
    }
}

/// JSON pretty-printed; anything else as it is.
pub fn pretty_json(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| text.to_string())
        }
        _ => text.to_string(),
    }
}

/// `get_weather, set_alarm` from an OpenAI-style `tool_calls` array.
fn called_functions(tool_calls: &str) -> String {
    let calls: Vec<serde_json::Value> = serde_json::from_str(tool_calls).unwrap_or_default();
    calls
        .iter()
        .filter_map(|c| c["function"]["name"].as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_one_short_line() {
        assert_eq!(preview_line("  hello\n\tworld  "), "hello world");
        let long = "字".repeat(PREVIEW_CHARS + 5);
        let shown = preview_line(&long);
        assert_eq!(shown.chars().count(), PREVIEW_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(
            preview_line(&"a".repeat(PREVIEW_CHARS)),
            "a".repeat(PREVIEW_CHARS)
        );
    }

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(
            path_segment("box-1/a b?c#d_e.f"),
            "box-1%2Fa%20b%3Fc%23d_e.f"
        );
        assert_eq!(conversation_href("x/y", "q=hi"), "/c/x%2Fy?q=hi");
        assert_eq!(conversation_href("x", ""), "/c/x");
    }

    #[test]
    fn tool_json_is_pretty_and_long_output_is_collapsed() {
        let mut m = Message {
            message_type: "tool".into(),
            content: r#"{"temp":21,"unit":"C"}"#.into(),
            sequence_number: 3,
            created_at: Utc::now(),
            tool_name: Some("weather".into()),
            tool_calls: None,
            interrupted: false,
        };
        let short = message_bubble(&m, None);
        assert_eq!(short.body, "{\n  \"temp\": 21,\n  \"unit\": \"C\"\n}");
        assert!(short.is_tool && !short.collapsed);
        assert_eq!(short.label, "Tool · weather");
        m.content = serde_json::to_string(&(0..50).collect::<Vec<_>>()).unwrap();
        assert!(message_bubble(&m, None).collapsed);
        m.content = "plain words".into();
        assert_eq!(message_bubble(&m, None).body, "plain words");
        m.message_type = "ai".into();
        m.tool_calls = Some(
            r#"[{"id":"1","function":{"name":"get_weather","arguments":"{}"}},{"id":"2","function":{"name":"set_alarm"}}]"#.into(),
        );
        assert_eq!(message_bubble(&m, None).called, "get_weather, set_alarm");
    }

    #[test]
    fn search_marks_matching_messages_case_insensitively() {
        let m = Message {
            message_type: "human".into(),
            content: "Turn ON the Lights".into(),
            sequence_number: 1,
            created_at: Utc::now(),
            tool_name: None,
            tool_calls: None,
            interrupted: false,
        };
        assert!(message_bubble(&m, Some("on the light")).matches);
        assert!(!message_bubble(&m, Some("kitchen")).matches);
        assert!(!message_bubble(&m, None).matches);
    }
}
