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

/// The kind checks of `messages` and `turns`, as V1 wrote them and as V6 leaves them: the
/// same values allowed, compared one by one. SQLite checks `x IN ('a', 'b', 'c')` (more than
/// two constants) by building a temporary b-tree of the list, with its own pager and page
/// cache, for every row written: four a turn (its `turns` row and status, a message each way),
/// half the writer's instructions per turn (callgrind, `cargo bench --bench instructions`).
const KIND_CHECKS: [(&str, &str, &str); 2] = [
    (
        "messages",
        "CHECK (message_type IN ('human', 'ai', 'tool'))",
        "CHECK (message_type = 'human' OR message_type = 'ai' OR message_type = 'tool')",
    ),
    (
        "turns",
        "CHECK (status IN ('running', 'done', 'interrupted', 'failed'))",
        "CHECK (status = 'running' OR status = 'done' OR status = 'interrupted' \
         OR status = 'failed')",
    ),
];

/// V6: the kind checks compare one value at a time ([`KIND_CHECKS`]). A CHECK cannot be
/// altered, and rebuilding `messages` would copy the whole log; SQLite documents editing the
/// table's definition in place for a change that leaves the stored rows as they are
/// (<https://sqlite.org/lang_altertable.html#otheralter>): the new checks allow exactly what
/// the old ones did. The schema version is raised so that every other open connection reads
/// the new definitions, and `RESET` has this one read them again too.
fn compare_kinds_one_by_one(tx: &rusqlite::Transaction<'_>) -> rusqlite_migration::HookResult {
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.execute_batch("PRAGMA writable_schema = ON")?;
    for (table, old, new) in KIND_CHECKS {
        tx.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?2, ?3) WHERE type = 'table' AND name = ?1",
            [table, old, new],
        )?;
    }
    tx.execute_batch(&format!(
        "PRAGMA schema_version = {}; PRAGMA writable_schema = RESET;",
        version + 1
    ))?;
    Ok(())
}

/// All migrations, oldest first.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2),
        M::up(V3),
        M::up(V4),
        M::up(V5),
        M::up_with_hook("", compare_kinds_one_by_one),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    fn latest() -> rusqlite::Connection {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrations().to_latest(&mut conn).unwrap();
        conn
    }

    /// Whether SQLite compiles `sql` to a temporary b-tree (`OpenEphemeral`).
    fn builds_temporary_btree(conn: &rusqlite::Connection, sql: &str) -> bool {
        let mut explain = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        explain
            .query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .map(Result::unwrap)
            .any(|op| op == "OpenEphemeral")
    }

    const WRITES_OF_A_TURN: [&str; 3] = [
        "INSERT INTO turns (conversation_id, model, status, started_at)
         VALUES ('c', 'm', 'running', 't')",
        "UPDATE turns SET status = 'done', finished_at = 't' WHERE id = 1",
        "INSERT INTO messages (conversation_id, message_type, content, sequence_number,
             created_at, turn_id)
         VALUES ('c', 'human', 'hello', 1, 't', 1)",
    ];

    #[test]
    fn a_turns_rows_are_checked_without_a_temporary_table() {
        let conn = latest();
        for sql in WRITES_OF_A_TURN {
            assert!(
                !builds_temporary_btree(&conn, sql),
                "{sql} builds a temporary b-tree"
            );
        }
    }

    #[test]
    fn the_kind_checks_still_refuse_unknown_kinds() {
        let conn = latest();
        conn.execute_batch(
            "INSERT INTO conversations (conversation_id, created_at, updated_at)
             VALUES ('c', 't', 't')",
        )
        .unwrap();
        let turn = |status: &str| {
            conn.execute(
                "INSERT INTO turns (conversation_id, model, status, started_at)
                 VALUES ('c', 'm', ?1, 't')",
                [status],
            )
        };
        for status in ["running", "done", "interrupted", "failed"] {
            turn(status).unwrap();
        }
        let refused = turn("finished").unwrap_err().to_string();
        assert!(refused.contains("CHECK constraint failed"), "{refused}");
        let message = |kind: &str, seq: i64| {
            conn.execute(
                "INSERT INTO messages (conversation_id, message_type, content, sequence_number,
                     created_at)
                 VALUES ('c', ?1, 'x', ?2, 't')",
                rusqlite::params![kind, seq],
            )
        };
        for (seq, kind) in ["human", "ai", "tool"].into_iter().enumerate() {
            message(kind, seq as i64).unwrap();
        }
        let refused = message("system", 9).unwrap_err().to_string();
        assert!(refused.contains("CHECK constraint failed"), "{refused}");
    }

    #[test]
    fn a_database_from_before_keeps_its_rows_and_every_connection_sees_the_new_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let mut old = rusqlite::Connection::open(&path).unwrap();
        migrations().to_version(&mut old, 5).unwrap();
        old.execute_batch(
            "INSERT INTO conversations (conversation_id, created_at, updated_at)
             VALUES ('c', 't', 't');
             INSERT INTO turns (conversation_id, model, status, started_at)
             VALUES ('c', 'm', 'done', 't');
             INSERT INTO messages (conversation_id, message_type, content, sequence_number,
                 created_at, turn_id)
             VALUES ('c', 'human', 'hello', 1, 't', 1), ('c', 'ai', 'hi', 2, 't', 1);",
        )
        .unwrap();
        // Another connection, open (its schema read) before the migration: a viewer's.
        let other = rusqlite::Connection::open(&path).unwrap();
        assert!(builds_temporary_btree(&other, WRITES_OF_A_TURN[2]));

        migrations().to_latest(&mut old).unwrap();

        let check: String = old
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let kept: i64 = other
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2);
        for conn in [&old, &other] {
            for sql in WRITES_OF_A_TURN {
                assert!(!builds_temporary_btree(conn, sql), "{sql}");
            }
        }
        let definitions: String = other
            .query_row(
                "SELECT group_concat(sql) FROM sqlite_schema WHERE name IN ('messages', 'turns')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        for (_, old_check, new_check) in KIND_CHECKS {
            assert!(!definitions.contains(old_check), "{definitions}");
            assert!(definitions.contains(new_check), "{definitions}");
        }
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
