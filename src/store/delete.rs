//! Deleting a whole conversation from the log: the viewer's "delete" button.
//!
//! Everything else in the store only ever appends or clears `in_context`; this is the one
//! place rows leave the log, so it lives on its own. Messages and turns go with the
//! conversation row (`ON DELETE CASCADE`), and the full-text index follows the messages by
//! its triggers.

use super::{Store, StoreError, StoreEvent};

impl Store {
    /// Deletes `conversation_id` with all its messages and turns, and announces it.
    /// Returns whether it existed.
    pub async fn delete_conversation(&self, conversation_id: &str) -> Result<bool, StoreError> {
        let conversation = conversation_id.to_string();
        let deleted = self
            .write(move |tx| Ok(delete_rows(tx, &conversation)?))
            .await?;
        if deleted {
            self.announce(StoreEvent::ConversationDeleted(conversation_id.to_string()));
        }
        Ok(deleted)
    }
}

/// Deletes one conversation's rows inside the caller's write (the viewer's delete, retention);
/// returns whether it existed.
pub(super) fn delete_rows(
    tx: &rusqlite::Connection,
    conversation: &str,
) -> Result<bool, rusqlite::Error> {
    // The devices table points at a device's current conversation; a deleted one must not be
    // revived as "current" (and dropped from memory) later.
    tx.execute(
        "DELETE FROM devices WHERE conversation_id = ?1",
        [conversation],
    )?;
    let n = tx.execute(
        "DELETE FROM conversations WHERE conversation_id = ?1",
        [conversation],
    )?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use crate::store::{MessageKind, NewMessage, StoreEvent, open_temp};

    #[tokio::test]
    async fn deleting_removes_messages_and_is_announced() {
        let (_dir, store) = open_temp();
        store
            .append(
                "gone",
                Some("d"),
                None,
                vec![NewMessage::new(MessageKind::Human, "hi")],
            )
            .await
            .unwrap();
        store
            .append(
                "kept",
                None,
                None,
                vec![NewMessage::new(MessageKind::Human, "yo")],
            )
            .await
            .unwrap();
        let mut events = store.subscribe();
        assert!(store.delete_conversation("gone").await.unwrap());
        assert!(!store.delete_conversation("gone").await.unwrap());
        assert_eq!(
            events.recv().await.unwrap(),
            StoreEvent::ConversationDeleted("gone".into())
        );
        assert!(store.conversation("gone").await.unwrap().is_empty());
        assert_eq!(store.conversation("kept").await.unwrap().len(), 1);
        let indexed: i64 = store
            .run(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH '\"hi\"'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(indexed, 0, "the search index must forget deleted messages");
    }
}
