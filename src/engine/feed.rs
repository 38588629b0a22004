//! The RFC 4533 change feed, applied to the directory mirror. Each scope (users, groups) has its
//! own refreshAndPersist search and cookie. Events change the working mirror in memory; a pass
//! then plans the whole mirror against the records and pushes the difference; only after that
//! pass are the mirror and the cookies saved, together, in one transaction. So a cookie never
//! covers a change the target has not been sent. A crash after a pass began to send and before
//! it saved leaves the target possibly ahead of the mirror (the store marks it): the next start
//! refreshes without a cookie, comparing every entry with the saved mirror, rather than trust
//! the server's replay to bring back what the target was already sent.
//!
//! The working mirror is also the buffer: it holds one entry per in-scope object whatever the
//! number of changes, so a burst, or a target that is down for hours, never makes it grow past
//! the directory's size. Its entries live in the store (`feed/entries.rs`); many changed ones
//! are written there ahead of the save, marking the store so that a start before that save
//! refreshes without a cookie. How a search's refresh is followed is in `feed/refresh.rs`, how
//! an entry enters the mirror (renames, moves to another key, refetches) in `feed/apply.rs`.
//!
//! slapd's memberof overlay does not replicate its memberOf updates (a user added to a group
//! arrives as a change of the group only), so memberships are taken from the groups' `member`
//! values here, whatever `ldap.membership` says for full reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::read::with_attribute;
use crate::config::{Config, Membership};
use crate::mapping::{DesiredBuilder, Mapper};
use crate::model::{DesiredState, Key};
use crate::source::entry::RawEntry;
#[cfg(test)]
use crate::state::Mirror;
use crate::state::{MirrorSide, MirrorWrites, StateError, Store};

/// How many bytes of changed entries the feed holds in memory before it writes them to the
/// store ahead of the next save (~4,000 users).
const WRITE_AHEAD: usize = 2 << 20;

/// [`WRITE_AHEAD`]; debug builds take `DIRBRIDGE_TEST_WRITE_AHEAD` instead, so that the
/// end-to-end tests can write every change ahead against real servers.
pub(crate) fn write_ahead_at() -> usize {
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var("DIRBRIDGE_TEST_WRITE_AHEAD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    WRITE_AHEAD
}

/// Where each mirror entry keeps the identity its change feed knows it by (the Sync State
/// control's UUID, or a poll's identity): slapd's is the entryUUID, 389-DS's the nsUniqueId.
/// Kept apart from the entry's attributes so that it is never taken for the key, and the index
/// can be rebuilt from the stored mirror whatever the server. `@` cannot begin an attribute name.
const SYNC_ID: &str = "@sync-id";

/// One of the two synchronized searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum FeedScope {
    Users,
    Groups,
}

impl FeedScope {
    pub(crate) const ALL: [FeedScope; 2] = [FeedScope::Users, FeedScope::Groups];

    fn index(self) -> usize {
        match self {
            FeedScope::Users => 0,
            FeedScope::Groups => 1,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            FeedScope::Users => "users",
            FeedScope::Groups => "groups",
        }
    }
}

/// What is saved next to the mirror: the cookies, and what they were obtained for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Server URL and scope/mapping fingerprint: a cookie means nothing elsewhere.
    pub fingerprint: String,
    /// Hex-encoded cookies, users then groups.
    pub cookies: [Option<String>; 2],
}

/// The state of one scope's refresh phase.
#[derive(Debug, Default)]
struct Refresh {
    active: bool,
    /// Started without a cookie: what the refresh does not mention is gone.
    replace: bool,
    /// entryUUIDs mentioned so far (present phase).
    seen: Option<HashSet<SyncId>>,
    /// Resumed from a cookie and not yet checked against a listing of the scope (see
    /// `feed/present.rs`).
    unchecked: bool,
}

