//! The SQLite schema, as an ordered list of migrations (`rusqlite_migration`, tracked in
//! `PRAGMA user_version`).
//!
//! `messages` holds the documented columns of the conversation log
//! (`id, conversation_id, message_type, content, sequence_number, created_at`) so that export
//! and the viewer read it as the original PostgreSQL table, plus what the model needs to
//! rebuild a thread's history (tool calls, tool call ids) and what the box knows beyond the
//! documented shape (interrupted answers, whether a row is still in the model's context).
//! Rows are written once and never updated except `in_context`, which is why export can copy
//! by `id` watermark.
//!
//! Migrations are append-only: never edit a released one, add the next.

use rusqlite_migration::{M, Migrations};

const V1: &str = r#"
CREATE TABLE conversations (
    conversation_id TEXT PRIMARY KEY,
    device_id       TEXT,
    -- the highest sequence_number used, so the next message takes message_count + 1
    message_count   INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX idx_conversations_updated ON conversations (updated_at DESC);
CREATE INDEX idx_conversations_device ON conversations (device_id, updated_at DESC);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    message_type    TEXT NOT NULL CHECK (message_type IN ('human', 'ai', 'tool')),
    content         TEXT NOT NULL,
    sequence_number INTEGER NOT NULL CHECK (sequence_number >= 0),
    created_at      TEXT NOT NULL,
    -- beyond the documented columns:
    tool_calls      TEXT,     -- JSON array of OpenAI-style tool calls on an ai row
    tool_call_id    TEXT,     -- on a tool row: which call it answers
    tool_name       TEXT,     -- on a tool row: the tool that produced it
    interrupted     INTEGER NOT NULL DEFAULT 0,  -- an ai row cut short (barge-in, failure)
    in_context      INTEGER NOT NULL DEFAULT 1,  -- 0 once dropped from the model's memory
    turn_id         INTEGER REFERENCES turns (id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX idx_messages_conversation ON messages (conversation_id, sequence_number);

CREATE TABLE turns (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    model           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'done', 'interrupted', 'failed')),
    error           TEXT,
    input_tokens    INTEGER,
    output_tokens   INTEGER,
    ttft_ms         INTEGER,
    total_ms        INTEGER,
    started_at      TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX idx_turns_conversation ON turns (conversation_id);

-- Which conversation each device is in now; a new one drops the previous from memory.
CREATE TABLE devices (
    device_id       TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
"#;

/// Facts about this database itself. `source_id` names it for `export`: PostgreSQL keeps
/// how far each source has been copied under that name, so it must stay the same for the
/// life of the file and differ between boxes (a copied file keeps it, which is what a restore
/// from backup wants).
const V2: &str = r#"
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('source_id', lower(hex(randomblob(16))));
"#;

/// Full-text search over message text for the viewer. A trigram index finds any substring of
/// three or more characters (Chinese included, no word splitting needed) without scanning a
/// million rows. It is an external-content index: the text lives once, in `messages`.
///
/// The index is kept off the write path: a trigger would add an index insert (and FTS segment
/// merges) to every stored message, on the one writer every turn waits for. Instead the
/// search indexer (`store::search_index`) adds new rows in small batches and records how far
/// it got in `store_meta.search_indexed_id`; searches read the index up to there and scan the
/// short unindexed tail. Deleting or rewriting an indexed row must update the index, and only
/// an indexed one (a 'delete' of a row the index never had would corrupt it).
const V3: &str = r#"
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content = 'messages', content_rowid = 'id', tokenize = 'trigram'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
INSERT INTO store_meta (key, value)
    VALUES ('search_indexed_id', (SELECT COALESCE(MAX(id), 0) FROM messages));
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.id <= (SELECT CAST(value AS INTEGER) FROM store_meta WHERE key = 'search_indexed_id')
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
WHEN old.id <= (SELECT CAST(value AS INTEGER) FROM store_meta WHERE key = 'search_indexed_id')
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
"#;

/// Stateless conversations: those begun by a call without a session or thread id. The viewer
/// hides the one-exchange ones by default (helper calls), and a stateless call that resends a
/// recent one's dialogue continues it, found by `dialogue_digest` (`store::dialogue_digest`)
/// through a partial index that holds only stateless conversations.
const V4: &str = r#"
ALTER TABLE conversations ADD COLUMN stateless INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN dialogue_digest BLOB;
CREATE INDEX idx_conversations_stateless_digest
    ON conversations (dialogue_digest, updated_at) WHERE stateless = 1;
"#;

/// Profiles and the box page: which profile answered a conversation (the export's
/// `pipeline_id`; the default profile is `default`), and where it came from (`api`, or `page`
/// for the box page's try-it chat).
const V5: &str = r#"
ALTER TABLE conversations ADD COLUMN profile TEXT NOT NULL DEFAULT 'default';
ALTER TABLE conversations ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';
"#;

/// All migrations, oldest first.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2), M::up(V3), M::up(V4), M::up(V5)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    #[test]
    fn every_database_gets_its_own_source_id() {
        let source_id = || {
            let mut conn = rusqlite::Connection::open_in_memory().unwrap();
            migrations().to_latest(&mut conn).unwrap();
            conn.query_row(
                "SELECT value FROM store_meta WHERE key = 'source_id'",
                [],
                |r| r.get::<_, String>(0),
            )
            .unwrap()
        };
        let (a, b) = (source_id(), source_id());
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
