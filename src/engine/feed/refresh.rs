//! A search's refresh as the feed follows it: its start (the cookie to resume from), the
//! entries seen and those not seen again, its end, and the sync info messages between.

use std::collections::{BTreeSet, HashSet};
use std::time::SystemTime;

use super::{Feed, FeedKind, FeedScope, Refresh, SyncId};
use crate::model::Key;
use crate::source::syncrepl::SyncInfo;

impl Feed {
    /// A (re)started search for `scope`: the cookie to send, and a new refresh phase.
    pub(crate) fn begin(&mut self, scope: FeedScope) -> Option<Vec<u8>> {
        let cookie = self.cookies[scope.index()].clone();
        self.began[scope.index()] = self.events;
        // The search starts again from the saved cookie: what it sends supersedes these.
        self.refetch.retain(|(s, _), _| *s != scope);
        self.refresh[scope.index()] = Refresh {
            active: true,
            replace: cookie.is_none(),
            seen: Some(HashSet::new()),
            unchecked: cookie.is_some() && self.kind == FeedKind::Syncrepl,
        };
        cookie
    }

    /// The server says the cookie is too old: the next search starts without one.
    pub(crate) fn forget_cookie(&mut self, scope: FeedScope) {
        self.cookies[scope.index()] = None;
    }

    /// True while a search is still in its refresh phase: the mirror is not complete yet, and a
    /// pass now could take what is still to come for deletions.
    pub(crate) fn refreshing(&self) -> bool {
        self.refresh.iter().any(|r| r.active)
    }

    /// The scopes whose refresh, resumed from a cookie, is over but not yet checked against a
    /// listing of what is in scope.
    pub(crate) fn unchecked_scopes(&self) -> Vec<FeedScope> {
        FeedScope::ALL
            .into_iter()
            .filter(|s| {
                let r = &self.refresh[s.index()];
                r.unchecked && !r.active
            })
            .collect()
    }

    /// True while a resumed refresh waits for its check: no pass before it.
    pub(crate) fn awaiting_check(&self) -> bool {
        self.refresh.iter().any(|r| r.unchecked)
    }

    /// What the mirror holds in `scope` beyond `listed` (the keys a search of the scope
    /// returned) left the scope: dropped, as a departure. Returns how many.
    pub(crate) fn keep_listed(&mut self, scope: FeedScope, listed: &BTreeSet<Key>) -> usize {
        self.refresh[scope.index()].unchecked = false;
        let gone: Vec<SyncId> = self.index[scope.index()]
            .iter()
            .filter(|(_, k)| !listed.contains(*k))
            .map(|(u, _)| *u)
            .collect();
        for u in &gone {
            self.remove_uuid(scope, u.bytes());
        }
        gone.len()
    }

    pub(super) fn set_cookie(&mut self, scope: FeedScope, cookie: Option<Vec<u8>>) {
        if let Some(c) = cookie {
            self.cookies[scope.index()] = Some(c);
        }
    }

    pub(super) fn remove_uuid(&mut self, scope: FeedScope, uuid: &[u8]) {
        if let Some(key) = self.index[scope.index()].remove(&SyncId::of(uuid)) {
            if scope == FeedScope::Groups {
                self.renames.group_gone(&key);
            }
            if self.remove_entry(scope, &key) {
                self.unsaved[scope.index()].insert(key.clone());
                self.dirty = true;
                self.changed_at.entry(key).or_insert_with(SystemTime::now);
            }
        }
    }

    /// The end of a present phase: what was neither sent nor said present is gone.
    pub(super) fn drop_unseen(&mut self, scope: FeedScope) {
        let Some(seen) = self.refresh[scope.index()].seen.take() else {
            return;
        };
        let gone: Vec<SyncId> = self.index[scope.index()]
            .keys()
            .filter(|u| !seen.contains(u))
            .copied()
            .collect();
        // Entries without an entryUUID cannot have been mentioned either.
        let unindexed: Vec<Key> = {
            let indexed: BTreeSet<&Key> = self.index[scope.index()].values().collect();
            self.side(scope)
                .keys()
                .filter(|k| !indexed.contains(k))
                .cloned()
                .collect()
        };
        for u in gone {
            self.remove_uuid(scope, u.bytes());
        }
        for k in unindexed {
            self.remove_entry(scope, &k);
            self.unsaved[scope.index()].insert(k);
            self.dirty = true;
        }
    }

    pub(super) fn end_refresh(&mut self, scope: FeedScope) {
        let r = &self.refresh[scope.index()];
        if r.replace && r.seen.is_some() {
            self.drop_unseen(scope);
            // Filled in the server's order, the map's nodes are half empty: built again from
            // its sorted entries, once per full refresh (~6 MB less at 100k users); so are the
            // keys to save, held until the first pass is over (~1 MB).
            self.side_mut(scope).compact();
            let unsaved = std::mem::take(&mut self.unsaved[scope.index()]);
            self.unsaved[scope.index()] = unsaved.into_iter().collect();
        }
        let r = &mut self.refresh[scope.index()];
        r.active = false;
        r.seen = None;
        if self.kind == FeedKind::Timestamp {
            return; // every poll ends one: not news
        }
        tracing::info!(
            scope = scope.name(),
            users = self.users.len(),
            groups = self.groups.len(),
            "content synchronization: refresh done, now following changes"
        );
    }

    pub(super) fn see(&mut self, scope: FeedScope, uuid: &[u8]) {
        if let Some(seen) = self.refresh[scope.index()].seen.as_mut() {
            seen.insert(SyncId::of(uuid));
        }
    }

    /// Applies one Sync Info message.
    pub(crate) fn apply_info(&mut self, scope: FeedScope, info: SyncInfo) {
        self.events += 1;
        match info {
            SyncInfo::NewCookie(c) => self.set_cookie(scope, Some(c)),
            SyncInfo::RefreshPresent { cookie, done } => {
                // The present phase is over: what it did not mention was deleted.
                self.drop_unseen(scope);
                self.set_cookie(scope, cookie);
                if done {
                    self.end_refresh(scope);
                }
            }
            SyncInfo::RefreshDelete { cookie, done } => {
                self.set_cookie(scope, cookie);
                if done {
                    self.end_refresh(scope);
                }
            }
            SyncInfo::SyncIdSet {
                cookie,
                refresh_deletes,
                uuids,
            } => {
                for u in &uuids {
                    if refresh_deletes {
                        self.remove_uuid(scope, u);
                    } else {
                        self.see(scope, u);
                    }
                }
                self.set_cookie(scope, cookie);
            }
        }
    }
}
