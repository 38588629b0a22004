//! The desired state a change feed keeps between passes, updated by the entries that changed
//! instead of rebuilt from the whole mirror. It resolves what `desired.rs` resolves (manager
//! DNs, groups' member values, nested groups, userNames used twice) through indexes kept up to
//! date, and says which keys a change reached: the only ones the next plan has to look at.
//!
//! Memberships come from the groups' member values, as the feed maps them. `desired.rs` stays
//! the reference: the property tests build both from the same entries and compare.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{MappedGroup, MappedUser, Mapper};
use crate::config::Membership;
#[cfg(test)]
use crate::model::DesiredState;
use crate::model::{Desired, Group, Key, Rejected, Text, User};
use crate::source::dn::{guid_token, normalize};
use crate::source::entry::RawEntry;

/// Name -> the keys under it, sorted: nearly always one, held without an allocation of its
/// own (a vector per name, then a tree node per name before it, were the indexes' largest
/// part at 100k users).
type Index = HashMap<Box<str>, Keys>;

/// The keys under one name, sorted.
#[derive(Debug, Clone)]
enum Keys {
    One(Key),
    /// Two or more.
    Many(Vec<Key>),
}

impl Keys {
    /// Adds `key` (once).
    fn insert(&mut self, key: &Key) {
        match self {
            Keys::One(k) if k == key => {}
            Keys::One(k) => {
                let mut both = vec![k.clone(), key.clone()];
                both.sort();
                *self = Keys::Many(both);
            }
            Keys::Many(v) => {
                if let Err(at) = v.binary_search(key) {
                    v.insert(at, key.clone());
                }
            }
        }
    }
}

impl Keys {
    /// Gives back what the list grew beyond its keys (a list of three grown one by one holds
    /// four: ~2 MB of the groups' member index at 100k users).
    fn shrink(&mut self) {
        if let Keys::Many(v) = self {
            v.shrink_to_fit();
        }
    }
}

