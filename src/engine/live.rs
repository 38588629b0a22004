//! What a change-feed pass plans. The first pass of a feed (and any pass after the records were
//! written by something else, or after a pass that failed) builds the desired state from the
//! whole mirror and plans every key. The passes after it update that state by the keys that
//! changed and plan only what the changes reached, what the last pass left to do, and the
//! groups whose records list a user whose standing changed: the full plan restricted to those
//! keys, which is the full plan (the property test in `live/tests.rs` checks it on random
//! sequences of changes, refusals and policies).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::feed::{Entries, Feed};
use crate::mapping::live::{LiveDesired, Mirrored, Reached};
use crate::model::{Desired, DesiredState, Group, Key, Rejected, User};
use crate::plan::{plan_keys, Operation, Policy};
use crate::source::entry::RawEntry;
use crate::state::records::{GroupRecord, Snapshot, StateChange, UserRecord};
use crate::state::StateError;

/// Where a pass's desired state comes from, and which keys it plans.
pub(crate) enum Wanted {
    /// Built in full: a directory read, or a feed whose mapping the live state cannot follow.
    Full(DesiredState),
    /// The feed's live state; `scope` None plans every key.
    Live {
        desired: Box<LiveDesired>,
        scope: Option<Scope>,
    },
}

impl Wanted {
    pub(crate) fn no_users(&self) -> bool {
        match self {
            Wanted::Full(d) => d.users.is_empty() && d.held.is_empty(),
            Wanted::Live { desired, .. } => desired.no_users(),
        }
    }

    pub(crate) fn no_groups(&self) -> bool {
        match self {
            Wanted::Full(d) => d.groups.is_empty(),
            Wanted::Live { desired, .. } => desired.no_groups(),
        }
    }

    pub(crate) fn unresolved(&self) -> usize {
        match self {
            Wanted::Full(d) => d.unresolved_members,
            Wanted::Live { desired, .. } => desired.unresolved(),
        }
    }

    /// The keys planned, when not every key is.
    pub(crate) fn scope(&self) -> Option<&Scope> {
        match self {
            Wanted::Full(_) => None,
            Wanted::Live { scope, .. } => scope.as_ref(),
        }
    }

    /// How many users and groups are planned (None: all).
    pub(crate) fn scope_size(&self) -> Option<(usize, usize)> {
        self.scope().map(|s| (s.users.len(), s.groups.len()))
    }

    /// How many entries are not synced, planned or not.
    pub(crate) fn rejected_total(&self) -> usize {
        match self {
            Wanted::Full(d) => d.rejected.len(),
            Wanted::Live { desired, .. } => desired.rejected_count(),
        }
    }

    /// The entries not synced among those planned.
    pub(crate) fn rejected(&self) -> Vec<&Rejected> {
        match self {
            Wanted::Full(d) => d.rejected.iter().collect(),
            Wanted::Live {
                desired,
                scope: None,
            } => desired.rejected().collect(),
            Wanted::Live {
                desired,
                scope: Some(s),
            } => {
                let keys: BTreeSet<&Key> = s.users.iter().chain(&s.groups).collect();
                keys.into_iter()
                    .flat_map(|k| desired.rejected_of(k))
                    .collect()
            }
        }
    }
}

