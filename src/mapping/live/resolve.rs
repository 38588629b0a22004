//! What the live state resolves across entries: who keeps a userName used twice, a user's
//! manager, a group's members (and, nested, its descendants' users).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::index::{add, remove};
use super::{LiveDesired, COLLIDED};
use crate::model::{Key, Rejected, Text};
use crate::source::dn::normalize;

impl LiveDesired {
    /// Holds the users whose userName another user carries too, unless exactly one of them is
    /// already on the target (`known`): that one keeps it. Returns the users whose standing or
    /// reason changed.
    pub(super) fn settle_collisions(&mut self, known: &dyn Fn(&Key) -> bool) -> BTreeSet<Key> {
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
    /// Resolves a user's manager DN: a user synced, else a held user already on the target.
    pub(super) fn resolve_manager(&mut self, key: &Key, known: &dyn Fn(&Key) -> bool) {
        let Some(Ok(m)) = self.users.get(key) else {
            return;
        };
        let manager = m.manager_dn().map(normalize).and_then(|d| {
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
    pub(super) fn resolve_members(&mut self, key: &Key) {
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
    pub(super) fn flatten(&mut self, key: &Key) {
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
}