impl std::ops::Deref for Keys {
    type Target = [Key];
    fn deref(&self) -> &[Key] {
        match self {
            Keys::One(k) => std::slice::from_ref(k),
            Keys::Many(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a Keys {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The kinds of rejection, each indexed apart.
const USERS: usize = 0;
const GROUPS: usize = 1;
const COLLIDED: usize = 2;

/// A user as the live state holds it: what resolution needs of its mapping (a `MappedUser`
/// also carries what a feed never fills, and its key again: 152 bytes a user in the map's
/// nodes, this 56).
#[derive(Debug)]
struct LiveUser {
    /// The entry's DN; the very name `user_dns` holds when the DN is already in its
    /// normalized form (most DNs of an OpenLDAP directory: ~4 MB at 100k users).
    dn: Arc<str>,
    dn_guid: Option<Box<str>>,
    user: Arc<User>,
    manager_dn: Option<Box<str>>,
}

/// A user entry: mapped, or rejected (boxed: rare, and twice a user's size).
type UserSlot = Result<LiveUser, Box<Rejected>>;

fn live_user(mapped: Result<MappedUser, Rejected>) -> UserSlot {
    match mapped {
        Ok(m) => Ok(LiveUser {
            dn: Arc::from(m.dn),
            dn_guid: m.dn_guid.map(String::into_boxed_str),
            user: m.user,
            manager_dn: m.manager_dn.map(String::into_boxed_str),
        }),
        Err(r) => Err(Box::new(r)),
    }
}

/// A group as mapped, with what its member values resolve to.
#[derive(Debug)]
struct LiveGroup {
    /// As mapped, its member values moved out into `members`.
    mapped: MappedGroup,
    /// The member values, each the very name `named_by` holds: 300k memberships held as
    /// 300k strings were ~19 MB at 100k users, as shared names ~5.
    members: Box<[Arc<str>]>,
    /// The group as the target should hold it (nested: its descendants' users too).
    out: Group,
    /// Nested only: the users the group itself lists.
    direct: BTreeSet<Key>,
    /// Nested only: the groups it lists.
    children: BTreeSet<Key>,
    /// Member values that name nothing read.
    unresolved: usize,
}

/// What a user's change can change for the plan of others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    accepted: bool,
    active: bool,
    held: bool,
}

/// What one name (a normalized DN, a GUID token) resolves to.
#[derive(Debug, PartialEq, Eq)]
struct Resolution {
    user: Option<Key>,
    group: Option<Key>,
    rejected: bool,
    held: BTreeSet<Key>,
}

/// The keys a change reached: the users and groups to plan, and the users whose standing
/// (desired, active, held) changed, so that groups whose records list them are planned too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Reached {
    pub users: BTreeSet<Key>,
    pub groups: BTreeSet<Key>,
    pub flipped: BTreeSet<Key>,
}

/// The mirror's entries as an update reads them, by key (the change feed holds them in its
/// store): users, groups.
pub(crate) type Mirrored<'a> = (
    &'a mut dyn FnMut(&Key) -> Option<RawEntry>,
    &'a mut dyn FnMut(&Key) -> Option<RawEntry>,
);

/// The desired state of a mirror, kept up to date entry by entry.
#[derive(Debug)]
pub(crate) struct LiveDesired {
    mapper: Mapper,
    users: BTreeMap<Key, UserSlot>,
    groups: BTreeMap<Key, Result<LiveGroup, Rejected>>,
    /// Lower-cased userName -> the mapped users carrying it.
    names: Index,
    /// Names carried by more than one mapped user.
    crowded: BTreeSet<String>,
    /// Users held because their userName is used twice, with the reason.
    collided: BTreeMap<Key, Rejected>,
    /// Normalized DN or GUID token -> mapped users (collided ones too: resolution skips them).
    /// Its names are shared with `named_by`, where groups list the same users.
    user_dns: HashMap<Arc<str>, Keys>,
    group_dns: Index,
    /// Normalized DN -> rejected entries, per kind of rejection (users, groups, users held for
    /// their userName: apart, as a user and a group may share a key, and a user be in both).
    rejected_dns: [Index; 3],
    /// Normalized DN, or the key as a GUID token -> held keys, per kind: a held manager
    /// already on the target stays the manager.
    held_refs: [Index; 3],
    /// Entries not synced, of any kind.
    rejected_count: usize,
    /// Member value -> the groups listing it (the groups' `members` share its names).
    named_by: HashMap<Arc<str>, Keys>,
    /// Normalized manager DN -> the users naming it.
    managed_by: Index,
    /// Resolved manager key -> the users it manages.
    reports: Index,
    /// Nested groups: a group -> the groups listing it.
    parents: HashMap<Key, BTreeSet<Key>>,
    unresolved: usize,
    /// Entries rejected by the mapping with a key.
    held_count: usize,
    mapped_users: usize,
    accepted_groups: usize,
}

fn add<T, N: From<T> + std::hash::Hash + Eq>(index: &mut HashMap<N, Keys>, name: T, key: &Key) {
    match index.entry(N::from(name)) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(Keys::One(key.clone()));
        }
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut().insert(key),
    }
}

/// Adds `key` under `name` and returns the name as the index holds it, shared (with `donor`'s
/// when it holds the name).
fn add_shared(
    index: &mut HashMap<Arc<str>, Keys>,
    donor: &HashMap<Arc<str>, Keys>,
    name: &str,
    key: &Key,
) -> Arc<str> {
    let held = match index.get_key_value(name) {
        Some((held, _)) => Arc::clone(held),
        None => {
            let name: Arc<str> = match donor.get_key_value(name) {
                Some((shared, _)) => Arc::clone(shared),
                None => Arc::from(name),
            };
            index.insert(Arc::clone(&name), Keys::One(key.clone()));
            return name;
        }
    };
    if let Some(keys) = index.get_mut(name) {
        keys.insert(key);
    }
    held
}

fn remove<N: std::borrow::Borrow<str> + std::hash::Hash + Eq>(
    index: &mut HashMap<N, Keys>,
    name: &str,
    key: &Key,
) {
    let Some(keys) = index.get_mut(name) else {
        return;
    };
    let last = match keys {
        Keys::One(k) => k == key,
        Keys::Many(v) => {
            if let Ok(at) = v.binary_search(key) {
                v.remove(at);
            }
            if let [only] = v.as_slice() {
                *keys = Keys::One(only.clone());
            }
            false
        }
    };
    if last {
        index.remove(name);
    }
}