/// The desired state of a change-feed pass: the kept live state updated by what changed, or
/// (first pass, records written by something else, a mapping it cannot follow) built afresh.
pub(crate) fn from_feed(
    feed: &mut Feed,
    kept: Option<Follow>,
    records: Known<'_>,
) -> Result<Wanted, StateError> {
    if !LiveDesired::supports(feed.mapper()) {
        let known: BTreeSet<Key> = match records {
            Known::Records(s) => s.users.keys().cloned().collect(),
            Known::Store(store) => store.user_keys()?,
        };
        return Ok(Wanted::Full(feed.desired(&known)?));
    }
    let mapper = feed.mapper().clone();
    let mirror = feed.changes()?;
    let changed = mirror.changed;
    // An entry (or a record's presence) the store cannot give back fails the pass (its
    // desired state is dropped).
    let failed = RefCell::new(None);
    let known = |k: &Key| match records {
        Known::Records(s) => s.users.contains_key(k),
        Known::Store(store) => store.has_user(k).unwrap_or_else(|e| {
            failed.borrow_mut().get_or_insert(e);
            false
        }),
    };
    let mut read_user = reading(&mirror.users, &failed);
    let mut read_group = reading(&mirror.groups, &failed);
    let mirrored: Mirrored<'_> = (&mut read_user, &mut read_group);
    let wanted = match (kept, records) {
        (
            Some(Follow {
                mut desired,
                pending,
                known_changed,
            }),
            Known::Records(records),
        ) => {
            let reached =
                desired.update(mirrored, (&changed[0], &changed[1]), &known, &known_changed);
            let scope = scope(reached, &pending, records);
            Wanted::Live {
                desired,
                scope: Some(scope),
            }
        }
        // Nothing kept (or kept without its records): every key.
        _ => {
            let mut desired = LiveDesired::new(mapper);
            let all = (mirror.users.keys(), mirror.groups.keys());
            desired.build(mirrored, all, &known);
            Wanted::Live {
                desired: Box::new(desired),
                scope: None,
            }
        }
    };
    drop((read_user, read_group));
    match failed.into_inner() {
        Some(e) => Err(e),
        None => Ok(wanted),
    }
}

/// Reads `side`'s entries by key; the first that the store cannot give back is kept in
/// `failed` (and read as absent).
fn reading<'a>(
    side: &'a Entries<'a>,
    failed: &'a RefCell<Option<StateError>>,
) -> impl FnMut(&Key) -> Option<RawEntry> + 'a {
    move |k| match side.get(k) {
        Ok(e) => e,
        Err(e) => {
            failed.borrow_mut().get_or_insert(e);
            None
        }
    }
}

/// What a feed pass knows of the records when it builds its desired state.
#[derive(Clone, Copy)]
pub(crate) enum Known<'a> {
    /// The records, kept from the last pass.
    Records(&'a Snapshot),
    /// The store, asked by key: the records themselves are read afterwards
    /// ([`fit_and_share`]). The build asks only about users sharing a userName and about held
    /// users named as a manager (once per user they manage): the keys of every record, which
    /// it held instead, were ~9 MB at 100k users beside the desired state being built.
    Store(&'a crate::state::Store),
}

/// What a feed keeps from one pass to the next, while nothing else writes the records.
#[derive(Debug)]
pub(crate) struct Kept {
    /// The store's records generation after the pass.
    pub generation: u64,
    /// The records, fitted to the target as `fit_state` says.
    pub records: Snapshot,
    /// `Target::fit_state` when the records were fitted: what the target is known not to hold
    /// changed since, they are read again.
    pub fit_state: u64,
    /// The records' counts.
    pub census: crate::status::Census,
    /// The live desired state (None: a mapping it cannot follow).
    pub follow: Option<Follow>,
}

/// The live desired state, and what the next pass plans with it besides what changes reach.
#[derive(Debug)]
pub(crate) struct Follow {
    pub desired: Box<LiveDesired>,
    pub pending: Pending,
    /// Users the target gained or lost in the pass.
    pub known_changed: BTreeSet<Key>,
}

/// What a pass changed in the records, besides the keys it planned (a 404 on a user's update
/// takes it out of its groups' records too).
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// Users whose record appeared or went.
    pub known: BTreeSet<Key>,
    /// Every key whose record changed.
    pub records: Scope,
}

impl Moved {
    /// Notes `change`, about to be applied to `records`.
    pub(crate) fn note(&mut self, records: &Snapshot, change: &StateChange) {
        match change {
            StateChange::PutUser(k, _) | StateChange::RemoveUser(k) => {
                let put = matches!(change, StateChange::PutUser(..));
                if records.users.contains_key(k) != put {
                    self.known.insert(k.clone());
                }
                self.records.users.insert(k.clone());
            }
            StateChange::PutGroup(k, _) | StateChange::RemoveGroup(k) => {
                self.records.groups.insert(k.clone());
            }
        }
    }
}

/// Keys whose plan was not empty after a pass: refused, deferred or held operations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub users: BTreeSet<Key>,
    pub groups: BTreeSet<Key>,
}

