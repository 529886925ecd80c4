//! The one writing connection, with group commit.
//!
//! SQLite admits one writer at a time, and a commit costs far more than the inserts it
//! covers. Voice traffic comes in bursts (many devices answered by one upstream at once), so
//! writes are queued to a dedicated thread that takes every job waiting, runs each in its own
//! savepoint (a failing job rolls back alone), and commits them together. A job alone in its
//! batch (an idle box: every write) needs no savepoint: if it fails, the whole transaction
//! rolls back instead. Under load that is
//! one commit for hundreds of writes; idle, a job runs the moment it arrives. A job's caller
//! hears back only after the commit that made its work durable. The writer also keeps its
//! last storage failure ([`WriterState`]) for `/health` and for refusing turns on a full disk.
//! Its commits do not checkpoint the WAL: a thread of its own does ([`super::checkpoint`]).
//! Once `serve` has its metrics, each write's time is split into its phases (queued, its
//! statements, the rest of its batch and the commit, the reply) in
//! `lang_agent_store_write_duration_seconds`: on an idle box the two hand-offs between
//! threads cost as much as the commit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::StoreError;
use super::checkpoint::{self, WalState, WalWatch};
use super::health::WriterState;
use crate::metrics::{Metrics, StoreWritePhases};

/// Most jobs in one transaction: bounds how long the first of them waits for the commit.
const MAX_BATCH: usize = 256;

/// A queued write: runs inside the batch transaction, returns how it went and what to tell
/// its caller once the batch's commit is known.
type Job = Box<dyn FnOnce(&rusqlite::Transaction<'_>, Isolation) -> Ran + Send>;

/// How a job is kept from the other jobs of its batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// In a savepoint, rolled back alone if it fails.
    Savepoint,
    /// It is the batch: if it fails, the batch's transaction rolls back.
    WholeBatch,
}
/// Told how the batch's transaction ended, and when its commit (or rollback) did.
type Reply = Box<dyn FnOnce(Result<(), String>, Instant) + Send>;

/// A write's times as the writer thread saw them; its caller adds the reply's.
struct WriterTimes {
    queued: Duration,
    statements: Duration,
    commit: Duration,
    /// When the writer thread replied.
    replied: Instant,
}

