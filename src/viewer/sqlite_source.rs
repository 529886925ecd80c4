//! Reading this box's own conversation log (the SQLite store) for the viewer.
//!
//! The store keeps a `conversations` row per conversation (message count, last update), so
//! the list is an index walk on `updated_at`, never a scan of `messages`. Search goes through
//! the trigram full-text index (`messages_fts`) for three characters or more, plus a `LIKE`
//! over the few newest messages the background indexer has not reached yet; shorter text
//! cannot use a trigram index and falls back to `LIKE` over everything. Each listed row's
//! preview is its newest message, one lookup on `idx_messages_conversation` per row of the page.
//! Stateless conversations of one exchange (`stateless = 1`, at most two messages) are left
//! out unless the filter asks for them.

use rusqlite::types::Value;
use rusqlite::{Connection, params};

use super::model::{
    ConversationSummary, ListFilter, ListPage, Message, PREVIEW_SOURCE_CHARS, like_literal,
    parse_timestamp, timestamp_text,
};
use crate::store::StoreError;

/// One page of the conversation list, newest first.
pub fn list(conn: &Connection, filter: &ListFilter) -> Result<ListPage, StoreError> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(device) = &filter.device {
        clauses.push("c.device_id = ?");
        args.push(Value::Text(device.clone()));
    }
    if let Some(box_id) = &filter.box_id {
        clauses.push("c.conversation_id LIKE ? ESCAPE '\\'");
        args.push(Value::Text(format!("{}/%", like_literal(box_id))));
    }
    if let Some(from) = filter.updated_from {
        clauses.push("c.updated_at >= ?");
        args.push(Value::Text(timestamp_text(from)));
    }
    if let Some(before) = filter.updated_before {
        clauses.push("c.updated_at < ?");
        args.push(Value::Text(timestamp_text(before)));
    }
    if !filter.one_shot_stateless {
        clauses.push("NOT (c.stateless = 1 AND c.message_count <= 2)");
    }
    if let Some(text) = &filter.search {
        if text.chars().count() >= 3 {
            clauses.push(
                "c.conversation_id IN (SELECT m.conversation_id FROM messages_fts f
                    JOIN messages m ON m.id = f.rowid WHERE messages_fts MATCH ?
                  UNION
                  SELECT conversation_id FROM messages
                    WHERE id > (SELECT CAST(value AS INTEGER) FROM store_meta
                                WHERE key = 'search_indexed_id')
                      AND content LIKE ? ESCAPE '\\')",
            );
            // One quoted phrase: the text is matched literally, never as query syntax.
            args.push(Value::Text(format!("\"{}\"", text.replace('"', "\"\""))));
            args.push(Value::Text(format!("%{}%", like_literal(text))));
        } else {
            clauses.push(
                "c.conversation_id IN (SELECT conversation_id FROM messages
                    WHERE content LIKE ? ESCAPE '\\')",
            );
            args.push(Value::Text(format!("%{}%", like_literal(text))));
        }
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };

    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM conversations c {filter_sql}"),
        rusqlite::params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let mut page_args = args;
    page_args.push(Value::Integer(filter.limit as i64));
    page_args.push(Value::Integer(filter.offset as i64));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT c.conversation_id, c.device_id, c.message_count, c.updated_at, c.stateless,
                (SELECT substr(m.content, 1, {PREVIEW_SOURCE_CHARS}) FROM messages m
                  WHERE m.conversation_id = c.conversation_id
                  ORDER BY m.sequence_number DESC LIMIT 1)
         FROM conversations c {filter_sql}
         ORDER BY c.updated_at DESC, c.conversation_id DESC LIMIT ? OFFSET ?"
    ))?;
    let conversations = stmt
        .query_map(rusqlite::params_from_iter(page_args.iter()), |r| {
            Ok(ConversationSummary {
                conversation_id: r.get(0)?,
                device_id: r.get(1)?,
                message_count: r.get(2)?,
                last_updated: parse_timestamp(&r.get::<_, String>(3)?),
                stateless: r.get(4)?,
                preview: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(ListPage {
        conversations,
        total: total as u64,
    })
}

/// The messages of a conversation after sequence number `after` (0 for all), in order.
pub fn messages(
    conn: &Connection,
    conversation_id: &str,
    after: i64,
) -> Result<Vec<Message>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_type, content, sequence_number, created_at, tool_name, tool_calls,
                interrupted
         FROM messages WHERE conversation_id = ?1 AND sequence_number > ?2
         ORDER BY sequence_number",
    )?;
    let rows = stmt
        .query_map(params![conversation_id, after], |r| {
            Ok(Message {
                message_type: r.get(0)?,
                content: r.get(1)?,
                sequence_number: r.get(2)?,
                created_at: parse_timestamp(&r.get::<_, String>(3)?),
                tool_name: r.get(4)?,
                tool_calls: r.get(5)?,
                interrupted: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The devices that have conversations, for the filter.
pub fn devices(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT device_id FROM conversations
         WHERE device_id IS NOT NULL AND device_id <> '' ORDER BY device_id",
    )?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Message counts of conversations updated at or after `since` (all with `None`).
pub fn counts_since(
    conn: &Connection,
    since: Option<&str>,
) -> Result<Vec<(String, i64, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT conversation_id, message_count, updated_at FROM conversations
         WHERE ?1 IS NULL OR updated_at >= ?1",
    )?;
    let rows = stmt
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// How many conversations there are.
pub fn conversation_count(conn: &Connection) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM conversations", [], |r| r.get(0))?;
    Ok(n as usize)
}
