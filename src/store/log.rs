//! The conversation log, which is also each thread's memory.
//!
//! One row per message, numbered 1, 2, 3 … within a conversation. The log keeps everything;
//! "memory" is the subset still `in_context`, the rows the model is shown. Forgetting (a
//! `DELETE /v1/memory`, or a device moving to a new conversation) only clears that flag, so
//! the viewer and export still see what was said. There is no system kind: system prompts are
//! never logged.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, StoreEvent, now_timestamp};

/// The documented `message_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Human,
    Ai,
    Tool,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Human => "human",
            MessageKind::Ai => "ai",
            MessageKind::Tool => "tool",
        }
    }

    fn parse(s: &str) -> Option<MessageKind> {
        match s {
            "human" => Some(MessageKind::Human),
            "ai" => Some(MessageKind::Ai),
            "tool" => Some(MessageKind::Tool),
            _ => None,
        }
    }
}

/// A message about to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub kind: MessageKind,
    pub content: String,
    /// JSON array of tool calls, on an ai message that called tools.
    pub tool_calls: Option<String>,
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
    pub interrupted: bool,
}

impl NewMessage {
    pub fn new(kind: MessageKind, content: impl Into<String>) -> Self {
        NewMessage {
            kind,
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
            tool_name: None,
            interrupted: false,
        }
    }
}

/// A logged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: i64,
    pub conversation_id: String,
    pub sequence_number: i64,
    pub created_at: String,
    pub message: NewMessage,
}

impl Store {
    /// Appends `messages` to a conversation in one transaction, creating the conversation on
    /// its first message, and returns their sequence numbers.
    pub async fn append(
        &self,
        conversation_id: &str,
        device_id: Option<&str>,
        turn_id: Option<i64>,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<i64>, StoreError> {
        let conversation = conversation_id.to_string();
        let device = device_id.map(str::to_string);
        let (created, seqs) = self
            .write(move |tx| {
                insert_messages(tx, &conversation, device.as_deref(), turn_id, &messages)
            })
            .await?;
        let id = conversation_id.to_string();
        self.announce(if created {
            StoreEvent::ConversationNew(id)
        } else {
            StoreEvent::ConversationUpdated(id)
        });
        Ok(seqs)
    }

    /// Every message of a conversation, in order (viewer, export, tests).
    pub async fn conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conversation = conversation_id.to_string();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, conversation_id, sequence_number, created_at, message_type, content,
                        tool_calls, tool_call_id, tool_name, interrupted
                 FROM messages WHERE conversation_id = ?1 ORDER BY sequence_number",
            )?;
            let rows = stmt
                .query_map([conversation], row_to_message)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Drops one conversation (or, with `None`, every conversation) from the model's memory.
    /// The log keeps the messages. Returns how many messages left the context.
    pub async fn forget(&self, conversation_id: Option<&str>) -> Result<usize, StoreError> {
        let conversation = conversation_id.map(str::to_string);
        self.write(move |conn| {
            let n = match conversation {
                Some(c) => conn.prepare_cached("UPDATE messages SET in_context = 0 WHERE conversation_id = ?1 AND in_context = 1")?.execute(
                    [c],
                )?,
                None => conn.prepare_cached("UPDATE messages SET in_context = 0 WHERE in_context = 1")?.execute( [])?,
            };
            Ok(n)
        })
        .await
    }
}

/// The newest `limit` messages of a conversation still in the model's context, oldest first.
pub(super) fn memory_rows(
    conn: &rusqlite::Connection,
    conversation: &str,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, conversation_id, sequence_number, created_at, message_type, content,
                tool_calls, tool_call_id, tool_name, interrupted
         FROM messages
         WHERE conversation_id = ?1 AND in_context = 1
         ORDER BY sequence_number DESC LIMIT ?2",
    )?;
    let mut rows: Vec<StoredMessage> = stmt
        .query_map(params![conversation, limit as i64], row_to_message)?
        .collect::<Result<_, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// Records that `device` is now talking in `conversation`. When that is a different
