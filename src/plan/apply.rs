//! The pure edges of sending an operation: [`prepare`] resolves keys to target ids against the
//! current records just before sending, and [`confirm`] turns the target's confirmation into the
//! state changes to record. Between the two, only the target client does I/O.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Operation;
use crate::model::{FieldChange, FieldValue, Key, User, UserField};
use crate::state::records::{GroupRecord, Origin, Snapshot, StateChange, UserRecord};

/// An operation with every reference resolved: what a target client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    CreateUser {
        key: Key,
        /// The user as it will be sent; `manager` is cleared when the manager has no target id yet.
        user: Arc<User>,
        manager_id: Option<String>,
    },
    UpdateUser {
        key: Key,
        target_id: String,
        changes: Vec<FieldChange>,
        /// The user as last pushed.
        before: Arc<User>,
        /// The whole user once the changes are applied.
        user: Arc<User>,
        manager_id: Option<String>,
    },
    DeactivateUser {
        key: Key,
        target_id: String,
    },
    DeleteUser {
        key: Key,
        target_id: String,
    },
    CreateGroup {
        key: Key,
        display_name: String,
    },
    RenameGroup {
        key: Key,
        target_id: String,
        display_name: String,
    },
    DeleteGroup {
        key: Key,
        target_id: String,
    },
    AddMembers {
        group: Key,
        group_id: String,
        /// (user key, user target id)
        members: Vec<(Key, String)>,
    },
    RemoveMembers {
        group: Key,
        group_id: String,
        members: Vec<(Key, String)>,
        /// Members whose user record is gone: nothing to send, just forget them.
        forgotten: Vec<Key>,
    },
}

/// Why an operation is not sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The target already is as the operation wants (e.g. an earlier operation did it).
    AlreadyDone,
    /// A reference has no target id (its creation failed); retried on a later run.
    Unresolved(String),
}

/// What the target answered to a sent request.
// One lives for the length of one request: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// Done as asked.
    Done,
    /// A user or group now exists under `target_id`. When `origin` is `Adopted`, the existing
    /// object's representation (user) or members (group) as read from the target.
    Created {
        target_id: String,
        origin: Origin,
        adopted_user: Option<User>,
        adopted_members: Option<BTreeSet<Key>>,
    },
    /// The object was already gone from the target (404 on delete or update).
    Gone,
}

