//! The plan: a pure diff of the desired state (from the directory) against the last pushed state
//! (from the store, or read back from the target on a resync) into an ordered list of operations.
//!
//! No I/O happens here. [`apply`] holds the other pure half: resolving an operation's keys into
//! target ids just before it is sent, and turning a confirmed operation into state changes. The
//! engine and the property tests share both, so what is tested is what runs.

pub(crate) mod apply;
pub(crate) mod guard;
mod ops;

use std::collections::{BTreeMap, BTreeSet};

pub(crate) use ops::{Operation, RemovalReason, MEMBER_BATCH};

use crate::config::RemovalAction;
use crate::model::{DesiredState, FieldValue, Key, User, UserField};
use crate::state::records::{user_hash, Snapshot};

/// What to do with users that are disabled or leave the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub on_disable: RemovalAction,
    pub on_remove: RemovalAction,
}

/// Computes the operations that bring the target from `pushed` to `desired`, in the order they
/// must be sent: users before the groups that list them, member changes before deletions.
pub(crate) fn plan(desired: &DesiredState, pushed: &Snapshot, policy: &Policy) -> Vec<Operation> {
    let held_known: BTreeSet<&Key> = desired
        .held
        .iter()
        .filter(|k| pushed.users.contains_key(*k))
        .collect();
    let deleted_when_disabled = |u: &User| !u.active && policy.on_disable == RemovalAction::Delete;

    // Users that will be on the target, live, once the plan has run: the only valid member and
    // manager references.
    let provisioned: BTreeSet<&Key> = desired
        .users
        .iter()
        .filter(|(_, u)| !deleted_when_disabled(u))
        .map(|(k, _)| k)
        .chain(held_known.iter().copied())
        .collect();

    let sanitize = |key: &Key, u: &User| -> User {
        let mut u = u.clone();
        u.manager = u.manager.filter(|m| m != key && provisioned.contains(m));
        u
    };

    let mut to_create: BTreeMap<&Key, User> = BTreeMap::new();
    let mut updates = Vec::new();
    let mut deactivations = Vec::new();
    let mut user_deletions = Vec::new();

    for (key, u) in &desired.users {
        let record = pushed.users.get(key);
        if deleted_when_disabled(u) {
            if let Some(r) = record {
                user_deletions.push(Operation::DeleteUser {
                    key: key.clone(),
                    user_name: r.pushed.user_name.clone(),
                    reason: RemovalReason::Disabled,
                });
            }
            continue;
        }
        let want = sanitize(key, u);
        let Some(r) = record else {
            to_create.insert(key, want);
            continue;
        };
        if user_hash(&want) == r.hash {
            continue;
        }
        let mut changes = r.pushed.changes_to(&want);
        if !want.active {
            // Switching a user off is the deactivation's job, so it is counted as one.
            changes.retain(|c| c.field != UserField::Active);
            if r.pushed.active {
                deactivations.push(Operation::DeactivateUser {
                    key: key.clone(),
                    user_name: r.pushed.user_name.clone(),
                    reason: RemovalReason::Disabled,
                });
            }
        }
        if !changes.is_empty() {
            updates.push(Operation::UpdateUser {
                key: key.clone(),
                user_name: want.user_name.clone(),
                changes,
                desired: want,
            });
        }
    }

    let (creates, follow_ups) = order_creates(to_create);

    for (key, r) in &pushed.users {
        if desired.users.contains_key(key) || desired.held.contains(key) {
            continue;
        }
        match policy.on_remove {
            RemovalAction::Deactivate if r.pushed.active => {
                deactivations.push(Operation::DeactivateUser {
                    key: key.clone(),
                    user_name: r.pushed.user_name.clone(),
                    reason: RemovalReason::Removed,
                })
            }
            RemovalAction::Deactivate => {}
            RemovalAction::Delete => user_deletions.push(Operation::DeleteUser {
                key: key.clone(),
                user_name: r.pushed.user_name.clone(),
                reason: RemovalReason::Removed,
            }),
        }
    }

    let mut group_creates = Vec::new();
    let mut group_updates = Vec::new();
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    let mut group_deletions = Vec::new();
    for (key, g) in &desired.groups {
        let record = pushed.groups.get(key);
        let mut want: BTreeSet<Key> = g
            .members
            .iter()
            .filter(|m| provisioned.contains(m))
            .cloned()
            .collect();
        if let Some(r) = record {
            // A held user keeps the memberships it had: a bad entry is not a departure.
            want.extend(r.members.iter().filter(|m| held_known.contains(m)).cloned());
        }
        let have = record.map(|r| r.members.clone()).unwrap_or_default();
        match record {
            None => group_creates.push(Operation::CreateGroup {
                key: key.clone(),
                display_name: g.display_name.clone(),
            }),
            Some(r) if r.display_name != g.display_name => {
                group_updates.push(Operation::UpdateGroup {
                    key: key.clone(),
                    display_name: g.display_name.clone(),
                    previous: r.display_name.clone(),
                })
            }
            Some(_) => {}
        }
        let add: Vec<Key> = want.difference(&have).cloned().collect();
        let remove: Vec<Key> = have.difference(&want).cloned().collect();
        for chunk in add.chunks(MEMBER_BATCH) {
            adds.push(Operation::AddMembers {
                group: key.clone(),
                display_name: g.display_name.clone(),
                members: chunk.to_vec(),
            });
        }
        for chunk in remove.chunks(MEMBER_BATCH) {
            removes.push(Operation::RemoveMembers {
                group: key.clone(),
                display_name: g.display_name.clone(),
                members: chunk.to_vec(),
            });
        }
    }
    for (key, r) in &pushed.groups {
        if !desired.groups.contains_key(key) && !desired.held.contains(key) {
            group_deletions.push(Operation::DeleteGroup {
                key: key.clone(),
                display_name: r.display_name.clone(),
            });
        }
    }

    let mut out = creates;
    out.extend(follow_ups);
    out.extend(updates);
    out.extend(group_creates);
    out.extend(group_updates);
    out.extend(adds);
    out.extend(removes);
    out.extend(deactivations);
    out.extend(user_deletions);
    out.extend(group_deletions);
    out
}