/// A job that has run in its savepoint.
struct Ran {
    /// Its work succeeded (and commits with the batch).
    ok: bool,
    /// It failed because of the storage (disk full, I/O error): `WriterState` records it.
    storage_failed: bool,
    reply: Reply,
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    state: WriterState,
    /// Jobs sent and not yet taken into a batch (a channel does not say how many it holds).
    queued: Arc<AtomicUsize>,
    wal: Arc<WalState>,
    /// Where each write's [`StoreWritePhases`] go, once `serve` has its metrics.
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`, and the checkpoint thread on `checkpoints` (another
    /// connection to the same database). Both end when the last `Writer` is dropped.
    pub(super) fn start(mut conn: Connection, checkpoints: Connection) -> std::io::Result<Writer> {
        let mut wal_watch = checkpoint::start(checkpoints)?;
        let wal = wal_watch.state();
        let (jobs, queue) = mpsc::channel::<Job>();
        let state = WriterState::default();
        let thread_state = state.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = Arc::clone(&queued);
        std::thread::Builder::new()
            .name("lang-agent-db-writer".into())
            .spawn(move || {
                checkpoint::hand_off_checkpoints(&conn);
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    taken.fetch_sub(batch.len(), Ordering::Relaxed);
                    run_batch(&mut conn, batch, &thread_state, &mut wal_watch);
                }
            })?;
        Ok(Writer {
            jobs,
            state,
            queued,
            wal,
            metrics: Arc::default(),
        })
    }

    /// Times every write from now on, in `metrics` (once; later calls are ignored).
    pub(super) fn time_writes(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Writes waiting for the writer thread.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(super) fn state(&self) -> WriterState {
        self.state.clone()
    }

    /// The WAL's size and who checkpointed it.
    pub(super) fn wal(&self) -> &WalState {
        &self.wal
    }

    /// Runs `work` in the next batch; resolves after that batch is committed.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let state = self.state.clone();
        let sent = Instant::now();
        let job: Job = Box::new(move |tx, isolation| {
            let began = Instant::now();
            let result = match isolation {
                Isolation::Savepoint => in_savepoint(tx, work),
                Isolation::WholeBatch => work(tx),
            };
            let ran = Instant::now();
            let storage_failed = match &result {
                Err(StoreError::Sqlite(e)) => state.failed(e),
                _ => false,
            };
            Ran {
                ok: result.is_ok(),
                storage_failed,
                reply: Box::new(move |committed: Result<(), String>, ended: Instant| {
                    let result = match (result, committed) {
                        (Ok(value), Ok(())) => Ok(value),
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(e)) => Err(StoreError::Task(format!("commit failed: {e}"))),
                    };
                    let times = WriterTimes {
                        queued: began - sent,
                        statements: ran - began,
                        commit: ended - ran,
                        replied: Instant::now(),
                    };
                    let _ = reply.send((result, times));
                }),
            }
        });
        // Counted before it is sent, so that the thread's count down never passes zero.
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Task("the database writer has stopped".into()));
        }
        let (result, times) = answer
            .await
            .map_err(|_| StoreError::Task("the database writer dropped a job".into()))?;
        if let Some(metrics) = self.metrics.get() {
            metrics.store_write(&StoreWritePhases {
                queued: times.queued,
                statements: times.statements,
                commit: times.commit,
                reply: times.replied.elapsed(),
            });
        }
        result
    }
}

fn run_batch(
    conn: &mut Connection,
    batch: Vec<Job>,
    state: &WriterState,
    wal_watch: &mut WalWatch,
) {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping the batch drops its reply channels: every caller gets an error.
            tracing::error!("database: cannot begin a write: {e}");
            state.failed(&e);
            return;
        }
    };
    let isolation = if batch.len() == 1 {
        Isolation::WholeBatch
    } else {
        Isolation::Savepoint
    };
    let mut ran: Vec<Ran> = Vec::with_capacity(batch.len());
    for job in batch {
        let done = job(&tx, isolation);
        let rolled_back = done.storage_failed && tx.is_autocommit();
        ran.push(done);
        if rolled_back {
            // SQLite may roll the whole transaction back on a full disk or an I/O error. The
            // jobs not yet run are dropped (their callers hear the writer dropped them) rather
            // than run outside the transaction; the commit below then fails for the rest.
            break;
        }
    }
    if isolation == Isolation::WholeBatch && !ran.iter().all(|r| r.ok) {
        // The one job failed, and no savepoint undid its part: nothing of it is kept.
        let _ = tx.rollback();
        let ended = Instant::now();
        for ran in ran {
            (ran.reply)(Ok(()), ended);
        }
        return;
    }
    let committed = tx.commit();
    // Before the replies: a caller that hears its write committed sees the WAL it left.
    wal_watch.after_commit();
    let ended = Instant::now();
    match &committed {
        Err(e) => {
            tracing::error!("database: commit failed: {e}");
            state.failed(e);
        }
        // A batch whose every job failed says nothing about the storage; one in which a job
        // failed for the storage's sake must not clear that.
        Ok(()) if ran.iter().any(|r| r.ok) && !ran.iter().any(|r| r.storage_failed) => {
            state.succeeded()
        }
        Ok(()) => {}
    }
    let committed = committed.map_err(|e| e.to_string());
    for ran in ran {
        (ran.reply)(committed.clone(), ended);
    }
}

/// Runs `work` in a savepoint: if it fails, what it wrote is undone and the rest of the batch
/// is kept. The statements are cached: a batch under load opens hundreds of savepoints.
fn in_savepoint<T>(
    tx: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
    match work(tx) {
        Ok(value) => {
            tx.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            // On a full disk SQLite may already have rolled back the whole transaction, and
            // the savepoint with it; the caller hears of `e` either way.
            let _ = tx
                .prepare_cached("ROLLBACK TO job")
                .and_then(|mut s| s.execute([]));
            let _ = tx
                .prepare_cached("RELEASE job")
                .and_then(|mut s| s.execute([]));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Store, open_temp};

    /// A new store with a table `t` of unique numbers `n`.
    async fn store_with_table() -> (tempfile::TempDir, Store) {
        let (dir, store) = open_temp();
        store
            .write(|c| Ok(c.execute_batch("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")?))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_failing_job_rolls_back_alone_and_the_batch_commits() {
        let (_dir, store) = store_with_table().await;
        // Many writes at once land in shared batches; n = 7 is written twice, and the second
        // one must fail without taking its batch-mates with it.
        let writes = (0..64).map(|i| {
            let store = store.clone();
            let n = if i == 40 { 7 } else { i };
            tokio::spawn(async move {
                store
                    .write(move |c| {
                        c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                        Ok(n)
                    })
                    .await
            })
        });
        let results: Vec<_> = futures::future::join_all(writes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        let count: i64 = store
            .run(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(count, 63);
    }

    /// The `_count` and `_sum` of one phase in a rendering of the metrics.
    fn phase_totals(text: &str, phase: &str) -> (u64, f64) {
        let read = |series: &str| {
            let prefix =
                format!("lang_agent_store_write_duration_seconds_{series}{{phase=\"{phase}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {series} of {phase} in {text}"))
                .parse::<f64>()
                .unwrap()
        };
        (read("count") as u64, read("sum"))
    }

    #[tokio::test]
    async fn once_metrics_are_set_each_write_is_timed_in_its_four_phases() {
        let (_dir, store) = store_with_table().await;
        let metrics = crate::metrics::Metrics::new(false);
        store.time_writes(metrics.clone());
        for n in 0..3 {
            store
                .write(move |c| Ok(c.execute("INSERT INTO t (n) VALUES (?1)", [n])?))
                .await
                .unwrap();
        }
        // A write that fails is timed as well: it waited, ran and was rolled back.
        let failed = store
            .write(|c| Ok(c.execute("INSERT INTO t (n) VALUES (1)", [])?))
            .await;
        assert!(failed.is_err());
        let text = metrics.render().await;
        for phase in crate::metrics::STORE_WRITE_PHASES {
            let (count, sum) = phase_totals(&text, phase);
            assert_eq!(count, 4, "{phase}");
            assert!(sum > 0.0, "{phase} took no time: {text}");
        }
    }

    #[tokio::test]
    async fn a_failing_job_alone_in_its_batch_leaves_nothing_and_the_next_one_commits() {
        let (_dir, store) = store_with_table().await;
        // One write at a time: each is alone in its batch, with no savepoint around it. The
        // failing one wrote a row before it failed; that row must not be committed.
        let failed = store
            .write(|c| {
                c.execute("INSERT INTO t (n) VALUES (1)", [])?;
                c.execute("INSERT INTO t (n) VALUES (1)", [])?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        store
            .write(|c| Ok(c.execute("INSERT INTO t (n) VALUES (2)", [])?))
            .await
            .unwrap();
        let kept: Vec<i64> = store
            .run(|c| {
                let mut s = c.prepare("SELECT n FROM t ORDER BY n")?;
                let rows = s.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(kept, vec![2]);
    }
}
