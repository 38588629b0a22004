//! Targets: where users and groups are pushed. [`Target`] is the contract the engine drives
//! (its futures are `Send`, so a pass can run on any task); [`AnyTarget`] is the configured
//! client. The SCIM 2.0 client is the first implementation, a configurable REST client comes later.

mod any;
pub(crate) mod auth;
pub(crate) mod http;
pub(crate) mod quirks;
pub(crate) mod rest;
pub(crate) mod retry;
pub(crate) mod scim;
pub(crate) mod taken;

use std::fmt;
use std::future::Future;

pub(crate) use any::AnyTarget;

use crate::model::{FieldChange, Key, User};

/// One request as `test-mapping` shows it: what the client would send for an operation.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Rendered {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// A user as the target holds it, in canonical form. `manager` holds the manager's *target
/// id* here, not a key: only the caller knows how ids map to keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteUser {
    pub id: String,
    pub external_id: Option<String>,
    pub user: User,
}

/// A group as the target holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteGroup {
    pub id: String,
    pub external_id: Option<String>,
    pub display_name: String,
    pub member_ids: Vec<String>,
}

/// A failed request, with what an administrator needs to act on it, in a shape every protocol
/// fills (HTTP status, the protocol's error code and message, or why no answer came). The
/// cause of a transport failure is kept as text with the URL's query removed: the HTTP client's
/// own error carries the URL, whose query may hold the values looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {request}: {kind}")]
pub(crate) struct TargetError {
    /// Method and path, e.g. `POST /Users` (never the token, never a query with values).
    pub request: String,
    pub kind: TargetErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetErrorKind {
    /// The target answered with an error status. `code` is the protocol's own error code
    /// (SCIM's scimType, a REST API's error code), `detail` its message.
    Http {
        status: u16,
        code: Option<String>,
        detail: Option<String>,
    },
    /// No answer: connection refused, reset, DNS, TLS.
    Transport(String),
    /// No answer in time.
    Timeout,
    /// Sent, but the answer was lost (reset, truncated): it may have been carried out. Not
    /// resent; the object is looked up (and adopted) before the next attempt.
    Lost(String),
    /// An answer that is not what the protocol promises (not JSON, no id, ...).
    BadResponse(String),
    /// The target said the object already exists (in its own words, whatever the status).
    Exists { status: u16, detail: Option<String> },
    /// The target said the object does not exist (in its own words, whatever the status).
    Missing { status: u16, detail: Option<String> },
    /// The request could not be built for this object (a value a URL needs is missing, a
    /// header value holds a line break): not sent.
    Request(String),
    /// The target's answers do not fit its configuration (a create answered without an id
    /// where `id` says it is): every further request would go the same way, so the run stops.
    Config(String),
    /// No credentials could be obtained (the OAuth 2.0 token endpoint refused or failed).
    Auth(String),
}

impl fmt::Display for TargetErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetErrorKind::Http {
                status,
                code,
                detail,
            } => {
                write!(f, "HTTP {status}")?;
                if let Some(reason) = http_reason(*status) {
                    write!(f, " {reason}")?;
                }
                if let Some(t) = code {
                    write!(f, " ({t})")?;
                }
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                if *status == 401 {
                    write!(f, " — check the target's credentials (target.token or [target.auth])")?;
                }
                Ok(())
            }
            TargetErrorKind::Transport(e) => write!(f, "no answer: {e}"),
            TargetErrorKind::Timeout => write!(f, "no answer in time (target.timeout_secs)"),
            TargetErrorKind::Lost(e) => write!(
                f,
                "the answer was lost ({e}); the request may have been carried out, so the object is looked up before it is sent again"
            ),
            TargetErrorKind::BadResponse(e) => write!(f, "unexpected answer: {e}"),
            TargetErrorKind::Exists { status, detail } | TargetErrorKind::Missing { status, detail } => {
                let what = if matches!(self, TargetErrorKind::Exists { .. }) {
                    "already exists"
                } else {
                    "not found"
                };
                write!(f, "HTTP {status}, {what}")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
            TargetErrorKind::Request(e) => write!(f, "not sent: {e}"),
            TargetErrorKind::Config(e) => write!(f, "{e}"),
            TargetErrorKind::Auth(e) => {
                write!(f, "no access token: {e} — check target.auth")
            }
        }
    }
}

fn http_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

