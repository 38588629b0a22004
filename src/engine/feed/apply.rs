//! Entries into the mirror: one a search sent (added, changed, renamed, moved to another key),
//! and the ones read again by DN after a change the feed could not place.

use std::time::SystemTime;

use super::{csn_time, Feed, FeedKind, FeedScope, Refetched, SyncId, SYNC_ID};
use crate::model::Key;
use crate::source::entry::RawEntry;
use crate::source::syncrepl::EntryState;

impl Feed {
    /// Applies one entry message.
    pub(crate) fn apply_entry(
        &mut self,
        scope: FeedScope,
        state: EntryState,
        uuid: &[u8],
        dn: &str,
        entry: Option<RawEntry>,
        cookie: Option<Vec<u8>>,
    ) {
        self.events += 1;
        let persisting = !self.refresh[scope.index()].active;
        match (state, entry) {
            (EntryState::Add | EntryState::Modify, Some(e)) => {
                self.see(scope, uuid);
                let Some(key) = self.mapper.key_of_entry(&e) else {
                    // Without its key the entry cannot be placed: never in place of what is
                    // known, nor as a newcomer or a departure. Read it again by DN.
                    tracing::info!(scope = scope.name(), dn = %e.dn, "an entry came without its key attribute: reading it again");
                    self.refetch
                        .insert((scope, uuid.to_vec()), (e.dn.clone(), persisting));
                    self.set_cookie(scope, cookie);
                    return;
                };
                self.put(scope, state, uuid, e, key, persisting);
            }
            (EntryState::Add | EntryState::Modify, None) | (EntryState::Present, _) => {
                self.see(scope, uuid)
            }
            (EntryState::Delete, _) => {
                tracing::debug!(scope = scope.name(), dn, "deleted or out of scope");
                self.remove_uuid(scope, uuid);
            }
        }
        self.set_cookie(scope, cookie);
    }

    /// Puts an entry under `key` into the mirror (a change unless it is the same again).
    pub(super) fn put(
        &mut self,
        scope: FeedScope,
        state: EntryState,
        uuid: &[u8],
        mut e: RawEntry,
        key: Key,
        persisting: bool,
    ) {
        e.attrs.insert(SYNC_ID, vec![uuid.to_vec()]);
        if let Some(old_key) = self.index[scope.index()].get(&SyncId::of(uuid)).cloned() {
            // Most changes keep the DN: its digest compared first, normalized only when the
            // DN differs.
            if let Some(old_dn) = self.old_dn(scope, &old_key, &e.dn) {
                self.renamed(scope, &old_dn, &e.dn, persisting);
            }
            if old_key != key {
                self.remove_entry(scope, &old_key);
                self.unsaved[scope.index()].insert(old_key.clone());
                if scope == FeedScope::Groups {
                    self.renames.group_gone(&old_key);
                }
            }
        }
        if scope == FeedScope::Groups {
            self.renames.group_received(&key, self.events);
        }
        // Refresh-phase entries are mostly old news; a Modify is a change seen now
        // (persist phase, or a timestamp poll).
        let timed = persisting || state == EntryState::Modify;
        // Read only for a change worth timing, not for every entry of a refresh.
        let csn = if timed { csn_time(&e) } else { None };
        for name in &self.volatile {
            e.attrs.remove(name);
        }
        self.index[scope.index()].insert(SyncId::of(uuid), key.clone());
        // The same entry again (a poll re-reading its watermark's second, a change of an
        // attribute not mapped) is no change.
        if self.put_entry(scope, &key, e) {
            let at = timed.then(|| {
                csn.filter(|t| *t <= SystemTime::now())
                    .unwrap_or_else(SystemTime::now)
            });
            self.unsaved[scope.index()].insert(key.clone());
            self.dirty = true;
            if let Some(at) = at {
                self.changed_at.entry(key).or_insert(at);
            }
        }
    }

    /// True while entries that came without their key wait to be read again.
    pub(crate) fn awaiting_refetch(&self) -> bool {
        !self.refetch.is_empty()
    }

    /// Entries to read again by DN before the next pass: (scope, sync identity, DN).
    pub(crate) fn refetches(&self) -> Vec<(FeedScope, Vec<u8>, String)> {
        self.refetch
            .iter()
            .map(|((s, u), (dn, _))| (*s, u.clone(), dn.clone()))
            .collect()
    }

    /// The result of reading again an entry that came without its key.
    pub(crate) fn apply_refetched(
        &mut self,
        scope: FeedScope,
        uuid: &[u8],
        dn: &str,
        entry: Option<RawEntry>,
    ) -> Refetched {
        let persisting = self
            .refetch
            .remove(&(scope, uuid.to_vec()))
            .is_none_or(|(_, p)| p);
        self.events += 1;
        let Some(e) = entry else {
            tracing::info!(
                scope = scope.name(),
                dn,
                "an entry read again is gone or out of scope: its deletion will follow"
            );
            return Refetched::Missing;
        };
        let Some(key) = self.mapper.key_of_entry(&e) else {
            let known = self.index[scope.index()].contains_key(&SyncId::of(uuid));
            tracing::warn!(
                scope = scope.name(),
                dn,
                known,
                "an entry read again still has no key attribute: what was known of it is kept"
            );
            if !known {
                // Reported as rejected, as a full read does.
                let key = format!("dn:{}", e.dn).into();
                self.put(scope, EntryState::Modify, uuid, e, key, persisting);
            }
            return Refetched::Unkeyed;
        };
        self.put(scope, EntryState::Modify, uuid, e, key, persisting);
        Refetched::Keyed
    }

    /// An entry now at `new_dn` was at `old_dn` (the same DN is no rename). A rename seen while
    /// following happened after every group held; one seen in a refresh happened before the
    /// groups that refresh sends, which name the entry as the server does now. The renames one
    /// refresh reports happened together, from the mirror as saved.
    pub(super) fn renamed(
        &mut self,
        scope: FeedScope,
        old_dn: &str,
        new_dn: &str,
        persisting: bool,
    ) {
        let groups_refreshed_here =
            self.kind == FeedKind::Syncrepl || self.refresh[FeedScope::Groups.index()].active;
        let current_after = if persisting || !groups_refreshed_here {
            self.events
        } else {
            self.began[FeedScope::Groups.index()]
        };
        let generation = if persisting {
            self.events
        } else {
            self.began[scope.index()]
        };
        self.renames.note(old_dn, new_dn, current_after, generation);
    }
}
