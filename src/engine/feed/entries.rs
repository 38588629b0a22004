//! One side (users, groups) of the change feed's mirror. The entries are in the store's mirror
//! tables; the feed holds a digest of each one's DN (a rename is told by it: the old DN is then
//! read back) and of the whole entry (an entry sent again unchanged is no change), and in
//! memory only the entries changed since they were last written. At 100k users the entries held whole were ~25 MB more for the users, ~20 MB for
//! the member values of 1,000 groups, for as long as `run` ran; the live desired state holds
//! what the mapping made of them, and a pass reads an entry only when its key changed, or
//! every entry when it builds that state afresh.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::model::Key;
use crate::sorted::SortedBuilder;
use crate::source::entry::RawEntry;
use crate::state::{MirrorEntries, MirrorReader, MirrorSide, StateError, Store};

/// What the feed holds of one entry (its DN held whole was ~5 MB at 100k users).
#[derive(Debug)]
struct Held {
    dn: u64,
    digest: [u8; 16],
}

/// A DN's digest: a different one means another DN (64 bits: a rename taken for the same DN
/// once in 2^64 renames).
fn dn_digest(dn: &str) -> u64 {
    let mut out = [0; 8];
    out.copy_from_slice(&Sha256::digest(dn.as_bytes())[..8]);
    u64::from_le_bytes(out)
}