impl TargetError {
    pub(crate) fn status(&self) -> Option<u16> {
        match self.kind {
            TargetErrorKind::Http { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The whole run must stop: every further request would fail the same way (bad token,
    /// target unreachable). Per-object errors, by contrast, are recorded and the run goes on.
    pub(crate) fn is_fatal(&self) -> bool {
        match &self.kind {
            TargetErrorKind::Http { status, .. } => matches!(status, 401 | 403),
            TargetErrorKind::Transport(_)
            | TargetErrorKind::Auth(_)
            | TargetErrorKind::Config(_) => true,
            TargetErrorKind::Timeout
            | TargetErrorKind::BadResponse(_)
            | TargetErrorKind::Lost(_)
            | TargetErrorKind::Request(_)
            | TargetErrorKind::Exists { .. }
            | TargetErrorKind::Missing { .. } => false,
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.status() == Some(404) || matches!(self.kind, TargetErrorKind::Missing { .. })
    }

    /// The object already exists: looked up and adopted.
    pub(crate) fn is_conflict(&self) -> bool {
        self.status() == Some(409) || matches!(self.kind, TargetErrorKind::Exists { .. })
    }

    /// No answer came (connection refused or reset, DNS, TLS): the target may be down, or only
    /// this request may be failing (see [`Target::reachable`]).
    pub(crate) fn is_transport(&self) -> bool {
        matches!(self.kind, TargetErrorKind::Transport(_))
    }

    /// Sent, but the answer was lost: it may have been carried out.
    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.kind, TargetErrorKind::Lost(_))
    }
}

/// What a target said about itself at preflight (`check` shows it).
#[derive(Debug, Default, Clone)]
pub(crate) struct Declared {
    /// Its abilities, a short phrase each (`PATCH: yes`, `filter: no`).
    pub abilities: Vec<String>,
    /// The attribute paths its User schema marks required (lower case), when it published one.
    pub user_required: Vec<String>,
}

/// What the engine needs from a target. Methods take resolved target ids; keys are passed only
/// to be stored as the target's external id.
pub(crate) trait Target: Send + Sync {
    /// Where it is, for messages and to tie the state store to one target.
    fn describe(&self) -> String;
    /// Checks that the target answers, and learns what it can do.
    fn preflight(&self) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Whether the target answers at all right now (one cheap request, no retries): tells "the
    /// target is down" from "this object's requests keep failing" after a transport error.
    fn reachable(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }
    /// Called at the start of each pass: what the client cached of the target's content (the
    /// look-up index of a provider that cannot filter) is read again when next needed, once it
    /// is older than a few minutes.
    fn begin_pass(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Before a run that creates `users` users and `groups` groups: a client that can list
    /// what the target holds in fewer requests than looking each one up reads it once, so
    /// that creates of names it does not hold go without a look-up (`taken.rs`).
    fn expect_creates(
        &self,
        _users: usize,
        _groups: usize,
    ) -> impl Future<Output = Result<(), TargetError>> + Send {
        async { Ok(()) }
    }
    /// True only when a listing of this pass shows no user with this userName and none was
    /// tried since: its create needs no look-up first. False when unknown.
    fn user_surely_free(&self, _user_name: &str) -> bool {
        false
    }
    /// The same for a group name.
    fn group_surely_free(&self, _display_name: &str) -> bool {
        false
    }
    /// Whether groups and memberships are pushed to this target (a REST target without group
    /// events holds users only).
    fn holds_groups(&self) -> bool {
        true
    }
    /// Whether the target's users can be listed (what `resync` reads).
    fn can_list(&self) -> bool {
        true
    }
    /// What the last preflight read of the target's description of itself.
    fn declared(&self) -> Declared {
        Declared::default()
    }
    /// The attributes the target's User schema requires that a user like `sample` (every
    /// mapped field set) would be sent without.
    fn unsent_required(&self, _sample: &User) -> Vec<String> {
        Vec::new()
    }
    /// What the target was found to do differently from its protocol, and what is done about it.
    fn quirks(&self) -> Vec<quirks::Quirk> {
        Vec::new()
    }
    /// Quirks an earlier run found on this same target (kept in the state store).
    fn remember_quirks(&self, _quirks: &[quirks::Quirk]) {}
    /// Leaves out of a desired user what this target has said it cannot hold, so that it is
    /// neither sent nor seen as drift.
    fn fit_user(&self, _user: &mut User) {}
    /// Changes whenever what `fit_user` leaves out may have changed (a quirk learned, the
    /// provider's schema read again): records kept fitted the old way are read again.
    fn fit_state(&self) -> u64 {
        0
    }
    fn find_user(
        &self,
        user_name: &str,
    ) -> impl Future<Output = Result<Option<RemoteUser>, TargetError>> + Send;
    /// The user or group whose externalId is `key` (what dirbridge sets on everything it
    /// creates), if any.
    fn find_user_by_key(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<RemoteUser>, TargetError>> + Send;
    fn find_group_by_key(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<RemoteGroup>, TargetError>> + Send;
    fn create_user(
        &self,
        key: &Key,
        user: &User,
        manager_id: Option<&str>,
    ) -> impl Future<Output = Result<String, TargetError>> + Send;
    /// `before` is the user as last pushed, `user` as it is once the changes are applied.
    fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        before: &User,
        user: &User,
        manager_id: Option<&str>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn deactivate_user(&self, id: &str) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn delete_user(&self, id: &str) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn find_group(
        &self,
        display_name: &str,
    ) -> impl Future<Output = Result<Option<RemoteGroup>, TargetError>> + Send;
    fn create_group(
        &self,
        key: &Key,
        display_name: &str,
    ) -> impl Future<Output = Result<String, TargetError>> + Send;
    fn rename_group(
        &self,
        id: &str,
        display_name: &str,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn add_members(
        &self,
        id: &str,
        member_ids: &[String],
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn remove_members(
        &self,
        id: &str,
        member_ids: &[String],
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn delete_group(&self, id: &str) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn list_users(&self) -> impl Future<Output = Result<Vec<RemoteUser>, TargetError>> + Send;
    fn list_groups(&self) -> impl Future<Output = Result<Vec<RemoteGroup>, TargetError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_error_reads_the_same_whatever_the_protocol() {
        let e = TargetError {
            request: "POST /Users".into(),
            kind: TargetErrorKind::Http {
                status: 409,
                code: Some("uniqueness".into()),
                detail: Some("userName taken".into()),
            },
        };
        assert_eq!(
            e.to_string(),
            "target POST /Users: HTTP 409 Conflict (uniqueness): userName taken"
        );
        assert!(e.is_conflict() && !e.is_fatal());
        let e = TargetError {
            request: "GET /users".into(),
            kind: TargetErrorKind::Http {
                status: 401,
                code: None,
                detail: None,
            },
        };
        assert_eq!(
            e.to_string(),
            "target GET /users: HTTP 401 Unauthorized — check the target's credentials (target.token or [target.auth])"
        );
        assert!(e.is_fatal());
    }
}
