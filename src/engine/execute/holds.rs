//! Which operations wait for which: an operation holds the object it is about alone, and the
//! objects it names (a group's members, a user's manager) together with other operations that
//! only name them. So an operation waits while one about the same object, or about an object it
//! names, is prepared, in flight or not yet confirmed on disk; but two groups adding the same
//! member do not wait for each other (a first sync's membership changes all name the same
//! users, and waiting for each other put them one at a time).

use std::collections::HashMap;

use crate::model::Key;
use crate::plan::Operation;

/// The object an operation is about, and the objects it names.
#[derive(Debug, Clone)]
pub(super) struct Refs {
    own: Key,
    named: Vec<Key>,
}

impl Refs {
    pub(super) fn of(op: &Operation) -> Refs {
        let named = match op {
            Operation::CreateUser { user, .. } => {
                user.manager.iter().map(|m| Key::from(m.as_str())).collect()
            }
            Operation::UpdateUser { desired, .. } => desired
                .manager
                .iter()
                .map(|m| Key::from(m.as_str()))
                .collect(),
            Operation::AddMembers { members, .. } | Operation::RemoveMembers { members, .. } => {
                members.clone()
            }
            _ => Vec::new(),
        };
        Refs {
            own: op.key().clone(),
            named,
        }
    }
}

#[cfg(test)]
impl Refs {
    pub(super) fn own(&self) -> &Key {
        &self.own
    }
}

/// Counts of the operations holding each object: (about it, naming it). Hashed with a seeded
/// fast hash: a membership change holds and releases a hundred keys.
#[derive(Debug, Default)]
pub(super) struct Holds(HashMap<Key, (u32, u32), foldhash::fast::RandomState>);

impl Holds {
    /// True when an operation with these references must wait for a holder.
    pub(super) fn blocks(&self, r: &Refs) -> bool {
        self.0.contains_key(&r.own)
            || r.named
                .iter()
                .any(|k| self.0.get(k).is_some_and(|&(own, _)| own > 0))
    }

    pub(super) fn hold(&mut self, r: &Refs) {
        self.0.entry(r.own.clone()).or_default().0 += 1;
        for k in &r.named {
            self.0.entry(k.clone()).or_default().1 += 1;
        }
    }

    pub(super) fn release(&mut self, r: &Refs) {
        self.take(&r.own, |h| &mut h.0);
        for k in &r.named {
            self.take(k, |h| &mut h.1);
        }
    }

    fn take(&mut self, k: &Key, count: impl Fn(&mut (u32, u32)) -> &mut u32) {
        if let Some(h) = self.0.get_mut(k) {
            let n = count(h);
            *n = n.saturating_sub(1);
            if *h == (0, 0) {
                self.0.remove(k);
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(own: &str, named: &[&str]) -> Refs {
        Refs {
            own: Key::from(own),
            named: named.iter().map(|&k| Key::from(k)).collect(),
        }
    }

    #[test]
    fn an_object_is_held_alone_and_a_named_object_shared() {
        let mut h = Holds::default();
        let add_a = refs("g:a", &["u:1", "u:2"]);
        h.hold(&add_a);
        // Another group adding the same members goes on.
        assert!(!h.blocks(&refs("g:b", &["u:2", "u:3"])));
        // The same group waits; so does an operation about a named user.
        assert!(h.blocks(&refs("g:a", &[])));
        assert!(h.blocks(&refs("u:2", &[])));
        // A user being created holds back whoever names it.
        let create = refs("u:9", &["u:8"]);
        h.hold(&create);
        assert!(h.blocks(&refs("g:c", &["u:9"])));
        assert!(!h.blocks(&refs("u:7", &["u:8"])));
        assert!(h.blocks(&refs("u:8", &[])));
        h.release(&add_a);
        assert!(!h.blocks(&refs("u:2", &[])));
        assert!(!h.blocks(&refs("g:a", &[])));
        h.release(&create);
        assert!(h.is_empty());
        // Held twice, released twice.
        h.hold(&add_a);
        h.hold(&refs("g:b", &["u:1"]));
        h.release(&add_a);
        assert!(!h.blocks(&refs("u:2", &[])));
        assert!(h.blocks(&refs("u:1", &[])));
    }
}