/// The names an entry can be referred to by, and is indexed under.
fn names_of(key: &Key, dn: &str, dn_guid: Option<&str>) -> Vec<String> {
    let mut out = vec![normalize(dn), guid_token(key)];
    out.extend(dn_guid.map(guid_token));
    out
}

fn user_names_of(key: &Key, u: &UserSlot) -> Vec<String> {
    match u {
        Ok(m) => names_of(key, &m.dn, m.dn_guid.as_deref()),
        Err(r) => names_of(key, &r.dn, None),
    }
}

fn group_names_of(key: &Key, g: &Result<LiveGroup, Rejected>) -> Vec<String> {
    match g {
        Ok(l) => names_of(key, &l.mapped.dn, l.mapped.dn_guid.as_deref()),
        Err(r) => names_of(key, &r.dn, None),
    }
}

impl LiveDesired {
    /// Whether this mapping can be kept up to date entry by entry (memberships from member
    /// values, no primary groups).
    pub(crate) fn supports(mapper: &Mapper) -> bool {
        mapper.membership() == Membership::Member && !mapper.primary_group
    }

    pub(crate) fn new(mapper: Mapper) -> LiveDesired {
        LiveDesired {
            mapper,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            names: Index::new(),
            crowded: BTreeSet::new(),
            collided: BTreeMap::new(),
            user_dns: HashMap::new(),
            group_dns: Index::new(),
            rejected_dns: Default::default(),
            held_refs: Default::default(),
            rejected_count: 0,
            named_by: HashMap::new(),
            managed_by: Index::new(),
            reports: Index::new(),
            parents: HashMap::new(),
            unresolved: 0,
            held_count: 0,
            mapped_users: 0,
            accepted_groups: 0,
        }
    }

    /// Every user and group key the mirror had when last updated.
    pub(crate) fn keys(&self) -> (impl Iterator<Item = &Key>, impl Iterator<Item = &Key>) {
        (self.users.keys(), self.groups.keys())
    }

    /// Every index's lists, built one key at a time, shrunk to their keys.
    fn shrink_indexes(&mut self) {
        let Self {
            names,
            group_dns,
            rejected_dns,
            held_refs,
            managed_by,
            reports,
            user_dns,
            named_by,
            ..
        } = self;
        let plain = [names, group_dns, managed_by, reports]
            .into_iter()
            .chain(rejected_dns)
            .chain(held_refs);
        for index in plain {
            index.values_mut().for_each(Keys::shrink);
        }
        for index in [user_dns, named_by] {
            index.values_mut().for_each(Keys::shrink);
        }
    }

    /// The state's own copy of the user key `key` (to share it rather than hold another).
    pub(crate) fn own_key(&self, key: &str) -> Option<&Key> {
        self.users.get_key_value(key).map(|(k, _)| k)
    }

    /// Member values that name no user or group read.
    pub(crate) fn unresolved(&self) -> usize {
        self.unresolved
    }

    /// True when no user is desired or held.
    pub(crate) fn no_users(&self) -> bool {
        self.mapped_users == 0 && self.held_count == 0
    }

    pub(crate) fn no_groups(&self) -> bool {
        self.accepted_groups == 0
    }

    /// How many entries are not synced.
    pub(crate) fn rejected_count(&self) -> usize {
        self.rejected_count + self.collided.len()
    }

    /// Every entry not synced, with the reason.
    pub(crate) fn rejected(&self) -> impl Iterator<Item = &Rejected> {
        let users = self
            .users
            .values()
            .filter_map(|u| u.as_ref().err().map(|r| &**r));
        let groups = self.groups.values().filter_map(|g| g.as_ref().err());
        users.chain(groups).chain(self.collided.values())
    }

    /// The entries under `key` not synced (a user and a group entry may share a key).
    pub(crate) fn rejected_of<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Rejected> {
        let user = self
            .users
            .get(key)
            .and_then(|u| u.as_ref().err().map(|r| &**r));
        let group = self.groups.get(key).and_then(|g| g.as_ref().err());
        user.into_iter().chain(group).chain(self.collided.get(key))
    }

    fn user_winner(&self, name: &str) -> Option<&Key> {
        self.user_dns
            .get(name)?
            .iter()
            .rev()
            .find(|k| !self.collided.contains_key(*k))
    }

