//! The embedded store (redb): the records of what was pushed, objects in error, run metadata,
//! the directory mirror of incremental reads and change feeds, and a journal of recent
//! operations. redb stays behind this module; the rest of the gateway sees `records` and
//! [`Store`]. The store is a cache of the target: `resync` can rebuild it from the target.

pub(crate) mod approvals;
mod journal;
mod mirror;
pub(crate) mod records;
mod store;

pub use journal::{JournalEntry, JOURNAL_LENGTH};
pub use mirror::{Mirror, MirrorEntries, MirrorReader, MirrorSide, MirrorWrites, Watermark};
pub use store::{
    retry_delay, Intent, ObjectError, RunRecord, StateError, Store, Window, WindowFailed,
};
