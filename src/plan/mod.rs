//! The plan: a pure diff of the desired state (from the directory) against the last pushed state
//! (from the store, or read back from the target on a resync) into an ordered list of operations.
//!
//! No I/O happens here. [`apply`] holds the other pure half: resolving an operation's keys into
//! target ids just before it is sent, and turning a confirmed operation into state changes. The
//! engine and the property tests share both, so what is tested is what runs.

pub(crate) mod apply;
pub(crate) mod guard;
mod ops;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

pub(crate) use ops::{Operation, RemovalReason, MEMBER_BATCH};

use crate::config::RemovalAction;
use crate::model::{Desired, DesiredState, FieldValue, Key, User, UserField};
use crate::state::records::Snapshot;

/// What to do with users that are disabled or leave the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub on_disable: RemovalAction,
    pub on_remove: RemovalAction,
}

/// Computes the operations that bring the target from `pushed` to `desired`, in the order they
/// must be sent: users before the groups that list them, member changes before deletions.
pub(crate) fn plan(desired: &DesiredState, pushed: &Snapshot, policy: &Policy) -> Vec<Operation> {
    // Every key is planned: the users and their records are walked side by side (no look-up
    // per key), and who is provisioned is hashed once (each group asks it of every member).
    let mut p = Planner {
        desired,
        pushed,
        policy,
        provisioned: None,
        out: Sorted::default(),
    };
    // What `provisioned` answers key by key, for every key at once.
    let provisioned: HashSet<&str> = desired
        .users
        .iter()
        .filter(|(_, u)| !p.deleted_when_disabled(u))
        .map(|(k, _)| &**k)
        .chain(
            desired
                .held
                .iter()
                .filter(|k| !desired.users.contains_key(*k) && p.held_known(k))
                .map(|k| &**k),
        )
        .collect();
    p.provisioned = Some(provisioned);
    let groups: BTreeSet<&Key> = desired.groups.keys().chain(pushed.groups.keys()).collect();
    let users = side_by_side(&desired.users, &pushed.users);
    let mut to_create: BTreeMap<&str, (&Key, Arc<User>)> = BTreeMap::new();
    for (key, u, record) in users {
        if let Some(u) = p.user_create_with(key, u, record) {
            to_create.insert(key, (key, u));
        }
    }
    p.finish(to_create, groups)
}

/// The keys of two maps in order, each with its value in either (a merge of sorted lists).
fn side_by_side<'a, A, B>(
    a: &'a BTreeMap<Key, A>,
    b: &'a BTreeMap<Key, B>,
) -> impl Iterator<Item = (&'a Key, Option<&'a A>, Option<&'a B>)> {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return None,
        };
        match order {
            std::cmp::Ordering::Less => a.next().map(|(k, x)| (k, Some(x), None)),
            std::cmp::Ordering::Greater => b.next().map(|(k, y)| (k, None, Some(y))),
            std::cmp::Ordering::Equal => {
                let (k, x) = a.next()?;
                Some((k, Some(x), b.next().map(|(_, y)| y)))
            }
        }
    })
}

/// [`plan`] for the given keys only (each set in key order): the operations the full plan
/// has for them, in the same order. A change-feed pass plans the keys its changes reach.
pub(crate) fn plan_keys<'k>(
    desired: &dyn Desired,
    pushed: &Snapshot,
    policy: &Policy,
    users: impl IntoIterator<Item = &'k Key>,
    groups: impl IntoIterator<Item = &'k Key>,
) -> Vec<Operation> {
    let mut p = Planner {
        desired,
        pushed,
        policy,
        provisioned: None,
        out: Sorted::default(),
    };
    let mut to_create: BTreeMap<&str, (&Key, Arc<User>)> = BTreeMap::new();
    for key in users {
        let u = p.desired.user(key);
        if let Some(u) = p.user_create_with(key, u, pushed.users.get(key)) {
            to_create.insert(key, (key, u));
        }
    }
    p.finish(to_create, groups)
}

impl<'a> Planner<'a> {
    /// Plans the groups and puts every operation in sending order.
    fn finish<'k>(
        mut self,
        to_create: BTreeMap<&str, (&Key, Arc<User>)>,
        groups: impl IntoIterator<Item = &'k Key>,
    ) -> Vec<Operation> {
        for key in groups {
            self.group(key);
        }
        let (creates, follow_ups) = order_creates(to_create);
        let o = self.out;
        let mut out = creates;
        out.extend(follow_ups);
        for part in [
            o.updates,
            o.group_creates,
            o.group_updates,
            by_round(o.adds),
            by_round(o.removes),
            o.disabled_deactivations,
            o.removed_deactivations,
            o.disabled_deletions,
            o.removed_deletions,
            o.group_deletions,
        ] {
            out.extend(part);
        }
        out
    }
}