    fn group_winner(&self, name: &str) -> Option<&Key> {
        self.group_dns.get(name)?.last()
    }

    fn rejected_dn(&self, name: &str) -> bool {
        self.rejected_dns.iter().any(|i| i.contains_key(name))
    }

    /// The held keys an entry can be referred to by `name`.
    fn held_by(&self, name: &str) -> BTreeSet<&Key> {
        self.held_refs
            .iter()
            .flat_map(|i| i.get(name).into_iter().flatten())
            .collect()
    }

    fn resolution(&self, name: &str) -> Resolution {
        Resolution {
            user: self.user_winner(name).cloned(),
            group: self.group_winner(name).cloned(),
            rejected: self.rejected_dn(name),
            held: self.held_by(name).into_iter().cloned().collect(),
        }
    }

    fn status(&self, key: &Key) -> Status {
        match self.users.get(key) {
            Some(Ok(m)) => {
                let collided = self.collided.contains_key(key);
                Status {
                    accepted: !collided,
                    active: m.user.active,
                    held: collided,
                }
            }
            Some(Err(r)) => Status {
                accepted: false,
                active: false,
                held: r.key.is_some(),
            },
            None => Status {
                accepted: false,
                active: false,
                held: false,
            },
        }
    }

    fn index_user(&mut self, key: &Key, u: &UserSlot, on: bool) {
        match u {
            Ok(m) => {
                let name = m.user.user_name.as_str().to_lowercase();
                let normal = normalize(&m.dn);
                let mut dns = vec![if normal == *m.dn {
                    Arc::clone(&m.dn)
                } else {
                    Arc::from(normal)
                }];
                dns.extend(m.dn_guid.as_deref().map(|g| Arc::from(guid_token(g))));
                for d in dns {
                    if on {
                        add(&mut self.user_dns, d, key);
                    } else {
                        remove(&mut self.user_dns, &d, key);
                    }
                }
                if let Some(mgr) = &m.manager_dn {
                    let d = normalize(mgr);
                    if on {
                        add(&mut self.managed_by, d, key);
                    } else {
                        remove(&mut self.managed_by, &d, key);
                    }
                }
                // Set by `resolve_manager` once indexed, so only ever taken out here.
                if let (Some(mgr), false) = (&m.user.manager, on) {
                    remove(&mut self.reports, mgr, key);
                }
                if on {
                    add(&mut self.names, name.clone(), key);
                    self.mapped_users += 1;
                } else {
                    remove(&mut self.names, &name, key);
                    self.mapped_users -= 1;
                }
                if self.names.get(name.as_str()).is_some_and(|s| s.len() > 1) {
                    self.crowded.insert(name);
                } else {
                    self.crowded.remove(&name);
                }
            }
            Err(r) => self.index_rejected(key, r, on, USERS),
        }
    }

    /// Indexes a rejected entry (`kind`: USERS, GROUPS or COLLIDED).
    fn index_rejected(&mut self, key: &Key, r: &Rejected, on: bool, kind: usize) {
        let dn = normalize(&r.dn);
        let (dns, refs) = (&mut self.rejected_dns[kind], &mut self.held_refs[kind]);
        if on {
            add(dns, dn.clone(), key);
        } else {
            remove(dns, &dn, key);
        }
        let counted = kind != COLLIDED;
        if counted {
            if on {
                self.rejected_count += 1;
            } else {
                self.rejected_count -= 1;
            }
        }
        if let Some(k) = &r.key {
            for name in [dn, guid_token(k)] {
                if on {
                    add(refs, name, k);
                } else {
                    remove(refs, &name, k);
                }
            }
            if counted {
                if on {
                    self.held_count += 1;
                } else {
                    self.held_count -= 1;
                }
            }
        }
    }

