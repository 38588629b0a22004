//! What a resync would repair, read from the target's real state and sent nowhere: the
//! directory read, the target listed and matched to it as a resync does (exact matches only),
//! then planned against what the target holds. Per object, what would be done, and for an
//! update, each attribute as the target holds it and as the directory has it; member references
//! to objects the target no longer holds. Nothing is written to the target or the state.

use std::collections::BTreeSet;

use serde::Serialize;

use super::observe::{dangling_members, observed};
use super::read::read_desired;
use super::{fit::fit, guarded, guards::guard_empty_read, policy, EngineError};
use crate::config::Config;
use crate::model::{DesiredState, FieldChange, FieldValue, Key, UserField};
use crate::plan::{plan, Operation};
use crate::state::records::Snapshot;
use crate::target::Target;

/// One attribute that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct AttributeDrift {
    pub attribute: String,
    /// As the target holds it (`None`: not set there).
    pub target: Option<String>,
    /// As the directory has it (`None`: not set in the directory).
    pub directory: Option<String>,
}

/// One object a resync would touch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ObjectDrift {
    /// `user` or `group`.
    pub kind: &'static str,
    /// The userName or group name.
    pub object: String,
    /// What a resync would send: `create_user`, `update_user`, `deactivate_user`, ...
    pub repair: &'static str,
    /// Why, in words.
    pub finding: String,
    /// A removal the accidental-deletion guard would hold: a resync sends it only once
    /// approved (`dirbridge approve-deletes`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held_by_guard: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeDrift>,
}

/// The report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Drift {
    /// When it was read (RFC 3339).
    pub at: String,
    pub target_users: usize,
    pub target_groups: usize,
    /// Directory users and groups found on the target (exactly one match each).
    pub matched_users: usize,
    pub matched_groups: usize,
    pub objects: Vec<ObjectDrift>,
    /// Removals the accidental-deletion guard would hold back.
    pub held_by_guard: usize,
    /// Groups listing members the target no longer holds, and how many.
    pub dangling_members: Vec<(String, usize)>,
}

impl Drift {
    pub(crate) fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.dangling_members.is_empty()
    }

    /// How many objects a resync would touch (an object with two operations counts once).
    pub(crate) fn object_count(&self) -> usize {
        let objects: BTreeSet<(&str, &str)> = self
            .objects
            .iter()
            .map(|o| (o.kind, o.object.as_str()))
            .collect();
        let dangling = self
            .dangling_members
            .iter()
            .filter(|(g, _)| !objects.contains(&("group", g.as_str())))
            .count();
        objects.len() + dangling
    }
}

/// Reads the directory and the target and says what a resync would repair.
pub(crate) async fn drift<T: Target>(
    cfg: &Config,
    records: &Snapshot,
    target: &T,
) -> Result<(Drift, DesiredState), EngineError> {
    guarded(drift_inner(cfg, records, target)).await
}

