//! WAL checkpoints, on a thread of their own rather than in the writer's commits.
//!
//! SQLite checkpoints a WAL database from the connection whose commit takes the WAL past
//! 1,000 pages: that commit copies the WAL back into the database and syncs both files before
//! it returns. On the box that was two `fsync`s of about 3 ms each, once every 40 or so turns at
//! a steady pace: one turn in forty waited 7 ms more for its answer (the c=1 p99), and under
//! load every turn queued behind that commit waited with it. So the writer's connection does
//! not checkpoint: its commit hook only notes the WAL's size, and past each [`MARK_PAGES`] the
//! writer nudges this thread, which checkpoints (PASSIVE: it never waits for, nor blocks, the
//! writer or a reader) from its own connection while the writer goes on committing.
//!
//! A checkpoint that overlaps new commits cannot let the WAL start over, so under a long load
//! the WAL grows; at [`BACKSTOP_PAGES`] (or if this thread is gone) the writer checkpoints in
//! its own commit, as SQLite would have, which keeps the file bounded.

use std::cell::Cell;
use std::ffi::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

/// WAL pages (of 4 KiB) between checkpoints: SQLite's own default.
pub(super) const MARK_PAGES: i32 = 1000;
/// WAL pages past which the writer checkpoints itself.
pub(super) const BACKSTOP_PAGES: i32 = 8 * MARK_PAGES;

thread_local! {
    /// The WAL's size after this thread's last commit, as SQLite's commit hook reported it.
    /// Thread-local because the hook is a plain function; only the writer thread commits on
    /// the connection that has it.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
    /// Backstop checkpoints this thread's commits ran.
    static BACKSTOPS: Cell<u64> = const { Cell::new(0) };
}

/// What the writer and the checkpoint thread report: the WAL's size for `/metrics`, and who
/// checkpointed it.
#[derive(Default)]
pub(super) struct WalState {
    /// The WAL's size in pages after the writer's last commit.
    pages: AtomicI32,
    /// Checkpoints the checkpoint thread has run.
    background: AtomicU64,
    /// Checkpoints the writer ran in a commit (the backstop).
    in_commit: AtomicU64,
}