    /// Indexes a group (`on`) or takes it out. Indexed, a group's member values move from
    /// its mapping into `members`, shared with `named_by`.
    fn index_group(&mut self, key: &Key, g: &mut Result<LiveGroup, Rejected>, on: bool) {
        match g {
            Ok(l) => {
                let mut dns = vec![normalize(&l.mapped.dn)];
                dns.extend(l.mapped.dn_guid.as_deref().map(guid_token));
                for d in dns {
                    if on {
                        add(&mut self.group_dns, d, key);
                    } else {
                        remove(&mut self.group_dns, &d, key);
                    }
                }
                if on {
                    let values = std::mem::take(&mut l.mapped.member_dns);
                    l.members = values
                        .iter()
                        .map(|m| add_shared(&mut self.named_by, &self.user_dns, m, key))
                        .collect();
                } else {
                    for m in l.members.iter() {
                        remove(&mut self.named_by, m, key);
                    }
                }
                if on {
                    self.accepted_groups += 1;
                } else {
                    self.accepted_groups -= 1;
                    self.unresolved -= l.unresolved;
                    for c in &l.children {
                        if let Some(p) = self.parents.get_mut(c) {
                            p.remove(key);
                            if p.is_empty() {
                                self.parents.remove(c);
                            }
                        }
                    }
                }
            }
            Err(r) => self.index_rejected(key, r, on, GROUPS),
        }
    }

    /// Holds the users whose userName another user carries too, unless exactly one of them is
    /// already on the target (`known`): that one keeps it. Returns the users whose standing or
    /// reason changed.
    fn settle_collisions(&mut self, known: &dyn Fn(&Key) -> bool) -> BTreeSet<Key> {
        let mut now: BTreeMap<Key, Rejected> = BTreeMap::new();
        for name in &self.crowded {
            let Some(keys) = self.names.get(name.as_str()) else {
                continue;
            };
            let kept: Vec<&Key> = keys.iter().filter(|k| known(k)).collect();
            let keep = (kept.len() == 1).then(|| kept[0]);
            let dn = |k: &Key| match self.users.get(k) {
                Some(Ok(m)) => Some(m.dn.to_string()),
                _ => None,
            };
            let dns: Vec<String> = keys.iter().filter_map(dn).collect();
            for k in keys.iter().filter(|k| Some(*k) != keep) {
                if let Some(d) = dn(k) {
                    now.insert(
                        k.clone(),
                        Rejected {
                            dn: d,
                            key: Some(k.clone()),
                            reason: format!(
                                "userName \"{name}\" is used by more than one entry: {}",
                                dns.join("; ")
                            ),
                        },
                    );
                }
            }
        }
        let mut moved = BTreeSet::new();
        let before = std::mem::take(&mut self.collided);
        for (k, r) in &before {
            if now.get(k) != Some(r) {
                moved.insert(k.clone());
                self.index_rejected(k, r, false, COLLIDED);
            }
        }
        for (k, r) in &now {
            if before.get(k) != Some(r) {
                moved.insert(k.clone());
                self.index_rejected(k, r, true, COLLIDED);
            }
        }
        self.collided = now;
        moved
    }

