//! The SQLite side of export: which database this is, and its messages after a watermark.
//!
//! Rows are read by `id` in batches through the store's pool. `messages.id` is AUTOINCREMENT
//! and SQLite has one writer, so ids commit in increasing order: everything at or below the
//! highest id seen has been seen, which is what makes "last exported id" a complete cursor.
//! Reads run on WAL snapshots and never block the server writing. Each row is converted here,
//! on the blocking pool, into exactly what PostgreSQL will store.

use chrono::{DateTime, Utc};

use super::{BoxId, ExportError};
use crate::pg::tool_rows;
use crate::store::{DEFAULT_PROFILE, Store, StoreError};

/// One message as it goes into PostgreSQL's `messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    /// The SQLite id: the watermark, never written to PostgreSQL (whose ids are its own).
    pub source_id: i64,
    /// Prefixed with the box id when there is one.
    pub conversation_id: String,
    pub message_type: String,
    /// With the tool information folded in ([`crate::pg::tool_rows`]).
    pub content: String,
    pub sequence_number: i32,
    pub created_at: DateTime<Utc>,
    /// The conversation's profile: the newer table's `pipeline_id`.
    pub pipeline_id: String,
}

/// The `source_id` written by SQLite migration V2.
pub async fn source_id(store: &Store) -> Result<String, ExportError> {
    Ok(store
        .run(|conn| {
            Ok(conn.query_row(
                "SELECT value FROM store_meta WHERE key = 'source_id'",
                [],
                |r| r.get::<_, String>(0),
            )?)
        })
        .await?)
}

/// How many messages have an id above `after_id` (for the progress bar's total).
pub async fn count_after(store: &Store, after_id: i64) -> Result<u64, ExportError> {
    Ok(store
        .run(move |conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM messages WHERE id > ?1",
                [after_id],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .await? as u64)
}

/// Up to `limit` messages with an id above `after_id`, in id order.
pub async fn read_batch(
    store: &Store,
    after_id: i64,
    limit: usize,
    box_id: Option<BoxId>,
) -> Result<Vec<ExportRow>, ExportError> {
    let rows = store
        .run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.id, m.conversation_id, m.message_type, m.content, m.sequence_number,
                        m.created_at, m.tool_calls, m.tool_name, coalesce(c.profile, ?3)
                 FROM messages m LEFT JOIN conversations c ON c.conversation_id = m.conversation_id
                 WHERE m.id > ?1 ORDER BY m.id LIMIT ?2",
            )?;
            let mut rows =
                stmt.query(rusqlite::params![after_id, limit as i64, DEFAULT_PROFILE])?;
            let mut out = Vec::with_capacity(limit.min(100_000));
            while let Some(row) = rows.next()? {
                let raw = RawRow {
                    id: row.get(0)?,
                    conversation_id: row.get(1)?,
                    message_type: row.get(2)?,
                    content: row.get(3)?,
                    sequence_number: row.get(4)?,
                    created_at: row.get(5)?,
                    tool_calls: row.get(6)?,
                    tool_name: row.get(7)?,
                    profile: row.get(8)?,
                };
                out.push(Ok::<_, ExportError>(raw).and_then(|r| r.convert(box_id.as_ref())));
            }
            Ok::<_, StoreError>(out)
        })
        .await?;
    rows.into_iter().collect()
}

/// A row as SQLite holds it.
pub(crate) struct RawRow {
    pub id: i64,
    pub conversation_id: String,
    pub message_type: String,
    pub content: String,
    pub sequence_number: i64,
    pub created_at: String,
    pub tool_calls: Option<String>,
    pub tool_name: Option<String>,
    pub profile: String,
}

impl RawRow {
    pub(crate) fn convert(self, box_id: Option<&BoxId>) -> Result<ExportRow, ExportError> {
        let id = self.id;
        let bad = |problem: String| ExportError::BadRow { id, problem };
        let sequence_number = i32::try_from(self.sequence_number).map_err(|_| {
            bad(format!(
                "sequence_number {} is out of range",
                self.sequence_number
            ))
        })?;
        let created_at = DateTime::parse_from_rfc3339(&self.created_at)
            .map_err(|e| bad(format!("created_at {:?}: {e}", self.created_at)))?
            .with_timezone(&Utc);
        let conversation_id = match box_id {
            Some(b) => format!("{}/{}", b.as_str(), self.conversation_id),
            None => self.conversation_id,
        };
        let content = tool_rows::written(
            &self.message_type,
            self.content,
            self.tool_calls.as_deref(),
            self.tool_name.as_deref(),
        );
        Ok(ExportRow {
            source_id: id,
            conversation_id: without_nul(conversation_id),
            message_type: self.message_type,
            content: without_nul(content),
            sequence_number,
            created_at,
            pipeline_id: self.profile,
        })
    }
}

/// PostgreSQL text cannot hold NUL, which SQLite text can; one such row would otherwise stop
/// the export for good, so NUL becomes U+FFFD, the replacement character.
fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(conversation_id: &str, created_at: &str, sequence_number: i64) -> RawRow {
        RawRow {
            id: 7,
            conversation_id: conversation_id.into(),
            message_type: "ai".into(),
            content: "a\0b".into(),
            sequence_number,
            created_at: created_at.into(),
            tool_calls: None,
            tool_name: None,
            profile: "shop".into(),
        }
    }

    #[test]
    fn rows_take_the_box_prefix_and_a_real_timestamp() {
        let box_id = BoxId::parse("kitchen-1").unwrap();
        let row = raw("c1", "2025-03-04T05:06:07.089Z", 3)
            .convert(Some(&box_id))
            .unwrap();
        assert_eq!(row.conversation_id, "kitchen-1/c1");
        assert_eq!(row.sequence_number, 3);
        assert_eq!(row.content, "a\u{FFFD}b");
        assert_eq!(
            row.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "2025-03-04T05:06:07.089Z"
        );
        let plain = raw("c1", "2025-03-04T05:06:07.089Z", 3)
            .convert(None)
            .unwrap();
        assert_eq!(plain.conversation_id, "c1");
        assert_eq!(plain.pipeline_id, "shop");
    }

    #[test]
    fn a_row_postgres_cannot_hold_is_named() {
        let err = raw("c", "yesterday", 1)
            .convert(None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("message id 7 cannot be exported: created_at"),
            "{err}"
        );
        let err = raw("c", "2025-03-04T05:06:07.089Z", 1 << 40)
            .convert(None)
            .unwrap_err();
        assert!(err.to_string().contains("sequence_number"), "{err}");
    }
}
