//! Collects mapped entries and resolves what needs the whole set: manager DNs to keys, group
//! memberships from `memberOf` or `member`, nested groups, and userNames used twice.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{MappedGroup, MappedUser, Mapper};
use crate::config::Membership;
use crate::model::{DesiredState, Group, Key, Rejected, Text, User};
use crate::source::entry::RawEntry;

/// What was last pushed under a key (the key and the user as the records hold them), or
/// `None` while that is not known yet (the records are read while the directory is).
pub(crate) type Previous = Box<dyn Fn(&str) -> Option<Option<(Key, Arc<User>)>> + Send>;

/// Accumulates users and groups as a search streams them.
pub(crate) struct DesiredBuilder {
    mapper: Mapper,
    /// A mapped user equal to what was last pushed (its manager aside: `finish` resolves it)
    /// is held as that very user, not a second copy: a no-change pass at 100k users held
    /// every user twice, ~30 MB.
    previous: Option<Previous>,
    /// The users as the desired state holds them: `finish` moves the map there whole (at 100k
    /// users, copying it into a second map was a third of the pass's memory at its peak).
    users: BTreeMap<Key, Arc<User>>,
    /// What `finish` needs of each user besides the user, by the same keys. Boxed: a map
    /// filled in directory order leaves its nodes a third empty, and inline these were 24 MB of
    /// a 100k no-change pass's peak (~16 boxed).
    extras: BTreeMap<Key, Box<Extras>>,
    groups: BTreeMap<Key, MappedGroup>,
    group_dns: HashMap<String, Key>,
    /// The group DNs users' `memberOf` name, each once: a user holds their numbers (100k
    /// users naming 3 of 1,000 groups held 300k copies of these DNs, ~20 MB).
    member_dns: Vec<Box<str>>,
    member_numbers: HashMap<Box<str>, u32>,
    rejected: Vec<Rejected>,
}

/// A mapped user's DN and references, resolved by `finish`.
#[derive(Debug)]
struct Extras {
    dn: String,
    dn_guid: Option<String>,
    manager_dn: Option<String>,
    /// Numbers in `member_dns`.
    member_of: Box<[u32]>,
    primary_group_sid: Option<String>,
    /// Whether what was last pushed was known when the user was mapped.
    asked: bool,
}

impl DesiredBuilder {
    pub(crate) fn new(mapper: Mapper) -> Self {
        DesiredBuilder {
            mapper,
            previous: None,
            users: BTreeMap::new(),
            extras: BTreeMap::new(),
            groups: BTreeMap::new(),
            group_dns: HashMap::new(),
            member_dns: Vec::new(),
            member_numbers: HashMap::new(),
            rejected: Vec::new(),
        }
    }

    /// Shares mapped users with what was last pushed, as far as `previous` knows it.
    pub(crate) fn share_with(&mut self, previous: Previous) {
        self.previous = Some(previous);
    }

    /// Replaces a mapped user by the one pushed under `key` if they are the same. Returns the
    /// key as the records hold it if so, and whether what was pushed was known (if not,
    /// `finish` asks again).
    fn share(&self, key: &str, user: &mut Arc<User>) -> (Option<Key>, bool) {
        let Some(pushed) = self.previous.as_ref().and_then(|p| p(key)) else {
            return (None, false);
        };
        let Some(((k, prev), u)) = pushed.zip(Arc::get_mut(user)) else {
            return (None, true);
        };
        // Mapped without a manager (`finish` sets it): compared with the one pushed.
        let unset = std::mem::replace(&mut u.manager, prev.manager.clone());
        if *u == *prev {
            *user = prev;
            return (Some(k), true);
        }
        u.manager = unset;
        (None, true)
    }