/// The keys a pass plans.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub users: BTreeSet<Key>,
    pub groups: BTreeSet<Key>,
}

/// The keys an incremental pass plans: what the changes reached, what was pending, and the
/// groups whose records list a user whose standing changed (a held user keeps the memberships
/// its record has).
pub(crate) fn scope(reached: Reached, pending: &Pending, records: &Snapshot) -> Scope {
    let Reached {
        mut users,
        mut groups,
        flipped,
    } = reached;
    users.extend(pending.users.iter().cloned());
    groups.extend(pending.groups.iter().cloned());
    let known: BTreeSet<&Key> = flipped
        .iter()
        .filter(|k| records.users.contains_key(*k))
        .collect();
    if !known.is_empty() {
        for (g, r) in &records.groups {
            // Whichever side is smaller is walked.
            let lists = if r.members.len() < known.len() {
                r.members.iter().any(|m| known.contains(m))
            } else {
                known.iter().any(|k| r.members.contains(*k))
            };
            if lists {
                groups.insert(g.clone());
            }
        }
    }
    Scope { users, groups }
}

/// Every key, for a pass that plans everything: the desired state's and the records', each
/// once and in key order, merged as they are walked (collected, the 200k keys of 100k users
/// were ~9 MB at the peak of the service's first pass, and held to its end).
pub(crate) fn every_key<'a>(
    desired: &'a LiveDesired,
    records: &'a Snapshot,
) -> (impl Iterator<Item = &'a Key>, impl Iterator<Item = &'a Key>) {
    let (users, groups) = desired.keys();
    (
        union(users, records.users.keys()),
        union(groups, records.groups.keys()),
    )
}

/// The union of two sorted sequences of keys, sorted, each key once.
fn union<'a>(
    a: impl Iterator<Item = &'a Key>,
    b: impl Iterator<Item = &'a Key>,
) -> impl Iterator<Item = &'a Key> {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => match x.cmp(y) {
            Ordering::Less => a.next(),
            Ordering::Greater => b.next(),
            Ordering::Equal => {
                b.next();
                a.next()
            }
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

/// The keys the operations are about (users, groups).
pub(crate) fn keys_of(ops: &[Operation]) -> Scope {
    let mut out = Scope::default();
    for op in ops {
        if op.is_user_op() {
            out.users.insert(op.key().clone());
        } else {
            out.groups.insert(op.key().clone());
        }
    }
    out
}

/// Makes each user record that holds what the directory wants hold that very user (`Arc`): the
/// service then keeps one copy of it, not two (records read from the store are copies of the
/// desired state, ~30 MB at 100k users for as long as `run` runs). Records confirmed by a pass
/// share the user they were sent anyway.
pub(crate) fn share_users(records: &mut Snapshot, desired: &LiveDesired) {
    for (k, r) in &mut records.users {
        share_user(desired, k, r);
    }
}

/// Makes each group record whose members are the ones the desired state wants hold that very
/// set (`Arc`): one copy of the memberships while nothing changes (~5 MB at 100k users).
pub(crate) fn share_groups(records: &mut Snapshot, desired: &LiveDesired) {
    for (k, r) in &mut records.groups {
        share_group(desired, k, r);
    }
}

/// [`share_groups`] for one record: as the records are read, so that the decoded set goes at
/// once (the two copies of every membership were the peak of the service's first pass).
pub(crate) fn share_group(desired: &LiveDesired, key: &Key, record: &mut GroupRecord) {
    if let Some(g) = desired.group(key) {
        if !Arc::ptr_eq(&g.members, &record.members) && g.members == record.members {
            record.members = Arc::clone(&g.members);
        }
    }
}

fn share_user(desired: &LiveDesired, key: &Key, record: &mut UserRecord) {
    if let Some(u) = desired.user(key) {
        if !Arc::ptr_eq(u, &record.pushed) && **u == *record.pushed {
            record.pushed = Arc::clone(u);
        }
    }
}

