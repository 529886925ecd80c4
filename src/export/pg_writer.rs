//! The PostgreSQL side of export: the documented table, the progress table, and writing one
//! batch.
//!
//! A batch is one transaction that locks this source's progress row, checks it still says
//! what the copier believes, appends the rows with binary COPY, moves the progress row and
//! sends `pg_notify`. Rows and progress commit together or not at all, so a process killed at
//! any moment resumes exactly where the last commit left off, and two exporters of the same
//! source queue on the lock instead of copying twice.
//!
//! An existing `messages` table is checked before anything is created or written: one made by
//! the original system's SQL is used as is; one of another shape is reported column by column.
//! The original's newer table ([`TableShape`]) is written too: its `pipeline_id` gets the
//! conversation's profile, and under its `UNIQUE (conversation_id, sequence_number)` a batch
//! goes through a temporary table and `INSERT … ON CONFLICT DO NOTHING`, so rows that are
//! already there are skipped instead of failing the batch for ever.

use tokio_postgres::Client;

use super::sqlite_batches::ExportRow;
use super::{BoxId, ExportError, pg_copy};
use crate::pg::{NOTIFY_CHANNEL, notify_payload};

/// The documented table and index, exactly.
pub const MESSAGES_DDL: &str = "\
CREATE TABLE IF NOT EXISTS messages (
    id BIGSERIAL PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    message_type VARCHAR(10) NOT NULL CHECK (message_type IN ('human', 'ai', 'tool')),
    content TEXT NOT NULL,
    sequence_number INTEGER NOT NULL CHECK (sequence_number >= 0),
    created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_messages_conversation ON messages (conversation_id, sequence_number);
";

/// How far each SQLite database (and box id) has been copied. The viewer reads the box ids.
pub const STATE_DDL: &str = "\
CREATE TABLE IF NOT EXISTS lang_agent_export_state (
    source_id TEXT NOT NULL,
    box_id TEXT NOT NULL DEFAULT '',
    last_id BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (source_id, box_id)
);
";

