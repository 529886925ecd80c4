//! Writing a batch's rows into `messages`: one binary COPY into the table, or, under the
//! newer table's `UNIQUE (conversation_id, sequence_number)`, a COPY into a temporary table
//! and `INSERT … ON CONFLICT DO NOTHING`, so rows already there are skipped instead of failing
//! the batch (and the follower) for ever. The transaction around it is `pg_writer`'s.

use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::ExportError;
use super::pg_writer::TableShape;
use super::sqlite_batches::ExportRow;

/// The documented columns export writes, in COPY order, with the types it sends.
const COLUMNS: &str = "conversation_id, message_type, content, sequence_number, created_at";
const COPY_TYPES: [Type; 5] = [
    Type::TEXT,
    Type::VARCHAR,
    Type::TEXT,
    Type::INT4,
    Type::TIMESTAMPTZ,
];

/// Where a batch waits before it joins a table with a unique (conversation, sequence) key;
/// one per connection, emptied at every commit.
const BATCH_TABLE_DDL: &str = "\
CREATE TEMP TABLE IF NOT EXISTS lang_agent_export_batch (
    conversation_id TEXT, message_type VARCHAR(10), content TEXT, sequence_number INTEGER,
    created_at TIMESTAMPTZ, pipeline_id TEXT, source_id BIGINT
) ON COMMIT DELETE ROWS";

/// Adds `rows` to `messages` inside `tx`; returns how many were added (fewer than the batch
/// only under a unique key, when some were already there).
pub async fn add_rows(
    tx: &Transaction<'_>,
    rows: &[ExportRow],
    shape: TableShape,
) -> Result<u64, ExportError> {
    if shape.unique_sequence {
        insert_new_rows(tx, rows, shape).await
    } else {
        copy_rows(tx, rows, shape).await?;
        Ok(rows.len() as u64)
    }
}

/// The `messages` columns a batch fills in this table.
fn target_columns(shape: TableShape) -> String {
    if shape.pipeline_id {
        format!("{COLUMNS}, pipeline_id")
    } else {
        COLUMNS.to_string()
    }
}

/// COPYs `rows` straight into `messages`.
async fn copy_rows(
    tx: &Transaction<'_>,
    rows: &[ExportRow],
    shape: TableShape,
) -> Result<(), ExportError> {
    let columns = target_columns(shape);
    copy_into(
        tx,
        &format!("messages ({columns})"),
        rows,
        shape.pipeline_id,
        false,
    )
    .await
}

/// COPYs `rows` into the batch table, then adds those `messages` does not hold yet, in the
/// source's order; a clash with a row already there is skipped (and counted in the log).
async fn insert_new_rows(
    tx: &Transaction<'_>,
    rows: &[ExportRow],
    shape: TableShape,
) -> Result<u64, ExportError> {
    tx.batch_execute(BATCH_TABLE_DDL)
        .await
        .map_err(|e| ExportError::postgres("CREATE TEMP TABLE lang_agent_export_batch", e))?;
    let all = format!("{COLUMNS}, pipeline_id, source_id");
    copy_into(
        tx,
        &format!("lang_agent_export_batch ({all})"),
        rows,
        true,
        true,
    )
    .await?;
    let columns = target_columns(shape);
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO messages ({columns})
                 SELECT {columns} FROM lang_agent_export_batch ORDER BY source_id
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await
        .map_err(|e| ExportError::postgres("INSERT INTO messages", e))?;
    let skipped = rows.len() as u64 - inserted;
    if skipped > 0 {
        tracing::info!(
            skipped,
            "export: rows already in PostgreSQL (same conversation_id and sequence_number) were skipped"
        );
    }
    Ok(inserted)
}

/// One binary COPY of `rows` into `target` (a table and its column list): the documented
/// columns, then `pipeline_id` and the source id when asked.
async fn copy_into(
    tx: &Transaction<'_>,
    target: &str,
    rows: &[ExportRow],
    pipeline_id: bool,
    source_id: bool,
) -> Result<(), ExportError> {
    let action = format!("COPY into {}", target.split(' ').next().unwrap_or(target));
    let sink = tx
        .copy_in(&format!("COPY {target} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(|e| ExportError::postgres(&action, e))?;
    let mut types = COPY_TYPES.to_vec();
    if pipeline_id {
        types.push(Type::TEXT);
    }
    if source_id {
        types.push(Type::INT8);
    }
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for row in rows {
        let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &row.conversation_id,
            &row.message_type,
            &row.content,
            &row.sequence_number,
            &row.created_at,
        ];
        if pipeline_id {
            values.push(&row.pipeline_id);
        }
        if source_id {
            values.push(&row.source_id);
        }
        writer
            .as_mut()
            .write(&values)
            .await
            .map_err(|e| ExportError::postgres(&action, e))?;
    }
    writer
        .finish()
        .await
        .map_err(|e| ExportError::postgres(&action, e))?;
    Ok(())
}
