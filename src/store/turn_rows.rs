//! Per-turn metrics: which model answered, token usage, time to first token, total time and
//! how the turn ended. A turn row is opened before the model is called, so a crash leaves a
//! `running` row behind rather than nothing; the next start closes such rows
//! ([`close_abandoned`]), so `running` always means running now.

use rusqlite::params;

use super::dialogue_digest::extend_conversation;
use super::log::{
    ConversationTags, NewMessage, StoredMessage, ensure_conversation, enter_device_conversation,
    insert_messages, memory_rows,
};
use super::{Store, StoreError, StoreEvent, now_timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnStatus {
    Done,
    Interrupted,
    Failed,
}

impl TurnStatus {
    /// As stored in `turns.status` (and logged).
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Done => "done",
            TurnStatus::Interrupted => "interrupted",
            TurnStatus::Failed => "failed",
        }
    }
}

/// How a turn ended, recorded by [`Store::finish_turn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnOutcome {
    pub status: TurnStatus,
    pub error: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub ttft_ms: Option<u64>,
    pub total_ms: u64,
}

/// The error recorded on turns a previous run left `running`.
pub const ABANDONED: &str = "the box stopped before the turn ended";

/// Closes every `running` turn as interrupted: run at start, before any turn of this run
/// exists. Returns how many there were.
pub(super) fn close_abandoned(conn: &rusqlite::Connection) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE turns SET status = 'interrupted', error = ?1, finished_at = ?2
         WHERE status = 'running'",
        )?
        .execute(params![ABANDONED, now_timestamp()])?)
}

impl Store {
    /// Opens a turn, in one write: moves the device (if any) into `conversation_id` (its
    /// previous conversation leaves the model's memory), logs the messages that start the turn
    /// (the user's turn), and reads back the newest `memory_limit` messages of the memory the
    /// model will see. Returns the turn's id and that memory. Refused at once while the data
    /// disk is full ([`StoreError::DiskFull`]): a turn that cannot be stored is not started.
    ///
    /// A new conversation gets `tags` (its profile and origin). A stateless turn (a call
    /// without a session or thread id) creates its conversation marked stateless, and its
    /// messages extend the conversation's dialogue digest.
    pub async fn open_turn(
        &self,
        conversation_id: &str,
        device_id: Option<&str>,
        model: &str,
        messages: Vec<NewMessage>,
        memory_limit: usize,
        tags: &ConversationTags,
    ) -> Result<(i64, Vec<StoredMessage>), StoreError> {
        self.check_room()?;
        let stateless = tags.stateless;
        let tags = tags.clone();
        let conversation = conversation_id.to_string();
        let device = device_id.map(str::to_string);
        let model = model.to_string();
        let (created, wrote, id, memory) = self
            .write(move |tx| {
                if let Some(device) = &device {
                    enter_device_conversation(tx, device, &conversation)?;
                }
                let now = now_timestamp();
                let created =
                    ensure_conversation(tx, &conversation, device.as_deref(), &tags, &now)?;
                tx.prepare_cached(
                    "INSERT INTO turns (conversation_id, model, status, started_at)
                     VALUES (?1, ?2, 'running', ?3)",
                )?
                .execute(params![conversation, model, now])?;
                let id = tx.last_insert_rowid();
                insert_messages(tx, &conversation, device.as_deref(), Some(id), &messages)?;
                if stateless {
                    extend_conversation(tx, &conversation, &messages)?;
                }
                let memory = memory_rows(tx, &conversation, memory_limit)?;
                Ok((created, !messages.is_empty(), id, memory))
            })
            .await?;
        let id_text = conversation_id.to_string();
        if created {
            self.announce(StoreEvent::ConversationNew(id_text));
        } else if wrote {
            self.announce(StoreEvent::ConversationUpdated(id_text));
        }
        Ok((id, memory))
    }