async fn drift_inner<T: Target>(
    cfg: &Config,
    records: &Snapshot,
    target: &T,
) -> Result<(Drift, DesiredState), EngineError> {
    let known: BTreeSet<Key> = records.users.keys().cloned().collect();
    let (mut desired, _) = read_desired(cfg, &known).await?;
    guard_empty_read(&desired, records)?;
    target.preflight().await?;
    let users = target.list_users().await?;
    let groups = target.list_groups().await?;
    let mut seen = observed(&desired, records, &users, &groups);
    let dangling = dangling_members(&seen, &users, &groups)
        .into_iter()
        .map(|(key, _, ids)| {
            let name = seen
                .groups
                .get(&key)
                .map(|g| g.display_name.to_string())
                .unwrap_or_else(|| key.to_string());
            (name, ids.len())
        })
        .collect();
    fit(target, &mut desired, &mut seen);
    let ops = plan(&desired, &seen, &policy(cfg));
    // What the accidental-deletion guard would hold back, as a resync would judge it.
    let managed = seen.users.len() + seen.groups.len();
    let approval = crate::state::approvals::deletion_approval(&cfg.state.path).unwrap_or(None);
    let verdict =
        crate::plan::guard::hold(ops.clone(), managed, &cfg.sync.guard, approval.as_ref());
    let held: BTreeSet<(&'static str, Key)> = match verdict.held {
        Some(_) => {
            let sent: BTreeSet<(&'static str, Key)> = verdict
                .ops
                .iter()
                .map(|o| (o.name(), o.key().clone()))
                .collect();
            ops.iter()
                .map(|o| (o.name(), o.key().clone()))
                .filter(|k| !sent.contains(k))
                .collect()
        }
        None => BTreeSet::new(),
    };
    let objects: Vec<ObjectDrift> = ops
        .iter()
        .map(|op| {
            let mut o = object(op, &seen);
            if held.contains(&(op.name(), op.key().clone())) {
                o.held_by_guard = true;
                o.finding.push_str(
                    "; held by the accidental-deletion guard: a resync sends it only once approved (dirbridge approve-deletes)",
                );
            }
            o
        })
        .collect();
    // The directory's objects the target holds (records of objects gone from the directory
    // are matched too, and are not the directory's).
    let matched_users = seen
        .users
        .keys()
        .filter(|k| desired.users.contains_key(*k))
        .count();
    let matched_groups = seen
        .groups
        .keys()
        .filter(|k| desired.groups.contains_key(*k))
        .count();
    Ok((
        Drift {
            at: super::now(),
            target_users: users.len(),
            target_groups: groups.len(),
            matched_users,
            matched_groups,
            held_by_guard: held.len(),
            objects,
            dangling_members: dangling,
        },
        desired,
    ))
}

fn text(v: &FieldValue) -> Option<String> {
    match v {
        FieldValue::Bool(b) => Some(b.to_string()),
        FieldValue::Text(t) => t.as_ref().map(|t| t.to_string()),
    }
}

pub(crate) fn field_name(f: &UserField) -> String {
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

/// One planned operation as a finding about the target.
fn object(op: &Operation, seen: &Snapshot) -> ObjectDrift {
    let (kind, finding, attributes) = match op {
        Operation::CreateUser { .. } => ("user", "not on the target".to_string(), Vec::new()),
        Operation::UpdateUser {
            key,
            changes,
            desired,
            ..
        } => {
            // What the target holds of each field that differs: the same comparison the
            // other way round.
            let held: Vec<FieldChange> = seen
                .users
                .get(key)
                .map(|r| desired.changes_to(&r.pushed))
                .unwrap_or_default();
            let attributes = changes
                .iter()
                .map(|c| AttributeDrift {
                    attribute: field_name(&c.field),
                    target: held
                        .iter()
                        .find(|h| h.field == c.field)
                        .and_then(|h| text(&h.value)),
                    directory: text(&c.value),
                })
                .collect();
            ("user", "attributes differ".to_string(), attributes)
        }
        Operation::DeactivateUser { reason, .. } => (
            "user",
            format!("active on the target, {reason:?} in the directory").to_lowercase(),
            Vec::new(),
        ),
        Operation::DeleteUser { reason, .. } => (
            "user",
            format!("on the target, {reason:?} in the directory").to_lowercase(),
            Vec::new(),
        ),
        Operation::CreateGroup { .. } => ("group", "not on the target".to_string(), Vec::new()),
        Operation::UpdateGroup { previous, .. } => (
            "group",
            format!("named {previous} on the target"),
            Vec::new(),
        ),
        Operation::DeleteGroup { .. } => (
            "group",
            "on the target, gone from the directory".to_string(),
            Vec::new(),
        ),
        Operation::AddMembers { members, .. } => (
            "group",
            format!("{} member(s) missing on the target", members.len()),
            Vec::new(),
        ),
        Operation::RemoveMembers { members, .. } => (
            "group",
            format!(
                "{} member(s) on the target not in the directory",
                members.len()
            ),
            Vec::new(),
        ),
    };
    ObjectDrift {
        kind,
        object: op.label().to_string(),
        repair: op.name(),
        finding,
        held_by_guard: false,
        attributes,
    }
}
