//! The running digest of a stateless conversation's dialogue, and finding the conversation a
//! stateless call continues.
//!
//! A client that keeps no session (OpenAI without `thread_id`, DashScope without
//! `session_id`) resends its whole dialogue on every call. Logging each call as a new
//! conversation would store N copies of a growing dialogue, so each stateless conversation
//! keeps, in `conversations.dialogue_digest`, a SHA-256 chain over the dialogue as the client
//! sees it: every message the client sent, and each answer as the client received it. A call
//! whose earlier messages chain to the same digest continues that conversation: one indexed
//! lookup (`idx_conversations_stateless_digest`), never a scan of `messages`.
//!
//! The chain covers each message's role, content, tool calls (id, name, arguments) and
//! tool call id, and nothing else: not system text (Xiaozhi's carries the current time and
//! changes every turn), not the tool exchanges the server ran itself and not chatty filler as a
//! row of its own (the client never saw those apart from the answer it heard). The digest is
//! extended in the same write that logs the messages, so it never disagrees with the log.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::log::NewMessage;
use super::{Store, StoreError};

/// How recently a stateless conversation must have been updated for a call to continue it.
/// Older dialogues resent word for word start a new conversation.
pub const STATELESS_CONTINUE_WITHIN_HOURS: i64 = 24;

/// The digest of a dialogue: a SHA-256 chain, one link per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialogueDigest([u8; 32]);

impl DialogueDigest {
    /// The digest of `messages` in order, from the empty dialogue.
    pub fn of<'a>(messages: impl IntoIterator<Item = &'a NewMessage>) -> Option<DialogueDigest> {
        messages
            .into_iter()
            .fold(None, |digest, m| Some(DialogueDigest::extend(digest, m)))
    }

    /// `previous` (none for the empty dialogue) followed by `message`.
    pub fn extend(previous: Option<DialogueDigest>, message: &NewMessage) -> DialogueDigest {
        let mut hash = Sha256::new();
        hash.update(previous.map_or([0; 32], |d| d.0));
        // Every field is length-prefixed, so no two different messages feed the same bytes.
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        field(message.kind.as_str().as_bytes());
        field(message.content.as_bytes());
        let calls = tool_calls(message.tool_calls.as_deref());
        field(&(calls.len() as u64).to_le_bytes());
        for (id, name, arguments) in &calls {
            field(id.as_bytes());
            field(name.as_bytes());
            field(arguments.as_bytes());
        }
        match &message.tool_call_id {
            Some(id) => {
                field(b"1");
                field(id.as_bytes());
            }
            None => field(b"0"),
        }
        DialogueDigest(hash.finalize().into())
    }

    fn from_column(bytes: Option<Vec<u8>>) -> Option<DialogueDigest> {
        bytes.and_then(|b| <[u8; 32]>::try_from(b).ok().map(DialogueDigest))
    }
}

/// The (id, name, arguments) of each tool call in a row's JSON; the JSON text itself is not
/// canonical (key order, the `type` field), these three are what a call is.
fn tool_calls(json: Option<&str>) -> Vec<(String, String, String)> {
    let Some(calls) = json.and_then(|j| serde_json::from_str::<Vec<serde_json::Value>>(j).ok())
    else {
        return Vec::new();
    };
    let text = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    calls
        .iter()
        .map(|call| {
            let function = call.get("function");
            (
                text(call.get("id")),
                text(function.and_then(|f| f.get("name"))),
                text(function.and_then(|f| f.get("arguments"))),
            )
        })
        .collect()
}

/// Extends a stateless conversation's digest by `messages`, inside the write that logs them.
/// A conversation that is not stateless keeps no digest.
pub(super) fn extend_conversation(
    tx: &rusqlite::Connection,
    conversation: &str,
    messages: &[NewMessage],
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let current: Option<Option<Vec<u8>>> = tx
        .prepare_cached(
            "SELECT dialogue_digest FROM conversations
             WHERE conversation_id = ?1 AND stateless = 1",
        )?
        .query_row([conversation], |r| r.get(0))
        .optional()?;
    let Some(current) = current else {
        return Ok(());
    };
    let digest = messages
        .iter()
        .fold(DialogueDigest::from_column(current), |d, m| {
            Some(DialogueDigest::extend(d, m))
        });
    tx.prepare_cached("UPDATE conversations SET dialogue_digest = ?2 WHERE conversation_id = ?1")?
        .execute(params![conversation, digest.map(|d| d.0.to_vec())])?;
    Ok(())
}

impl Store {
    /// The newest stateless conversation, updated within
    /// [`STATELESS_CONTINUE_WITHIN_HOURS`], whose dialogue so far is exactly `earlier`.
    pub async fn stateless_conversation_ending_with(
        &self,
        earlier: Vec<NewMessage>,
        profile: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(digest) = DialogueDigest::of(&earlier) else {
            return Ok(None);
        };
        let since = chrono::Utc::now() - chrono::Duration::hours(STATELESS_CONTINUE_WITHIN_HOURS);
        let since = since.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        // Another profile's conversation is never continued: its assistant said the answers.
        let profile = profile.to_string();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT conversation_id FROM conversations
                 WHERE stateless = 1 AND dialogue_digest = ?1 AND updated_at >= ?2
                   AND profile = ?3
                 ORDER BY updated_at DESC LIMIT 1",
            )?;
            Ok(stmt
                .query_row(params![digest.0.to_vec(), since, profile], |r| r.get(0))
                .optional()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConversationTags, DEFAULT_PROFILE};
    use crate::store::{MessageKind, open_temp};

