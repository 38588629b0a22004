//! What the commands print for people: the plan table and the status page.

use std::fmt::Write;

use serde_json::Value;

use crate::model::{DesiredState, FieldValue};
use crate::plan::Operation;

use crate::engine::drift::{field_name, Drift};

/// Text from the directory or a target, made safe for a terminal: control characters (line
/// breaks, escape sequences) shown escaped, so that a value cannot forge a line or repaint the
/// screen.
fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The drift report of `resync --dry-run`.
pub(super) fn drift_text(d: &Drift) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "The target, read at {}: {} users and {} groups, of which {} and {} are the directory's.",
        d.at, d.target_users, d.target_groups, d.matched_users, d.matched_groups
    );
    if d.is_empty() {
        out.push_str("No drift: a resync would repair nothing.\n");
        return out;
    }
    if !d.objects.is_empty() {
        let _ = writeln!(out, "\n{:<16} {:<32} FINDING", "REPAIR", "OBJECT");
        for o in &d.objects {
            let _ = writeln!(
                out,
                "{:<16} {:<32} {}",
                o.repair,
                shown(&o.object),
                shown(&o.finding)
            );
            for a in &o.attributes {
                let shown = |v: &Option<String>| {
                    v.as_ref()
                        .map_or_else(|| "(not set)".to_string(), |v| format!("{v:?}"))
                };
                let _ = writeln!(
                    out,
                    "{:<17}{}: target {}, directory {}",
                    "",
                    a.attribute,
                    shown(&a.target),
                    shown(&a.directory)
                );
            }
        }
    }
    for (group, n) in &d.dangling_members {
        let _ = writeln!(
            out,
            "{:<16} {:<32} {n} member reference(s) to objects the target no longer holds",
            "remove_members",
            shown(group)
        );
    }
    let _ = writeln!(
        out,
        "\n{} object(s) would be repaired by `dirbridge resync`; nothing was sent or written.",
        d.object_count()
    );
    if d.held_by_guard > 0 {
        let _ = writeln!(
            out,
            "{} of these operations (removals, and the member removals that go with them) would be held by the accidental-deletion guard: a resync sends them only once approved (`dirbridge approve-deletes`).",
            d.held_by_guard
        );
    }
    out
}

/// A readable table of the plan.
pub(super) fn plan_table(ops: &[Operation], desired: &DesiredState) -> String {
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
            let _ = writeln!(
                out,
                "{:<16} {:<32} {}",
                op.name(),
                shown(op.label()),
                shown(&details)
            );
        }
        let _ = writeln!(out, "{} operation(s).", ops.len());
    }
    for r in &desired.rejected {
        let _ = writeln!(out, "not synced: {}: {}", shown(&r.dn), shown(&r.reason));
    }
    out
}

/// `test-mapping` for people: the entry, the mapped user, the requests.
pub(super) fn preview_text(
    p: &crate::engine::preview::Preview,
    requests: &[crate::target::Rendered],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Entry: {}", p.dn);
    for (name, values) in &p.attributes {
        for v in values {
            let _ = writeln!(out, "  {name}: {v}");
        }
    }
    match &p.key {
        Some(k) => {
            let _ = writeln!(out, "Key: {k}");
        }
        None => {
            let _ = writeln!(out, "Key: none (the entry has no stable key attribute)");
        }
    }
    if let Some(reason) = &p.rejected {
        let _ = writeln!(out, "REJECTED: {reason}");
        return out;
    }
    if let Some(u) = &p.user {
        let _ = writeln!(out, "Mapped user:");
        if let Ok(Value::Object(m)) = serde_json::to_value(u) {
            for (k, v) in m {
                let _ = writeln!(out, "  {k}: {v}");
            }
        }
    }
    if !p.groups.is_empty() {
        let _ = writeln!(out, "Groups: {}", p.groups.join(", "));
    }
    if requests.is_empty() {
        let _ = writeln!(
            out,
            "Requests: none (the target is up to date for this user)"
        );
    } else {
        let _ = writeln!(out, "Requests a sync would send now:");
        for r in requests {
            let _ = writeln!(out, "  {} {}", r.method, r.path);
            if let Some(n) = r.note {
                let _ = writeln!(out, "    ({n})");
            }
            if let Some(b) = &r.body {
                let pretty = serde_json::to_string_pretty(b).unwrap_or_default();
                for line in pretty.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_forge_a_line_or_repaint_the_terminal() {
        assert_eq!(
            shown("sales\nNo drift\u{1b}[2K\u{1b}[31mRED"),
            "sales\\nNo drift\\u{1b}[2K\\u{1b}[31mRED"
        );
        assert_eq!(shown("Zoë — 東京"), "Zoë — 東京");
    }
}