/// Resolves an operation against the current records.
pub(crate) fn prepare(s: &Snapshot, op: &Operation) -> Result<Request, Skip> {
    let user_rec = |key: &Key| {
        s.users
            .get(key)
            .ok_or_else(|| Skip::Unresolved(format!("user {key} has no target id")))
    };
    let group_rec = |key: &Key| {
        s.groups.get(key).ok_or_else(|| {
            Skip::Unresolved(format!(
                "group {key} has no target id (its creation failed)"
            ))
        })
    };
    match op {
        Operation::CreateUser { key, user, .. } => {
            if s.users.contains_key(key) {
                return Err(Skip::AlreadyDone);
            }
            let mut user = Arc::clone(user);
            let manager_id = resolve_manager(s, &mut user);
            Ok(Request::CreateUser {
                key: key.clone(),
                user,
                manager_id,
            })
        }
        Operation::UpdateUser { key, desired, .. } => {
            let r = user_rec(key)?;
            let mut changes = r.pushed.changes_to(desired);
            if !desired.active {
                changes.retain(|c| c.field != UserField::Active);
            }
            let mut manager_id = None;
            changes.retain(|c| match (&c.field, &c.value) {
                (UserField::Manager, FieldValue::Text(Some(m))) => {
                    manager_id = s.user_id(m).map(str::to_string);
                    manager_id.is_some()
                }
                _ => true,
            });
            if changes.is_empty() {
                return Err(Skip::AlreadyDone);
            }
            let mut user = User::clone(&r.pushed);
            user.apply(&changes);
            // The manager's id goes with every update, not only when it changed: a target that
            // is sent the whole user (a REST API) must not be told the manager is gone.
            if manager_id.is_none() {
                manager_id = user
                    .manager
                    .as_ref()
                    .and_then(|m| s.user_id(m))
                    .map(str::to_string);
            }
            // Shared with the desired state when it is what the changes make (most updates).
            let user = if user == **desired {
                Arc::clone(desired)
            } else {
                Arc::new(user)
            };
            Ok(Request::UpdateUser {
                key: key.clone(),
                target_id: r.target_id.clone(),
                changes,
                before: r.pushed.clone(),
                user,
                manager_id,
            })
        }
        Operation::DeactivateUser { key, .. } => {
            let r = user_rec(key)?;
            if !r.pushed.active {
                return Err(Skip::AlreadyDone);
            }
            Ok(Request::DeactivateUser {
                key: key.clone(),
                target_id: r.target_id.clone(),
            })
        }
        Operation::DeleteUser { key, .. } => match s.users.get(key) {
            Some(r) => Ok(Request::DeleteUser {
                key: key.clone(),
                target_id: r.target_id.clone(),
            }),
            None => Err(Skip::AlreadyDone),
        },
        Operation::CreateGroup { key, display_name } => {
            if s.groups.contains_key(key) {
                return Err(Skip::AlreadyDone);
            }
            Ok(Request::CreateGroup {
                key: key.clone(),
                display_name: display_name.clone(),
            })
        }
        Operation::UpdateGroup {
            key, display_name, ..
        } => {
            let r = group_rec(key)?;
            if &r.display_name == display_name {
                return Err(Skip::AlreadyDone);
            }
            Ok(Request::RenameGroup {
                key: key.clone(),
                target_id: r.target_id.clone(),
                display_name: display_name.clone(),
            })
        }
        Operation::DeleteGroup { key, .. } => match s.groups.get(key) {
            Some(r) => Ok(Request::DeleteGroup {
                key: key.clone(),
                target_id: r.target_id.clone(),
            }),
            None => Err(Skip::AlreadyDone),
        },
        Operation::AddMembers { group, members, .. } => {
            let g = group_rec(group)?;
            let mut resolved = Vec::new();
            let mut missing = Vec::new();
            for m in members.iter().filter(|m| !g.members.contains(*m)) {
                match s.user_id(m) {
                    Some(id) => resolved.push((m.clone(), id.to_string())),
                    None => missing.push(m.clone()),
                }
            }
            if resolved.is_empty() {
                return Err(if missing.is_empty() {
                    Skip::AlreadyDone
                } else {
                    Skip::Unresolved(format!("{} member(s) have no target id yet", missing.len()))
                });
            }
            Ok(Request::AddMembers {
                group: group.clone(),
                group_id: g.target_id.clone(),
                members: resolved,
            })
        }
        Operation::RemoveMembers { group, members, .. } => {
            let g = group_rec(group)?;
            let mut resolved = Vec::new();
            let mut forgotten = Vec::new();
            for m in members.iter().filter(|m| g.members.contains(*m)) {
                match s.user_id(m) {
                    Some(id) => resolved.push((m.clone(), id.to_string())),
                    None => forgotten.push(m.clone()),
                }
            }
            if resolved.is_empty() && forgotten.is_empty() {
                return Err(Skip::AlreadyDone);
            }
            Ok(Request::RemoveMembers {
                group: group.clone(),
                group_id: g.target_id.clone(),
                members: resolved,
                forgotten,
            })
        }
    }
}

fn resolve_manager(s: &Snapshot, user: &mut Arc<User>) -> Option<String> {
    let id = user
        .manager
        .as_ref()
        .and_then(|m| s.user_id(m))
        .map(str::to_string);
    if id.is_none() && user.manager.is_some() {
        // Copied only then: the user is otherwise shared with the desired state.
        Arc::make_mut(user).manager = None;
    }
    id
}