    pub(crate) fn add_user(&mut self, e: &RawEntry) {
        match self.mapper.map_user(e) {
            Ok(u) => {
                if let Some(prev) = self.extras.get(&u.key) {
                    self.rejected.push(Rejected {
                        dn: u.dn.clone(),
                        key: Some(u.key.clone()),
                        reason: format!("has the same stable key as {}", prev.dn),
                    });
                } else {
                    let MappedUser {
                        key,
                        dn,
                        dn_guid,
                        user,
                        manager_dn,
                        member_of,
                        primary_group_sid,
                    } = u;
                    let member_of = member_of
                        .into_iter()
                        .map(|dn| self.member_number(dn))
                        .collect();
                    let mut user = user;
                    let (shared, asked) = self.share(&key, &mut user);
                    let key = shared.unwrap_or(key);
                    self.users.insert(key.clone(), user);
                    self.extras.insert(
                        key,
                        Box::new(Extras {
                            dn,
                            dn_guid,
                            manager_dn,
                            member_of,
                            primary_group_sid,
                            asked,
                        }),
                    );
                }
            }
            Err(r) => self.rejected.push(r),
        }
    }

    /// The number of a group DN users name (given one the first time).
    fn member_number(&mut self, dn: String) -> u32 {
        if let Some(n) = self.member_numbers.get(dn.as_str()) {
            return *n;
        }
        // More distinct DNs than u32 numbers cannot be held in memory anyway.
        let n = u32::try_from(self.member_dns.len()).unwrap_or(u32::MAX);
        let dn: Box<str> = dn.into();
        self.member_dns.push(dn.clone());
        self.member_numbers.insert(dn, n);
        n
    }

    pub(crate) fn add_group(&mut self, e: &RawEntry) {
        match self.mapper.map_group(e) {
            Ok(g) => {
                if self.groups.contains_key(&g.key) {
                    return; // read twice (a referenced group that the search also returned)
                }
                self.group_dns
                    .insert(crate::source::dn::normalize(&g.dn), g.key.clone());
                if let Some(guid) = &g.dn_guid {
                    self.group_dns
                        .insert(crate::source::dn::guid_token(guid), g.key.clone());
                }
                self.groups.insert(g.key.clone(), g);
            }
            Err(r) => self.rejected.push(r),
        }
    }

    /// DNs named in users' `memberOf` that no group read so far has: the groups to create on
    /// the fly, as DNs a base search accepts (a GUID reference as `<GUID=...>`).
    pub(crate) fn unknown_group_dns(&self) -> BTreeSet<String> {
        self.member_dns
            .iter()
            .filter(|dn| !self.group_dns.contains_key(&***dn))
            .map(|dn| match dn.strip_prefix("<guid=") {
                Some(rest) => format!("<GUID={rest}"),
                None => dn.to_string(),
            })
            .collect()
    }

    /// Resolves everything into the desired state. `known_users` are the keys already pushed:
    /// when two entries share a userName, the one already on the target keeps it.
    pub(crate) fn finish(self, known_users: &BTreeSet<Key>) -> DesiredState {
        self.finish_with(&|k: &str| known_users.contains(k))
    }