/// conversation from the device's previous one, the previous one leaves the model's memory
/// (its log stays).
pub(super) fn enter_device_conversation(
    tx: &rusqlite::Connection,
    device: &str,
    conversation: &str,
) -> Result<(), StoreError> {
    let previous: Option<String> = tx
        .prepare_cached("SELECT conversation_id FROM devices WHERE device_id = ?1")?
        .query_row([device], |r| r.get(0))
        .optional()?;
    if previous.as_deref() == Some(conversation) {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO devices (device_id, conversation_id, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (device_id) DO UPDATE SET conversation_id = ?2, updated_at = ?3",
    )?
    .execute(params![device, conversation, now_timestamp()])?;
    if let Some(prev) = &previous {
        tx.prepare_cached(
            "UPDATE messages SET in_context = 0 WHERE conversation_id = ?1 AND in_context = 1",
        )?
        .execute([prev])?;
    }
    Ok(())
}

/// Appends `messages` inside `tx`, creating the conversation on its first message; returns
/// whether the conversation was created and the messages' sequence numbers.
pub(super) fn insert_messages(
    tx: &rusqlite::Connection,
    conversation: &str,
    device: Option<&str>,
    turn_id: Option<i64>,
    messages: &[NewMessage],
) -> Result<(bool, Vec<i64>), StoreError> {
    let now = now_timestamp();
    let tags = ConversationTags::default();
    if messages.is_empty() {
        let created = ensure_conversation(tx, conversation, device, &tags, &now)?;
        return Ok((created, Vec::new()));
    }
    // The conversation is made only if it is not there (every write of a turn after its
    // first finds it): one statement fewer than making sure of it each time. This is the one
    // writer, so a conversation not found here is made here, with no messages yet.
    let found: Option<i64> = tx
        .prepare_cached("SELECT message_count FROM conversations WHERE conversation_id = ?1")?
        .query_row([conversation], |r| r.get(0))
        .optional()?;
    let (created, before) = match found {
        Some(count) => (false, count),
        None => (
            ensure_conversation(tx, conversation, device, &tags, &now)?,
            0,
        ),
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (conversation_id, message_type, content, sequence_number,
             created_at, tool_calls, tool_call_id, tool_name, interrupted, turn_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let seqs: Vec<i64> = (before + 1..=before + messages.len() as i64).collect();
    for (m, seq) in messages.iter().zip(&seqs) {
        insert.execute(params![
            conversation,
            m.kind.as_str(),
            m.content,
            seq,
            now,
            m.tool_calls,
            m.tool_call_id,
            m.tool_name,
            m.interrupted,
            turn_id,
        ])?;
    }
    tx.prepare_cached(
        "UPDATE conversations SET message_count = ?2, updated_at = ?3 WHERE conversation_id = ?1",
    )?
    .execute(params![conversation, before + messages.len() as i64, now])?;
    Ok((created, seqs))
}

/// The profile a conversation is answered by when none is named: the column's default, and
/// the profile the box's flags and `agent.json` make.
pub const DEFAULT_PROFILE: &str = "default";

/// Where a conversation came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// A client of the DashScope or OpenAI API (or `chat`, `eval`).
    #[default]
    Api,
    /// The box page's try-it chat in the viewer.
    Page,
}

impl Origin {
    /// As stored in `conversations.origin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Page => "page",
        }
    }
}

/// What a conversation is, fixed when its first message is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTags {
    /// Begun by a call without a session or thread id (see `dialogue_digest`).
    pub stateless: bool,
    /// The profile that answers it (exported as `pipeline_id`).
    pub profile: String,
    pub origin: Origin,
}

impl Default for ConversationTags {
    fn default() -> Self {
        ConversationTags {
            stateless: false,
            profile: DEFAULT_PROFILE.to_string(),
            origin: Origin::Api,
        }
    }
}

impl ConversationTags {
    /// An API conversation of the default profile.
    pub fn stateless(stateless: bool) -> Self {
        ConversationTags {
            stateless,
            ..ConversationTags::default()
        }
    }
}

/// Creates the conversation row if missing (marked `stateless` when a call without a session
/// or thread id begins it); returns whether it was created.
pub(super) fn ensure_conversation(
    tx: &rusqlite::Connection,
    conversation_id: &str,
    device_id: Option<&str>,
    tags: &ConversationTags,
    now: &str,
) -> Result<bool, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO conversations
             (conversation_id, device_id, message_count, created_at, updated_at, stateless,
              profile, origin)
         VALUES (?1, ?2, 0, ?3, ?3, ?4, ?5, ?6) ON CONFLICT (conversation_id) DO NOTHING",
        )?
        .execute(params![
            conversation_id,
            device_id,
            now,
            tags.stateless,
            tags.profile,
            tags.origin.as_str()
        ])?;
    Ok(inserted == 1)
}