/// Orders user creations so that a manager is created before the people who report to it; a
/// user whose manager cannot come first (a reporting cycle) gets its manager in a follow-up
/// update once everyone exists.
fn order_creates(mut to_create: BTreeMap<&Key, User>) -> (Vec<Operation>, Vec<Operation>) {
    // Each user moves from `to_create` into its operation once placed (no second copy of every
    // user at once): "still in `to_create`" means "not placed yet".
    let starts: Vec<&Key> = to_create.keys().copied().collect();
    let mut creates = Vec::with_capacity(starts.len());
    let mut follow_ups = Vec::new();
    for start in starts {
        let mut path: Vec<&Key> = Vec::new();
        let mut cur = Some(start);
        while let Some(k) = cur {
            if path.contains(&k) {
                break;
            }
            let Some(u) = to_create.get(k) else { break };
            path.push(k);
            cur = u
                .manager
                .as_ref()
                .and_then(|m| to_create.get_key_value(m).map(|(k, _)| *k));
        }
        for k in path.into_iter().rev() {
            // Not placed yet: still in `to_create` (the user itself included, before it moves).
            let manager_later = to_create
                .get(k)
                .and_then(|u| u.manager.as_ref())
                .is_some_and(|m| to_create.contains_key(m));
            let Some(u) = to_create.remove(k) else {
                continue;
            };
            if manager_later {
                follow_ups.push(Operation::UpdateUser {
                    key: k.clone(),
                    user_name: u.user_name.clone(),
                    changes: vec![crate::model::FieldChange {
                        field: UserField::Manager,
                        value: FieldValue::Text(u.manager.clone()),
                    }],
                    desired: u.clone(),
                });
            }
            creates.push(Operation::CreateUser {
                key: k.clone(),
                user_name: u.user_name.clone(),
                user: u,
            });
        }
    }
    (creates, follow_ups)
}

#[cfg(test)]
mod tests;
