//! One budget for the request bodies a port holds at once ([`BodyBudget`]).
//!
//! A single body may be large (Xiaozhi resends its whole, never trimmed dialogue: megabytes on a
//! long connection), but many large bodies at once must not take the box's memory: with 2048
//! connections, 2048 × the body limit is far more than a small box has. So each body's bytes
//! past its first [`UNBUDGETED_BODY_BYTES`] are taken from one shared budget while the request
//! is received, and given back once it is whole ([`BodyClaim`]'s drop, with the body). A body
//! the budget has no room for is refused ([`super::BodyError::Busy`], a 503 the client may
//! retry), while small bodies never wait on big ones: their bytes are bounded by the connection
//! cap instead. A whole body is parsed at once, without yielding, so beyond the budget at most
//! one body per worker thread is being parsed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bytes of each body that are not counted against the budget: everyday requests (a few
/// KiB) never touch it. With 2048 connections they hold at most 128 MiB.
pub const UNBUDGETED_BODY_BYTES: usize = 64 * 1024;

/// Bytes of request bodies, past each one's first [`UNBUDGETED_BODY_BYTES`], that a port holds
/// at once.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    total: usize,
    in_use: AtomicUsize,
}

impl BodyBudget {
    pub fn new(total: usize) -> BodyBudget {
        BodyBudget {
            shared: Arc::new(Shared {
                total,
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    pub fn total(&self) -> usize {
        self.shared.total
    }

    /// Bytes taken now, by every claim.
    pub fn in_use(&self) -> usize {
        self.shared.in_use.load(Ordering::Relaxed)
    }

    /// A claim for one request's body, empty so far.
    pub fn claim(&self) -> BodyClaim {
        BodyClaim {
            budget: self.clone(),
            held: 0,
        }
    }

    fn take(&self, bytes: usize) -> bool {
        self.shared
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|after| *after <= self.shared.total)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.shared.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What one request's body holds of the budget, owned by the body as it is received; dropping
/// it gives the bytes back.
#[derive(Debug)]
pub struct BodyClaim {
    budget: BodyBudget,
    held: usize,
}

impl BodyClaim {
    /// Accounts for the body having reached `seen` bytes; false if the budget has no room for
    /// them (the claim keeps what it held).
    pub fn grow_to(&mut self, seen: usize) -> bool {
        let wanted = seen.saturating_sub(UNBUDGETED_BODY_BYTES);
        if wanted <= self.held {
            return true;
        }
        if self.budget.take(wanted - self.held) {
            self.held = wanted;
            return true;
        }
        false
    }

    /// The budget's size, for the refusal's message.
    pub fn budget_total(&self) -> usize {
        self.budget.total()
    }
}

impl Drop for BodyClaim {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn small_bodies_never_touch_the_budget() {
        let budget = BodyBudget::new(0);
        let mut claim = budget.claim();
        assert!(claim.grow_to(UNBUDGETED_BODY_BYTES));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn big_bodies_share_the_budget_until_dropped() {
        let budget = BodyBudget::new(10 * MIB);
        let mut first = budget.claim();
        assert!(first.grow_to(3 * MIB));
        assert!(first.grow_to(6 * MIB + UNBUDGETED_BODY_BYTES));
        assert_eq!(budget.in_use(), 6 * MIB);
        let mut second = budget.claim();
        assert!(second.grow_to(4 * MIB + UNBUDGETED_BODY_BYTES));
        assert!(!second.grow_to(4 * MIB + UNBUDGETED_BODY_BYTES + 1));
        // A small body still passes while the budget is full.
        assert!(budget.claim().grow_to(1000));
        drop(first);
        assert_eq!(budget.in_use(), 4 * MIB);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }
}