fn row_to_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let kind: String = row.get(4)?;
    let kind = MessageKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("unknown message_type {kind:?}").into(),
        )
    })?;
    Ok(StoredMessage {
        id: row.get(0)?,
        conversation_id: row.get(1)?,
        sequence_number: row.get(2)?,
        created_at: row.get(3)?,
        message: NewMessage {
            kind,
            content: row.get(5)?,
            tool_calls: row.get(6)?,
            tool_call_id: row.get(7)?,
            tool_name: row.get(8)?,
            interrupted: row.get(9)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_temp;

    #[tokio::test]
    async fn sequence_numbers_count_from_one_per_conversation() {
        let (_dir, store) = open_temp();
        let a = store
            .append(
                "a",
                None,
                None,
                vec![NewMessage::new(MessageKind::Human, "hi")],
            )
            .await
            .unwrap();
        let b = store
            .append(
                "b",
                None,
                None,
                vec![NewMessage::new(MessageKind::Human, "yo")],
            )
            .await
            .unwrap();
        let a2 = store
            .append(
                "a",
                None,
                None,
                vec![
                    NewMessage::new(MessageKind::Ai, "hello"),
                    NewMessage::new(MessageKind::Human, "again"),
                ],
            )
            .await
            .unwrap();
        assert_eq!((a, b, a2), (vec![1], vec![1], vec![2, 3]));
        let log = store.conversation("a").await.unwrap();
        let texts: Vec<_> = log.iter().map(|m| m.message.content.as_str()).collect();
        assert_eq!(texts, ["hi", "hello", "again"]);
    }

    /// Opens a turn the way the runner does; returns the memory the model would see.
    async fn turn(
        store: &Store,
        conversation: &str,
        device: Option<&str>,
        text: &str,
    ) -> Vec<String> {
        let messages = vec![NewMessage::new(MessageKind::Human, text)];
        let (_, memory) = store
            .open_turn(
                conversation,
                device,
                "m",
                messages,
                3,
                &ConversationTags::stateless(false),
            )
            .await
            .unwrap();
        memory.into_iter().map(|m| m.message.content).collect()
    }

    #[tokio::test]
    async fn memory_is_bounded_and_forgetting_keeps_the_log() {
        let (_dir, store) = open_temp();
        for i in 0..5 {
            turn(&store, "c", None, &format!("m{i}")).await;
        }
        assert_eq!(turn(&store, "c", None, "m5").await, ["m3", "m4", "m5"]);
        assert_eq!(store.forget(Some("c")).await.unwrap(), 6);
        assert_eq!(turn(&store, "c", None, "fresh").await, ["fresh"]);
        assert_eq!(store.conversation("c").await.unwrap().len(), 7);
    }

    #[tokio::test]
    async fn a_device_moving_on_drops_its_previous_conversation_from_memory() {
        let (_dir, store) = open_temp();
        assert_eq!(turn(&store, "c1", Some("dev"), "x").await, ["x"]);
        assert_eq!(turn(&store, "c1", Some("dev"), "y").await, ["x", "y"]);
        assert_eq!(turn(&store, "c2", Some("dev"), "z").await, ["z"]);
        assert_eq!(turn(&store, "c1", Some("dev"), "back").await, ["back"]);
        // The log keeps everything.
        assert_eq!(store.conversation("c1").await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn appends_are_announced() {
        let (_dir, store) = open_temp();
        let mut events = store.subscribe();
        store
            .append(
                "n",
                None,
                None,
                vec![NewMessage::new(MessageKind::Human, "1")],
            )
            .await
            .unwrap();
        store
            .append("n", None, None, vec![NewMessage::new(MessageKind::Ai, "2")])
            .await
            .unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            StoreEvent::ConversationNew("n".into())
        );
        assert_eq!(
            events.recv().await.unwrap(),
            StoreEvent::ConversationUpdated("n".into())
        );
    }
}
