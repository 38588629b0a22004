//! Flow control for a search whose reader may fall behind: a change feed's refreshAndPersist
//! search sends the whole directory in its refresh, faster than the feed applies it, and
//! ldap3 queues what its reader has not taken in an unbounded channel, each message decoded
//! into its own tree (~100 MB at 100k users, the largest part of `run`'s peak). ldap3 offers
//! no bound, so the relay keeps one: once more than [`HIGH`] messages of a gated search are
//! passed on and not yet taken by its reader, it stops reading the server until the reader is
//! down to [`LOW`] (the server then waits on TCP, as a client that reads slowly makes it).
//!
//! The relay holds back only while no other request on the connection awaits an answer: the
//! feed's own reads (an entry read again by DN, a listing of a scope, the heartbeat's root DSE
//! read) are answered behind the held-back messages, and its reader would wait for them
//! instead of taking messages. With one outstanding, the relay reads on as it did before
//! there was a gate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Notify;

/// Messages passed on and not taken above which the relay stops reading the server.
pub(crate) const HIGH: u64 = 512;
/// ... and at or below which it reads again.
pub(crate) const LOW: u64 = 256;

/// One gated search's count of messages passed to ldap3 and taken from it by the reader.
#[derive(Debug)]
pub(crate) struct Gate {
    passed: AtomicU64,
    taken: AtomicU64,
    /// The relay waits for this search's reader.
    waiting: AtomicBool,
    /// The relay's wake-up, shared by every gate of the connection and its request pump.
    wake: Arc<Notify>,
    /// The most messages ever in flight (what the tests check).
    #[cfg(test)]
    peak: AtomicU64,
}

impl Gate {
    pub(super) fn new(wake: Arc<Notify>) -> Gate {
        Gate {
            passed: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            wake,
            #[cfg(test)]
            peak: AtomicU64::new(0),
        }
    }

    /// The reader took one message of the search (an entry, a reference, an intermediate
    /// message) from ldap3.
    pub(crate) fn took(&self) {
        let taken = self.taken.fetch_add(1, SeqCst) + 1;
        let passed = self.passed.load(SeqCst);
        if passed.saturating_sub(taken) <= LOW && self.waiting.swap(false, SeqCst) {
            self.wake.notify_one();
        }
    }

    /// The relay passed one message of the search on to ldap3.
    pub(super) fn passed(&self) {
        let _passed = self.passed.fetch_add(1, SeqCst) + 1;
        #[cfg(test)]
        self.peak
            .fetch_max(_passed.saturating_sub(self.taken.load(SeqCst)), SeqCst);
    }

    /// True when the relay must wait for the reader; it is then woken once the reader is down
    /// to [`LOW`]. (Marked waiting before the counts are read: a reader taking meanwhile sees
    /// the mark, and its wake-up is kept for the relay's wait.)
    pub(super) fn hold(&self) -> bool {
        self.waiting.store(true, SeqCst);
        let passed = self.passed.load(SeqCst);
        let over = passed.saturating_sub(self.taken.load(SeqCst)) > HIGH;
        if !over {
            self.waiting.store(false, SeqCst);
        }
        over
    }

    #[cfg(test)]
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(SeqCst)
    }
}