    /// Closes a turn: logs its last messages (the answer, or what was said before an
    /// interruption) and records its outcome, in one write. `heard` is the answer as a
    /// stateless client received it (its text, or the tool calls it was asked to make), the
    /// message its next call will resend: it extends a stateless conversation's dialogue
    /// digest in the same write.
    pub async fn close_turn(
        &self,
        conversation_id: &str,
        device_id: Option<&str>,
        turn_id: i64,
        messages: Vec<NewMessage>,
        outcome: TurnOutcome,
        heard: Option<NewMessage>,
    ) -> Result<(), StoreError> {
        let conversation = conversation_id.to_string();
        let device = device_id.map(str::to_string);
        let wrote = !messages.is_empty();
        self.write(move |tx| {
            if !messages.is_empty() {
                insert_messages(
                    tx,
                    &conversation,
                    device.as_deref(),
                    Some(turn_id),
                    &messages,
                )?;
            }
            if let Some(heard) = &heard {
                extend_conversation(tx, &conversation, std::slice::from_ref(heard))?;
            }
            tx.prepare_cached(
                "UPDATE turns SET status = ?2, error = ?3, input_tokens = ?4, output_tokens = ?5,
                        ttft_ms = ?6, total_ms = ?7, finished_at = ?8
                 WHERE id = ?1",
            )?
            .execute(params![
                turn_id,
                outcome.status.as_str(),
                outcome.error,
                outcome.input_tokens as i64,
                outcome.output_tokens as i64,
                outcome.ttft_ms.map(|v| v as i64),
                outcome.total_ms as i64,
                now_timestamp(),
            ])?;
            Ok(())
        })
        .await?;
        if wrote {
            self.announce(StoreEvent::ConversationUpdated(conversation_id.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_temp;

    #[tokio::test]
    async fn a_turn_records_its_outcome() {
        let (_dir, store) = open_temp();
        let (id, memory) = store
            .open_turn(
                "c",
                None,
                "qwen-plus",
                vec![NewMessage::new(crate::store::MessageKind::Human, "hi")],
                10,
                &ConversationTags::stateless(false),
            )
            .await
            .unwrap();
        assert_eq!(
            memory.len(),
            1,
            "the memory read back includes the new turn"
        );
        assert_eq!(memory[0].message.content, "hi");
        store
            .close_turn(
                "c",
                None,
                id,
                vec![NewMessage::new(crate::store::MessageKind::Ai, "partial")],
                TurnOutcome {
                    status: TurnStatus::Interrupted,
                    error: None,
                    input_tokens: 12,
                    output_tokens: 3,
                    ttft_ms: Some(40),
                    total_ms: 90,
                },
                None,
            )
            .await
            .unwrap();
        let row: (String, String, i64, i64, i64) = store
            .run(move |conn| {
                Ok(conn.query_row(
                    "SELECT model, status, input_tokens, ttft_ms, total_ms FROM turns WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(row, ("qwen-plus".into(), "interrupted".into(), 12, 40, 90));
        let log = store.conversation("c").await.unwrap();
        assert_eq!(
            log.iter()
                .map(|m| m.message.content.as_str())
                .collect::<Vec<_>>(),
            ["hi", "partial"]
        );
    }

    #[tokio::test]
    async fn serving_closes_the_turns_a_previous_run_left_running() {
        let (dir, store) = open_temp();
        let (left, _) = store
            .open_turn(
                "c",
                None,
                "m",
                vec![],
                10,
                &ConversationTags::stateless(false),
            )
            .await
            .unwrap();
        drop(store);
        let store = Store::open_for_serve(&dir.path().join("t.sqlite3")).unwrap();
        let (status, error, finished): (String, String, Option<String>) = store
            .run(move |conn| {
                Ok(conn.query_row(
                    "SELECT status, error, finished_at FROM turns WHERE id = ?1",
                    [left],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(
            (status.as_str(), error.as_str()),
            ("interrupted", ABANDONED)
        );
        assert!(finished.is_some());
    }
}