/// The feed's view of the directory.
#[derive(Debug)]
pub(crate) struct Feed {
    kind: FeedKind,
    mapper: Mapper,
    fingerprint: String,
    /// A checkpoint this feed can resume from is stored (else the next save writes the mirror
    /// in batches, the checkpoint last).
    stored: bool,
    /// The mirror's users (their entries in the store but for those changed since written).
    users: entries::FeedEntries,
    /// The mirror's groups, likewise.
    groups: entries::FeedEntries,
    /// Keys whose mirror entry changed since the last save, per scope: what the next save
    /// writes (or removes). No second copy of the mirror is kept to compare against.
    unsaved: [BTreeSet<Key>; 2],
    /// What the last pass ended with (records, desired state), while valid.
    kept: Option<super::live::Kept>,
    /// Per scope, entryUUID -> the entry's key in that scope's mirror. Per scope: a delete in
    /// one search means "no longer in this search's results", nothing about the other. One map
    /// per scope, not one keyed by both: the scope padded every entry by 8 bytes (~1 MB at
    /// 100k users).
    index: [HashMap<SyncId, Key>; 2],
    cookies: [Option<Vec<u8>>; 2],
    refresh: [Refresh; 2],
    /// When each object changed (entryCSN, else arrival), for changes seen after the refresh:
    /// the start of the change-to-push latency.
    changed_at: BTreeMap<Key, SystemTime>,
    dirty: bool,
    /// Events applied so far: each event's number, for ordering renames and group receipts.
    events: u64,
    /// The event number when each search last began: what its refresh sends after it
    /// describes the directory as it is now.
    began: [u64; 2],
    renames: renames::Renames,
    /// The groups' attribute naming their members (what a rename rewrites).
    member_attribute: String,
    /// Attributes asked for to time a change or poll, not for the mapping (`entryCSN`,
    /// `modifyTimestamp`): left out of the mirror, where they would cost ~50 bytes an entry
    /// and make an entry whose mapped attributes did not move look changed.
    volatile: Vec<&'static str>,
    /// Entries that arrived without their key (389-DS sends changed entries so in a refresh
    /// resumed from a cookie): to be read again by DN before the next pass.
    /// With the DN, whether the entry came while following (else in a refresh: a rename it
    /// carries belongs with the refresh's other renames, whenever it is read again).
    refetch: BTreeMap<(FeedScope, Vec<u8>), (String, bool)>,
    /// A change the mirror could not take (see [`Feed::old_dn`]).
    failed: Option<StateError>,
}

/// What an entry read again by DN turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refetched {
    /// Read, with its key: applied as a change.
    Keyed,
    /// Gone or out of scope since: its deletion is on its way in the feed.
    Missing,
    /// Still without its key: what was known of it is kept.
    Unkeyed,
}

/// The attributes the feed asks for: the mapping's, the groups' member values (memberships come
/// from them), and entryUUID / entryCSN (identity, and when the change happened).
pub(crate) fn feed_attributes(cfg: &Config, mapper: &Mapper) -> (Vec<String>, Vec<String>) {
    let mut users = mapper.user_attributes();
    let mut groups = mapper.group_attributes();
    with_attribute(&mut groups, &cfg.mapping.member_attribute);
    for list in [&mut users, &mut groups] {
        for a in ["entryUUID", "entryCSN"] {
            with_attribute(list, a);
        }
    }
    (users, groups)
}

/// The mapper the feed builds the desired state with: memberships from `member`.
pub(crate) fn feed_mapper(cfg: &Config) -> Mapper {
    let mut ldap = cfg.ldap.clone();
    ldap.membership = Membership::Member;
    Mapper::new(&cfg.mapping, &ldap)
}

/// Where the events come from: their cookies mean different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedKind {
    /// RFC 4533 cookies.
    Syncrepl,
    /// The highest `modifyTimestamp` seen.
    Timestamp,
}

/// An entryUUID from its text form (`8-4-4-4-12`).
fn uuid_bytes(text: &str) -> Option<Vec<u8>> {
    let h: String = text.chars().filter(|c| *c != '-').collect();
    hex::decode(h).ok().filter(|b| b.len() == 16)
}

/// When the change happened, from `entryCSN` (`YYYYmmddHHMMSS.ffffffZ#...`).
fn csn_time(e: &RawEntry) -> Option<SystemTime> {
    let csn = e.texts("entryCSN").ok()?.into_iter().next()?;
    let stamp = csn.split('#').next()?;
    let fmt =
        time::macros::format_description!("[year][month][day][hour][minute][second].[subsecond]Z");
    let t = time::PrimitiveDateTime::parse(stamp, &fmt)
        .ok()?
        .assume_utc();
    let nanos = t.unix_timestamp_nanos();
    let nanos = u64::try_from(nanos).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
}

