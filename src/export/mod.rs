//! Export of the conversation log to PostgreSQL, in the documented `messages` shape.
//!
//! The box logs to SQLite so it works with nothing else running; export copies that log to a
//! central PostgreSQL for the original system's viewer, scripts and dashboards. The copy is
//! incremental by SQLite `id` watermark, kept in PostgreSQL next to the rows
//! (`lang_agent_export_state`) and moved in the same transaction as each batch, so a re-run
//! copies nothing twice and a killed run loses nothing. This file holds the options and the
//! copy loop; the PostgreSQL and SQLite sides, the `--sql` file, `--follow` and the progress
//! display each have their own file.

mod error;
mod follow;
mod pg_copy;
mod pg_writer;
mod progress;
mod sql_file;
mod sqlite_batches;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::DropGuard;

use crate::pg::PgTarget;
use crate::store::Store;

pub use error::ExportError;
pub use follow::{DEFAULT_FOLLOW_INTERVAL_SECS, FollowOptions, follow, spawn_follower};
pub use pg_writer::{MESSAGES_DDL, STATE_DDL};
pub use progress::Progress;
pub use sql_file::write_sql_file;

use pg_writer::{BatchOutcome, TableShape};

/// Messages per transaction unless `--batch-size` says otherwise: large enough that COPY
/// dominates the per-transaction round trips, small enough to commit every fraction of a second.
pub const DEFAULT_BATCH_SIZE: usize = 10_000;

/// How long PostgreSQL may take to answer connecting or one batch before it is taken as
/// stalled (`export --stall-timeout-secs`). A stopped or wedged server keeps the socket open
/// and its kernel acknowledges everything, so only a deadline of our own notices it.
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 30;

/// A box id that is not `[A-Za-z0-9._-]{1,64}`. The message starts with the name given; the
/// flag that gave it (`--box-id`, `serve --export-box-id`) goes before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: use 1 to 64 characters among A-Z a-z 0-9 . _ -")]
pub struct BadBoxId(pub String);

/// A box's name in a shared table: the prefix of its conversation ids (`<box-id>/<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxId(String);

impl BoxId {
    /// Accepts `[A-Za-z0-9._-]{1,64}`: safe in a URL path, a file name and a log line.
    pub fn parse(name: &str) -> Result<BoxId, BadBoxId> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(BoxId(name.to_string()))
        } else {
            Err(BadBoxId(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How to copy: shared by `export`, `export --follow`, `export --sql` and serve's follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub box_id: Option<BoxId>,
    pub batch_size: usize,
    /// Longest wait for PostgreSQL to connect or to take one batch; also the session's
    /// `statement_timeout`.
    pub stall_timeout: Duration,
}

impl ExportOptions {
    pub fn new(box_id: Option<&str>, batch_size: usize) -> Result<ExportOptions, ExportError> {
        if batch_size == 0 {
            return Err(ExportError::BadBatchSize);
        }
        Ok(ExportOptions {
            box_id: box_id.map(BoxId::parse).transpose()?,
            batch_size,
            stall_timeout: Duration::from_secs(DEFAULT_STALL_TIMEOUT_SECS),
        })
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            box_id: None,
            batch_size: DEFAULT_BATCH_SIZE,
            stall_timeout: Duration::from_secs(DEFAULT_STALL_TIMEOUT_SECS),
        }
    }
}

/// Messages stored after `exported_up_to` (the follower's [`crate::metrics::ExportPosition`]):
/// the export's lag, counted at scrape time.
pub async fn rows_after(store: &Store, exported_up_to: i64) -> Result<u64, ExportError> {
    sqlite_batches::count_after(store, exported_up_to).await
}

/// What one run copied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportSummary {
    pub rows: u64,
    pub elapsed: Duration,
    /// The highest SQLite id now in PostgreSQL.
    pub last_id: i64,
}

impl ExportSummary {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A connection to the target, with the schema ready and this source's progress row made.
pub struct Exporter {
    client: Client,
    /// Closes the connection when the exporter drops (after `client`, so politely if it can).
    _connection: DropGuard,
    store: Store,
    source_id: String,
    options: ExportOptions,
    last_id: i64,
    /// The `messages` table's shape, as found at connect.
    shape: TableShape,
}

impl Exporter {
    /// Connects, checks or creates the tables, and reads where this source left off; all
    /// within the stall deadline.
    pub async fn connect(
        store: &Store,
        target: &PgTarget,
        options: &ExportOptions,
    ) -> Result<Exporter, ExportError> {
        let source_id = sqlite_batches::source_id(store).await?;
        let limit = options.stall_timeout;
        let (client, connection, last_id, shape) = within(limit, "connecting", async {
            let (mut client, connection) = target
                .connect()
                .await
                .map_err(|e| ExportError::connect(target.redacted(), e))?;
            pg_writer::set_session_timeouts(&client, limit).await?;
            let shape = pg_writer::prepare_schema(&mut client).await?;
            let last_id =
                pg_writer::start_progress(&client, &source_id, options.box_id.as_ref()).await?;
            Ok((client, connection, last_id, shape))
        })
        .await?;
        Ok(Exporter {
            client,
            _connection: connection,
            store: store.clone(),
            source_id,
            options: options.clone(),
            last_id,
            shape,
        })
    }

