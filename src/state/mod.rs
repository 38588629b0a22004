//! The embedded store (sled): the records of what was pushed, objects in error, run metadata,
//! and the directory mirror of incremental reads. sled stays behind this module; the rest of the gateway sees [`records`] and
//! [`Store`]. The store is a cache of the target: `resync` can rebuild it from the target.

mod mirror;
pub mod records;
mod store;

pub use mirror::{Mirror, Watermark};
pub use store::{ObjectError, RunRecord, StateError, Store};
