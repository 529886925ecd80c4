//! Reading a fleet's central PostgreSQL in the documented `messages` schema.
//!
//! The documented table has no conversation table and no device column, so the list groups
//! `messages` by conversation and the device comes from the `<conversation>_<device>` naming
//! rule; nor does it say how a conversation began, so nothing there is marked stateless (the
//! export keeps to the documented columns) and the stateless filter hides nothing. Each listed
//! row's preview is its newest message. Connections come from a small `deadpool-postgres` pool. Live updates arrive by
//! `LISTEN lang_agent_messages` on a connection of their own: the exporter sends
//! `pg_notify('lang_agent_messages', '{"conversations":[ids…]}')` after each batch (or
//! `{"conversations":null}` for "something changed"), and the listener turns that into events
//! by comparing message counts. After every (re)connect it compares everything once, so
//! nothing said while it was away is missed.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls};

use super::ViewerError;
use super::changes::{Coverage, KnownCounts};
use super::model::{
    ConversationSummary, ListFilter, ListPage, Message, PREVIEW_SOURCE_CHARS,
    device_from_session_id, like_literal,
};
use crate::pg::{NOTIFY_CHANNEL, PgTarget, notify_payload, tool_rows};
use crate::store::StoreEvent;

/// A pool of connections to the fleet database.
#[derive(Clone)]
pub struct PgSource {
    pool: Pool,
}

type Param = Box<dyn ToSql + Sync + Send>;

