//! The directory mirror: the in-scope entries as last read, and the watermark they are current
//! to. An incremental read changes only what the directory says changed; the desired state is
//! always built from the whole mirror. The mirror describes the directory, not the target, so it
//! may move forward as soon as a read is complete: what was pushed is kept apart, in the records.

use std::collections::{BTreeMap, BTreeSet};

use super::store::kv::{self, Table};
use super::store::{decode, encode, key_of};
use super::{StateError, Store};
use crate::model::Key;
use crate::source::entry::RawEntry;
use serde::{Deserialize, Serialize};

/// Where the directory was when the mirror was last brought up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The DC that was read (its `dsServiceName`).
    pub dc: String,
    /// That DC's database identity; a restored DC gets a new one, and its USNs mean nothing.
    pub invocation_id: String,
    /// `highestCommittedUSN` read before the entries were.
    pub usn: u64,
    /// What was read (bases, filters, attributes): a change of configuration needs a full read.
    pub fingerprint: String,
}

/// What a save of the change feed's mirror writes, per table (users, groups): each key's entry,
/// or None to remove it.
pub type MirrorWrites<'a> = [Vec<(Key, Option<&'a RawEntry>)>; 2];

/// One table of the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSide {
    Users,
    Groups,
}

impl MirrorSide {
    fn table(self) -> Table {
        match self {
            MirrorSide::Users => Table::MirrorUsers,
            MirrorSide::Groups => Table::MirrorGroups,
        }
    }
}

/// Reads the mirror's entries by key (the change feed holds only their digests).
#[derive(Clone)]
pub struct MirrorEntries {
    kv: kv::Kv,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for MirrorEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorEntries")
            .field("path", &self.path)
            .finish()
    }
}

impl MirrorEntries {
    /// A consistent view to read many entries from.
    pub fn reader(&self) -> Result<MirrorReader<'_>, StateError> {
        Ok(MirrorReader {
            reader: self.kv.read().map_err(|e| io_error(&self.path, e))?,
            path: &self.path,
        })
    }
}

fn io_error(path: &std::path::Path, reason: String) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

/// A read transaction on the mirror's entries.
pub struct MirrorReader<'a> {
    reader: kv::Reader,
    path: &'a std::path::Path,
}

