//! What the commands print for people: the plan table and the status page.

use std::fmt::Write;

use crate::model::{DesiredState, FieldValue, UserField};
use crate::plan::Operation;

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