impl Feed {
    /// The feed as saved: its mirror and cookies, or an empty one when the saved checkpoint was
    /// made for another server or configuration.
    pub(crate) fn load(cfg: &Config, store: &Store, kind: FeedKind) -> Result<Feed, StateError> {
        let mapper = feed_mapper(cfg);
        let mapped: Vec<String> = mapper
            .user_attributes()
            .into_iter()
            .chain(mapper.group_attributes())
            .collect();
        let volatile = ["entryCSN", "modifyTimestamp"]
            .into_iter()
            .filter(|v| !mapped.iter().any(|m| m.eq_ignore_ascii_case(v)))
            .collect();
        // v2: entries carry their sync identity (SYNC_ID); older mirrors are refreshed.
        let fingerprint = super::fingerprint(cfg, &format!("{kind:?}/v2"));
        let checkpoint: Option<Checkpoint> = store.feed_checkpoint()?;
        let usable = checkpoint.filter(|c| c.fingerprint == fingerprint);
        let stored = usable.is_some();
        let mut index = [HashMap::new(), HashMap::new()];
        let (users, groups, cookies, unsaved) = match usable {
            Some(c) => {
                let decode = |s: &Option<String>| s.as_deref().and_then(|h| hex::decode(h).ok());
                // Records or intents written after the mirror was saved (a pass cut short after
                // it began to send, or a one-shot run since): the target may hold changes the
                // saved mirror does not, and a replay from the cookie is only as complete
                // as the server's session log (slapd's has been seen to leave out a group
                // changed just before a rename). A refresh without a cookie compares every
                // entry with the saved mirror instead.
                let cookies = if store.records_ahead_of_feed()? {
                    tracing::info!("records or mirror entries were written after the change feed last saved its checkpoint: refreshing in full instead of resuming from the saved cookie");
                    [None, None]
                } else {
                    [decode(&c.cookies[0]), decode(&c.cookies[1])]
                };
                let users = entries::FeedEntries::load(store, MirrorSide::Users, |k, e| {
                    index_entry(&mut index, FeedScope::Users, k, e)
                })?;
                let groups = entries::FeedEntries::load(store, MirrorSide::Groups, |k, e| {
                    index_entry(&mut index, FeedScope::Groups, k, e)
                })?;
                (users, groups, cookies, Default::default())
            }
            // Made for another server or configuration: what is stored goes at the next save.
            None => (
                entries::FeedEntries::empty(store, MirrorSide::Users),
                entries::FeedEntries::empty(store, MirrorSide::Groups),
                [None, None],
                store.mirror_keys()?,
            ),
        };
        let feed = Feed {
            kind,
            mapper,
            fingerprint,
            stored,
            users,
            groups,
            unsaved,
            kept: None,
            index,
            cookies,
            refresh: Default::default(),
            changed_at: BTreeMap::new(),
            // The first pass runs once the refresh is over, changed or not: it retries what
            // failed before the restart and settles what a one-shot sync left behind.
            dirty: true,
            events: 0,
            began: [0, 0],
            renames: renames::Renames::default(),
            member_attribute: cfg.mapping.member_attribute.clone(),
            volatile,
            refetch: BTreeMap::new(),
            failed: None,
        };
        Ok(feed)
    }

    fn side(&self, scope: FeedScope) -> &entries::FeedEntries {
        match scope {
            FeedScope::Users => &self.users,
            FeedScope::Groups => &self.groups,
        }
    }

    fn side_mut(&mut self, scope: FeedScope) -> &mut entries::FeedEntries {
        match scope {
            FeedScope::Users => &mut self.users,
            FeedScope::Groups => &mut self.groups,
        }
    }

    /// Takes the entry under `key` out of `scope`'s mirror; false when it was not there.
    fn remove_entry(&mut self, scope: FeedScope, key: &Key) -> bool {
        self.side_mut(scope).remove(key)
    }

