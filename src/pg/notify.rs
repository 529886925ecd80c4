//! The notification export sends after each committed batch, and the viewer listens for:
//! `pg_notify('lang_agent_messages', '{"conversations":[ids…]}')`.
//!
//! One definition for both ends, so the channel name and the payload shape cannot drift
//! apart. The viewer's own deletes send the same payload, so every viewer of the database
//! hears of them.

use std::collections::BTreeSet;

/// The channel the viewer LISTENs on.
pub const NOTIFY_CHANNEL: &str = "lang_agent_messages";

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay well below.
const NOTIFY_MAX_BYTES: usize = 7000;

/// `{"conversations":[…]}` naming each conversation the batch touched, or
/// `{"conversations":null}` ("something changed") when the list would be too long.
pub fn notify_payload<'a>(conversation_ids: impl IntoIterator<Item = &'a str>) -> String {
    let touched: BTreeSet<&str> = conversation_ids.into_iter().collect();
    let payload = serde_json::json!({ "conversations": touched }).to_string();
    if payload.len() > NOTIFY_MAX_BYTES {
        r#"{"conversations":null}"#.to_string()
    } else {
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notification_lists_each_touched_conversation_once_until_it_gets_too_long() {
        assert_eq!(
            notify_payload(["b/2", "a/1", "b/2"]),
            r#"{"conversations":["a/1","b/2"]}"#
        );
        let many: Vec<String> = (0..1000).map(|i| format!("conversation-{i}")).collect();
        assert_eq!(
            notify_payload(many.iter().map(String::as_str)),
            r#"{"conversations":null}"#
        );
    }
}
