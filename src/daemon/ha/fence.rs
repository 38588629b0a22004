//! The fence: until when this gateway may send to the target.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Until when this gateway may send to the target. Read before every write
/// (`daemon/fenced.rs`); a time, not a flag, so that a gateway frozen past it (a stopped VM)
/// finds it closed the moment it runs again, before its lease task has run.
pub(crate) struct Fence {
    base: Instant,
    /// Nanoseconds after `base`; 0: closed; `u64::MAX`: always open (no `[ha]`).
    until: AtomicU64,
}

impl Fence {
    pub(super) fn new(until: u64) -> Arc<Fence> {
        Arc::new(Fence {
            base: Instant::now(),
            until: AtomicU64::new(until),
        })
    }

    /// A fence open for `d` from now (tests).
    #[cfg(test)]
    pub(crate) fn open_for(d: Duration) -> Arc<Fence> {
        let f = Fence::new(0);
        f.open_until(Instant::now() + d);
        f
    }

    pub(crate) fn open(&self) -> bool {
        match self.until.load(Ordering::SeqCst) {
            u64::MAX => true,
            0 => false,
            until => (self.base.elapsed().as_nanos() as u64) < until,
        }
    }

    /// When it closes by itself (`None`: never, or already closed).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.until.load(Ordering::SeqCst) {
            u64::MAX | 0 => None,
            until => Some(self.base + Duration::from_nanos(until)),
        }
    }

    pub(super) fn open_until(&self, t: Instant) {
        let nanos = t.saturating_duration_since(self.base).as_nanos() as u64;
        self.until
            .store(nanos.clamp(1, u64::MAX - 1), Ordering::SeqCst);
    }

    pub(super) fn close(&self) {
        self.until.store(0, Ordering::SeqCst);
    }
}