    /// The DN the entry under `key` had, when `dn` is another (a rename). A store that cannot
    /// give it back fails every pass and save of this feed: a rename missed would drop the
    /// entry from its groups; the service loads the feed again from its store
    /// ([`Feed::missed_a_change`]) and the server sends the change again.
    fn old_dn(&mut self, scope: FeedScope, key: &Key, dn: &str) -> Option<String> {
        if !self.side(scope).dn_differs(key, dn) {
            return None;
        }
        match self.side(scope).stored_dn(key) {
            Ok(old) => old,
            Err(e) => {
                tracing::error!(error = %e, dn, "the change feed cannot read an entry's former DN back from its store: its mirror is loaded again");
                self.failed.get_or_insert(e);
                None
            }
        }
    }

    /// True when the mirror missed a change (see [`Feed::old_dn`]): the service loads the feed
    /// again from its store.
    pub(crate) fn missed_a_change(&self) -> bool {
        self.failed.is_some()
    }

    /// Fails when the mirror missed a change (see [`Feed::old_dn`]).
    fn sound(&self) -> Result<(), StateError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Puts `e` under `key` in `scope`'s mirror; false when it is the same entry again.
    fn put_entry(&mut self, scope: FeedScope, key: &Key, e: RawEntry) -> bool {
        self.side_mut(scope).put(key, e)
    }

    /// How many users and groups the mirror holds.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.groups.len())
    }

    /// True when the mirror holds changes not pushed yet.
    pub(crate) fn dirty(&self) -> bool {
        self.dirty
    }

    /// Asks for another pass though nothing changed: objects the target refused are retried.
    pub(crate) fn retry_later(&mut self) {
        self.dirty = true;
    }

    /// The whole mirror, read (tests).
    #[cfg(test)]
    pub(crate) fn mirror(&self) -> Mirror {
        let all = |side: &entries::FeedEntries| {
            let reader = side.reader().unwrap();
            side.keys()
                .map(|k| (k.clone(), side.entry(&reader, k).unwrap().unwrap()))
                .collect()
        };
        Mirror {
            users: all(&self.users),
            groups: all(&self.groups),
        }
    }

    pub(crate) fn mapper(&self) -> &Mapper {
        &self.mapper
    }

    /// Applies the renames seen since the last call to the groups' member values.
    fn settle_renames(&mut self) -> Result<(), StateError> {
        let Some(sweep) = self.renames.sweep(&self.member_attribute) else {
            return Ok(());
        };
        let mut rewritten = Vec::new();
        let reader = self.groups.reader()?;
        for k in self.groups.keys() {
            if let Some(mut e) = self.groups.entry(&reader, k)? {
                if sweep.rewrite(k, &mut e) {
                    rewritten.push((k.clone(), e));
                }
            }
        }
        drop(reader);
        self.renames.swept();
        if rewritten.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            groups = rewritten.len(),
            "member values follow renamed entries"
        );
        for (k, e) in rewritten {
            if self.groups.put(&k, e) {
                self.unsaved[FeedScope::Groups.index()].insert(k);
            }
        }
        self.dirty = true;
        Ok(())
    }

    /// The desired state the mirror describes.
    pub(crate) fn desired(
        &mut self,
        known_users: &BTreeSet<Key>,
    ) -> Result<DesiredState, StateError> {
        self.sound()?;
        self.settle_renames()?;
        let mut builder = DesiredBuilder::new(self.mapper.clone());
        let reader = self.users.reader()?;
        for k in self.users.keys() {
            if let Some(e) = self.users.entry(&reader, k)? {
                builder.add_user(&e);
            }
        }
        for k in self.groups.keys() {
            if let Some(e) = self.groups.entry(&reader, k)? {
                builder.add_group(&e);
            }
        }
        Ok(builder.finish(known_users))
    }

    /// What the last pass ended with, if the store has not written records since
    /// (`generation`): the next pass starts from it instead of decoding the store and
    /// mapping the whole mirror.
    pub(crate) fn take_kept(&mut self, generation: u64) -> Option<super::live::Kept> {
        self.kept.take().filter(|k| k.generation == generation)
    }

    pub(crate) fn keep(&mut self, kept: super::live::Kept) {
        self.kept = Some(kept);
    }

    /// The mirror (its entries read by key), and the keys of its entries changed since the
    /// last save (users, groups), renames applied to the member values first.
    pub(crate) fn changes(&mut self) -> Result<Changes<'_>, StateError> {
        self.sound()?;
        self.settle_renames()?;
        Ok(Changes {
            users: Entries {
                reader: self.users.reader()?,
                side: &self.users,
            },
            groups: Entries {
                reader: self.groups.reader()?,
                side: &self.groups,
            },
            changed: &self.unsaved,
        })
    }

    /// Writes the entries changed since the last save to the store ahead of it, once they are
    /// `at_least` bytes (a refresh of a whole directory is not held in memory). A start before
    /// the next save then refreshes without a cookie (see [`Store::write_mirror_ahead`]).
    pub(crate) fn write_ahead(&mut self, store: &Store, at_least: usize) -> Result<(), StateError> {
        // A mirror that missed a change is written no more (every pass fails).
        if self.failed.is_some() {
            return Ok(());
        }
        if self.users.pending_bytes() + self.groups.pending_bytes() < at_least.max(1) {
            return Ok(());
        }
        self.users
            .write_ahead(store, &self.unsaved[0], self.stored)?;
        self.groups
            .write_ahead(store, &self.unsaved[1], self.stored)
    }

    /// When each object with an unpushed change changed.
    pub(crate) fn changed_at(&self) -> &BTreeMap<Key, SystemTime> {
        &self.changed_at
    }

    /// Saves the mirror and the cookies together, once a pass has pushed what they cover.
    pub(crate) async fn save(&mut self, store: &Store) -> Result<(), StateError> {
        self.sound()?;
        self.settle_renames()?;
        let hexed = |c: &Option<Vec<u8>>| c.as_ref().map(hex::encode);
        let checkpoint = Checkpoint {
            fingerprint: self.fingerprint.clone(),
            cookies: [hexed(&self.cookies[0]), hexed(&self.cookies[1])],
        };
        let writes: MirrorWrites<'_> = [
            self.users.writes(&self.unsaved[0]),
            self.groups.writes(&self.unsaved[1]),
        ];
        if self.stored {
            store.save_feed(&writes, &checkpoint).await?;
        } else {
            store.save_feed_in_batches(&writes, &checkpoint).await?;
            self.stored = true;
        }
        self.users.written();
        self.groups.written();
        self.unsaved = Default::default();
        self.changed_at.clear();
        self.dirty = false;
        Ok(())
    }
}

