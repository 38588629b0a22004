//! Renames and moves seen by the change feed, applied to the groups' `member` values.
//!
//! When an entry is renamed, the server's referential integrity (slapd's refint overlay or
//! memberof-refint, 389-DS's referential integrity plugin) rewrites the `member` values naming
//! it. slapd does not send those rewrites through syncrepl: the groups' entryCSN does not move,
//! so the feed would keep naming the old DN and drop the member. The feed does the same rewrite
//! in its mirror, but only in the groups it holds from before the rename: a group received after
//! it (in the persist phase), or received in the same refresh (which describes the directory as
//! it is now), already says what the server has, even when a new entry took the old DN.
//!
//! Renames are collected as they arrive and applied in one sweep of the groups before the mirror
//! is used (a pass, a save): a move of a whole OU costs one sweep, not one per entry. A sweep
//! reads every group entry (they are in the store); renames are rare enough for that. A sweep
//! needs every rename of a generation: passes wait for the refresh and for the entries read
//! again by DN, so a refresh's renames are always swept together.

use std::collections::HashMap;

use crate::model::Key;
use crate::source::dn::normalize;
use crate::source::entry::RawEntry;

/// One rename: `from` (normal form) became `to`.
#[derive(Debug)]
struct Rename {
    from: String,
    to: String,
    to_normal: String,
    /// Groups received after this event number already name the entry as the server does now.
    current_after: u64,
    /// Renames of one generation happened together (all the renames one refresh reports are
    /// from the mirror as it was to the directory as it is): they never chain into each other.
    /// Each rename seen while following is a generation of its own, after the ones before it.
    generation: u64,
}

#[derive(Debug, Default)]
pub(super) struct Renames {
    /// In arrival order.
    pending: Vec<Rename>,
    /// The event number at which each group in the mirror was last received in this process
    /// (absent: from the stored mirror, older than any event).
    received: HashMap<Key, u64>,
}

impl Renames {
    pub(super) fn group_received(&mut self, key: &Key, event: u64) {
        self.received.insert(key.clone(), event);
    }

    pub(super) fn group_gone(&mut self, key: &Key) {
        self.received.remove(key);
    }

    /// Notes that the entry at `old_dn` is now at `new_dn`; groups received after event number
    /// `current_after` already reflect it; `generation` orders it among the others.
    pub(super) fn note(&mut self, old_dn: &str, new_dn: &str, current_after: u64, generation: u64) {
        let from = normalize(old_dn);
        let to_normal = normalize(new_dn);
        if from == to_normal {
            return;
        }
        self.pending.push(Rename {
            from,
            to: new_dn.to_string(),
            to_normal,
            current_after,
            generation,
        });
    }

    /// The renames noted since the last sweep, to rewrite the groups' member values with (None:
    /// nothing to do). They stay noted until [`Renames::swept`].
    pub(super) fn sweep(&self, member_attribute: &str) -> Option<Sweep<'_>> {
        if self.pending.is_empty() {
            return None;
        }
        let mut by_from: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in self.pending.iter().enumerate() {
            by_from.entry(r.from.as_str()).or_default().push(i);
        }
        Some(Sweep {
            renames: self,
            by_from,
            attr: member_attribute.to_ascii_lowercase(),
        })
    }

    /// Every group was rewritten by the sweep: its renames are done with.
    pub(super) fn swept(&mut self) {
        self.pending.clear();
    }
}

/// The renames of a sweep, by the DN they left.
pub(super) struct Sweep<'r> {
    renames: &'r Renames,
    by_from: HashMap<&'r str, Vec<usize>>,
    attr: String,
}

impl Sweep<'_> {
    /// Rewrites the member values of `entry` (the group under `key`) that name a renamed entry
    /// by a DN it has left, if the group is held from before the rename; true when it changed.
    pub(super) fn rewrite(&self, key: &Key, entry: &mut RawEntry) -> bool {
        let pending = &self.renames.pending;
        let received = self.renames.received.get(key).copied().unwrap_or(0);
        let attr = self.attr.as_str();
        let Some(current) = entry.attrs.get(attr) else {
            return false;
        };
        // (position, new value) of the values to rewrite; the rest are kept as they are.
        let mut rewrites: Vec<(usize, &str)> = Vec::new();
        for (at, v) in current.enumerate() {
            let Ok(text) = std::str::from_utf8(v) else {
                continue;
            };
            let mut normal = normalize(text);
            let mut last: Option<u64> = None;
            let mut to: Option<&str> = None;
            // Follow renames generation after generation (A -> B, then B -> C); within one
            // generation they are simultaneous (a swap stays a swap). Generations only grow,
            // so a rename back and forth ends.
            while let Some(&i) = self.by_from.get(normal.as_str()).and_then(|ix| {
                ix.iter().find(|&&i| {
                    last.is_none_or(|l| pending[i].generation > l)
                        && received <= pending[i].current_after
                })
            }) {
                to = Some(&pending[i].to);
                normal.clone_from(&pending[i].to_normal);
                last = Some(pending[i].generation);
            }
            if let Some(to) = to {
                rewrites.push((at, to));
            }
        }
        if rewrites.is_empty() {
            return false;
        }
        let mut values = entry.values(attr).to_vecs();
        for (at, to) in rewrites {
            values[at] = to.as_bytes().to_vec();
        }
        // Two old names of one entry (or an old name next to the new one) are one member.
        let mut seen = std::collections::HashSet::new();
        values.retain(|v| {
            let n = std::str::from_utf8(v).map(normalize).ok();
            n.is_none() || seen.insert(n)
        });
        entry.attrs.insert(attr, values);
        true
    }
}
