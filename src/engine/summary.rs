//! The figures of one run: what the one-line report, `status` and the run record show.

use serde::Serialize;

use crate::plan::apply::{Confirmation, Request};
use crate::state::records::Origin;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Summary {
    pub users_created: u64,
    pub users_adopted: u64,
    pub users_updated: u64,
    pub users_deactivated: u64,
    pub users_deleted: u64,
    pub groups_created: u64,
    pub groups_adopted: u64,
    pub groups_updated: u64,
    pub groups_deleted: u64,
    pub members_added: u64,
    pub members_removed: u64,
    /// Objects the target no longer had (deleted behind the gateway's back); recreated next run.
    pub missing_on_target: u64,
    /// Operations whose references could not be resolved (an earlier creation failed).
    pub deferred: u64,
    /// Operations the target refused or did not answer.
    pub errors: u64,
    /// Directory entries that could not be mapped.
    pub rejected: u64,
    /// Operations the target refused before and not sent again yet (retry backoff, service only).
    pub waiting: u64,
    /// Deactivations and deletions held back by the accidental-deletion guard.
    pub deletions_held: u64,
    /// Group member values that name no user or group read (see `DesiredState`).
    #[serde(default)]
    pub members_unresolved: u64,
    pub seconds: f64,
    /// Change-to-push latencies (seconds) of the objects a change-feed pass pushed.
    #[serde(skip)]
    pub latencies: Vec<f64>,
    /// The records' counts once the pass has sent its plan (none when it stopped earlier: the
    /// records did not change).
    #[serde(skip)]
    pub census: Option<crate::status::Census>,
    /// The operations refused or unanswered, by operation (`errors` in all).
    #[serde(skip)]
    pub failed: std::collections::BTreeMap<&'static str, u64>,
}

impl Summary {
    pub(crate) fn count(&mut self, req: &Request, conf: &Confirmation) {
        if *conf == Confirmation::Gone
            && !matches!(
                req,
                Request::DeleteUser { .. } | Request::DeleteGroup { .. }
            )
        {
            self.missing_on_target += 1;
            return;
        }
        let adopted = matches!(
            conf,
            Confirmation::Created {
                origin: Origin::Adopted,
                ..
            }
        );
        match req {
            Request::CreateUser { .. } if adopted => self.users_adopted += 1,
            Request::CreateUser { .. } => self.users_created += 1,
            Request::UpdateUser { .. } => self.users_updated += 1,
            Request::DeactivateUser { .. } => self.users_deactivated += 1,
            Request::DeleteUser { .. } => self.users_deleted += 1,
            Request::CreateGroup { .. } if adopted => self.groups_adopted += 1,
            Request::CreateGroup { .. } => self.groups_created += 1,
            Request::RenameGroup { .. } => self.groups_updated += 1,
            Request::DeleteGroup { .. } => self.groups_deleted += 1,
            Request::AddMembers { members, .. } => self.members_added += members.len() as u64,
            Request::RemoveMembers { members, .. } => self.members_removed += members.len() as u64,
        }
    }

    /// The one-line report of a run.
    pub(crate) fn line(&self, kind: &str) -> String {
        let mut line = format!(
            "{kind}: users {} created, {} adopted, {} updated, {} deactivated, {} deleted; \
             groups {} created, {} adopted, {} updated, {} deleted; members {} added, {} removed; \
             {} errors, {} entries rejected, {} waiting to retry, {} deletions held",
            self.users_created,
            self.users_adopted,
            self.users_updated,
            self.users_deactivated,
            self.users_deleted,
            self.groups_created,
            self.groups_adopted,
            self.groups_updated,
            self.groups_deleted,
            self.members_added,
            self.members_removed,
            self.errors,
            self.rejected,
            self.waiting,
            self.deletions_held,
        );
        if self.deferred > 0 {
            line.push_str(&format!(
                "; {} operations deferred to a later pass (waiting for another object)",
                self.deferred
            ));
        }
        if self.members_unresolved > 0 {
            line.push_str(&format!(
                "; {} member references to no user or group read",
                self.members_unresolved
            ));
        }
        line.push_str(&format!(" ({:.1}s)", self.seconds));
        line
    }
}
