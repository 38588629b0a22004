//! dirbridge: mirrors an LDAP / Active Directory into a SCIM 2.0 identity platform.
//!
//! The pipeline, source to target: `source` reads entries, `mapping` turns them into the
//! canonical `model`, `plan` diffs that against [`state`] into operations, `target` sends
//! them, and `engine` drives one pass. `config` and [`cli`] sit at the edge. See
//! ARCHITECTURE.md for the invariants.
//!
//! The library serves the binary (`cli`); `state` is public too, for the crash test that plants
//! an interrupted write. Everything else is `pub(crate)`, checked by `unreachable_pub`, so that
//! dead code shows; the parsers are fuzzed from inside (`corpus_tests`).

pub(crate) mod backoff;
pub(crate) mod check;
pub mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod engine;
pub(crate) mod mapping;
pub(crate) mod model;
pub(crate) mod plan;
pub(crate) mod schedule;
pub(crate) mod sorted;
pub(crate) mod source;
pub mod state;
pub(crate) mod status;
pub(crate) mod target;
pub(crate) mod tls;

#[cfg(test)]
mod corpus_tests;