    /// Takes in the entries under the changed keys as the mirror now holds them (read by key
    /// through `mirror`; absent: gone), and returns the keys whose plan may differ. `known` says which users the target
    /// already has (it decides who keeps a userName used twice, and whether a held manager
    /// stays one); `known_changed`, the users it has gained or lost since the last update.
    pub(crate) fn update<'k>(
        &mut self,
        mirror: Mirrored<'_>,
        changed: (
            impl IntoIterator<Item = &'k Key>,
            impl IntoIterator<Item = &'k Key>,
        ),
        known: &dyn Fn(&Key) -> bool,
        known_changed: impl IntoIterator<Item = &'k Key>,
    ) -> Reached {
        self.take_in(mirror, changed, known, known_changed, true)
    }

    /// Builds the state of a whole mirror (`all`: every key) into an empty one: an
    /// [`LiveDesired::update`] that does not list the keys it reached, every key being
    /// planned (three sets of every key were ~10 MB at the first pass's peak at 100k users).
    pub(crate) fn build<'k>(
        &mut self,
        mirror: Mirrored<'_>,
        all: (
            impl IntoIterator<Item = &'k Key>,
            impl IntoIterator<Item = &'k Key>,
        ),
        known: &dyn Fn(&Key) -> bool,
    ) {
        self.take_in(mirror, all, known, std::iter::empty(), false);
    }

    fn take_in<'k>(
        &mut self,
        mirror: Mirrored<'_>,
        changed: (
            impl IntoIterator<Item = &'k Key>,
            impl IntoIterator<Item = &'k Key>,
        ),
        known: &dyn Fn(&Key) -> bool,
        known_changed: impl IntoIterator<Item = &'k Key>,
        report: bool,
    ) -> Reached {
        let (mirror_users, mirror_groups) = mirror;
        let (changed_users, changed_groups) = changed;
        let fresh = self.users.is_empty() && self.groups.is_empty();
        let mut reached = Reached::default();
        let new_users: Vec<(Key, Option<UserSlot>)> = changed_users
            .into_iter()
            .map(|k| {
                (
                    k.clone(),
                    mirror_users(k).map(|e| live_user(self.mapper.map_user(&e))),
                )
            })
            .collect();
        let new_groups: Vec<(Key, Option<Result<LiveGroup, Rejected>>)> = changed_groups
            .into_iter()
            .map(|k| {
                let g = mirror_groups(k).map(|e| {
                    self.mapper.map_group(&e).map(|mapped| LiveGroup {
                        out: Group {
                            display_name: mapped.display_name.clone(),
                            members: Default::default(),
                        },
                        mapped,
                        members: Box::default(),
                        direct: BTreeSet::new(),
                        children: BTreeSet::new(),
                        unresolved: 0,
                    })
                });
                (k.clone(), g)
            })
            .collect();

        // The names whose resolution may change, and what they resolve to before.
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut standing: BTreeMap<Key, Status> = BTreeMap::new();
        if !fresh {
            let mut crowd: BTreeSet<Key> = BTreeSet::new();
            for (k, new) in &new_users {
                for u in self.users.get(k).into_iter().chain(new.as_ref()) {
                    touched.extend(user_names_of(k, u));
                    if let Ok(m) = u {
                        if let Some(ks) = self
                            .names
                            .get(m.user.user_name.as_str().to_lowercase().as_str())
                        {
                            crowd.extend(ks.iter().cloned());
                        }
                    }
                }
                standing.insert(k.clone(), self.status(k));
            }
            for (k, new) in &new_groups {
                for g in self.groups.get(k).into_iter().chain(new.as_ref()) {
                    touched.extend(group_names_of(k, g));
                }
            }
            for name in &self.crowded {
                crowd.extend(self.names.get(name.as_str()).into_iter().flatten().cloned());
            }
            for k in crowd {
                if let Some(u) = self.users.get(&k) {
                    touched.extend(user_names_of(&k, u));
                }
                let s = self.status(&k);
                standing.entry(k).or_insert(s);
            }
        }
        let before: Vec<Resolution> = touched.iter().map(|n| self.resolution(n)).collect();

        // A user and a group may share a key: whether either is held decides whether the
        // other's record is removed, so each change reaches both.
        if fresh {
            // The whole directory: the map is built from the list, in key order, at once
            // (inserted one by one in key order, its nodes end half empty: ~30 MB more for
            // 100k users, kept for as long as the service runs).
            let built: Vec<(Key, UserSlot)> = new_users
                .into_iter()
                .filter_map(|(k, new)| {
                    if report {
                        reached.groups.insert(k.clone());
                        reached.users.insert(k.clone());
                    }
                    let new = new?;
                    self.index_user(&k, &new, true);
                    Some((k, new))
                })
                .collect();
            self.users = built.into_iter().collect();
        } else {
            for (k, new) in new_users {
                if let Some(old) = self.users.remove(&k) {
                    self.index_user(&k, &old, false);
                }
                if let Some(new) = new {
                    self.index_user(&k, &new, true);
                    self.users.insert(k.clone(), new);
                }
                reached.groups.insert(k.clone());
                reached.users.insert(k);
            }
        }
        let group_held =
            |g: Option<&Result<LiveGroup, Rejected>>| matches!(g, Some(Err(r)) if r.key.is_some());
        for (k, new) in new_groups {
            let old = self.groups.remove(&k);
            if group_held(old.as_ref()) != group_held(new.as_ref()) {
                // The key's standing as a held object: a user record under it is kept or not.
                reached.flipped.insert(k.clone());
            }
            if let Some(mut old) = old {
                self.index_group(&k, &mut old, false);
            }
            if let Some(mut new) = new {
                self.index_group(&k, &mut new, true);
                self.groups.insert(k.clone(), new);
            }
            reached.users.insert(k.clone());
            reached.groups.insert(k);
        }
        // Those whose standing moves carry a crowded name, old or new: their names and
        // standing were taken above.
        let moved = self.settle_collisions(known);
        reached.users.extend(moved);
        if fresh && !report {
            // Every user and group resolved, as `reached` would list them all.
            self.shrink_indexes();
            let users: Vec<Key> = self.users.keys().cloned().collect();
            for k in &users {
                self.resolve_manager(k, known);
            }
            drop(users);
            let groups: Vec<Key> = self.groups.keys().cloned().collect();
            for g in &groups {
                self.resolve_members(g);
            }
            if self.mapper.nested() {
                for g in &groups {
                    self.flatten(g);
                }
            }
            return Reached::default();
        }

        if fresh {
            reached.users.extend(self.users.keys().cloned());
            reached.groups.extend(self.groups.keys().cloned());
            reached.flipped.extend(self.users.keys().cloned());
            self.shrink_indexes();
        } else {
            let mut before = before.into_iter();
            for name in &touched {
                let was = before.next();
                if was.as_ref() != Some(&self.resolution(name)) {
                    let named = self.named_by.get(name.as_str()).into_iter().flatten();
                    reached.groups.extend(named.cloned());
                    let managed = self.managed_by.get(name.as_str()).into_iter().flatten();
                    reached.users.extend(managed.cloned());
                }
            }
        }

        // A held entry the target gained or lost as a user: the users naming it as their
        // manager (a held entry already on the target stays the manager).
        for k in known_changed {
            let user = self.users.get(k).map(|u| user_names_of(k, u));
            let group = self.groups.get(k).map(|g| group_names_of(k, g));
            for name in user.into_iter().chain(group).flatten() {
                let managed = self.managed_by.get(name.as_str()).into_iter().flatten();
                reached.users.extend(managed.cloned());
            }
        }

        // Users whose standing changed: the groups listing them and the users they manage.
        for (k, was) in standing {
            if self.status(&k) == was {
                continue;
            }
            if let Some(u) = self.users.get(&k) {
                for name in user_names_of(&k, u) {
                    let named = self.named_by.get(name.as_str()).into_iter().flatten();
                    reached.groups.extend(named.cloned());
                }
            }
            reached.flipped.insert(k);
        }
        // Whether a key is held decides, for a user and a group alike, whether its record is
        // removed, and whether it stays a manager of those it manages.
        let flipped: Vec<Key> = reached.flipped.iter().cloned().collect();
        for k in flipped {
            let reports = self.reports.get(&*k).into_iter().flatten();
            reached.users.extend(reports.cloned());
            reached.users.insert(k.clone());
            reached.groups.insert(k);
        }

        // Resolve what was reached, then (nested) what contains it.
        let users: Vec<Key> = reached.users.iter().cloned().collect();
        for k in &users {
            self.resolve_manager(k, known);
        }
        let groups: Vec<Key> = reached.groups.iter().cloned().collect();
        for g in &groups {
            self.resolve_members(g);
        }
        if self.mapper.nested() {
            let mut stack: Vec<Key> = reached.groups.iter().cloned().collect();
            while let Some(g) = stack.pop() {
                for p in self.parents.get(&g).into_iter().flatten() {
                    if reached.groups.insert(p.clone()) {
                        stack.push(p.clone());
                    }
                }
            }
            let groups: Vec<Key> = reached.groups.iter().cloned().collect();
            for g in groups {
                self.flatten(&g);
            }
        }
        reached
    }

    /// Resolves a user's manager DN: a user synced, else a held user already on the target.
    fn resolve_manager(&mut self, key: &Key, known: &dyn Fn(&Key) -> bool) {
        let Some(Ok(m)) = self.users.get(key) else {
            return;
        };
        let manager = m.manager_dn.as_deref().map(normalize).and_then(|d| {
            self.user_winner(&d).map(|k| Text::from(&**k)).or_else(|| {
                self.held_by(&d)
                    .into_iter()
                    .find(|k| known(k))
                    .map(|k| Text::from(&**k))
            })
        });
        let Some(Ok(m)) = self.users.get_mut(key) else {
            return;
        };
        if m.user.manager == manager {
            return;
        }
        // Copied only when it changes: the user may be shared with the records.
        let old = std::mem::replace(&mut Arc::make_mut(&mut m.user).manager, manager.clone());
        {
            if let Some(o) = old {
                remove(&mut self.reports, &o, key);
            }
            if let Some(n) = manager {
                add(&mut self.reports, n.into_string(), key);
            }
        }
    }

    /// Resolves a group's member values into users (and child groups when nested).
    fn resolve_members(&mut self, key: &Key) {
        let Some(Ok(l)) = self.groups.get(key) else {
            return;
        };
        let nested = self.mapper.nested();
        // Collected, then built sorted: a set filled in DN order leaves its tree's nodes half
        // empty (~24 MB instead of ~6 for 300k memberships).
        let mut direct = Vec::new();
        let mut children = Vec::new();
        let mut unresolved = 0;
        for m in l.members.iter() {
            let group = self.group_winner(m);
            if let Some(u) = self.user_winner(m) {
                direct.push(u.clone());
            } else if group.is_none() && !self.rejected_dn(m) {
                unresolved += 1;
            }
            if let Some(g) = group.filter(|_| nested) {
                children.push(g.clone());
            }
        }
        let direct: BTreeSet<Key> = direct.into_iter().collect();
        let children: BTreeSet<Key> = children.into_iter().collect();
        let old_children = l.children.clone();
        let old_unresolved = l.unresolved;
        for c in old_children.difference(&children) {
            if let Some(p) = self.parents.get_mut(c) {
                p.remove(key);
                if p.is_empty() {
                    self.parents.remove(c);
                }
            }
        }
        for c in children.difference(&old_children) {
            self.parents
                .entry(c.clone())
                .or_default()
                .insert(key.clone());
        }
        self.unresolved = self.unresolved + unresolved - old_unresolved;
        if let Some(Ok(l)) = self.groups.get_mut(key) {
            l.unresolved = unresolved;
            l.children = children;
            if nested {
                l.direct = direct;
            } else {
                l.out.members = direct.into();
            }
        }
    }

    /// Nested: a group's members are its own users and, transitively, its child groups'.
    fn flatten(&mut self, key: &Key) {
        if !matches!(self.groups.get(key), Some(Ok(_))) {
            return;
        }
        let mut members = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![key];
        while let Some(g) = stack.pop() {
            if !seen.insert(g) {
                continue;
            }
            if let Some(Ok(l)) = self.groups.get(g) {
                members.extend(l.direct.iter().cloned());
                stack.extend(l.children.iter());
            }
        }
        if let Some(Ok(l)) = self.groups.get_mut(key) {
            l.out.members = members.into();
        }
    }

    /// The whole desired state, as `desired.rs` would build it (for comparisons).
    #[cfg(test)]
    pub(crate) fn to_state(&self) -> DesiredState {
        let mut out = DesiredState {
            unresolved_members: self.unresolved,
            rejected: self.rejected().cloned().collect(),
            ..Default::default()
        };
        out.held = out.rejected.iter().filter_map(|r| r.key.clone()).collect();
        for (k, g) in &self.groups {
            if let Ok(l) = g {
                out.groups.insert(k.clone(), l.out.clone());
                out.dns.insert(k.clone(), l.mapped.dn.clone());
            }
        }
        for (k, u) in &self.users {
            if let (Ok(m), false) = (u, self.collided.contains_key(k)) {
                out.users.insert(k.clone(), m.user.clone());
                out.dns.insert(k.clone(), m.dn.to_string());
            }
        }
        out
    }
}

impl Desired for LiveDesired {
    fn user(&self, key: &str) -> Option<&Arc<User>> {
        match self.users.get(key) {
            Some(Ok(m)) if !self.collided.contains_key(key) => Some(&m.user),
            _ => None,
        }
    }

    fn group(&self, key: &str) -> Option<&Group> {
        match self.groups.get(key) {
            Some(Ok(l)) => Some(&l.out),
            _ => None,
        }
    }

    fn held(&self, key: &str) -> bool {
        self.collided.contains_key(key) || self.rejected_of(key).any(|r| r.key.is_some())
    }

    fn dn(&self, key: &Key) -> Option<&str> {
        if let Some(Ok(m)) = self.users.get(key) {
            if !self.collided.contains_key(key) {
                return Some(&m.dn);
            }
        }
        match self.groups.get(key) {
            Some(Ok(l)) => Some(&l.mapped.dn),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