    /// [`DesiredBuilder::finish`] asking `known` whether a key was pushed: it is asked only
    /// about users that share a userName and held managers (rarely), so a caller can look
    /// each up rather than gather every key first.
    pub(crate) fn finish_with(mut self, known: &dyn Fn(&str) -> bool) -> DesiredState {
        // Users mapped before the records were known are shared now, if they can be. (The
        // two maps hold the same keys: one entry each in `add_user`.)
        if self.previous.is_some() {
            let mut users = std::mem::take(&mut self.users);
            for ((k, u), _) in users
                .iter_mut()
                .zip(self.extras.values())
                .filter(|(_, x)| !x.asked)
            {
                self.share(k, u);
            }
            self.users = users;
        }
        let DesiredBuilder {
            mapper,
            previous,
            mut users,
            mut extras,
            groups,
            group_dns,
            member_dns,
            member_numbers,
            mut rejected,
        } = self;
        drop((member_numbers, previous));
        let mut held: BTreeSet<Key> = rejected.iter().filter_map(|r| r.key.clone()).collect();

        // userName must be unique (case-insensitively, as SCIM compares it). Only the names
        // used twice are collected with their keys, in name order.
        // A name is copied only when lowercasing changes it, and a list of keys is kept only
        // for the names used twice (100k users: 200k allocations fewer).
        let mut first: HashMap<Cow<'_, str>, &Key> = HashMap::with_capacity(users.len());
        let mut twice: BTreeMap<String, Vec<Key>> = BTreeMap::new();
        for (k, u) in &users {
            match first.entry(lowercase(&u.user_name)) {
                Entry::Vacant(v) => {
                    v.insert(k);
                }
                Entry::Occupied(o) => twice
                    .entry(o.key().to_string())
                    .or_insert_with(|| vec![Key::clone(o.get())])
                    .push(k.clone()),
            }
        }
        drop(first);
        let shared = twice;
        for (name, keys) in shared {
            let keeper: Vec<&Key> = keys.iter().filter(|k| known(k)).collect();
            let keep = if keeper.len() == 1 {
                Some(keeper[0].clone())
            } else {
                None
            };
            let dns: Vec<String> = keys
                .iter()
                .filter_map(|k| extras.get(k).map(|u| u.dn.clone()))
                .collect();
            for k in keys.iter().filter(|k| Some(*k) != keep.as_ref()) {
                users.remove(k);
                if let Some(u) = extras.remove(k) {
                    rejected.push(Rejected {
                        dn: u.dn.clone(),
                        key: Some(k.clone()),
                        reason: format!(
                            "userName \"{name}\" is used by more than one entry: {}",
                            dns.join("; ")
                        ),
                    });
                    held.insert(k.clone());
                }
            }
        }

        // Held entries by normalized DN and by key as a GUID token: a manager that is held
        // but already on the target stays the manager (the first such key).
        let mut held_refs: HashMap<String, BTreeSet<Key>> = HashMap::new();
        for r in &rejected {
            if let Some(k) = &r.key {
                for name in [
                    crate::source::dn::normalize(&r.dn),
                    crate::source::dn::guid_token(k),
                ] {
                    held_refs.entry(name).or_default().insert(k.clone());
                }
            }
        }

        let mut user_dns: HashMap<String, Key> = HashMap::new();
        for (k, u) in &extras {
            user_dns.insert(crate::source::dn::normalize(&u.dn), k.clone());
            if let Some(guid) = &u.dn_guid {
                user_dns.insert(crate::source::dn::guid_token(guid), k.clone());
            }
        }

        let mut out = DesiredState {
            held,
            ..Default::default()
        };

        // Members per group, direct: collected in lists (the users come in key order, so most
        // lists are sorted already) and made sets once, not searched member by member.
        let mut direct: BTreeMap<Key, Vec<Key>> =
            groups.keys().map(|k| (k.clone(), Vec::new())).collect();
        let mut add = |group: &Key, member: &Key| {
            if let Some(m) = direct.get_mut(group) {
                m.push(member.clone());
            } else {
                direct.insert(group.clone(), vec![member.clone()]);
            }
        };
        // Child groups per group, for nesting.
        let mut children: BTreeMap<Key, BTreeSet<Key>> = BTreeMap::new();
        match mapper.membership() {
            Membership::MemberOf => {
                // Each DN resolved once.
                let named: Vec<Option<&Key>> =
                    member_dns.iter().map(|dn| group_dns.get(&**dn)).collect();
                for (k, u) in &extras {
                    for n in u.member_of.iter() {
                        if let Some(gk) = named.get(*n as usize).copied().flatten() {
                            add(gk, k);
                        }
                    }
                }
                for g in groups.values() {
                    for parent in &g.member_of {
                        if let Some(pk) = group_dns.get(parent) {
                            children
                                .entry(pk.clone())
                                .or_default()
                                .insert(g.key.clone());
                        }
                    }
                }
            }
            Membership::Member => {
                let held_dns: BTreeSet<String> = rejected
                    .iter()
                    .map(|r| crate::source::dn::normalize(&r.dn))
                    .collect();
                for g in groups.values() {
                    for mdn in &g.member_dns {
                        if let Some(uk) = user_dns.get(mdn) {
                            add(&g.key, uk);
                        } else if !group_dns.contains_key(mdn) && !held_dns.contains(mdn) {
                            out.unresolved_members += 1;
                            tracing::debug!(group = %g.dn, member = %mdn, "a member names no user or group read (deleted, or outside the configured scope)");
                        }
                    }
                }
            }
        }
        // The primary group (AD) is not in memberOf: resolve it through the groups' SIDs.
        let group_sids: HashMap<&str, &Key> = groups
            .values()
            .filter_map(|g| g.sid.as_deref().map(|s| (s, &g.key)))
            .collect();
        for (k, u) in &extras {
            if let Some(gk) = u
                .primary_group_sid
                .as_deref()
                .and_then(|s| group_sids.get(s))
            {
                add(gk, k);
            }
        }
        let direct: BTreeMap<Key, BTreeSet<Key>> = direct
            .into_iter()
            .map(|(g, members)| (g, members.into_iter().collect()))
            .collect();
        if mapper.nested() {
            for g in groups.values() {
                for mdn in &g.member_dns {
                    if let Some(ck) = group_dns.get(mdn) {
                        children
                            .entry(g.key.clone())
                            .or_default()
                            .insert(ck.clone());
                    }
                }
            }
        }

        drop(group_sids);
        // Without nesting, each group's direct members are its members: moved, not copied.
        let flat: Option<BTreeMap<Key, BTreeSet<Key>>> = mapper.nested().then(|| {
            groups
                .keys()
                .map(|k| (k.clone(), flatten(k, &direct, &children)))
                .collect()
        });
        let mut members_of = flat.unwrap_or(direct);
        // The maps are built from sorted lists (a bulk build), not key by key.
        let mut dns: Vec<(Key, String)> = Vec::with_capacity(groups.len() + users.len());
        let mut group_list: Vec<(Key, Group)> = Vec::with_capacity(groups.len());
        for (k, g) in groups {
            let members = members_of.remove(&k).unwrap_or_default();
            dns.push((k.clone(), g.dn));
            group_list.push((
                k,
                Group {
                    display_name: g.display_name,
                    members: members.into(),
                },
            ));
        }
        out.groups = group_list.into_iter().collect();

        for (k, u) in std::mem::take(&mut extras) {
            // A manager is referenced only when it is a user the gateway pushes or holds.
            let manager = u
                .manager_dn
                .as_deref()
                .map(crate::source::dn::normalize)
                .and_then(|d| {
                    user_dns.get(&d).map(|k| Text::from(&**k)).or_else(|| {
                        held_refs
                            .get(&d)
                            .and_then(|ks| ks.iter().find(|k| known(k)).map(|k| Text::from(&**k)))
                    })
                });
            // A user shared with its record holds the manager pushed: changed (so copied)
            // only if the directory now says otherwise.
            if let Some(user) = users.get_mut(&k).filter(|u| u.manager != manager) {
                Arc::make_mut(user).manager = manager;
            }
            dns.push((k, u.dn));
        }
        out.users = users;
        // A user and a group may share a key: the user's DN (pushed last) is the one kept.
        dns.sort_by(|a, b| a.0.cmp(&b.0));
        dns.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        out.dns = dns.into_iter().collect();
        out.rejected = rejected;
        out
    }
}

/// `name` in lower case, copied only if that changes it.
fn lowercase(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.to_lowercase())
    }
}

/// Every user in `group` and, transitively, in its child groups; cycles are cut.
fn flatten(
    group: &Key,
    direct: &BTreeMap<Key, BTreeSet<Key>>,
    children: &BTreeMap<Key, BTreeSet<Key>>,
) -> BTreeSet<Key> {
    let mut members = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![group.clone()];
    while let Some(g) = stack.pop() {
        if !seen.insert(g.clone()) {
            continue;
        }
        if let Some(d) = direct.get(&g) {
            members.extend(d.iter().cloned());
        }
        if let Some(c) = children.get(&g) {
            stack.extend(c.iter().cloned());
        }
    }
    members
}