impl WalState {
    pub(super) fn pages(&self) -> i32 {
        self.pages.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(super) fn background_checkpoints(&self) -> u64 {
        self.background.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(super) fn checkpoints_in_commit(&self) -> u64 {
        self.in_commit.load(Ordering::Relaxed)
    }
}

/// Turns the writer connection's own checkpoints off: from now on its commits only note the
/// WAL's size (and checkpoint past [`BACKSTOP_PAGES`]). Call on the writer thread.
pub(super) fn hand_off_checkpoints(conn: &Connection) {
    // Replacing the commit hook replaces SQLite's auto-checkpoint, which is that hook.
    conn.wal_hook(Some(note_wal_size));
}

fn note_wal_size(wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    if pages >= BACKSTOP_PAGES {
        BACKSTOPS.set(BACKSTOPS.get() + 1);
        // An error here would fail a statement whose commit has already happened.
        if let Err(e) = wal.checkpoint() {
            tracing::warn!("database: checkpoint of a {pages}-page WAL failed: {e}");
        }
    }
    Ok(())
}

/// The writer's side: after each commit, whether the checkpoint thread is due a nudge.
pub(super) struct WalWatch {
    state: Arc<WalState>,
    nudge: mpsc::SyncSender<()>,
    /// WAL size at the last commit: a smaller one means the WAL started over.
    last: i32,
    /// WAL size at which to nudge next.
    next: i32,
}

impl WalWatch {
    pub(super) fn state(&self) -> Arc<WalState> {
        Arc::clone(&self.state)
    }

    /// Notes the WAL's size after a commit and nudges the checkpoint thread when it has grown
    /// another [`MARK_PAGES`] since the last nudge (or since it started over).
    pub(super) fn after_commit(&mut self) {
        let pages = WAL_PAGES.get();
        self.state.pages.store(pages, Ordering::Relaxed);
        self.state
            .in_commit
            .store(BACKSTOPS.get(), Ordering::Relaxed);
        if self.due(pages) {
            // Full means a nudge is already waiting: that checkpoint covers this one.
            let _ = self.nudge.try_send(());
        }
    }

    fn due(&mut self, pages: i32) -> bool {
        if pages < self.last {
            self.next = MARK_PAGES;
        }
        self.last = pages;
        if pages >= self.next {
            self.next = pages + MARK_PAGES;
            return true;
        }
        false
    }
}

/// Starts the checkpoint thread on `conn` (a connection of its own to the database); it ends
/// when the returned watch (the writer's) is dropped.
pub(super) fn start(mut conn: Connection) -> std::io::Result<WalWatch> {
    let state = Arc::new(WalState::default());
    let (nudge, nudges) = mpsc::sync_channel::<()>(1);
    let thread_state = Arc::clone(&state);
    std::thread::Builder::new()
        .name("lang-agent-db-checkpoint".into())
        .spawn(move || {
            while nudges.recv().is_ok() {
                match checkpoint(&mut conn) {
                    Ok(()) => {
                        thread_state.background.fetch_add(1, Ordering::Relaxed);
                    }
                    // The next nudge tries again; the backstop bounds the WAL meanwhile.
                    Err(e) => tracing::warn!("database: checkpoint failed: {e}"),
                }
            }
        })?;
    Ok(WalWatch {
        state,
        nudge,
        last: 0,
        next: MARK_PAGES,
    })
}

fn checkpoint(conn: &mut Connection) -> rusqlite::Result<()> {
    // (busy, WAL pages, pages copied back): busy only when another connection checkpoints.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> (WalWatch, mpsc::Receiver<()>) {
        let (nudge, nudges) = mpsc::sync_channel(1);
        let watch = WalWatch {
            state: Arc::default(),
            nudge,
            last: 0,
            next: MARK_PAGES,
        };
        (watch, nudges)
    }

    #[tokio::test]
    async fn the_writer_leaves_checkpoints_to_their_thread_and_the_wal_starts_over() {
        let (_dir, store) = crate::store::open_temp();
        // SQLite's auto-checkpoint (every 1,000 pages) made the commit that crossed the mark
        // copy the WAL back and sync both files before the turn waiting on it could go on.
        let auto: i64 = store
            .write(|c| Ok(c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(auto, 0, "the writer's commits must not checkpoint");
        store
            .write(|c| Ok(c.execute_batch("CREATE TABLE blobs (b BLOB)")?))
            .await
            .unwrap();
        let wal = store.writer.wal();
        // 64 KiB a write, until the commit that takes the WAL past the mark (and nudges).
        let mut writes = 0;
        while wal.pages() < MARK_PAGES {
            store
                .write(|c| Ok(c.execute("INSERT INTO blobs VALUES (zeroblob(65536))", [])?))
                .await
                .unwrap();
            writes += 1;
            assert!(writes < 200, "the WAL never reached {MARK_PAGES} pages");
        }
        let waited = std::time::Instant::now();
        while wal.background_checkpoints() == 0 {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(30),
                "the checkpoint thread never checkpointed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Nothing was written meanwhile, so the checkpoint copied all of it: the next write
        // starts the WAL over from its first page.
        store
            .write(|c| Ok(c.execute("INSERT INTO blobs VALUES (x'00')", [])?))
            .await
            .unwrap();
        assert!(
            wal.pages() < 10,
            "the WAL did not start over: {} pages",
            wal.pages()
        );
        assert_eq!(wal.checkpoints_in_commit(), 0);
    }

    #[test]
    fn nudges_once_per_mark_of_growth_and_again_after_the_wal_starts_over() {
        let (mut watch, _nudges) = watch();
        let nudged: Vec<i32> = [
            10, 500, 999, 1000, 1400, 1999, 2000, 2100, 3050, 4, 600, 1000,
        ]
        .into_iter()
        .filter(|&pages| watch.due(pages))
        .collect();
        // 1000: the first mark; 2000: a mark more; 3050: past the next; after the WAL started
        // over (4 pages), the count begins again.
        assert_eq!(nudged, vec![1000, 2000, 3050, 1000]);
    }
}
