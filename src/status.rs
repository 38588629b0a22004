//! What the state store says about the gateway, for people: `dirbridge status`, and the status
//! server's `/status` and dashboard.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::state::records::Origin;
use crate::state::{ObjectError, RunRecord, StateError, Store};

/// What `status` shows.
#[derive(Debug, Serialize)]
pub(crate) struct StatusView {
    pub state: String,
    pub initialized: bool,
    pub target: Option<String>,
    pub last_run: Option<RunRecord>,
    pub last_success: Option<RunRecord>,
    pub users: usize,
    pub users_active: usize,
    pub users_adopted: usize,
    pub groups: usize,
    pub memberships: usize,
    pub errors: Vec<ObjectError>,
    /// Deactivations and deletions the accidental-deletion guard held back, awaiting approval.
    pub held_deletions: Option<crate::plan::guard::Held>,
    /// What the target does differently from its protocol, as the last run found it.
    pub target_quirks: Vec<crate::target::quirks::Quirk>,
}

/// How many objects the records hold, by kind and state: counted from the records a pass ends
/// with, so that the status server never decodes the store to show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Census {
    pub users: usize,
    pub users_active: usize,
    pub users_adopted: usize,
    pub groups: usize,
    pub memberships: usize,
}

impl Census {
    pub(crate) fn of(s: &crate::state::records::Snapshot) -> Census {
        Census {
            users: s.users.len(),
            users_active: s.users.values().filter(|u| u.pushed.active).count(),
            users_adopted: s
                .users
                .values()
                .filter(|u| u.origin == Origin::Adopted)
                .count(),
            groups: s.groups.len(),
            memberships: s.groups.values().map(|g| g.members.len()).sum(),
        }
    }

    /// The census after `change` is applied to `s` (before it is): counted by the change, not
    /// by the whole records.
    pub(crate) fn follow(
        &mut self,
        s: &crate::state::records::Snapshot,
        change: &crate::state::records::StateChange,
    ) {
        use crate::state::records::StateChange;
        let user = |c: &mut Census, r: &crate::state::records::UserRecord, n: isize| {
            c.users = c.users.saturating_add_signed(n);
            if r.pushed.active {
                c.users_active = c.users_active.saturating_add_signed(n);
            }
            if r.origin == Origin::Adopted {
                c.users_adopted = c.users_adopted.saturating_add_signed(n);
            }
        };
        let group = |c: &mut Census, r: &crate::state::records::GroupRecord, n: isize| {
            c.groups = c.groups.saturating_add_signed(n);
            let m = r.members.len() as isize;
            c.memberships = c.memberships.saturating_add_signed(n * m);
        };
        match change {
            StateChange::PutUser(k, _) | StateChange::RemoveUser(k) => {
                if let Some(old) = s.users.get(k) {
                    user(self, old, -1);
                }
                if let StateChange::PutUser(_, r) = change {
                    user(self, r, 1);
                }
            }
            StateChange::PutGroup(k, _) | StateChange::RemoveGroup(k) => {
                if let Some(old) = s.groups.get(k) {
                    group(self, old, -1);
                }
                if let StateChange::PutGroup(_, r) = change {
                    group(self, r, 1);
                }
            }
        }
    }
}

impl StatusView {
    pub(crate) fn read(store: &Store, path: &Path) -> Result<StatusView, StateError> {
        StatusView::with_census(store, path, Census::of(&store.snapshot()?))
    }

    /// The view with counts already known (the service keeps them from its last pass); the
    /// rest is a few small reads.
    pub(crate) fn with_census(
        store: &Store,
        path: &Path,
        c: Census,
    ) -> Result<StatusView, StateError> {
        Ok(StatusView {
            state: path.display().to_string(),
            initialized: true,
            target: store.target_identity()?,
            last_run: store.last_run()?,
            last_success: store.last_success()?,
            users: c.users,
            users_active: c.users_active,
            users_adopted: c.users_adopted,
            groups: c.groups,
            memberships: c.memberships,
            errors: store.errors()?,
            held_deletions: crate::state::approvals::held_deletions(path)?,
            target_quirks: store.quirks()?,
        })
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "State:        {}", self.state);
        let _ = writeln!(
            out,
            "Target:       {}",
            self.target.as_deref().unwrap_or("(none yet)")
        );
        match &self.last_run {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "Last run:     #{} {} at {}: {}",
                    r.run, r.kind, r.finished_at, r.outcome
                );
                if let Some(m) = &r.message {
                    let _ = writeln!(out, "              {m}");
                }
            }
            None => {
                let _ = writeln!(out, "Last run:     never");
            }
        }
        if let Some(r) = &self.last_success {
            let _ = writeln!(
                out,
                "Last success: #{} {} at {}",
                r.run, r.kind, r.finished_at
            );
        }
        let _ = writeln!(
            out,
            "Users:        {} ({} active, {} adopted)",
            self.users, self.users_active, self.users_adopted
        );
        let _ = writeln!(
            out,
            "Groups:       {} ({} memberships)",
            self.groups, self.memberships
        );
        if let Some(h) = &self.held_deletions {
            let _ = writeln!(
                out,
                "HELD:         {} deactivations/deletions held by the accidental-deletion guard \
                 (run `dirbridge approve-deletes` to send them):",
                h.count
            );
            for s in &h.sample {
                let _ = writeln!(out, "  {s}");
            }
        }
        if !self.target_quirks.is_empty() {
            let _ = writeln!(out, "Target quirks: {}", self.target_quirks.len());
            for q in &self.target_quirks {
                let _ = writeln!(out, "  {}: {} -> {}", q.id, q.found, q.handling);
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "Errors:       none");
        } else {
            let _ = writeln!(out, "Errors:       {}", self.errors.len());
            for e in &self.errors {
                let _ = writeln!(
                    out,
                    "  {} {} [{}] x{} since {}: {}",
                    e.kind, e.label, e.operation, e.attempts, e.first_seen, e.reason
                );
            }
        }
        out
    }
}