impl MirrorReader<'_> {
    /// The store's folder.
    pub fn path(&self) -> &std::path::Path {
        self.path
    }

    pub fn entry(&self, side: MirrorSide, key: &str) -> Result<Option<RawEntry>, StateError> {
        match self
            .reader
            .get(side.table(), key.as_bytes())
            .map_err(|e| io_error(self.path, e))?
        {
            Some(v) => Ok(Some(decode(self.path, key.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }
}

/// Writes (or removes) entries in table `t`, each encoded as it is written: encoded all
/// first, the 1,000 groups of a 100k directory were 16 MB more at `run`'s peak.
fn put_entries(
    tx: &kv::Tx<'_>,
    t: Table,
    list: &[(Key, Option<&RawEntry>)],
) -> Result<(), redb::Error> {
    let mut table = tx.table(t)?;
    for (k, e) in list {
        match e {
            Some(e) => table.insert(k.as_bytes(), encode(e).as_slice())?,
            None => table.remove(k.as_bytes())?,
        };
    }
    Ok(())
}

/// `list` in runs of about 1 MiB of entries (a transaction holds what it writes until it
/// commits).
fn batches<'l, 'e>(
    list: &'l [(Key, Option<&'e RawEntry>)],
) -> impl Iterator<Item = &'l [(Key, Option<&'e RawEntry>)]> {
    const BYTES: usize = 1 << 20;
    let mut rest = list;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut size = 0;
        let mut end = 0;
        while end < rest.len() && (end == 0 || size < BYTES) {
            size += rest[end]
                .1
                .map_or(0, |e| e.dn.len() + e.attrs.as_bytes().len())
                + rest[end].0.len();
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// The mirrored entries, by stable key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    pub users: BTreeMap<Key, RawEntry>,
    pub groups: BTreeMap<Key, RawEntry>,
}

impl Store {
    pub fn mirror(&self) -> Result<Mirror, StateError> {
        Ok(Mirror {
            users: self.all(Table::MirrorUsers)?.into_iter().collect(),
            groups: self.all(Table::MirrorGroups)?.into_iter().collect(),
        })
    }

    pub fn watermark(&self) -> Result<Option<Watermark>, StateError> {
        self.meta_get("watermark")
    }

    /// Replaces the mirror and its watermark in one transaction (after a full read), or, with
    /// `previous`, writes only what differs from it (after an incremental read).
    pub async fn save_mirror(
        &self,
        m: &Mirror,
        previous: Option<&Mirror>,
        wm: &Watermark,
    ) -> Result<(), StateError> {
        self.save_mirror_with(m, previous, "watermark", encode(wm))
            .await
    }

    /// The change feed's cookies, saved with the mirror they describe.
    pub fn feed_checkpoint<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, StateError> {
        self.meta_get("feed_checkpoint")
    }

    /// Saves what changed in the change feed's mirror since it was last written (`writes`, per
    /// table, users then groups: each key's entry, or None to remove it) and its checkpoint in
    /// one transaction, and flushes.
    pub async fn save_feed<T: Serialize>(
        &self,
        writes: &MirrorWrites<'_>,
        checkpoint: &T,
    ) -> Result<(), StateError> {
        let meta_value = encode(checkpoint);
        self.write(|tx| {
            for (t, list) in [
                (Table::MirrorUsers, &writes[0]),
                (Table::MirrorGroups, &writes[1]),
            ] {
                put_entries(tx, t, list)?;
            }
            tx.insert(Table::Meta, b"feed_checkpoint", &meta_value)?;
            // The mirror now holds what every record was written from.
            tx.remove(Table::Meta, super::store::RECORDS_AHEAD)?;
            // The mirror tables now follow the feed: an AD watermark no longer describes them.
            tx.remove(Table::Meta, b"watermark")
        })?;
        self.flush().await
    }

    /// [`Store::save_feed`] for a feed whose stored checkpoint is not usable (a first start,
    /// another server or configuration): nothing stored is consistent with anything yet, so the
    /// mirror is written in batches, each flushed, and the checkpoint last. A crash midway
    /// leaves no usable checkpoint, and the next start refreshes from nothing as this one did.
    /// (One transaction for a whole directory held several times its size in memory.)
    pub async fn save_feed_in_batches<T: Serialize>(
        &self,
        writes: &MirrorWrites<'_>,
        checkpoint: &T,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            for stale in ["feed_checkpoint", "watermark"] {
                tx.remove(Table::Meta, stale.as_bytes())?;
            }
            Ok(())
        })?;
        self.flush().await?;
        for (t, list) in [
            (Table::MirrorUsers, &writes[0]),
            (Table::MirrorGroups, &writes[1]),
        ] {
            for chunk in batches(list) {
                self.write(|tx| put_entries(tx, t, chunk))?;
                self.flush().await?;
            }
        }
        let value = encode(checkpoint);
        self.write(|tx| {
            tx.insert(Table::Meta, b"feed_checkpoint", &value)?;
            tx.remove(Table::Meta, super::store::RECORDS_AHEAD)
        })?;
        self.flush().await
    }

    /// Writes entries of the change feed's mirror ahead of its next save, without a
    /// flush, so that they need not be held in memory until then. Each transaction also marks
    /// the store as ahead of the feed's checkpoint (as a write of records does), so that a start
    /// before the next save refreshes without a cookie and compares every entry with this
    /// mirror (a replay from the older cookie would not send again the groups a rename
    /// written here rewrote); with `checkpoint_usable` false (the stored checkpoint was made
    /// for another server or configuration) that checkpoint is removed, so no start resumes
    /// from it over entries it does not describe.
    pub fn write_mirror_ahead(
        &self,
        side: MirrorSide,
        list: &[(Key, Option<&RawEntry>)],
        checkpoint_usable: bool,
    ) -> Result<(), StateError> {
        for chunk in batches(list) {
            self.write(|tx| {
                put_entries(tx, side.table(), chunk)?;
                // The mirror tables now follow the feed: an AD watermark no longer describes them.
                tx.remove(Table::Meta, b"watermark")?;
                if !checkpoint_usable {
                    tx.remove(Table::Meta, b"feed_checkpoint")?;
                }
                tx.insert(
                    Table::Meta,
                    super::store::RECORDS_AHEAD,
                    super::store::RECORDS_AHEAD,
                )
            })?;
        }
        Ok(())
    }

    /// Calls `f` with every stored entry of one side of the mirror, in key order.
    pub fn each_mirror_entry(
        &self,
        side: MirrorSide,
        mut f: impl FnMut(Key, RawEntry),
    ) -> Result<(), StateError> {
        self.reader()?
            .each(side.table(), false, |k, v| {
                f(key_of(k), decode(&self.path, k, v)?);
                Ok::<_, StateError>(true)
            })
            .map_err(|e| self.io(e))?
    }

    /// A handle that reads entries of the mirror by key, for as long as it is kept.
    pub fn mirror_entries(&self) -> MirrorEntries {
        MirrorEntries {
            kv: self.kv.clone(),
            path: self.path.clone(),
        }
    }

    /// The keys the stored mirror holds, users then groups.
    pub fn mirror_keys(&self) -> Result<[BTreeSet<Key>; 2], StateError> {
        let keys =
            |t| -> Result<BTreeSet<Key>, StateError> { Ok(self.keys_of(t)?.into_iter().collect()) };
        Ok([keys(Table::MirrorUsers)?, keys(Table::MirrorGroups)?])
    }

    async fn save_mirror_with(
        &self,
        m: &Mirror,
        previous: Option<&Mirror>,
        meta_key: &str,
        meta_value: Vec<u8>,
    ) -> Result<(), StateError> {
        let empty = Mirror::default();
        let old = match previous {
            Some(p) => p,
            None => &empty,
        };
        // Keys to drop: listed before the transaction (a transaction cannot iterate).
        let mut stale_users: Vec<Key> = old
            .users
            .keys()
            .filter(|k| !m.users.contains_key(*k))
            .cloned()
            .collect();
        let mut stale_groups: Vec<Key> = old
            .groups
            .keys()
            .filter(|k| !m.groups.contains_key(*k))
            .cloned()
            .collect();
        if previous.is_none() {
            for k in self.keys_of(Table::MirrorUsers)? {
                if !m.users.contains_key(&k) {
                    stale_users.push(k);
                }
            }
            for k in self.keys_of(Table::MirrorGroups)? {
                if !m.groups.contains_key(&k) {
                    stale_groups.push(k);
                }
            }
        }
        let changed =
            |new: &BTreeMap<Key, RawEntry>, old: &BTreeMap<Key, RawEntry>| -> Vec<(Key, Vec<u8>)> {
                new.iter()
                    .filter(|(k, e)| old.get(*k) != Some(*e))
                    .map(|(k, e)| (k.clone(), encode(e)))
                    .collect()
            };
        let users = changed(&m.users, &old.users);
        let groups = changed(&m.groups, &old.groups);
        self.write(|tx| {
            for (t, stale, changed) in [
                (Table::MirrorUsers, &stale_users, &users),
                (Table::MirrorGroups, &stale_groups, &groups),
            ] {
                let mut table = tx.table(t)?;
                for k in stale {
                    table.remove(k.as_bytes())?;
                }
                for (k, v) in changed {
                    table.insert(k.as_bytes(), v.as_slice())?;
                }
            }
            tx.insert(Table::Meta, meta_key.as_bytes(), &meta_value)?;
            // The mirror tables now describe this read: a feed checkpoint no longer does.
            tx.remove(Table::Meta, b"feed_checkpoint")
        })?;
        self.flush().await
    }

    /// Forgets the watermark, so the next read is a full one.
    pub async fn forget_watermark(&self) -> Result<(), StateError> {
        self.write(|tx| tx.remove(Table::Meta, b"watermark"))?;
        self.flush().await
    }
}
