//! Whether the store can take writes: the writer's last failure and the data disk's free space.
//!
//! `/health` reports both, and a new turn is refused at once (rather than accepted and then
//! lost) while the disk is full. Both are read fresh each time, so when space returns the box
//! recovers by itself: no restart, no operator step.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Store, StoreError};

/// Below this much free space on the data disk, new turns are refused and `/health` fails:
/// enough headroom that SQLite's own writes (WAL growth, checkpoints) still succeed for the
/// turns already running.
pub const MIN_FREE_DISK_BYTES: u64 = 64 << 20;

/// After a write failed for lack of space, new turns are refused for this long; then one is
/// let through to find out whether space came back (SQLite's limit may not be the disk's).
const FULL_RETRY_AFTER: Duration = Duration::from_secs(2);

/// A write that failed for a reason of the storage itself (not of the data written).
#[derive(Debug, Clone)]
struct WriteFailure {
    message: String,
    /// SQLite said the disk (or the database) is full.
    full: bool,
    at: Instant,
}

/// The writer's last storage failure, cleared by the next write that commits.
#[derive(Clone, Default)]
pub(super) struct WriterState(Arc<Mutex<Option<WriteFailure>>>);

impl WriterState {
    /// Records `error` if it is the storage's fault; returns whether it was.
    pub(super) fn failed(&self, error: &rusqlite::Error) -> bool {
        let Some(full) = storage_failure(error) else {
            return false;
        };
        let failure = WriteFailure {
            message: error.to_string(),
            full,
            at: Instant::now(),
        };
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(failure);
        true
    }

    pub(super) fn succeeded(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn last(&self) -> Option<WriteFailure> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `Some(full)` when `error` comes from the storage (disk full, I/O error, read-only or
/// vanished file); `None` for errors of the statement or its data.
fn storage_failure(error: &rusqlite::Error) -> Option<bool> {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code()? {
        ErrorCode::DiskFull => Some(true),
        ErrorCode::SystemIoFailure | ErrorCode::ReadOnly | ErrorCode::CannotOpen => Some(false),
        _ => None,
    }
}

/// Free bytes for unprivileged writers on the file system holding `dir`; `None` if unknown.
pub fn disk_free_bytes(dir: &Path) -> Option<u64> {
    match rustix::fs::statvfs(dir) {
        Ok(stats) => Some(stats.f_bavail.saturating_mul(stats.f_frsize)),
        Err(e) => {
            tracing::debug!("cannot read free space of {}: {e}", dir.display());
            None
        }
    }
}

/// What `/health` reports about the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// What fails: a read, or the last write (when none has succeeded since); `None` if all is well.
    pub database_error: Option<String>,
    pub disk_free_bytes: Option<u64>,
}

impl StoreHealth {
    pub fn disk_low(&self) -> bool {
        self.disk_free_bytes
            .is_some_and(|free| free < MIN_FREE_DISK_BYTES)
    }

    pub fn is_ok(&self) -> bool {
        self.database_error.is_none() && !self.disk_low()
    }
}

/// Where the store's files live, for the free-space check.
#[derive(Clone)]
pub(super) struct DataDisk(pub(super) PathBuf);

impl Store {
    /// The database's state: it answers a read, its last write did not fail, and its disk has
    /// room.
    pub async fn health(&self) -> StoreHealth {
        let disk_free_bytes = disk_free_bytes(&self.disk.0);
        let room = disk_free_bytes.is_none_or(|free| free >= MIN_FREE_DISK_BYTES);
        if room && self.writer_state.last().is_some() {
            // The failure may be over (space freed, disk back): one small real write tells,
            // and clears the failure if it commits.
            let _ = self.write(probe).await;
        }
        let database_error = match self.ping().await {
            Err(e) => Some(e.to_string()),
            Ok(()) => self
                .writer_state
                .last()
                .map(|f| format!("the last write failed: {}", f.message)),
        };
        StoreHealth {
            database_error,
            disk_free_bytes,
        }
    }

    /// Refuses new work while the data disk is full: free space under the floor, or a write
    /// that just failed for lack of space.
    pub(super) fn check_room(&self) -> Result<(), StoreError> {
        let free = disk_free_bytes(&self.disk.0);
        let recently_full = self
            .writer_state
            .last()
            .is_some_and(|f| f.full && f.at.elapsed() < FULL_RETRY_AFTER);
        if free.is_some_and(|free| free < MIN_FREE_DISK_BYTES) || recently_full {
            let free = free.map_or("unknown".to_string(), |b| format!("{} KiB", b >> 10));
            return Err(StoreError::DiskFull(format!(
                "the data disk is full ({free} free, {} MiB needed); new turns are refused \
                 until space is freed",
                MIN_FREE_DISK_BYTES >> 20
            )));
        }
        Ok(())
    }
}

/// A write that needs the disk: the time of the last probe, in `store_meta`.
fn probe(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES ('write_probe', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [super::now_timestamp()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConversationTags;
    use crate::store::{NewMessage, StoredMessage, open_temp};

    /// Caps the database at its current size: the next write that needs a new page fails with
    /// SQLITE_FULL, as on a full disk.
    async fn cap_database(store: &Store, extra_pages: i64) {
        store
            .write(move |c| {
                let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                c.query_row(
                    &format!("PRAGMA max_page_count = {}", pages + extra_pages),
                    [],
                    |_| Ok(()),
                )?;
                Ok(())
            })
            .await
            .unwrap();
    }

    fn big_turn(
        store: &Store,
    ) -> impl Future<Output = Result<(i64, Vec<StoredMessage>), StoreError>> {
        let store = store.clone();
        async move {
            let big = NewMessage::new(crate::store::MessageKind::Human, "words ".repeat(50_000));
            store
                .open_turn(
                    "c",
                    None,
                    "m",
                    vec![big],
                    10,
                    &ConversationTags::stateless(false),
                )
                .await
        }
    }

    #[tokio::test]
    async fn a_write_that_fails_for_lack_of_space_refuses_new_turns_at_once() {
        let (_dir, store) = open_temp();
        cap_database(&store, 0).await;
        let err = big_turn(&store).await.unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        // Refused without another write, while the failure is fresh.
        let refused = big_turn(&store).await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::DiskFull(m) if m.contains("the data disk is full")),
            "{refused}"
        );
        // Space comes back: the first write that commits lifts the refusal.
        cap_database(&store, 100_000).await;
        big_turn(&store).await.unwrap();
    }

    async fn read_only(store: &Store, on: bool) {
        let pragma = format!("PRAGMA query_only = {on}");
        store
            .write(move |c| Ok(c.execute_batch(&pragma)?))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn health_reports_a_failing_writer_until_a_write_commits_again() {
        let (_dir, store) = open_temp();
        assert!(store.health().await.is_ok());
        read_only(&store, true).await;
        big_turn(&store).await.unwrap_err();
        let health = store.health().await;
        assert!(!health.is_ok());
        assert!(
            health
                .database_error
                .as_deref()
                .unwrap()
                .starts_with("the last write failed: "),
            "{health:?}"
        );
        assert!(health.disk_free_bytes.is_some());
        // The storage is back: `health`'s own probe write finds out, no turn needed.
        read_only(&store, false).await;
        assert!(store.health().await.is_ok());
    }

    #[test]
    fn statement_errors_are_not_storage_failures() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let error = conn
            .execute("INSERT INTO nowhere VALUES (1)", [])
            .unwrap_err();
        assert!(!WriterState::default().failed(&error));
        assert!(disk_free_bytes(Path::new("/")).is_some());
    }
}
