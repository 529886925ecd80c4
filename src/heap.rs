//! Gives the allocator's free memory back to the system once the box is idle after a load.
//!
//! glibc's malloc keeps what a load freed: a burst of 1,000 streaming turns left the server at
//! ~124 MiB resident for good, though almost all of it was free. On a small box that shares its
//! memory with other services, that is memory taken for nothing. (mimalloc was tried instead
//! and kept more; capping glibc's arenas changed nothing.) So the server watches its own
//! activity, and a few seconds after the last turn of a busy spell ends it asks glibc to hand
//! free pages back (`malloc_trim(0)`, which also releases free pages inside the heap, not only
//! at its top). It never trims while a turn or a stream runs, so a trim never competes with a
//! turn for the allocator's locks. It trims when a busy spell ends and once more 100 s later,
//! when the connections the load opened have closed, and then rests: an idle box is not walked
//! every few seconds. Before each trim it releases the caches it was given (the store's page
//! cache): a page that holds one live block cannot be given back, and a full cache is a
//! thousand live blocks spread over the writer's heap.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the box looks at whether it is idle, and so how long after a load its memory
/// goes back: between one and two of these.
pub const IDLE_CHECK: Duration = Duration::from_secs(5);

/// What the trimmer needs to know of the box's activity.
pub trait Activity: Send + Sync + 'static {
    /// How many turns have started since the box started; it only grows.
    fn turns_started(&self) -> u64;
    /// Whether a turn runs or a stream is open now.
    fn busy(&self) -> bool;
}

/// Hands the allocator's free memory back to the system. Returns whether any was.
pub fn give_back_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// The idle checks after a busy spell at which the trimmer gives memory back: at once, and
/// again once the pooled store readers (idle for a minute) and upstream connections (30 s)
/// the load opened have closed and freed their buffers.
const TRIM_AT_IDLE_CHECKS: [u32; 2] = [1, 20];

/// When a check should trim: after a busy spell, at the idle checks above, while nothing new
/// starts.
#[derive(Debug, Default)]
struct Trimmer {
    /// Turns started as of the last check.
    seen: u64,
    /// Idle checks since the last busy spell; `None` once its trims are done.
    idle_checks: Option<u32>,
}

impl Trimmer {
    fn should_trim(&mut self, started: u64, busy: bool) -> bool {
        if busy || started != self.seen {
            self.seen = started;
            self.idle_checks = Some(0);
        }
        if busy {
            return false;
        }
        let Some(checks) = self.idle_checks.as_mut() else {
            return false;
        };
        *checks += 1;
        let n = *checks;
        if n >= TRIM_AT_IDLE_CHECKS[TRIM_AT_IDLE_CHECKS.len() - 1] {
            self.idle_checks = None;
        }
        TRIM_AT_IDLE_CHECKS.contains(&n)
    }
}

/// Checks every `every` and gives memory back after each busy spell, until `shutdown`: first
/// `release_caches` (caches whose live blocks would keep the allocator's pages in use), then
/// `trim`.
pub fn spawn_trimmer<R, F>(
    activity: std::sync::Arc<dyn Activity>,
    every: Duration,
    shutdown: CancellationToken,
    release_caches: R,
    trim: fn() -> bool,
) -> tokio::task::JoinHandle<()>
where
    R: Fn() -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut trimmer = Trimmer {
            seen: activity.turns_started(),
            idle_checks: None,
        };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if trimmer.should_trim(activity.turns_started(), activity.busy()) {
                release_caches().await;
                // It walks the whole heap: not on an async worker.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn trims_when_a_busy_spell_is_over_and_once_more_later_then_rests() {
        let mut t = Trimmer::default();
        assert!(!t.should_trim(0, false), "nothing ran yet");
        assert!(!t.should_trim(3, true), "turns still running");
        assert!(t.should_trim(3, false), "the spell ended");
        let later: Vec<bool> = (0..40).map(|_| t.should_trim(3, false)).collect();
        assert_eq!(later.iter().filter(|&&x| x).count(), 1, "one late trim");
        assert!(later[18], "at the 20th idle check");
        assert!(!t.should_trim(5, true));
        assert!(t.should_trim(6, false), "a second spell, over");
        assert!(
            t.should_trim(7, false),
            "turns that came and went between two checks"
        );
        assert!(!t.should_trim(7, false));
    }

    #[derive(Default)]
    struct Fake {
        started: AtomicU64,
        busy: AtomicBool,
    }

    impl Activity for Fake {
        fn turns_started(&self) -> u64 {
            self.started.load(Ordering::SeqCst)
        }
        fn busy(&self) -> bool {
            self.busy.load(Ordering::SeqCst)
        }
    }

    static TRIMS: AtomicUsize = AtomicUsize::new(0);
    static RELEASES: AtomicUsize = AtomicUsize::new(0);
    /// Trims that came with no release of the caches just before them.
    static TRIMS_WITHOUT_RELEASE: AtomicUsize = AtomicUsize::new(0);

    fn count_trim() -> bool {
        let trims = TRIMS.fetch_add(1, Ordering::SeqCst) + 1;
        if RELEASES.load(Ordering::SeqCst) != trims {
            TRIMS_WITHOUT_RELEASE.fetch_add(1, Ordering::SeqCst);
        }
        true
    }

    async fn count_release() {
        RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits (real time, the check every millisecond) until `n` trims were made.
    async fn until_trims(n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TRIMS.load(Ordering::SeqCst) < n {
            assert!(tokio::time::Instant::now() < deadline, "no trim {n}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn the_trimmer_gives_memory_back_after_a_load_and_stops_on_shutdown() {
        let every = Duration::from_millis(1);
        let fake = Arc::new(Fake::default());
        fake.started.store(10, Ordering::SeqCst);
        let shutdown = CancellationToken::new();
        let task = spawn_trimmer(
            fake.clone(),
            every,
            shutdown.clone(),
            count_release,
            count_trim,
        );
        // Dozens of checks, whatever the machine's pace: enough for any wrong trim to happen.
        let many_checks = || tokio::time::sleep(every * 50);
        many_checks().await;
        assert_eq!(
            TRIMS.load(Ordering::SeqCst),
            0,
            "turns from before it began"
        );
        fake.busy.store(true, Ordering::SeqCst);
        fake.started.store(11, Ordering::SeqCst);
        many_checks().await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0, "a turn still runs");
        fake.busy.store(false, Ordering::SeqCst);
        until_trims(1).await;
        until_trims(2).await;
        many_checks().await;
        assert_eq!(
            TRIMS.load(Ordering::SeqCst),
            2,
            "once at the end, once later, no more"
        );
        assert_eq!(
            RELEASES.load(Ordering::SeqCst),
            2,
            "the caches with each trim"
        );
        assert_eq!(
            TRIMS_WITHOUT_RELEASE.load(Ordering::SeqCst),
            0,
            "the caches are released before the trim, whose pages they would keep"
        );
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn giving_memory_back_really_calls_the_allocator() {
        // Freed megabytes of small blocks below a block still in use is what a load leaves
        // behind: glibc's free gives back only the heap's top, so without a trim they stay.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 1024]).collect();
        let still_in_use = std::hint::black_box(vec![1u8; 1024]);
        drop(blocks);
        // glibc answers 1 when it released memory; elsewhere this is a no-op that says so.
        let released = give_back_free_memory();
        assert_eq!(released, cfg!(all(target_os = "linux", target_env = "gnu")));
        drop(still_in_use);
    }
}
