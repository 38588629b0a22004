//! dirbridge: mirrors an LDAP / Active Directory into a SCIM 2.0 identity platform.
//!
//! The pipeline, source to target: [`source`] reads entries, [`mapping`] turns them into the
//! canonical [`model`], [`plan`] diffs that against [`state`] into operations, [`target`] sends
//! them, and [`engine`] drives one pass. [`config`] and [`cli`] sit at the edge. See
//! ARCHITECTURE.md for the invariants.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod source;
pub mod state;
pub mod status;
pub mod target;
pub mod tls;