    fn human(text: &str) -> NewMessage {
        NewMessage::new(MessageKind::Human, text)
    }

    fn ai(text: &str) -> NewMessage {
        NewMessage::new(MessageKind::Ai, text)
    }

    #[test]
    fn the_digest_is_a_chain_over_role_content_and_calls() {
        let d = |ms: &[NewMessage]| DialogueDigest::of(ms);
        assert_eq!(d(&[]), None);
        assert_eq!(d(&[human("a"), ai("b")]), d(&[human("a"), ai("b")]));
        assert_ne!(d(&[human("a"), ai("b")]), d(&[human("a"), human("b")]));
        assert_ne!(d(&[human("ab")]), d(&[human("a"), human("b")]));
        assert_ne!(d(&[human("a"), ai("b")]), d(&[human("a"), ai("c")]));
        let call = |args: &str| {
            let mut m = ai("");
            m.tool_calls = Some(format!(
                r#"[{{"id":"c1","type":"function","function":{{"name":"f","arguments":"{args}"}}}}]"#
            ));
            m
        };
        assert_ne!(d(&[call("1")]), d(&[call("2")]));
        assert_ne!(d(&[call("1")]), d(&[ai("")]));
        // The JSON's spelling is not part of the call.
        let mut reordered = ai("");
        reordered.tool_calls = Some(
            r#"[{"function":{"arguments":"1","name":"f"},"type":"function","id":"c1"}]"#.into(),
        );
        assert_eq!(d(&[call("1")]), d(&[reordered]));
        let mut result = NewMessage::new(MessageKind::Tool, "2");
        result.tool_call_id = Some("c1".into());
        assert_ne!(
            d(&[result.clone()]),
            d(&[NewMessage::new(MessageKind::Tool, "2")])
        );
        // The tool's name is not something a client resends.
        let mut named = result.clone();
        named.tool_name = Some("f".into());
        assert_eq!(d(&[result]), d(&[named]));
    }

    async fn stateless_turn(store: &Store, id: &str, said: &[NewMessage], heard: &str) {
        let (turn, _) = store
            .open_turn(
                id,
                None,
                "m",
                said.to_vec(),
                0,
                &ConversationTags::stateless(true),
            )
            .await
            .unwrap();
        store
            .close_turn(id, None, turn, vec![ai(heard)], done(), Some(ai(heard)))
            .await
            .unwrap();
    }

    fn done() -> crate::store::TurnOutcome {
        crate::store::TurnOutcome {
            status: crate::store::TurnStatus::Done,
            error: None,
            input_tokens: 0,
            output_tokens: 0,
            ttft_ms: None,
            total_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_stateless_conversation_is_found_by_its_dialogue_so_far() {
        let (_dir, store) = open_temp();
        stateless_turn(&store, "s", &[human("one")], "ok 1").await;
        let find = |earlier: Vec<NewMessage>| {
            store.stateless_conversation_ending_with(earlier, DEFAULT_PROFILE)
        };
        assert_eq!(
            find(vec![human("one"), ai("ok 1")])
                .await
                .unwrap()
                .as_deref(),
            Some("s")
        );
        assert_eq!(find(vec![human("one")]).await.unwrap(), None);
        assert_eq!(find(vec![human("one"), ai("ok 2")]).await.unwrap(), None);
        assert_eq!(find(vec![]).await.unwrap(), None);
        // The next turn moves the digest on; the old dialogue no longer matches.
        stateless_turn(&store, "s", &[human("two")], "ok 2").await;
        let grown = vec![human("one"), ai("ok 1"), human("two"), ai("ok 2")];
        assert_eq!(find(grown).await.unwrap().as_deref(), Some("s"));
        assert_eq!(find(vec![human("one"), ai("ok 1")]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn only_recent_stateless_conversations_are_continued() {
        let (_dir, store) = open_temp();
        // A session's conversation keeps no digest.
        let (turn, _) = store
            .open_turn(
                "session",
                None,
                "m",
                vec![human("hi")],
                0,
                &ConversationTags::stateless(false),
            )
            .await
            .unwrap();
        store
            .close_turn(
                "session",
                None,
                turn,
                vec![ai("yo")],
                done(),
                Some(ai("yo")),
            )
            .await
            .unwrap();
        let earlier = || vec![human("hi"), ai("yo")];
        assert_eq!(
            store
                .stateless_conversation_ending_with(earlier(), DEFAULT_PROFILE)
                .await
                .unwrap(),
            None
        );
        stateless_turn(&store, "old", &[human("hi")], "yo").await;
        store
            .write(|tx| {
                tx.execute(
                    "UPDATE conversations SET updated_at = '2000-01-01T00:00:00.000Z'",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .stateless_conversation_ending_with(earlier(), DEFAULT_PROFILE)
                .await
                .unwrap(),
            None
        );
        // The lookup is an index search, not a scan.
        let plan: Vec<String> = store
            .run(|conn| {
                let mut stmt = conn.prepare(
                    "EXPLAIN QUERY PLAN SELECT conversation_id FROM conversations
                     WHERE stateless = 1 AND dialogue_digest = x'00' AND updated_at >= ''
                     ORDER BY updated_at DESC LIMIT 1",
                )?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(3))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("idx_conversations_stateless_digest")),
            "{plan:?}"
        );
    }
}
