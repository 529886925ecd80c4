//! What the viewer reads, independent of where it comes from: conversation summaries,
//! messages, and the filters of the conversation list.
//!
//! Both sources (this box's SQLite, a fleet's PostgreSQL) answer in these types, so pages, the
//! JSON API and live updates are written once.

use chrono::{DateTime, Utc};

/// One row of the conversation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation_id: String,
    /// The device that talked, when known (SQLite column, or the `<conversation>_<device>`
    /// naming rule).
    pub device_id: Option<String>,
    pub message_count: i64,
    pub last_updated: DateTime<Utc>,
    /// Begun by a call without a session or thread id (SQLite only; PostgreSQL's documented
    /// table does not say, so there it is always false).
    pub stateless: bool,
    /// The start of the newest message's text (at most [`PREVIEW_SOURCE_CHARS`] characters;
    /// the page shortens it further).
    pub preview: String,
}

/// How much of a conversation's newest message the sources read for its preview.
pub const PREVIEW_SOURCE_CHARS: usize = 200;

/// One logged message, in the documented columns plus what SQLite knows beyond them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_type: String,
    pub content: String,
    pub sequence_number: i64,
    pub created_at: DateTime<Utc>,
    /// On a tool row: the tool that produced it (over PostgreSQL, as export folds it in).
    pub tool_name: Option<String>,
    /// JSON array of tool calls on an ai row (over PostgreSQL, as export folds it in).
    pub tool_calls: Option<String>,
    /// An ai answer cut short (SQLite only).
    pub interrupted: bool,
}

/// Which conversations the list shows, and which page of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Text that some message of the conversation contains (case-insensitive).
    pub search: Option<String>,
    pub device: Option<String>,
    /// A fleet box: conversations whose id starts with `<box>/`.
    pub box_id: Option<String>,
    /// Last updated at or after this instant.
    pub updated_from: Option<DateTime<Utc>>,
    /// Last updated before this instant.
    pub updated_before: Option<DateTime<Utc>>,
    /// Also list stateless conversations of one exchange (a helper's one-shot call), which
    /// the viewer hides by default.
    pub one_shot_stateless: bool,
    pub offset: u64,
    pub limit: u64,
}

/// One page of the conversation list.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub conversations: Vec<ConversationSummary>,
    /// How many conversations match the filter in all.
    pub total: u64,
}

/// The device named by a session id of the form `<conversation>_<device>` (split at the last
/// `_`), after any `<box>/` prefix of a fleet export.
pub fn device_from_session_id(conversation_id: &str) -> Option<&str> {
    let local = conversation_id
        .rsplit_once('/')
        .map_or(conversation_id, |(_, c)| c);
    let (_, device) = local.rsplit_once('_')?;
    (!device.is_empty()).then_some(device)
}

/// The fleet box of an exported conversation id `<box-id>/<conversation>`, when `<box-id>` is
/// one of `boxes`.
pub fn box_of<'a>(conversation_id: &'a str, boxes: &[String]) -> Option<&'a str> {
    let (prefix, _) = conversation_id.split_once('/')?;
    boxes.iter().any(|b| b == prefix).then_some(prefix)
}

/// `text` made literal inside a SQL `LIKE … ESCAPE '\'` pattern.
pub fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses a timestamp as stored in SQLite (RFC 3339) or as text from elsewhere; falls back to
/// the epoch rather than failing a whole page over one odd row.
pub fn parse_timestamp(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// A timestamp in the store's own text form (sorts as text, RFC 3339, milliseconds, `Z`).
pub fn timestamp_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_is_after_the_last_underscore_of_the_local_id() {
        assert_eq!(device_from_session_id("abc_dev1"), Some("dev1"));
        assert_eq!(device_from_session_id("a_b_dev2"), Some("dev2"));
        assert_eq!(device_from_session_id("box_1/abc_dev3"), Some("dev3"));
        assert_eq!(device_from_session_id("box_1/abc"), None);
        assert_eq!(device_from_session_id("abc_"), None);
        assert_eq!(device_from_session_id("plain"), None);
    }

    #[test]
    fn box_must_be_a_known_one() {
        let boxes = vec!["kitchen".to_string()];
        assert_eq!(box_of("kitchen/c_1", &boxes), Some("kitchen"));
        assert_eq!(box_of("garage/c_1", &boxes), None);
        assert_eq!(box_of("c_1", &boxes), None);
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_literal(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn timestamps_round_trip_in_store_form() {
        let t = parse_timestamp("2024-05-01T10:20:30.123Z");
        assert_eq!(timestamp_text(t), "2024-05-01T10:20:30.123Z");
        assert_eq!(parse_timestamp("garbage"), DateTime::<Utc>::default());
    }
}
