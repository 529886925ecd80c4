//! The SQLite store: conversation log, thread memory and per-turn metrics in one file.
//!
//! SQLite is the default store because a box must work with no set-up: [`Store::open`] creates
//! the data directory and the database on first start and brings the schema up to date. All
//! database work runs on tokio's blocking pool ([`Store::run`]) so a slow disk never stalls the
//! async runtime. Every change to the log is also announced on a broadcast channel
//! ([`StoreEvent`]) so the viewer can push live updates without polling the database.
//! `serve` opens it with [`Store::open_for_serve`], which also makes the files private and
//! closes turns a previous run left `running`.

mod answered_turns;
pub mod backup;
mod checkpoint;
mod delete;
mod dialogue_digest;
mod files;
mod health;
mod log;
mod retention;
mod schema;
mod search_index;
mod turn_rows;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use tokio::sync::broadcast;

use health::{DataDisk, WriterState};
use writer::Writer;

pub use answered_turns::AnsweredTurn;
pub use dialogue_digest::{DialogueDigest, STATELESS_CONTINUE_WITHIN_HOURS};
pub use health::{MIN_FREE_DISK_BYTES, StoreHealth, disk_free_bytes};
pub use log::{ConversationTags, DEFAULT_PROFILE, MessageKind, NewMessage, Origin, StoredMessage};
pub use turn_rows::{TurnOutcome, TurnStatus};

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database schema migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database task failed: {0}")]
    Task(String),
    #[error("{0}")]
    DiskFull(String),
}

/// A change to the conversation log, named as the viewer's SSE events are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    ConversationNew(String),
    ConversationUpdated(String),
    ConversationDeleted(String),
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Readers: any number at once (WAL).
    pool: Pool<SqliteConnectionManager>,
    /// The one writing connection (group commit). SQLite admits one writer at a time anyway;
    /// queueing writes in-process, rather than letting connections collide and back off in
    /// SQLite's busy handler (which sleeps in whole milliseconds), keeps writes fast under load.
    writer: Writer,
    writer_state: WriterState,
    disk: DataDisk,
    /// The database file, whose size (with its WAL) the metrics report.
    path: Arc<Path>,
    events: broadcast::Sender<StoreEvent>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it to the newest schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_as(path, false)
    }

    /// Opens the database as the one server writing it: as [`Store::open`], and the data
    /// directory and database files are made private to their owner, and the turns a previous
    /// run left `running` (it was killed, or lost its disk) are closed as interrupted.
    pub fn open_for_serve(path: &Path) -> Result<Store, StoreError> {
        Store::open_as(path, true)
    }

    fn open_as(path: &Path, serving: bool) -> Result<Store, StoreError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        files::create_private_dir(&dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        if serving {
            files::make_private(&dir);
        }
        let mut writer = rusqlite::Connection::open(path)?;
        if serving {
            // SQLite gives the WAL and shared-memory files the database file's mode.
            files::sqlite_files(path)
                .iter()
                .for_each(|f| files::make_private(f));
        }
        configure_writer(&mut writer)?;
        schema::migrations().to_latest(&mut writer)?;
        if serving {
            let closed = turn_rows::close_abandoned(&writer)?;
            if closed > 0 {
                tracing::warn!(
                    "closed {closed} turns left running by the previous run as interrupted"
                );
            }
        }
        let manager = SqliteConnectionManager::file(path).with_init(configure_reader);
        // Readers are opened when a load needs them and closed a minute after it: each holds
        // a page cache, and an idle box should give that memory back.
        let pool = Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .idle_timeout(Some(Duration::from_secs(60)))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        let (events, _) = broadcast::channel(1024);
        let mut checkpoints = rusqlite::Connection::open(path)?;
        configure(&mut checkpoints)?;
        let writer = Writer::start(writer, checkpoints).map_err(|source| StoreError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Store {
            pool,
            writer_state: writer.state(),
            writer,
            disk: DataDisk(dir),
            path: Arc::from(path),
            events,
        })
    }

    /// Runs `work` as one atomic write (a savepoint in the writer's next group commit);
    /// resolves once it is committed.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(work).await
    }

    /// Runs `work` with a pooled (reading) connection on the blocking thread pool.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Live changes to the log.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    fn announce(&self, event: StoreEvent) {
        // No subscriber is the normal case when nobody has the viewer open.
        let _ = self.events.send(event);
    }

    /// The database's files (main, WAL, shared memory) together, in bytes: a few `stat`s.
    pub fn size_bytes(&self) -> u64 {
        files::sqlite_files(&self.path)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Times every write from now on in `metrics` (`lang_agent_store_write_duration_seconds`).
    pub fn time_writes(&self, metrics: Arc<crate::metrics::Metrics>) {
        self.writer.time_writes(metrics);
    }

    /// Writes queued for the writer thread, not yet taken into a batch.
    pub fn writer_queue(&self) -> usize {
        self.writer.queued()
    }

    /// The WAL's size in pages after the last commit.
    pub fn wal_pages(&self) -> u64 {
        u64::try_from(self.writer.wal().pages()).unwrap_or(0)
    }

    /// Frees the writer's page cache (`PRAGMA shrink_memory`), for when the box has gone
    /// idle. A load fills it with up to 2 MB of pages, each its own allocation, and the
    /// allocator can give back no page a live one sits in; the next turn reads the pages it
    /// needs again from the operating system's cache. Readers need no such call: an idle
    /// one is closed after a minute, and its cache with it.
    pub async fn release_caches(&self) -> Result<(), StoreError> {
        self.write(|conn| Ok(conn.execute_batch("PRAGMA shrink_memory")?))
            .await
    }

    /// Checks that the database answers (for `/health`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

/// Settings of every connection. WAL lets the viewer and `export` read while the server
/// writes; NORMAL sync is durable across process crashes, which is what a box meets.
///
/// The query planner's stability guarantee (QPSG) keeps a cached statement's plan whatever
/// values are bound. Without it SQLite re-plans a statement whose `LIMIT ?` gets a new value,
/// which every turn's history read does: the statement cache saved nothing and each turn
/// compiled its SQL again (seen under callgrind and perf as `sqlite3Reprepare`).
fn configure(conn: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )
}

