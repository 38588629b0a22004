//! What the commands print for people: the plan table and the status page.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::model::{DesiredState, FieldValue, UserField};
use crate::plan::Operation;
use crate::state::records::Origin;
use crate::state::{ObjectError, RunRecord, StateError, Store};

fn field_name(f: &UserField) -> String {
    match f {
        UserField::UserName => "userName".into(),
        UserField::GivenName => "name.givenName".into(),
        UserField::FamilyName => "name.familyName".into(),
        UserField::DisplayName => "displayName".into(),
        UserField::Email => "emails.work".into(),
        UserField::Active => "active".into(),
        UserField::Title => "title".into(),
        UserField::Department => "department".into(),
        UserField::EmployeeNumber => "employeeNumber".into(),
        UserField::Manager => "manager".into(),
        UserField::Custom(p) => p.clone(),
    }
}

/// A readable table of the plan.
pub fn plan_table(ops: &[Operation], desired: &DesiredState) -> String {
    let mut out = String::new();
    if ops.is_empty() {
        out.push_str("Nothing to do: the target is up to date with the directory.\n");
    } else {
        let _ = writeln!(out, "{:<16} {:<32} DETAILS", "OPERATION", "OBJECT");
        for op in ops {
            let details = match op {
                Operation::CreateUser { user, .. } => {
                    format!(
                        "active={}{}",
                        user.active,
                        user.email
                            .as_deref()
                            .map(|e| format!(" email={e}"))
                            .unwrap_or_default()
                    )
                }
                Operation::UpdateUser { changes, .. } => changes
                    .iter()
                    .map(|c| match &c.value {
                        FieldValue::Bool(b) => format!("{}={b}", field_name(&c.field)),
                        FieldValue::Text(Some(v)) => format!("{}={v}", field_name(&c.field)),
                        FieldValue::Text(None) => format!("{} removed", field_name(&c.field)),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Operation::DeactivateUser { reason, .. } | Operation::DeleteUser { reason, .. } => {
                    format!("{reason:?}").to_lowercase()
                }
                Operation::UpdateGroup { previous, .. } => format!("renamed from {previous}"),
                Operation::AddMembers { members, .. }
                | Operation::RemoveMembers { members, .. } => {
                    format!("{} member(s)", members.len())
                }
                Operation::CreateGroup { .. } | Operation::DeleteGroup { .. } => String::new(),
            };
            let _ = writeln!(out, "{:<16} {:<32} {}", op.name(), op.label(), details);
        }
        let _ = writeln!(out, "{} operation(s).", ops.len());
    }
    for r in &desired.rejected {
        let _ = writeln!(out, "not synced: {}: {}", r.dn, r.reason);
    }
    out
}

/// What `status` shows.
#[derive(Debug, Serialize)]
pub struct StatusView {
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
}

impl StatusView {
    pub fn read(store: &Store, path: &Path) -> Result<StatusView, StateError> {
        let s = store.snapshot()?;
        Ok(StatusView {
            state: path.display().to_string(),
            initialized: true,
            target: store.target_identity()?,
            last_run: store.last_run()?,
            last_success: store.last_success()?,
            users: s.users.len(),
            users_active: s.users.values().filter(|u| u.pushed.active).count(),
            users_adopted: s
                .users
                .values()
                .filter(|u| u.origin == Origin::Adopted)
                .count(),
            groups: s.groups.len(),
            memberships: s.groups.values().map(|g| g.members.len()).sum(),
            errors: store.errors()?,
        })
    }

    pub fn text(&self) -> String {
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