/// The state changes a confirmed request makes.
pub(crate) fn confirm(s: &Snapshot, req: &Request, conf: Confirmation) -> Vec<StateChange> {
    let gone = conf == Confirmation::Gone;
    match req {
        Request::CreateUser { key, user, .. } => match conf {
            Confirmation::Created {
                target_id,
                origin,
                adopted_user,
                ..
            } => vec![StateChange::PutUser(
                key.clone(),
                UserRecord::new(
                    target_id,
                    origin,
                    adopted_user.map_or_else(|| Arc::clone(user), Arc::new),
                ),
            )],
            _ => vec![],
        },
        Request::UpdateUser { key, user, .. } => match s.users.get(key) {
            // The object was deleted on the target behind the gateway's back: forget it so the
            // next run creates it again.
            Some(_) if gone => forget_user(s, key),
            Some(r) => vec![StateChange::PutUser(
                key.clone(),
                UserRecord::new(r.target_id.clone(), r.origin, user.clone()),
            )],
            None => vec![],
        },
        Request::DeactivateUser { key, .. } => match s.users.get(key) {
            Some(_) if gone => forget_user(s, key),
            Some(r) => {
                let mut pushed = User::clone(&r.pushed);
                pushed.active = false;
                vec![StateChange::PutUser(
                    key.clone(),
                    UserRecord::new(r.target_id.clone(), r.origin, pushed),
                )]
            }
            None => vec![],
        },
        Request::DeleteUser { key, .. } => forget_user(s, key),
        Request::CreateGroup { key, display_name } => match conf {
            Confirmation::Created {
                target_id,
                origin,
                adopted_members,
                ..
            } => vec![StateChange::PutGroup(
                key.clone(),
                GroupRecord {
                    target_id,
                    origin,
                    display_name: display_name.clone(),
                    members: adopted_members.unwrap_or_default().into(),
                },
            )],
            _ => vec![],
        },
        Request::RenameGroup {
            key, display_name, ..
        } => match s.groups.get(key) {
            Some(_) if gone => vec![StateChange::RemoveGroup(key.clone())],
            Some(r) => {
                let mut r = r.clone();
                r.display_name = display_name.clone();
                vec![StateChange::PutGroup(key.clone(), r)]
            }
            None => vec![],
        },
        Request::DeleteGroup { key, .. } => vec![StateChange::RemoveGroup(key.clone())],
        Request::AddMembers { group, members, .. } => match s.groups.get(group) {
            Some(_) if gone => vec![StateChange::RemoveGroup(group.clone())],
            Some(r) => {
                let mut r = r.clone();
                Arc::make_mut(&mut r.members).extend(members.iter().map(|(k, _)| k.clone()));
                vec![StateChange::PutGroup(group.clone(), r)]
            }
            None => vec![],
        },
        Request::RemoveMembers {
            group,
            members,
            forgotten,
            ..
        } => match s.groups.get(group) {
            Some(_) if gone => vec![StateChange::RemoveGroup(group.clone())],
            Some(r) => {
                let mut r = r.clone();
                for k in members.iter().map(|(k, _)| k).chain(forgotten.iter()) {
                    Arc::make_mut(&mut r.members).remove(k);
                }
                vec![StateChange::PutGroup(group.clone(), r)]
            }
            None => vec![],
        },
    }
}

/// Removes a user record, and the user from every group record that still lists it, so that a
/// user created again later is added to its groups again.
fn forget_user(s: &Snapshot, key: &Key) -> Vec<StateChange> {
    let mut out = vec![StateChange::RemoveUser(key.clone())];
    for (gk, g) in s.groups.iter().filter(|(_, g)| g.members.contains(key)) {
        let mut g = g.clone();
        Arc::make_mut(&mut g.members).remove(key);
        out.push(StateChange::PutGroup(gk.clone(), g));
    }
    out
}

impl Request {
    /// The key of the object the request is about (the group, for membership changes).
    pub(crate) fn key(&self) -> &Key {
        match self {
            Request::CreateUser { key, .. }
            | Request::UpdateUser { key, .. }
            | Request::DeactivateUser { key, .. }
            | Request::DeleteUser { key, .. }
            | Request::CreateGroup { key, .. }
            | Request::RenameGroup { key, .. }
            | Request::DeleteGroup { key, .. } => key,
            Request::AddMembers { group, .. } | Request::RemoveMembers { group, .. } => group,
        }
    }
}
