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
    /// Two or more.
    Many(Vec<Key>),
}

impl Keys {
    /// Adds `key` (once).
    pub(super) fn insert(&mut self, key: &Key) {
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

pub(super) fn add<T, N: From<T> + std::hash::Hash + Eq>(
    index: &mut HashMap<N, Keys>,
    name: T,
    key: &Key,
) {
    match index.entry(N::from(name)) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(Keys::One(key.clone()));
        }
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut().insert(key),
    }
}

/// Adds `key` under `name` and returns the name as the index holds it, shared (with `donor`'s
/// when it holds the name).
pub(super) fn add_shared(
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

pub(super) fn remove<N: std::borrow::Borrow<str> + std::hash::Hash + Eq>(
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