/// A pass's view of the mirror: what it needs to update its desired state.
pub(crate) struct Changes<'a> {
    pub users: Entries<'a>,
    pub groups: Entries<'a>,
    /// Keys changed since the last save, users then groups.
    pub changed: &'a [BTreeSet<Key>; 2],
}

/// One side of the mirror, its entries read by key.
pub(crate) struct Entries<'a> {
    side: &'a entries::FeedEntries,
    reader: crate::state::MirrorReader<'a>,
}

impl Entries<'_> {
    pub(crate) fn get(&self, key: &Key) -> Result<Option<RawEntry>, StateError> {
        self.side.entry(&self.reader, key)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.side.keys()
    }

    /// Whether the mirror holds an entry under `key` (a changed key it does not hold left).
    pub(crate) fn holds(&self, key: &Key) -> bool {
        self.side.holds(key)
    }
}

/// Indexes a stored entry by the sync identity it carries.
fn index_entry(index: &mut [HashMap<SyncId, Key>; 2], scope: FeedScope, key: &Key, e: &RawEntry) {
    if let Some(u) = e.values(SYNC_ID).first() {
        index[scope.index()].insert(SyncId::of(u), key.clone());
    }
}

mod apply;
mod entries;
mod present;
mod refetch;
mod refresh;
mod renames;
mod sync_id;
pub(crate) use present::check_listed;
pub(crate) use refetch::refetch;
use sync_id::SyncId;
pub(crate) mod timestamp;

#[cfg(test)]
mod pass_tests;
#[cfg(test)]
mod tests;
