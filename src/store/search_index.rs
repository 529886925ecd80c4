//! The viewer's full-text index, filled in the background.
//!
//! Indexing every message as it is stored would put trigram inserts and FTS segment merges on
//! the one writer every turn waits for (measured: about 1.2 ms more per turn, and worse tails
//! under load). So the indexer follows the log instead: after messages are stored it adds the
//! new ones in small batches, each its own short write, and records how far it got. Searches
//! cover the few rows it has not reached with a plain scan (see `viewer::sqlite`), so results
//! are complete at once and fast once indexed.

use std::time::Duration;

use rusqlite::params;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// Messages per indexing write: small, so other writes never wait long behind one.
const BATCH: i64 = 100;
/// Pause after new messages before indexing, so that they are indexed together: every
/// indexing write makes a new FTS segment, merges segments and commits. At 200 ms a box
/// answering one device indexed each turn twice (its question, then its answer): with turns
/// half a second apart the writer spent 0.80–0.85 ms a turn, 0.46–0.48 ms at two seconds, and
/// the whole box 2.2–2.4 ms, then 1.5. Two seconds cover a spoken turn's question and answer.
/// Until then, searches scan the few rows not yet indexed.
const SETTLE: Duration = Duration::from_secs(2);

impl Store {
    /// Indexes up to `limit` messages the search index does not have yet, oldest first;
    /// returns how many.
    pub async fn index_for_search(&self, limit: i64) -> Result<usize, StoreError> {
        self.write(move |tx| {
            // Cached: the indexer runs after every burst of turns.
            let done: i64 = tx
                .prepare_cached(
                    "SELECT CAST(value AS INTEGER) FROM store_meta WHERE key = 'search_indexed_id'",
                )?
                .query_row([], |r| r.get(0))?;
            let newest: Option<i64> = tx
                .prepare_cached(
                    "SELECT MAX(id) FROM (SELECT id FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2)",
                )?
                .query_row(params![done, limit], |r| r.get(0))?;
            let Some(newest) = newest else { return Ok(0) };
            let n = tx
                .prepare_cached(
                    "INSERT INTO messages_fts (rowid, content)
                     SELECT id, content FROM messages WHERE id > ?1 AND id <= ?2",
                )?
                .execute(params![done, newest])?;
            tx.prepare_cached("UPDATE store_meta SET value = ?1 WHERE key = 'search_indexed_id'")?
                .execute([newest.to_string()])?;
            Ok(n)
        })
        .await
    }

    /// Keeps the search index caught up until `shutdown`.
    pub fn spawn_search_indexer(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        let mut changes = self.subscribe();
        tokio::spawn(async move {
            loop {
                // Catch up, a batch at a time.
                loop {
                    match store.index_for_search(BATCH).await {
                        Ok(n) if n as i64 == BATCH => tokio::task::yield_now().await,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!("search index not updated (retrying): {e}");
                            break;
                        }
                    }
                }
                // Then wait for new messages (or, if messages come from another process that
                // this one cannot hear, a slow look now and then).
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    change = changes.recv() => if let Err(RecvError::Closed) = change { return },
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(SETTLE) => {}
                }
                // The pass about to run covers every change heard so far: without this, the
                // changes that came while settling would each start another, empty, pass.
                while let Ok(_) | Err(TryRecvError::Lagged(_)) = changes.try_recv() {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{MessageKind, NewMessage, open_temp};

    async fn matches(store: &crate::store::Store, text: &'static str) -> i64 {
        store
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?1",
                    [format!("\"{text}\"")],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn indexes_new_messages_in_batches_and_follows_deletes() {
        let (_dir, store) = open_temp();
        for i in 0..5 {
            let text = format!("turn {i}: the weather in Hangzhou");
            store
                .append(
                    "a",
                    None,
                    None,
                    vec![NewMessage::new(MessageKind::Human, text)],
                )
                .await
                .unwrap();
        }
        assert_eq!(
            matches(&store, "Hangzhou").await,
            0,
            "nothing indexed on the write path"
        );
        assert_eq!(store.index_for_search(3).await.unwrap(), 3);
        assert_eq!(matches(&store, "Hangzhou").await, 3);
        assert_eq!(store.index_for_search(3).await.unwrap(), 2);
        assert_eq!(store.index_for_search(3).await.unwrap(), 0);
        assert_eq!(matches(&store, "Hangzhou").await, 5);
        store
            .append(
                "b",
                None,
                None,
                vec![NewMessage::new(
                    MessageKind::Human,
                    "not yet indexed Hangzhou",
                )],
            )
            .await
            .unwrap();
        // Deleting indexed rows takes them out of the index; the unindexed one is left alone.
        assert!(store.delete_conversation("a").await.unwrap());
        assert!(store.delete_conversation("b").await.unwrap());
        assert_eq!(matches(&store, "Hangzhou").await, 0);
        let check: String = store
            .run(|c| {
                c.execute(
                    "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
                    [],
                )?;
                Ok("ok".to_string())
            })
            .await
            .unwrap();
        assert_eq!(check, "ok");
    }
}
