//! `export --sql FILE`: the whole log as a script `psql -f FILE` loads, for boxes with no
//! route to the database.
//!
//! The script creates the documented tables when missing and loads the rows into a temporary
//! table with COPY, then inserts only those above this source's progress in
//! `lang_agent_export_state` and moves it, all in one transaction. So loading the file twice,
//! loading an older file after a newer one, or mixing files with direct exports of the same
//! box, never duplicates a row: the file obeys the same watermark as `export --to`.

use std::io::Write;
use std::path::Path;

use super::pg_writer::{MESSAGES_DDL, STATE_DDL};
use super::sqlite_batches::{self, ExportRow};
use super::{ExportError, ExportOptions, ExportSummary, Progress};
use crate::pg::NOTIFY_CHANNEL;
use crate::store::Store;

/// Writes the script to `path` (through a temporary file, so a failed run leaves no
/// half-written script behind).
pub async fn write_sql_file(
    store: &Store,
    path: &Path,
    options: &ExportOptions,
    show_progress: bool,
) -> Result<ExportSummary, ExportError> {
    let started = std::time::Instant::now();
    let file_error = |source| ExportError::File {
        path: path.display().to_string(),
        source,
    };
    let source_id = sqlite_batches::source_id(store).await?;
    let box_key = options.box_id.as_ref().map(|b| b.as_str()).unwrap_or("");
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&partial).map_err(file_error)?,
    );
    let mut progress = if show_progress {
        Progress::new(sqlite_batches::count_after(store, 0).await?)
    } else {
        Progress::hidden()
    };

    out.write_all(header(&source_id, box_key).as_bytes())
        .map_err(file_error)?;
    let mut last_id = 0i64;
    let mut rows = 0u64;
    let mut line = String::new();
    loop {
        let batch =
            sqlite_batches::read_batch(store, last_id, options.batch_size, options.box_id.clone())
                .await?;
        let Some(last) = batch.last() else { break };
        last_id = last.source_id;
        for row in &batch {
            line.clear();
            copy_line(row, &mut line);
            out.write_all(line.as_bytes()).map_err(file_error)?;
        }
        rows += batch.len() as u64;
        progress.advance(batch.len() as u64);
    }
    out.write_all(footer(&source_id, box_key).as_bytes())
        .map_err(file_error)?;
    out.into_inner()
        .map_err(|e| file_error(e.into_error()))?
        .sync_all()
        .map_err(file_error)?;
    std::fs::rename(&partial, path).map_err(file_error)?;
    progress.finish();
    Ok(ExportSummary {
        rows,
        elapsed: started.elapsed(),
        last_id,
    })
}

fn header(source_id: &str, box_key: &str) -> String {
    format!(
        "-- lang-agent conversation log (source {source_id}, box '{box_key}'), written {now}.\n\
         -- Load with: psql -f THIS_FILE postgresql://user:password@host/database\n\
         -- Loading it again, or after another export of the same box, adds only missing rows.\n\
         \\set ON_ERROR_STOP on\n\
         SET client_encoding = 'UTF8';\n\
         BEGIN;\n\
         -- Concurrent loads and exporters must not race on creating the tables.\n\
         DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('lang_agent_export_schema')); END $$;\n\
         {MESSAGES_DDL}{STATE_DDL}\
         CREATE TEMP TABLE lang_agent_import (\n    \
             source_row BIGINT NOT NULL,\n    \
             conversation_id TEXT NOT NULL,\n    \
             message_type TEXT NOT NULL,\n    \
             content TEXT NOT NULL,\n    \
             sequence_number INTEGER NOT NULL,\n    \
             created_at TIMESTAMPTZ\n\
         ) ON COMMIT DROP;\n\
         COPY lang_agent_import FROM stdin;\n",
        now = crate::store::now_timestamp(),
    )
}

fn footer(source_id: &str, box_key: &str) -> String {
    let source = quote_literal(source_id);
    let box_key = quote_literal(box_key);
    let this = format!("source_id = {source} AND box_id = {box_key}");
    format!(
        "\\.\n\
         INSERT INTO lang_agent_export_state (source_id, box_id, last_id)\n    \
             VALUES ({source}, {box_key}, 0) ON CONFLICT (source_id, box_id) DO NOTHING;\n\
         -- Lock this source's progress so a direct export cannot interleave.\n\
         UPDATE lang_agent_export_state SET updated_at = updated_at WHERE {this};\n\
         INSERT INTO messages (conversation_id, message_type, content, sequence_number, created_at)\n\
         SELECT conversation_id, message_type, content, sequence_number, created_at\n\
         FROM lang_agent_import\n\
         WHERE source_row > (SELECT last_id FROM lang_agent_export_state WHERE {this})\n\
         ORDER BY source_row;\n\
         UPDATE lang_agent_export_state\n\
         SET last_id = GREATEST(last_id, (SELECT COALESCE(MAX(source_row), 0) FROM lang_agent_import)),\n    \
             updated_at = NOW()\n\
         WHERE {this};\n\
         NOTIFY {NOTIFY_CHANNEL}, '{{\"conversations\":null}}';\n\
         COMMIT;\n"
    )
}

/// One row of `COPY … FROM stdin` text format.
fn copy_line(row: &ExportRow, line: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(line, "{}\t", row.source_id);
    copy_escape(&row.conversation_id, line);
    line.push('\t');
    copy_escape(&row.message_type, line);
    line.push('\t');
    copy_escape(&row.content, line);
    let _ = writeln!(
        line,
        "\t{}\t{}",
        row.sequence_number,
        row.created_at.format("%Y-%m-%d %H:%M:%S%.6f+00")
    );
}

/// COPY text format: backslash, tab, newline and carriage return are escaped; nothing else.
fn copy_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_escape_what_copy_would_misread() {
        let row = ExportRow {
            source_id: 42,
            conversation_id: "box/c\t1".into(),
            message_type: "ai".into(),
            content: "line 1\nline 2\r\n\\.\n\\N".into(),
            sequence_number: 3,
            created_at: chrono::DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            pipeline_id: "default".into(),
        };
        let mut line = String::new();
        copy_line(&row, &mut line);
        assert_eq!(
            line,
            "42\tbox/c\\t1\tai\tline 1\\nline 2\\r\\n\\\\.\\n\\\\N\t3\t2025-01-02 03:04:05.678000+00\n"
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
