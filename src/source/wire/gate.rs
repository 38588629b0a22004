//! Flow control for a search whose reader may fall behind: a change feed's refreshAndPersist
//! search sends the whole directory in its refresh, faster than the feed applies it, and
//! ldap3 queues what its reader has not taken in an unbounded channel, each message decoded
//! into its own tree (~100 MB at 100k users, the largest part of `run`'s peak). ldap3 offers
//! no bound, so the relay keeps one: once more than [`HIGH`] messages or [`HIGH_BYTES`] of a
//! gated search are passed on and not yet taken by its reader, it stops reading the server
//! until the reader is down to [`LOW`] and [`LOW_BYTES`] (the server then waits on TCP, as a
//! client that reads slowly makes it). Bytes too: a group of 10,000 members is a message of
//! ~500 KB.
//!
//! The relay holds back only while no other request on the connection awaits an answer: the
//! feed's own reads (an entry read again by DN, a listing of a scope, the heartbeat's root DSE
//! read) are answered behind the held-back messages, and its reader would wait for them
//! instead of taking messages. With one outstanding, the relay reads on as it did before
//! there was a gate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Messages passed on and not taken above which the relay stops reading the server.
pub(crate) const HIGH: u64 = 512;
/// ... and at or below which it reads again.
pub(crate) const LOW: u64 = 256;
/// Bytes passed on and not taken above which the relay stops reading the server (ldap3's
/// tree of a message is a few times its size)...
pub(crate) const HIGH_BYTES: u64 = 16 << 20;
/// ... and at or below which it reads again.
pub(crate) const LOW_BYTES: u64 = 8 << 20;

/// The relay's side of a gate: the sizes of the messages passed on and not yet taken.
#[derive(Debug, Default)]
struct InFlight {
    sizes: VecDeque<u64>,
    /// Messages taken whose sizes were let go.
    let_go: u64,
    bytes: u64,
    /// The relay is holding back (it reads again at the low marks).
    held: bool,
}

/// One gated search's count of messages passed to ldap3 and taken from it by the reader.
#[derive(Debug)]
pub(crate) struct Gate {
    passed: AtomicU64,
    taken: AtomicU64,
    /// The relay waits for this search's reader.
    waiting: AtomicBool,
    /// The relay's wake-up, shared by every gate of the connection and its request pump.
    wake: Arc<Notify>,
    in_flight: Mutex<InFlight>,
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
            in_flight: Mutex::default(),
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

    /// The relay passed one message of the search, of `size` bytes, on to ldap3.
    pub(super) fn passed(&self, size: usize) {
        if let Ok(mut f) = self.in_flight.lock() {
            let size = size as u64;
            f.sizes.push_back(size);
            f.bytes += size;
        }
        let _passed = self.passed.fetch_add(1, SeqCst) + 1;
        #[cfg(test)]
        self.peak
            .fetch_max(_passed.saturating_sub(self.taken.load(SeqCst)), SeqCst);
    }

    /// True when the relay must wait for the reader; it is then woken once the reader is down
    /// to [`LOW`] messages (and at each message taken after that, while the bytes keep it
    /// held). (Marked waiting before the counts are read: a reader taking meanwhile sees the
    /// mark, and its wake-up is kept for the relay's wait.)
    pub(super) fn hold(&self) -> bool {
        let Ok(mut f) = self.in_flight.lock() else {
            return false;
        };
        self.waiting.store(true, SeqCst);
        let taken = self.taken.load(SeqCst);
        while f.let_go < taken {
            let size = f.sizes.pop_front().unwrap_or(0);
            f.bytes = f.bytes.saturating_sub(size);
            f.let_go += 1;
        }
        let count = self.passed.load(SeqCst).saturating_sub(taken);
        let over = if f.held {
            count > LOW || f.bytes > LOW_BYTES
        } else {
            count > HIGH || f.bytes > HIGH_BYTES
        };
        f.held = over;
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