/// A group's membership changes in rounds: every group's first batch, then every group's
/// second, and so on (each in key order). A group's batches go one at a time, each waiting for
/// the last to be confirmed; sent group by group, a first sync's large groups went one batch at
/// a time.
fn by_round(ops: Vec<Operation>) -> Vec<Operation> {
    let mut round = 0usize;
    let mut last: Option<Key> = None;
    let mut numbered: Vec<(usize, Operation)> = Vec::with_capacity(ops.len());
    for op in ops {
        round = match &last {
            Some(k) if k == op.key() => round + 1,
            _ => 0,
        };
        last = Some(op.key().clone());
        numbered.push((round, op));
    }
    // Stable: each round keeps the key order.
    numbered.sort_by_key(|(round, _)| *round);
    numbered.into_iter().map(|(_, op)| op).collect()
}

/// The operations of a plan by kind, each in key order (membership changes are then put in
/// rounds by [`by_round`]).
#[derive(Default)]
struct Sorted {
    updates: Vec<Operation>,
    group_creates: Vec<Operation>,
    group_updates: Vec<Operation>,
    adds: Vec<Operation>,
    removes: Vec<Operation>,
    disabled_deactivations: Vec<Operation>,
    removed_deactivations: Vec<Operation>,
    disabled_deletions: Vec<Operation>,
    removed_deletions: Vec<Operation>,
    group_deletions: Vec<Operation>,
}

struct Planner<'a> {
    desired: &'a dyn Desired,
    pushed: &'a Snapshot,
    policy: &'a Policy,
    /// Who [`Planner::provisioned`] says yes for, when the whole plan is made.
    provisioned: Option<HashSet<&'a str>>,
    out: Sorted,
}

impl Planner<'_> {
    fn deleted_when_disabled(&self, u: &User) -> bool {
        !u.active && self.policy.on_disable == RemovalAction::Delete
    }

    /// A held user already on the target: it keeps what it has.
    fn held_known(&self, key: &str) -> bool {
        self.desired.held(key) && self.pushed.users.contains_key(key)
    }

    /// True for a user that will be on the target, live, once the plan has run: the only
    /// valid member and manager references.
    fn provisioned(&self, key: &str) -> bool {
        if let Some(set) = &self.provisioned {
            return set.contains(key);
        }
        match self.desired.user(key) {
            Some(u) => !self.deleted_when_disabled(u),
            None => self.held_known(key),
        }
    }

    /// Plans one user (`desired` and `record` are what the desired state and the records hold
    /// under `key`); returns it when it is to be created (creates are ordered together).
    fn user_create_with(
        &mut self,
        key: &Key,
        desired: Option<&Arc<User>>,
        record: Option<&crate::state::records::UserRecord>,
    ) -> Option<Arc<User>> {
        let Some(u) = desired else {
            if let Some(r) = record.filter(|_| !self.desired.held(key)) {
                self.removed(key, r);
            }
            return None;
        };
        if self.deleted_when_disabled(u) {
            if let Some(r) = record {
                self.out.disabled_deletions.push(Operation::DeleteUser {
                    key: key.clone(),
                    user_name: r.pushed.user_name.to_string(),
                    reason: RemovalReason::Disabled,
                });
            }
            return None;
        }
        // Most users are as last pushed: compared as they are, copied only to be changed.
        let manager_kept = u
            .manager
            .as_deref()
            .is_none_or(|m| m != &**key && self.provisioned(m));
        let same =
            |r: &crate::state::records::UserRecord| Arc::ptr_eq(u, &r.pushed) || **u == *r.pushed;
        if manager_kept && self.desired.fitted() && record.is_some_and(same) {
            return None;
        }
        // Shared with the desired state unless this plan changes it.
        let mut want = Arc::clone(u);
        if !manager_kept {
            Arc::make_mut(&mut want).manager = None;
        }
        if !self.desired.fitted() {
            let desired = self.desired;
            crate::model::fit_shared(&mut want, &|u| desired.fit(u));
        }
        let Some(r) = record else {
            return Some(want);
        };
        if *want == *r.pushed {
            return None;
        }
        let mut changes = r.pushed.changes_to(&want);
        if !want.active {
            // Switching a user off is the deactivation's job, so it is counted as one.
            changes.retain(|c| c.field != UserField::Active);
            if r.pushed.active {
                self.out
                    .disabled_deactivations
                    .push(Operation::DeactivateUser {
                        key: key.clone(),
                        user_name: r.pushed.user_name.to_string(),
                        reason: RemovalReason::Disabled,
                    });
            }
        }
        if !changes.is_empty() {
            self.out.updates.push(Operation::UpdateUser {
                key: key.clone(),
                user_name: want.user_name.to_string(),
                changes,
                desired: want,
            });
        }
        None
    }

    /// A user pushed before that the directory no longer has.
    fn removed(&mut self, key: &Key, r: &crate::state::records::UserRecord) {
        match self.policy.on_remove {
            RemovalAction::Deactivate if r.pushed.active => {
                self.out
                    .removed_deactivations
                    .push(Operation::DeactivateUser {
                        key: key.clone(),
                        user_name: r.pushed.user_name.to_string(),
                        reason: RemovalReason::Removed,
                    })
            }
            RemovalAction::Deactivate => {}
            RemovalAction::Delete => self.out.removed_deletions.push(Operation::DeleteUser {
                key: key.clone(),
                user_name: r.pushed.user_name.to_string(),
                reason: RemovalReason::Removed,
            }),
        }
    }

    fn group(&mut self, key: &Key) {
        let record = self.pushed.groups.get(key);
        let Some(g) = self.desired.group(key) else {
            if let Some(r) = record.filter(|_| !self.desired.held(key)) {
                self.out.group_deletions.push(Operation::DeleteGroup {
                    key: key.clone(),
                    display_name: r.display_name.clone(),
                });
            }
            return;
        };
        let empty = BTreeSet::new();
        let have = record.map(|r| &*r.members).unwrap_or(&empty);
        match record {
            None => self.out.group_creates.push(Operation::CreateGroup {
                key: key.clone(),
                display_name: g.display_name.clone(),
            }),
            Some(r) if r.display_name != g.display_name => {
                self.out.group_updates.push(Operation::UpdateGroup {
                    key: key.clone(),
                    display_name: g.display_name.clone(),
                    previous: r.display_name.clone(),
                })
            }
            Some(_) => {}
        }
        let (add, remove) = member_changes(
            &g.members,
            have,
            |m| self.provisioned(m),
            // A held user keeps the memberships it had: a bad entry is not a departure.
            |m| self.held_known(m),
        );
        for chunk in add.chunks(MEMBER_BATCH) {
            self.out.adds.push(Operation::AddMembers {
                group: key.clone(),
                display_name: g.display_name.clone(),
                members: chunk.to_vec(),
            });
        }
        for chunk in remove.chunks(MEMBER_BATCH) {
            self.out.removes.push(Operation::RemoveMembers {
                group: key.clone(),
                display_name: g.display_name.clone(),
                members: chunk.to_vec(),
            });
        }
    }
}