/// What the `messages` table holds beyond the documented columns: the original system's newer
/// table has both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableShape {
    /// A `pipeline_id TEXT` column: export fills it with the conversation's profile.
    pub pipeline_id: bool,
    /// A unique index on exactly (conversation_id, sequence_number): rows already there are
    /// skipped.
    pub unique_sequence: bool,
}

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type()`: `bigint`, `character varying(10)`, `timestamp with time zone` …
    pub type_name: String,
    pub not_null: bool,
    pub has_default: bool,
}

/// What a column of an existing table must be: the documented type first, then others that
/// hold the same values in the same binary form.
struct ExpectedColumn {
    name: &'static str,
    types: &'static [&'static str],
    needs_default: bool,
}

const MESSAGES_COLUMNS: &[ExpectedColumn] = &[
    // Export never writes `id`: any integer the table fills itself will do.
    ExpectedColumn {
        name: "id",
        types: &["bigint", "integer"],
        needs_default: true,
    },
    ExpectedColumn {
        name: "conversation_id",
        types: &["text"],
        needs_default: false,
    },
    ExpectedColumn {
        name: "message_type",
        types: &["character varying(10)", "character varying", "text"],
        needs_default: false,
    },
    ExpectedColumn {
        name: "content",
        types: &["text"],
        needs_default: false,
    },
    ExpectedColumn {
        name: "sequence_number",
        types: &["integer"],
        needs_default: false,
    },
    ExpectedColumn {
        name: "created_at",
        types: &["timestamp with time zone"],
        needs_default: false,
    },
];

const STATE_COLUMNS: &[ExpectedColumn] = &[
    ExpectedColumn {
        name: "source_id",
        types: &["text"],
        needs_default: false,
    },
    ExpectedColumn {
        name: "box_id",
        types: &["text"],
        needs_default: false,
    },
    ExpectedColumn {
        name: "last_id",
        types: &["bigint"],
        needs_default: false,
    },
    ExpectedColumn {
        name: "updated_at",
        types: &["timestamp with time zone"],
        needs_default: false,
    },
];

/// Checks `columns` of `table` against what export needs; `Err` names the first column that
/// is wrong.
fn check_columns(
    table: &str,
    columns: &[ColumnInfo],
    expected: &[ExpectedColumn],
) -> Result<(), ExportError> {
    let shape = |problem: String| ExportError::Shape {
        table: table.to_string(),
        problem,
    };
    for want in expected {
        let Some(have) = columns.iter().find(|c| c.name == want.name) else {
            return Err(shape(format!("missing column {}", want.name)));
        };
        if !want.types.contains(&have.type_name.as_str()) {
            return Err(shape(format!(
                "column {} is {}, expected {}",
                want.name, have.type_name, want.types[0]
            )));
        }
        if want.needs_default && !have.has_default {
            return Err(shape(format!(
                "column {} has no default, expected {} filled by a sequence (BIGSERIAL)",
                want.name, want.types[0]
            )));
        }
    }
    // A column of its own that the insert cannot leave out would make every COPY fail.
    if let Some(extra) = columns
        .iter()
        .find(|c| c.not_null && !c.has_default && !expected.iter().any(|e| e.name == c.name))
    {
        return Err(shape(format!(
            "column {} is NOT NULL without a default, and export does not fill it",
            extra.name
        )));
    }
    Ok(())
}

/// The columns of `table` as found through the search path, or `None` when there is none.
async fn table_columns(
    client: &Client,
    table: &str,
) -> Result<Option<Vec<ColumnInfo>>, ExportError> {
    let action = format!("reading the columns of table {table}");
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(|e| ExportError::postgres(&action, e))?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull,
                    atthasdef OR attidentity <> '' OR attgenerated <> ''
             FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
             ORDER BY attnum",
            &[&table],
        )
        .await
        .map_err(|e| ExportError::postgres(&action, e))?;
    Ok(Some(
        rows.iter()
            .map(|r| ColumnInfo {
                name: r.get(0),
                type_name: r.get(1),
                not_null: r.get(2),
                has_default: r.get(3),
            })
            .collect(),
    ))
}

/// Checks existing tables, then creates what is missing (the documented shape). Nothing is
/// created unless every existing table passes, so a mismatch leaves the database exactly as
/// it was. Returns the `messages` table's shape.
pub async fn prepare_schema(client: &mut Client) -> Result<TableShape, ExportError> {
    let messages = table_columns(client, "messages").await?;
    let mut shape = TableShape::default();
    if let Some(columns) = &messages {
        check_columns("messages", columns, MESSAGES_COLUMNS)?;
        shape = table_shape(client, columns).await?;
    }
    let state = table_columns(client, "lang_agent_export_state").await?;
    if let Some(columns) = &state {
        check_columns("lang_agent_export_state", columns, STATE_COLUMNS)?;
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| ExportError::postgres("starting the schema transaction", e))?;
    // Two exporters starting at once would otherwise race on CREATE … IF NOT EXISTS.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('lang_agent_export_schema'))",
        &[],
    )
    .await
    .map_err(|e| ExportError::postgres("locking the schema", e))?;
    if messages.is_none() {
        tx.batch_execute(MESSAGES_DDL)
            .await
            .map_err(|e| ExportError::postgres("CREATE TABLE messages", e))?;
    } else if !index_exists(&tx).await? {
        // An index is only an accelerator: lacking the right to add it is not worth failing.
        if let Err(e) = tx.batch_execute("SAVEPOINT idx").await {
            return Err(ExportError::postgres(
                "CREATE INDEX idx_messages_conversation",
                e,
            ));
        }
        match tx
            .batch_execute(
                "CREATE INDEX IF NOT EXISTS idx_messages_conversation \
                 ON messages (conversation_id, sequence_number)",
            )
            .await
        {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("export: cannot create index idx_messages_conversation: {e}");
                tx.batch_execute("ROLLBACK TO SAVEPOINT idx")
                    .await
                    .map_err(|e| {
                        ExportError::postgres("CREATE INDEX idx_messages_conversation", e)
                    })?;
            }
        }
    }
    if state.is_none() {
        tx.batch_execute(STATE_DDL)
            .await
            .map_err(|e| ExportError::postgres("CREATE TABLE lang_agent_export_state", e))?;
    }
    tx.commit()
        .await
        .map_err(|e| ExportError::postgres("committing the schema", e))?;
    Ok(shape)
}

/// The newer table's extras, if `messages` (with `columns`) has them.
async fn table_shape(client: &Client, columns: &[ColumnInfo]) -> Result<TableShape, ExportError> {
    let pipeline_id = match columns.iter().find(|c| c.name == "pipeline_id") {
        None => false,
        Some(c) if matches!(c.type_name.as_str(), "text" | "character varying") => true,
        Some(c) => {
            return Err(ExportError::Shape {
                table: "messages".into(),
                problem: format!("column pipeline_id is {}, expected text", c.type_name),
            });
        }
    };
    let unique_sequence = client
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_index i
                 WHERE i.indrelid = to_regclass('messages') AND i.indisunique
                   AND i.indpred IS NULL
                   AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                        FROM pg_attribute a
                        WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
                       = ARRAY['conversation_id', 'sequence_number'])",
            &[],
        )
        .await
        .map_err(|e| ExportError::postgres("reading the indexes of table messages", e))?
        .get(0);
    Ok(TableShape {
        pipeline_id,
        unique_sequence,
    })
}

async fn index_exists(tx: &tokio_postgres::Transaction<'_>) -> Result<bool, ExportError> {
    Ok(tx
        .query_one(
            "SELECT to_regclass('idx_messages_conversation') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| ExportError::postgres("looking for index idx_messages_conversation", e))?
        .get(0))
}

/// Makes the server give up on its own side too: a statement, or a transaction left idle (its
/// client gone mid-batch), ends after `limit` and releases the progress row's lock.
pub async fn set_session_timeouts(
    client: &Client,
    limit: std::time::Duration,
) -> Result<(), ExportError> {
    let ms = limit.as_millis();
    client
        .batch_execute(&format!(
            "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}"
        ))
        .await
        .map_err(|e| ExportError::postgres("setting statement_timeout", e))
}

/// This source's progress: creates its row at 0 on the first run, returns `last_id`.
pub async fn start_progress(
    client: &Client,
    source_id: &str,
    box_id: Option<&BoxId>,
) -> Result<i64, ExportError> {
    let box_key = box_id.map(BoxId::as_str).unwrap_or("");
    client
        .execute(
            "INSERT INTO lang_agent_export_state (source_id, box_id, last_id) VALUES ($1, $2, 0)
             ON CONFLICT (source_id, box_id) DO NOTHING",
            &[&source_id, &box_key],
        )
        .await
        .map_err(|e| ExportError::postgres("INSERT INTO lang_agent_export_state", e))?;
    Ok(client
        .query_one(
            "SELECT last_id FROM lang_agent_export_state WHERE source_id = $1 AND box_id = $2",
            &[&source_id, &box_key],
        )
        .await
        .map_err(|e| ExportError::postgres("SELECT FROM lang_agent_export_state", e))?
        .get(0))
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Committed; progress is now the last row's id. `inserted` rows were added (fewer than
    /// the batch when a unique key skipped rows already there).
    Committed { inserted: u64 },
    /// Someone else moved this source's progress meanwhile (another exporter of the same
    /// database); nothing was written, carry on from here.
    Moved(i64),
}

/// Appends `rows` (all with ids above `expected_last_id`) in one transaction.
pub async fn write_batch(
    client: &mut Client,
    source_id: &str,
    box_id: Option<&BoxId>,
    expected_last_id: i64,
    rows: &[ExportRow],
    shape: TableShape,
) -> Result<BatchOutcome, ExportError> {
    let Some(last) = rows.last() else {
        return Ok(BatchOutcome::Committed { inserted: 0 });
    };
    let box_key = box_id.map(BoxId::as_str).unwrap_or("");
    let tx = client
        .transaction()
        .await
        .map_err(|e| ExportError::postgres("starting a transaction", e))?;
    let current: i64 = tx
        .query_one(
            "SELECT last_id FROM lang_agent_export_state
             WHERE source_id = $1 AND box_id = $2 FOR UPDATE",
            &[&source_id, &box_key],
        )
        .await
        .map_err(|e| {
            ExportError::postgres("locking the progress row in lang_agent_export_state", e)
        })?
        .get(0);
    if current != expected_last_id {
        return Ok(BatchOutcome::Moved(current));
    }
    let inserted = pg_copy::add_rows(&tx, rows, shape).await?;
    tx.execute(
        "UPDATE lang_agent_export_state SET last_id = $3, updated_at = NOW()
         WHERE source_id = $1 AND box_id = $2",
        &[&source_id, &box_key, &last.source_id],
    )
    .await
    .map_err(|e| ExportError::postgres("UPDATE lang_agent_export_state", e))?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[
            &NOTIFY_CHANNEL,
            &notify_payload(rows.iter().map(|r| r.conversation_id.as_str())),
        ],
    )
    .await
    .map_err(|e| ExportError::postgres("pg_notify", e))?;
    tx.commit()
        .await
        .map_err(|e| ExportError::postgres("committing a batch", e))?;
    Ok(BatchOutcome::Committed { inserted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_name: &str, not_null: bool, has_default: bool) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_name: type_name.into(),
            not_null,
            has_default,
        }
    }

    fn documented() -> Vec<ColumnInfo> {
        vec![
            col("id", "bigint", true, true),
            col("conversation_id", "text", true, false),
            col("message_type", "character varying(10)", true, false),
            col("content", "text", true, false),
            col("sequence_number", "integer", true, false),
            col("created_at", "timestamp with time zone", false, true),
        ]
    }

    fn problem(columns: &[ColumnInfo]) -> String {
        check_columns("messages", columns, MESSAGES_COLUMNS)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_documented_shape_passes_and_harmless_extras_too() {
        let mut columns = documented();
        assert!(check_columns("messages", &columns, MESSAGES_COLUMNS).is_ok());
        columns.push(col("note", "text", false, false));
        columns.push(col("added", "timestamp with time zone", true, true));
        assert!(check_columns("messages", &columns, MESSAGES_COLUMNS).is_ok());
    }

    #[test]
    fn a_wrong_shape_names_the_column() {
        let mut columns = documented();
        columns[3] = col("content", "jsonb", true, false);
        assert_eq!(
            problem(&columns),
            "table messages: column content is jsonb, expected text; the data was left untouched"
        );
        let columns: Vec<_> = documented()
            .into_iter()
            .filter(|c| c.name != "sequence_number")
            .collect();
        assert!(problem(&columns).starts_with("table messages: missing column sequence_number"));
        let mut columns = documented();
        columns[0].has_default = false;
        assert!(problem(&columns).contains("column id has no default"));
        let mut columns = documented();
        columns.push(col("tenant", "text", true, false));
        assert!(problem(&columns).contains("column tenant is NOT NULL without a default"));
    }
}
