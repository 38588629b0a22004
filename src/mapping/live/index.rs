//! The live state's name indexes (userNames, DNs, GUID tokens, member values -> keys) and how
//! an entry's names enter and leave them.

use std::collections::HashMap;
use std::sync::Arc;

use super::{LiveDesired, LiveGroup, UserSlot, COLLIDED, GROUPS, USERS};
use crate::model::{Key, Rejected};
use crate::source::dn::{guid_token, normalize};

/// Name -> the keys under it, sorted: nearly always one, held without an allocation of its
/// own (a vector per name, then a tree node per name before it, were the indexes' largest
/// part at 100k users).
pub(super) type Index = HashMap<Box<str>, Keys>;

/// The keys under one name, sorted.
#[derive(Debug, Clone)]
pub(super) enum Keys {
    One(Key),
    /// Two or more. Boxed: the list is rare, and with it inline every entry of every index was
    /// a word larger (24 bytes, not 16: ~3 MB at 100k users).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Key>>),
}

// An entry of every name index is its name and this: kept at two words.
const _: () = assert!(std::mem::size_of::<Keys>() == 16);

/// The keys under one name, sorted, where a name nearly always has several: the member index,
/// where a user's DN is listed by ~3 groups at 100k (there `Keys` was two allocations a name,
/// the box and its list).
pub(super) type Listed = Box<[Key]>;

/// What an index holds under one name.
pub(super) trait KeySet {
    fn of(key: &Key) -> Self;
    /// Adds `key` (once).
    fn put(&mut self, key: &Key);
    /// Takes `key` out; true when none is left.
    fn take_out(&mut self, key: &Key) -> bool;
}

impl KeySet for Keys {
    fn of(key: &Key) -> Self {
        Keys::One(key.clone())
    }

    fn put(&mut self, key: &Key) {
        self.insert(key);
    }

    fn take_out(&mut self, key: &Key) -> bool {
        match self {
            Keys::One(k) => k == key,
            Keys::Many(v) => {
                if let Ok(at) = v.binary_search(key) {
                    v.remove(at);
                }
                if let [only] = v.as_slice() {
                    *self = Keys::One(only.clone());
                }
                false
            }
        }
    }
}

impl KeySet for Listed {
    fn of(key: &Key) -> Self {
        Box::new([key.clone()])
    }

    fn put(&mut self, key: &Key) {
        if let Err(at) = self.binary_search(key) {
            let mut v = Vec::with_capacity(self.len() + 1);
            v.extend_from_slice(&self[..at]);
            v.push(key.clone());
            v.extend_from_slice(&self[at..]);
            *self = v.into_boxed_slice();
        }
    }

    fn take_out(&mut self, key: &Key) -> bool {
        if let Ok(at) = self.binary_search(key) {
            let mut v = self.to_vec();
            v.remove(at);
            *self = v.into_boxed_slice();
        }
        self.is_empty()
    }
}

impl Keys {
    /// Adds `key` (once).
    pub(super) fn insert(&mut self, key: &Key) {
        match self {
            Keys::One(k) if k == key => {}
            Keys::One(k) => {
                let mut both = vec![k.clone(), key.clone()];
                both.sort();
                *self = Keys::Many(Box::new(both));
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
    pub(super) fn shrink(&mut self) {
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

pub(super) fn add<T, N: From<T> + std::hash::Hash + Eq, V: KeySet>(
    index: &mut HashMap<N, V>,
    name: T,
    key: &Key,
) {
    match index.entry(N::from(name)) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(V::of(key));
        }
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut().put(key),
    }
}

/// Adds `key` under `name` and returns the name as the index holds it, shared (with `donor`'s
/// when it holds the name).
pub(super) fn add_shared<V: KeySet, W>(
    index: &mut HashMap<Arc<str>, V>,
    donor: &HashMap<Arc<str>, W>,
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
            index.insert(Arc::clone(&name), V::of(key));
            return name;
        }
    };
    if let Some(keys) = index.get_mut(name) {
        keys.put(key);
    }
    held
}

pub(super) fn remove<N: std::borrow::Borrow<str> + std::hash::Hash + Eq, V: KeySet>(
    index: &mut HashMap<N, V>,
    name: &str,
    key: &Key,
) {
    let Some(keys) = index.get_mut(name) else {
        return;
    };
    if keys.take_out(key) {
        index.remove(name);
    }
}

impl LiveDesired {
    pub(super) fn index_user(&mut self, key: &Key, u: &UserSlot, on: bool) {
        match u {
            Ok(m) => {
                let name = m.user.user_name.as_str().to_lowercase();
                let normal = normalize(&m.dn);
                let mut dns = vec![if normal == *m.dn {
                    Arc::clone(&m.dn)
                } else {
                    Arc::from(normal)
                }];
                dns.extend(m.dn_guid().map(|g| Arc::from(guid_token(g))));
                for d in dns {
                    if on {
                        add(&mut self.user_dns, d, key);
                    } else {
                        remove(&mut self.user_dns, &d, key);
                    }
                }
                if let Some(mgr) = m.manager_dn() {
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
    pub(super) fn index_rejected(&mut self, key: &Key, r: &Rejected, on: bool, kind: usize) {
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
    pub(super) fn index_group(&mut self, key: &Key, g: &mut Result<LiveGroup, Rejected>, on: bool) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<V: KeySet + std::ops::Deref<Target = [Key]>>(v: &V) -> Vec<&str> {
        v.iter().map(|k| &**k).collect()
    }

    #[test]
    fn both_kinds_of_list_keep_their_keys_sorted_once_and_say_when_empty() {
        let k = |s: &str| -> Key { s.into() };
        let mut one = Keys::of(&k("b"));
        let mut listed = Listed::of(&k("b"));
        for name in ["c", "a", "b", "c"] {
            one.put(&k(name));
            listed.put(&k(name));
        }
        assert_eq!(keys(&one), ["a", "b", "c"]);
        assert_eq!(keys(&listed), ["a", "b", "c"]);
        for (name, left) in [("b", false), ("x", false), ("a", false), ("c", true)] {
            assert_eq!(one.take_out(&k(name)), left, "{name}");
            assert_eq!(listed.take_out(&k(name)), left, "{name}");
        }
        assert!(matches!(one, Keys::One(_)), "{one:?}");
        assert!(listed.is_empty());
    }
}