/// The writer's settings: a batch's savepoints keep their undo pages in memory (by default
/// SQLite spills them to a temporary file past 64 KiB, a write per page under a load).
fn configure_writer(conn: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
    configure(conn)?;
    conn.execute_batch("PRAGMA temp_store = MEMORY;")
}

/// A pooled reader's settings: a smaller page cache than SQLite's 2 MiB default, as eight of
/// them can be open under a load. A reader finds a thread's history in a few pages, and the
/// system's file cache holds the rest.
fn configure_reader(conn: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
    configure(conn)?;
    conn.execute_batch("PRAGMA cache_size = -512;")
}

/// Now, as stored: RFC 3339 UTC with milliseconds, which sorts as text and which PostgreSQL
/// reads into `TIMESTAMPTZ` as is.
pub fn now_timestamp() -> String {
    timestamp(chrono::Utc::now())
}

/// `at`, as stored: `2026-12-03T01:02:03.456Z`. Written directly rather than through a
/// `format` string, which chrono parses again on every call (a turn stores several).
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
pub(crate) fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("t.sqlite3")).expect("open store");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    #[tokio::test]
    async fn a_cached_statement_keeps_its_plan_when_its_limit_changes() {
        let (_dir, store) = open_temp();
        // The shape of a turn's history read: a new `LIMIT ?` value each time.
        let reprepared = store
            .run(|c| {
                let mut s = c.prepare_cached(
                    "SELECT id FROM messages WHERE conversation_id = ?1 AND in_context = 1
                     ORDER BY sequence_number DESC LIMIT ?2",
                )?;
                for limit in 1..=5_i64 {
                    let rows =
                        s.query_map(rusqlite::params!["t", limit], |r| r.get::<_, i64>(0))?;
                    rows.for_each(drop);
                }
                Ok(s.get_status(StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(reprepared, 0, "each new limit compiled the statement again");
    }

    /// The bytes the writer's page cache holds (`SQLITE_DBSTATUS_CACHE_USED`).
    async fn writer_cache_bytes(store: &Store) -> i64 {
        store
            .write(|c| {
                let (mut used, mut highest) = (0, 0);
                // SAFETY: the handle is the live connection the job was given; the call only
                // reads its counters.
                let rc = unsafe {
                    rusqlite::ffi::sqlite3_db_status(
                        c.handle(),
                        rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                        &mut used,
                        &mut highest,
                        0,
                    )
                };
                assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
                Ok(i64::from(used))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn releasing_the_caches_empties_the_writers_page_cache() {
        let (_dir, store) = open_temp();
        for i in 0..200 {
            let text = format!("turn {i}: {}", "a long answer ".repeat(200));
            store
                .append(
                    &format!("thread-{}", i % 20),
                    None,
                    None,
                    vec![NewMessage::new(MessageKind::Ai, text)],
                )
                .await
                .unwrap();
        }
        let filled = writer_cache_bytes(&store).await;
        assert!(filled > 400_000, "the writes filled the cache: {filled} B");
        store.release_caches().await.unwrap();
        let released = writer_cache_bytes(&store).await;
        assert!(
            released < filled / 10,
            "{released} B of {filled} B still cached"
        );
        // The store works on after it, reading back what it no longer caches.
        store
            .append(
                "thread-1",
                None,
                None,
                vec![NewMessage::new(MessageKind::Human, "more")],
            )
            .await
            .unwrap();
    }

    #[test]
    fn timestamps_keep_their_stored_shape() {
        use chrono::TimeZone;
        // The shape every stored row has had: the viewer, export and retention compare these
        // as text, so a new writer of them must not change it.
        for (secs, millis, stored) in [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (1_796_000_000, 7, "2026-11-30T00:53:20.007Z"),
            (1_796_086_399, 999, "2026-12-01T00:53:19.999Z"),
        ] {
            let at = chrono::Utc.timestamp_opt(secs, millis * 1_000_000).unwrap();
            assert_eq!(timestamp(at), stored);
            assert_eq!(
                timestamp(at),
                at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            );
        }
        // Sub-millisecond digits are cut, not rounded, as before.
        let at = chrono::Utc.timestamp_opt(0, 999_999).unwrap();
        assert_eq!(timestamp(at), "1970-01-01T00:00:00.000Z");
    }
}
