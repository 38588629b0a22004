//! How far the pass of a one-shot command is, for its progress bar (`cli/progress.rs`): the
//! phase, the entries read, the operations sent of those planned. Plain counters a pass bumps
//! as it goes (a relaxed atomic add: nothing to measure beside an LDAP entry or an HTTP
//! request); one per process, as a one-shot command runs one pass. The service does not draw
//! them.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Starting,
    Reading,
    ReadingTarget,
    Sending,
    Done,
}

static PHASE: AtomicU8 = AtomicU8::new(0);
static READ: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
static PLANNED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn set_phase(p: Phase) {
    PHASE.store(p as u8, Ordering::Relaxed);
}

pub(crate) fn phase() -> Phase {
    match PHASE.load(Ordering::Relaxed) {
        1 => Phase::Reading,
        2 => Phase::ReadingTarget,
        3 => Phase::Sending,
        4 => Phase::Done,
        _ => Phase::Starting,
    }
}

pub(crate) fn entry_read() {
    READ.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn read() -> u64 {
    READ.load(Ordering::Relaxed)
}

/// The executor starts on `planned` operations.
pub(crate) fn sending(planned: usize) {
    SENT.store(0, Ordering::Relaxed);
    PLANNED.store(planned as u64, Ordering::Relaxed);
    set_phase(Phase::Sending);
}

/// An operation was handled (sent and confirmed, or settled without a request).
pub(crate) fn operation_done() {
    SENT.fetch_add(1, Ordering::Relaxed);
}

/// (handled, planned).
pub(crate) fn sent() -> (u64, u64) {
    (
        SENT.load(Ordering::Relaxed),
        PLANNED.load(Ordering::Relaxed),
    )
}
