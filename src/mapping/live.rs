//! The desired state a change feed keeps between passes, updated by the entries that changed
//! instead of rebuilt from the whole mirror. It resolves what `desired.rs` resolves (manager
//! DNs, groups' member values, nested groups, userNames used twice) through indexes kept up to
//! date, and says which keys a change reached: the only ones the next plan has to look at.
//!
//! Memberships come from the groups' member values, as the feed maps them. `desired.rs` stays
//! the reference: the property tests build both from the same entries and compare.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use other_names::OtherNames;

use super::{MappedGroup, MappedUser, Mapper};
use crate::config::Membership;
#[cfg(test)]
use crate::model::DesiredState;
use crate::model::{Desired, Group, Key, Rejected, User};
use crate::sorted::SortedBuilder;
use crate::source::dn::{guid_token, normalize};
use crate::source::entry::RawEntry;

mod index;
mod other_names;
mod resolve;

use index::{Index, Keys};

/// The kinds of rejection, each indexed apart.
const USERS: usize = 0;
const GROUPS: usize = 1;
const COLLIDED: usize = 2;

/// A user as the live state holds it: what resolution needs of its mapping (a `MappedUser`
/// also carries what a feed never fills, and its key again: 152 bytes a user in the map's
/// nodes, this 40).
#[derive(Debug)]
struct LiveUser {
    /// The entry's DN; the very name `user_dns` holds when the DN is already in its
    /// normalized form (most DNs of an OpenLDAP directory: ~4 MB at 100k users).
    dn: Arc<str>,
    user: Arc<User>,
    /// Its GUID and manager DN, in one string (16 bytes less a user than the two held apart).
    names: Option<OtherNames>,
}

// The users' map holds one per user (see above).
const _: () = assert!(std::mem::size_of::<UserSlot>() == 40);

impl LiveUser {
    fn dn_guid(&self) -> Option<&str> {
        self.names.as_ref().and_then(OtherNames::guid)
    }

    fn manager_dn(&self) -> Option<&str> {
        self.names.as_ref().and_then(OtherNames::manager)
    }
}

/// A user entry: mapped, or rejected (boxed: rare, and twice a user's size).
type UserSlot = Result<LiveUser, Box<Rejected>>;

fn live_user(mapped: Result<MappedUser, Rejected>) -> UserSlot {
    match mapped {
        Ok(m) => Ok(LiveUser {
            dn: Arc::from(m.dn),
            user: m.user,
            names: OtherNames::new(m.dn_guid.as_deref(), m.manager_dn.as_deref()),
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
    named_by: HashMap<Arc<str>, index::Listed>,
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

/// The names an entry can be referred to by, and is indexed under.
fn names_of(key: &Key, dn: &str, dn_guid: Option<&str>) -> Vec<String> {
    let mut out = vec![normalize(dn), guid_token(key)];
    out.extend(dn_guid.map(guid_token));
    out
}

fn user_names_of(key: &Key, u: &UserSlot) -> Vec<String> {
    match u {
        Ok(m) => names_of(key, &m.dn, m.dn_guid()),
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
            ..
        } = self;
        let plain = [names, group_dns, managed_by, reports]
            .into_iter()
            .chain(rejected_dns)
            .chain(held_refs);
        for index in plain {
            index.values_mut().for_each(Keys::shrink);
        }
        user_dns.values_mut().for_each(Keys::shrink);
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
        let mut changed_users = changed_users.into_iter();
        // A fresh build maps its users as it builds the map, below.
        let new_users: Vec<(Key, Option<UserSlot>)> = if fresh {
            Vec::new()
        } else {
            changed_users
                .by_ref()
                .map(|k| {
                    (
                        k.clone(),
                        mirror_users(k).map(|e| live_user(self.mapper.map_user(&e))),
                    )
                })
                .collect()
        };
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
            // The whole directory: the map is built in key order a chunk at a time (inserted
            // one by one in key order, its nodes end half empty: ~30 MB more for 100k users,
            // kept for as long as the service runs; built from a list of them all, ~15 MB
            // more while it is built).
            let mut built = SortedBuilder::new();
            for k in changed_users {
                if report {
                    reached.groups.insert(k.clone());
                    reached.users.insert(k.clone());
                }
                let Some(e) = mirror_users(k) else {
                    continue;
                };
                let new = live_user(self.mapper.map_user(&e));
                self.index_user(k, &new, true);
                built.push(k.clone(), new);
            }
            self.users = built.finish();
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