/// An entry's digest: its DN, its GUID and its attributes (collisions of 128 bits of SHA-256
/// are not a concern; a wrong "same" would drop a change).
fn digest(e: &RawEntry) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in [
        e.dn.as_bytes(),
        e.dn_guid.as_deref().unwrap_or("").as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update([u8::from(e.dn_guid.is_some())]);
    h.update(e.attrs.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// The bytes of an entry as the store writes it, about.
fn size(e: &RawEntry) -> usize {
    e.dn.len() + e.attrs.as_bytes().len()
}

/// One side of the mirror.
#[derive(Debug)]
pub(super) struct FeedEntries {
    side: MirrorSide,
    held: BTreeMap<Key, Held>,
    /// Entries changed since they were last written to the store.
    pending: BTreeMap<Key, RawEntry>,
    /// Their size, about (what writing ahead is measured by).
    pending_bytes: usize,
    /// Keys removed from the store ahead of the save, and not put back since: not removed
    /// again by every later write ahead (a refresh over another configuration's mirror has
    /// every stored key to remove).
    removed_ahead: BTreeSet<Key>,
    stored: MirrorEntries,
}

impl FeedEntries {
    /// Nothing held (the stored entries, if any, are not this feed's).
    pub(super) fn empty(store: &Store, side: MirrorSide) -> FeedEntries {
        FeedEntries {
            side,
            held: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            removed_ahead: BTreeSet::new(),
            stored: store.mirror_entries(),
        }
    }

    /// The stored entries, each also shown to `each` (to index it).
    pub(super) fn load(
        store: &Store,
        side: MirrorSide,
        mut each: impl FnMut(&Key, &RawEntry),
    ) -> Result<FeedEntries, StateError> {
        let mut held = SortedBuilder::new();
        store.each_mirror_entry(side, |k, e| {
            each(&k, &e);
            let h = Held {
                digest: digest(&e),
                dn: dn_digest(&e.dn),
            };
            held.push(k, h);
        })?;
        Ok(FeedEntries {
            side,
            held: held.finish(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            removed_ahead: BTreeSet::new(),
            stored: store.mirror_entries(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.held.keys()
    }

    /// Whether an entry is held under `key`.
    pub(super) fn holds(&self, key: &Key) -> bool {
        self.held.contains_key(key)
    }

    /// True when the entry under `key` is held with another DN than `dn`.
    pub(super) fn dn_differs(&self, key: &Key, dn: &str) -> bool {
        self.held.get(key).is_some_and(|h| h.dn != dn_digest(dn))
    }

    /// The DN of the entry under `key`, read back.
    pub(super) fn stored_dn(&self, key: &Key) -> Result<Option<String>, StateError> {
        let reader = self.reader()?;
        Ok(self.entry(&reader, key)?.map(|e| e.dn))
    }

    /// Puts `e` under `key`; false when it is the same entry again.
    pub(super) fn put(&mut self, key: &Key, e: RawEntry) -> bool {
        let d = digest(&e);
        if self.held.get(key).is_some_and(|h| h.digest == d) {
            return false;
        }
        self.held.insert(
            key.clone(),
            Held {
                dn: dn_digest(&e.dn),
                digest: d,
            },
        );
        self.pending_bytes += size(&e);
        if let Some(old) = self.pending.insert(key.clone(), e) {
            self.pending_bytes -= size(&old);
        }
        self.removed_ahead.remove(key);
        true
    }

    /// Takes `key` out; false when it was not there.
    pub(super) fn remove(&mut self, key: &Key) -> bool {
        if let Some(old) = self.pending.remove(key) {
            self.pending_bytes -= size(&old);
        }
        self.held.remove(key).is_some()
    }

    /// Rebuilt from its sorted entries (filled in the server's order, a map's nodes are half
    /// empty).
    pub(super) fn compact(&mut self) {
        let mut built = SortedBuilder::new();
        for (k, h) in std::mem::take(&mut self.held) {
            built.push(k, h);
        }
        self.held = built.finish();
    }

    /// A view of the stored entries, for [`FeedEntries::entry`].
    pub(super) fn reader(&self) -> Result<MirrorReader<'_>, StateError> {
        self.stored.reader()
    }

    /// The entry under `key`, from memory when it changed since it was written, else from the
    /// store (`reader`).
    pub(super) fn entry(
        &self,
        reader: &MirrorReader<'_>,
        key: &Key,
    ) -> Result<Option<RawEntry>, StateError> {
        if !self.held.contains_key(key) {
            return Ok(None);
        }
        if let Some(e) = self.pending.get(key) {
            return Ok(Some(e.clone()));
        }
        match reader.entry(self.side, key)? {
            Some(e) => Ok(Some(e)),
            // Held but neither in memory nor stored: the store lost it.
            None => Err(StateError::Corrupt {
                path: reader.path().to_path_buf(),
                key: key.to_string(),
                reason: format!(
                    "an entry of the change feed's mirror ({}) is missing",
                    match self.side {
                        MirrorSide::Users => "users",
                        MirrorSide::Groups => "groups",
                    }
                ),
            }),
        }
    }

    /// What a save writes for the keys in `unsaved`: the entries still in memory, the removal
    /// of those no longer held (entries written ahead are in the store already).
    pub(super) fn writes(&self, unsaved: &BTreeSet<Key>) -> Vec<(Key, Option<&RawEntry>)> {
        unsaved
            .iter()
            .filter_map(|k| match self.pending.get(k) {
                Some(e) => Some((k.clone(), Some(e))),
                None if self.held.contains_key(k) => None,
                None => Some((k.clone(), None)),
            })
            .collect()
    }

    /// Saved: the entries in memory need not be held any more.
    pub(super) fn written(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.removed_ahead.clear();
    }

    /// About how many bytes of entries are held in memory.
    pub(super) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Writes the entries in memory (and the removals among `unsaved` not written yet) to the
    /// store ahead of the next save (see [`Store::write_mirror_ahead`]), and lets them go.
    pub(super) fn write_ahead(
        &mut self,
        store: &Store,
        unsaved: &BTreeSet<Key>,
        checkpoint_usable: bool,
    ) -> Result<(), StateError> {
        let mut writes = self.writes(unsaved);
        writes.retain(|(k, e)| e.is_some() || !self.removed_ahead.contains(k));
        store.write_mirror_ahead(self.side, &writes, checkpoint_usable)?;
        let removed: Vec<Key> = writes
            .into_iter()
            .filter(|(_, e)| e.is_none())
            .map(|(k, _)| k)
            .collect();
        self.pending.clear();
        self.pending_bytes = 0;
        self.removed_ahead.extend(removed);
        Ok(())
    }
}