/// A record just decoded, fitted to the target (in place: it is its only holder) and then
/// made to share the desired user it equals: [`share_users`] as the records are read, so
/// that the decoded copy goes at once. Its key becomes the desired state's own (~6 MB of
/// keys at 100k users otherwise held twice).
pub(crate) fn fit_and_share(
    desired: &LiveDesired,
    fit: &dyn Fn(&mut User),
    key: &mut Key,
    record: &mut UserRecord,
) {
    if let Some(own) = desired.own_key(key) {
        *key = Key::clone(own);
    }
    crate::model::fit_shared(&mut record.pushed, fit);
    share_user(desired, key, record);
}

/// Fits the user records a pass wrote to what the target holds (an adopted user is recorded
/// as the target has it): kept records are otherwise fitted only when read from the store.
pub(crate) fn refit(records: &mut Snapshot, moved: &Scope, fit: &dyn Fn(&mut User)) {
    for k in &moved.users {
        if let Some(r) = records.users.get_mut(k) {
            crate::model::fit_shared(&mut r.pushed, fit);
        }
    }
}

/// The keys among those planned or whose records moved whose plan is still not empty once
/// the pass has run.
pub(crate) fn still_pending(
    desired: &dyn Desired,
    records: &Snapshot,
    policy: &Policy,
    planned: &Scope,
    moved: &Scope,
) -> Pending {
    let users: BTreeSet<&Key> = planned.users.iter().chain(&moved.users).collect();
    let groups: BTreeSet<&Key> = planned.groups.iter().chain(&moved.groups).collect();
    let left = keys_of(&plan_keys(desired, records, policy, users, groups));
    Pending {
        users: left.users,
        groups: left.groups,
    }
}

/// The live state as the plan reads it, each user fitted to what the target can hold.
pub(crate) struct Fitted<'a> {
    pub desired: &'a LiveDesired,
    pub fit: &'a (dyn Fn(&mut User) + Sync),
}

impl Desired for Fitted<'_> {
    fn user(&self, key: &str) -> Option<&Arc<User>> {
        self.desired.user(key)
    }
    fn group(&self, key: &str) -> Option<&Group> {
        self.desired.group(key)
    }
    fn held(&self, key: &str) -> bool {
        self.desired.held(key)
    }
    fn dn(&self, key: &Key) -> Option<&str> {
        self.desired.dn(key)
    }
    fn fit(&self, user: &mut User) {
        (self.fit)(user)
    }
    fn fitted(&self) -> bool {
        false
    }
}

/// What a change feed's pass leaves for the next one besides its desired state.
pub(crate) struct AfterPass {
    pub records: Snapshot,
    pub moved: Moved,
    pub census: crate::status::Census,
    pub fit_state: u64,
    /// The keys the pass planned by scope (None: every key).
    pub prune_scope: Option<Scope>,
    pub planned: Scope,
}

/// The records and live state a change feed keeps between passes: the records refitted where
/// the pass changed them, its groups sharing their members with the desired state again, and
/// what is still to do.
pub(crate) fn kept_for_feed(
    store: &crate::state::Store,
    after: AfterPass,
    wanted: Wanted,
    policy: &crate::plan::Policy,
    fit_user: &(dyn Fn(&mut crate::model::User) + Sync),
) -> Kept {
    let AfterPass {
        mut records,
        moved,
        census,
        fit_state,
        prune_scope,
        planned,
    } = after;
    refit(&mut records, &moved.records, fit_user);
    if let Wanted::Live { desired, .. } = &wanted {
        // The groups the pass looked at or wrote share their members with the desired state
        // again where the two are equal (a record confirmed by this pass, or a group whose
        // entry changed but not its members, holds a set of its own).
        let seen = prune_scope.iter().flat_map(|s| &s.groups);
        for k in seen.chain(&moved.records.groups) {
            if let Some(r) = records.groups.get_mut(k) {
                share_group(desired, k, r);
            }
        }
    }
    let follow = match wanted {
        Wanted::Live { desired, .. } => {
            let view = Fitted {
                desired: &desired,
                fit: fit_user,
            };
            let pending = still_pending(&view, &records, policy, &planned, &moved.records);
            Some(Follow {
                desired,
                pending,
                known_changed: moved.known,
            })
        }
        Wanted::Full(_) => None,
    };
    Kept {
        generation: store.records_generation(),
        records,
        fit_state,
        census,
        follow,
    }
}

#[cfg(test)]
mod tests;