/// The members to add to and remove from a group that lists `listed` and whose record holds
/// `have`, each in key order: a listed member is wanted when `provisioned`, and a member the
/// record holds stays while `kept`. One walk of the two sorted sets: collecting the wanted set
/// first and comparing it with the record both ways was a tenth of the executor's thread in a
/// no-change pass at 100k users.
pub(crate) fn member_changes(
    listed: &BTreeSet<Key>,
    have: &BTreeSet<Key>,
    provisioned: impl Fn(&str) -> bool,
    kept: impl Fn(&str) -> bool,
) -> (Vec<Key>, Vec<Key>) {
    use std::cmp::Ordering;
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    let (mut listed, mut have) = (listed.iter().peekable(), have.iter().peekable());
    loop {
        let order = match (listed.peek(), have.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(l), Some(h)) => l.cmp(h),
        };
        match order {
            Ordering::Less => {
                if let Some(m) = listed.next().filter(|m| provisioned(m)) {
                    add.push(m.clone());
                }
            }
            Ordering::Greater => {
                if let Some(m) = have.next().filter(|m| !kept(m)) {
                    remove.push(m.clone());
                }
            }
            Ordering::Equal => {
                have.next();
                if let Some(m) = listed.next().filter(|m| !provisioned(m) && !kept(m)) {
                    remove.push(m.clone());
                }
            }
        }
    }
    (add, remove)
}

/// Orders user creations so that a manager is created before the people who report to it; a
/// user whose manager cannot come first (a reporting cycle) gets its manager in a follow-up
/// update once everyone exists.
fn order_creates(
    mut to_create: BTreeMap<&str, (&Key, Arc<User>)>,
) -> (Vec<Operation>, Vec<Operation>) {
    // Each user moves from `to_create` into its operation once placed (no second copy of every
    // user at once): "still in `to_create`" means "not placed yet".
    let starts: Vec<&str> = to_create.keys().copied().collect();
    let mut creates = Vec::with_capacity(starts.len());
    let mut follow_ups = Vec::new();
    for start in starts {
        let mut path: Vec<&str> = Vec::new();
        let mut cur = Some(start);
        while let Some(k) = cur {
            if path.contains(&k) {
                break;
            }
            let Some((_, u)) = to_create.get(k) else {
                break;
            };
            path.push(k);
            cur = u
                .manager
                .as_deref()
                .and_then(|m| to_create.get_key_value(m).map(|(k, _)| *k));
        }
        for k in path.into_iter().rev() {
            // Not placed yet: still in `to_create` (the user itself included, before it moves).
            let manager_later = to_create
                .get(k)
                .and_then(|(_, u)| u.manager.as_deref())
                .is_some_and(|m| to_create.contains_key(m));
            let Some((k, u)) = to_create.remove(k) else {
                continue;
            };
            if manager_later {
                follow_ups.push(Operation::UpdateUser {
                    key: k.clone(),
                    user_name: u.user_name.to_string(),
                    changes: vec![crate::model::FieldChange {
                        field: UserField::Manager,
                        value: FieldValue::Text(u.manager.as_deref().map(str::to_string)),
                    }],
                    desired: u.clone(),
                });
            }
            creates.push(Operation::CreateUser {
                key: k.clone(),
                user_name: u.user_name.to_string(),
                user: u,
            });
        }
    }
    (creates, follow_ups)
}

#[cfg(test)]
mod tests;
