//! Active Directory change notification (LDAP_SERVER_NOTIFICATION_OID): a search that never ends
//! and returns an entry each time an object under its base changes. It says *that* something
//! changed, not what: the daemon answers with an incremental uSNChanged read, which knows how
//! to read only the changes and to see deletions.

use ldap3::controls::RawControl;
use ldap3::{Scope, SearchStream};

use super::ldap::Session;
use super::SourceError;

/// LDAP_SERVER_NOTIFICATION_OID.
pub(crate) const NOTIFICATION_OID: &str = "1.2.840.113556.1.4.528";
/// LDAP_SERVER_SHOW_DELETED_OID.
pub(crate) const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

/// A running notification search.
pub(crate) struct Notifications {
    stream: SearchStream<'static, String, Vec<String>>,
    base: String,
    verdict: super::wire::Verdict,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("base", &self.base)
            .finish()
    }
}

impl Session {
    /// Registers for change notifications on the subtree of `base`. AD takes only the filter
    /// `(objectClass=*)` with this control.
    pub(crate) async fn notifications(&mut self, base: &str) -> Result<Notifications, SourceError> {
        let verdict = self.verdict();
        let ldap = self.ldap_mut();
        // With Show Deleted, deletions notify too (AD sends nothing for them otherwise, and
        // the deleted user would wait for the next poll).
        ldap.with_controls(vec![
            RawControl {
                ctype: NOTIFICATION_OID.into(),
                crit: true,
                val: None,
            },
            RawControl {
                ctype: SHOW_DELETED_OID.into(),
                crit: true,
                val: None,
            },
        ]);
        let stream = ldap
            .streaming_search(
                base,
                Scope::Subtree,
                "(objectClass=*)",
                vec!["objectGUID".to_string()],
            )
            .await
            .map_err(|e| SourceError::Search {
                base: base.to_string(),
                filter: "(objectClass=*)".into(),
                reason: format!(
                    "cannot register for change notifications: {}",
                    super::ldap::op_error(e, &verdict)
                ),
            })?;
        Ok(Notifications {
            stream,
            base: base.to_string(),
            verdict,
        })
    }
}

impl Notifications {
    fn err(&self, reason: String) -> SourceError {
        SourceError::Search {
            base: self.base.clone(),
            filter: "(objectClass=*)".into(),
            reason,
        }
    }

    /// Waits for the next change. An error when the connection is lost or the server refuses or
    /// ends the registration (with its result code: 50 and 12 mean "not allowed here").
    pub(crate) async fn next(&mut self) -> Result<(), SourceError> {
        loop {
            match self.stream.next().await {
                Ok(Some(item)) if item.is_ref() || item.is_intermediate() => continue,
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {
                    let res = self.stream.finish().await;
                    return Err(self.err(format!(
                        "change notification ended: {}",
                        super::ldap::describe(res.rc, &res.text)
                    )));
                }
                Err(e) => {
                    let why = super::ldap::op_error(e, &self.verdict);
                    return Err(self.err(format!("change notification lost: {why}")));
                }
            }
        }
    }
}