impl PgSource {
    /// Builds the pool (connections open on first use) and checks the database answers.
    pub async fn connect(target: &PgTarget) -> Result<PgSource, ViewerError> {
        let manager = Manager::from_config(
            target.config().clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(8).build()?;
        let source = PgSource { pool };
        source.ping().await?;
        Ok(source)
    }

    pub async fn ping(&self) -> Result<(), ViewerError> {
        self.pool.get().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<ListPage, ViewerError> {
        let mut where_id: Vec<String> = Vec::new();
        let mut having: Vec<String> = Vec::new();
        let mut args: Vec<Param> = Vec::new();
        let arg = |value: Param, args: &mut Vec<Param>| {
            args.push(value);
            format!("${}", args.len())
        };
        if let Some(device) = &filter.device {
            let n = arg(Box::new(format!("%\\_{}", like_literal(device))), &mut args);
            where_id.push(format!("conversation_id LIKE {n} ESCAPE '\\'"));
        }
        if let Some(box_id) = &filter.box_id {
            let n = arg(Box::new(format!("{}/%", like_literal(box_id))), &mut args);
            where_id.push(format!("conversation_id LIKE {n} ESCAPE '\\'"));
        }
        if let Some(text) = &filter.search {
            let n = arg(Box::new(format!("%{}%", like_literal(text))), &mut args);
            where_id.push(format!(
                "conversation_id IN (SELECT conversation_id FROM messages
                    WHERE content ILIKE {n} ESCAPE '\\')"
            ));
        }
        if let Some(from) = filter.updated_from {
            let n = arg(Box::new(from), &mut args);
            having.push(format!("last >= {n}"));
        }
        if let Some(before) = filter.updated_before {
            let n = arg(Box::new(before), &mut args);
            having.push(format!("last < {n}"));
        }
        let limit = arg(Box::new(filter.limit as i64), &mut args);
        let offset = arg(Box::new(filter.offset as i64), &mut args);
        let where_sql = if where_id.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", where_id.join(" AND "))
        };
        let having_sql = if having.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", having.join(" AND "))
        };
        let sql = format!(
            "WITH s AS (
                SELECT conversation_id, count(*) AS n,
                       coalesce(max(created_at), 'epoch'::timestamptz) AS last
                FROM messages {where_sql} GROUP BY conversation_id)
             , page AS (
                SELECT conversation_id, n, last, count(*) OVER () AS total FROM s {having_sql}
                ORDER BY last DESC, conversation_id DESC LIMIT {limit} OFFSET {offset})
             SELECT p.conversation_id, p.n, p.last, p.total,
                    (SELECT left(m.content, {PREVIEW_SOURCE_CHARS}) FROM messages m
                      WHERE m.conversation_id = p.conversation_id
                      ORDER BY m.sequence_number DESC LIMIT 1)
             FROM page p ORDER BY p.last DESC, p.conversation_id DESC"
        );
        let client = self.pool.get().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as _).collect();
        let rows = client.query(&sql, &refs).await?;
        let total = rows.first().map_or(0, |r| r.get::<_, i64>(3) as u64);
        let conversations = rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                ConversationSummary {
                    device_id: device_from_session_id(&id).map(str::to_string),
                    conversation_id: id,
                    message_count: r.get(1),
                    last_updated: r.get(2),
                    // The documented table does not record how a conversation began.
                    stateless: false,
                    preview: r.get::<_, Option<String>>(4).unwrap_or_default(),
                }
            })
            .collect();
        Ok(ListPage {
            conversations,
            total,
        })
    }

    pub async fn messages(
        &self,
        conversation_id: &str,
        after: i64,
    ) -> Result<Vec<Message>, ViewerError> {
        let client = self.pool.get().await?;
        let after = i32::try_from(after).unwrap_or(i32::MAX);
        let rows = client
            .query(
                "SELECT message_type, content, sequence_number,
                        coalesce(created_at, 'epoch'::timestamptz)
                 FROM messages WHERE conversation_id = $1 AND sequence_number > $2
                 ORDER BY sequence_number, id",
                &[&conversation_id, &after],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let message_type: String = r.get(0);
                // Tool steps as export folds them into the documented columns.
                let row = tool_rows::read(&message_type, r.get(1));
                Message {
                    message_type,
                    content: row.content,
                    sequence_number: i64::from(r.get::<_, i32>(2)),
                    created_at: r.get::<_, DateTime<Utc>>(3),
                    tool_name: row.tool_name,
                    tool_calls: row.tool_calls,
                    interrupted: false,
                }
            })
            .collect())
    }

    /// Deletes a conversation's messages and tells other viewers through the channel.
    pub async fn delete(&self, conversation_id: &str) -> Result<bool, ViewerError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "DELETE FROM messages WHERE conversation_id = $1",
                &[&conversation_id],
            )
            .await?;
        if n > 0 {
            let payload = notify_payload([conversation_id]);
            client
                .execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &payload])
                .await?;
        }
        Ok(n > 0)
    }

    /// Devices named by conversation ids, for the filter.
    pub async fn devices(&self) -> Result<Vec<String>, ViewerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT DISTINCT conversation_id FROM messages", &[])
            .await?;
        let devices: BTreeSet<String> = rows
            .iter()
            .filter_map(|r| device_from_session_id(r.get(0)).map(str::to_string))
            .collect();
        Ok(devices.into_iter().collect())
    }

    /// The fleet's boxes, from the exporter's state table (none when it does not exist).
    pub async fn boxes(&self) -> Result<Vec<String>, ViewerError> {
        let client = self.pool.get().await?;
        match client
            .query(
                "SELECT DISTINCT box_id FROM lang_agent_export_state WHERE box_id <> ''
                 ORDER BY box_id",
                &[],
            )
            .await
        {
            Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Message counts per conversation: of `ids`, or of all with `None`.
    async fn counts(&self, ids: Option<Vec<String>>) -> Result<Vec<(String, i64)>, ViewerError> {
        let client = self.pool.get().await?;
        let rows =
            match ids {
                Some(ids) => {
                    client
                        .query(
                            "SELECT conversation_id, count(*) FROM messages
                         WHERE conversation_id = ANY($1) GROUP BY conversation_id",
                            &[&ids],
                        )
                        .await?
                }
                None => client
                    .query(
                        "SELECT conversation_id, count(*) FROM messages GROUP BY conversation_id",
                        &[],
                    )
                    .await?,
            };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Listens for the exporter's notifications for as long as the process runs, reconnecting
/// with back-off.
pub fn spawn_listener(target: PgTarget, source: PgSource, events: broadcast::Sender<StoreEvent>) {
    tokio::spawn(async move {
        let known = Arc::new(Mutex::new(KnownCounts::default()));
        let mut first = true;
        let mut backoff = Duration::from_secs(1);
        loop {
            match listen(&target, &source, &events, &known, first).await {
                Ok(()) => tracing::warn!("viewer: PostgreSQL notification connection closed"),
                Err(e) => tracing::warn!("viewer: PostgreSQL notifications: {e}"),
            }
            first = false;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
}

async fn listen(
    target: &PgTarget,
    source: &PgSource,
    events: &broadcast::Sender<StoreEvent>,
    known: &Arc<Mutex<KnownCounts>>,
    first: bool,
) -> Result<(), ViewerError> {
    let (client, mut connection) = target.config().connect(NoTls).await?;
    let (payloads, mut incoming) = mpsc::unbounded_channel::<String>();
    // The connection object delivers notifications; it must be driven for the client to work.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = payloads.send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await?;
    // Listening first, then comparing everything, so no change falls between the two.
    let everything = source.counts(None).await?;
    let found = known
        .lock()
        .expect("known counts")
        .apply(everything, Coverage::Everything);
    if !first {
        for event in found {
            let _ = events.send(event);
        }
    }
    while let Some(payload) = incoming.recv().await {
        // A batch of notifications is read together.
        let mut batch = vec![payload];
        while let Ok(more) = incoming.try_recv() {
            batch.push(more);
        }
        let mut ids: HashSet<String> = HashSet::new();
        let mut everything = false;
        for payload in &batch {
            match changed_ids(payload) {
                Some(list) => ids.extend(list),
                None => everything = true,
            }
        }
        let found = if everything {
            let fresh = source.counts(None).await?;
            known
                .lock()
                .expect("known counts")
                .apply(fresh, Coverage::Everything)
        } else {
            let fresh = source.counts(Some(ids.iter().cloned().collect())).await?;
            known
                .lock()
                .expect("known counts")
                .apply(fresh, Coverage::Ids(&ids))
        };
        for event in found {
            let _ = events.send(event);
        }
    }
    drop(client);
    driver.await??;
    Ok(())
}

/// The ids of `{"conversations":[ids…]}`; `None` means "something changed" (null, or a
/// payload this version does not understand).
fn changed_ids(payload: &str) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Payload {
        conversations: Option<Vec<String>>,
    }
    serde_json::from_str::<Payload>(payload).ok()?.conversations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        assert_eq!(
            changed_ids(r#"{"conversations":["b/c_1","x"]}"#),
            Some(vec!["b/c_1".to_string(), "x".to_string()])
        );
        assert_eq!(changed_ids(r#"{"conversations":null}"#), None);
        assert_eq!(changed_ids("garbage"), None);
    }
}
