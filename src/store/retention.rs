//! Keeping the disk in check: `--retain-days N` deletes conversations nobody has touched for N
//! days, in the background.
//!
//! Pruning goes through the writer like every other change, a small batch of conversations per
//! write, with a pause between batches, so a turn's write never waits behind a long delete.
//! A conversation goes whole (messages and turns cascade, a device pointing at it forgets it,
//! the viewer hears it go), so memory and the log never disagree. Export copies rows forward by
//! id and never looks back, so rows pruned after they were copied leave PostgreSQL alone; only
//! an export stopped for longer than the retention misses what was pruned meanwhile.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError, StoreEvent};

/// Conversations deleted per write.
pub const PRUNE_BATCH: usize = 50;
/// Pause between batches: room for turns' writes.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(50);
/// How often the pruner looks again once it has caught up.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Store {
    /// Deletes up to `batch` conversations last updated before `cutoff` (a stored timestamp),
    /// oldest first; returns their ids.
    pub async fn prune_before(
        &self,
        cutoff: &str,
        batch: usize,
    ) -> Result<Vec<String>, StoreError> {
        let cutoff = cutoff.to_string();
        let pruned = self
            .write(move |tx| {
                let ids: Vec<String> = tx
                    .prepare_cached(
                        "SELECT conversation_id FROM conversations
                         WHERE updated_at < ?1 ORDER BY updated_at LIMIT ?2",
                    )?
                    .query_map(rusqlite::params![cutoff, batch as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in &ids {
                    super::delete::delete_rows(tx, id)?;
                }
                Ok(ids)
            })
            .await?;
        for id in &pruned {
            self.announce(StoreEvent::ConversationDeleted(id.clone()));
        }
        Ok(pruned)
    }

    /// Prunes conversations older than `retain` now and every hour until `shutdown`.
    pub fn spawn_pruner(
        &self,
        retain: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                let age = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
                let cutoff = super::timestamp(chrono::Utc::now() - age);
                let mut total = 0;
                loop {
                    match store.prune_before(&cutoff, PRUNE_BATCH).await {
                        Ok(ids) if ids.is_empty() => break,
                        Ok(ids) => total += ids.len(),
                        Err(e) => {
                            tracing::warn!("retention: pruning failed (retrying later): {e}");
                            break;
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(PAUSE_BETWEEN_BATCHES) => {}
                    }
                }
                if total > 0 {
                    tracing::info!(
                        "retention: deleted {total} conversations untouched since {cutoff}"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{MessageKind, NewMessage, open_temp};

    #[tokio::test]
    async fn only_conversations_older_than_the_cutoff_go_in_batches() {
        let (_dir, store) = open_temp();
        for id in ["old-1", "old-2", "old-3", "new"] {
            store
                .append(
                    id,
                    Some("dev"),
                    None,
                    vec![NewMessage::new(MessageKind::Human, id)],
                )
                .await
                .unwrap();
        }
        store
            .write(|tx| {
                tx.execute(
                    "UPDATE conversations SET updated_at = '2020-01-01T00:00:00.000Z'
                     WHERE conversation_id LIKE 'old-%'",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let mut events = store.subscribe();
        let first = store
            .prune_before("2021-01-01T00:00:00.000Z", 2)
            .await
            .unwrap();
        assert_eq!(first.len(), 2);
        let second = store
            .prune_before("2021-01-01T00:00:00.000Z", 2)
            .await
            .unwrap();
        assert_eq!(second.len(), 1);
        assert!(
            store
                .prune_before("2021-01-01T00:00:00.000Z", 2)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            events.recv().await.unwrap(),
            crate::store::StoreEvent::ConversationDeleted(_)
        ));
        assert_eq!(store.conversation("new").await.unwrap().len(), 1);
        assert!(store.conversation("old-1").await.unwrap().is_empty());
        let left: i64 = store
            .run(|c| Ok(c.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(left, 1, "messages go with their conversation");
    }
}