    /// The highest SQLite id already in PostgreSQL.
    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    /// Messages stored but not exported yet.
    pub async fn pending(&self) -> Result<u64, ExportError> {
        sqlite_batches::count_after(&self.store, self.last_id).await
    }

    /// Copies every message stored so far, batch by batch; `progress` hears of each commit.
    /// The next batch is read from SQLite while the current one is written to PostgreSQL.
    pub async fn copy_new(
        &mut self,
        progress: &mut Progress,
    ) -> Result<ExportSummary, ExportError> {
        let started = Instant::now();
        let mut copied = 0u64;
        let mut next = self.spawn_read(self.last_id);
        loop {
            let batch = join_read(next).await?;
            let Some(batch_last) = batch.last().map(|r| r.source_id) else {
                break;
            };
            next = self.spawn_read(batch_last);
            // Dropped at the deadline, the transaction never commits; the connection is then
            // dropped too, and the next one resumes from the progress PostgreSQL has.
            let outcome = within(
                self.options.stall_timeout,
                "writing a batch",
                pg_writer::write_batch(
                    &mut self.client,
                    &self.source_id,
                    self.options.box_id.as_ref(),
                    self.last_id,
                    &batch,
                    self.shape,
                ),
            )
            .await;
            match outcome {
                Ok(BatchOutcome::Committed { inserted }) => {
                    self.last_id = batch_last;
                    copied += inserted;
                    progress.advance(batch.len() as u64);
                }
                Ok(BatchOutcome::Moved(elsewhere)) => {
                    tracing::info!(
                        "export: another exporter of this database moved on to id {elsewhere}; following it"
                    );
                    next.abort();
                    self.last_id = elsewhere;
                    next = self.spawn_read(elsewhere);
                }
                Err(e) => {
                    next.abort();
                    return Err(e);
                }
            }
        }
        Ok(ExportSummary {
            rows: copied,
            elapsed: started.elapsed(),
            last_id: self.last_id,
        })
    }

    /// Starts reading the batch after `after_id` on the blocking pool, right away.
    fn spawn_read(
        &self,
        after_id: i64,
    ) -> tokio::task::JoinHandle<Result<Vec<sqlite_batches::ExportRow>, ExportError>> {
        let store = self.store.clone();
        let limit = self.options.batch_size;
        let box_id = self.options.box_id.clone();
        tokio::spawn(
            async move { sqlite_batches::read_batch(&store, after_id, limit, box_id).await },
        )
    }
}

/// `work`, or [`ExportError::Stalled`] when it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    action: &str,
    work: impl Future<Output = Result<T, ExportError>>,
) -> Result<T, ExportError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(ExportError::Stalled {
            action: action.to_string(),
            after: limit,
        })
    })
}

async fn join_read(
    handle: tokio::task::JoinHandle<Result<Vec<sqlite_batches::ExportRow>, ExportError>>,
) -> Result<Vec<sqlite_batches::ExportRow>, ExportError> {
    handle
        .await
        .map_err(|e| ExportError::Store(crate::store::StoreError::Task(e.to_string())))?
}

/// One complete run: connect, prepare, copy everything stored so far.
pub async fn export_once(
    store: &Store,
    target: &PgTarget,
    options: &ExportOptions,
    show_progress: bool,
) -> Result<ExportSummary, ExportError> {
    let mut exporter = Exporter::connect(store, target, options).await?;
    let pending = exporter.pending().await?;
    let mut progress = if show_progress {
        Progress::new(pending)
    } else {
        Progress::hidden()
    };
    let summary = exporter.copy_new(&mut progress).await;
    progress.finish();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_ids_are_short_plain_names() {
        for good in ["kitchen", "box-01", "a.b_c", &"x".repeat(64)] {
            assert_eq!(BoxId::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "has space", "slash/inside", "ünïcode", &"x".repeat(65)] {
            let err = BoxId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("A-Z a-z 0-9 . _ -"), "{err}");
        }
        assert!(matches!(
            ExportOptions::new(None, 0),
            Err(ExportError::BadBatchSize)
        ));
    }
}
