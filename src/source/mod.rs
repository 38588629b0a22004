//! Directory readers: connect, bind, and read users and groups as [`entry::RawEntry`] values.
//! Mapping them into canonical objects is the [`crate::mapping`] module's job.

pub(crate) mod attrs;
pub(crate) mod ber;
pub(crate) mod dn;
pub(crate) mod entry;
pub(crate) mod filter;
pub(crate) mod ldap;
pub(crate) mod lease;
pub(crate) mod notify;
pub(crate) mod paged;
pub(crate) mod range;
pub(crate) mod result_text;
pub(crate) mod schema;
pub(crate) mod sid;
pub(crate) mod syncrepl;
pub(crate) mod tls_probe;
pub(crate) mod wire;

/// A failure to read the directory. Any of these aborts the run before anything is planned:
/// a partial read must never look like deletions.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("bind as {dn} failed: {reason}")]
    Bind { dn: String, reason: String },
    #[error("search of {base} with {filter} failed: {reason}")]
    Search {
        base: String,
        filter: String,
        reason: String,
    },
    #[error("writing {dn} failed: {reason}")]
    Write { dn: String, reason: String },
    #[error("TLS setup for {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("{location}: {key}: the directory's schema has no attribute `{attribute}` (a typo? `dirbridge test-mapping USER` lists the attributes an entry has)")]
    UnknownAttribute {
        location: String,
        key: String,
        attribute: String,
    },
}
