//! Reading every record at once: a directory pass compares the whole directory with them.

use std::path::PathBuf;

use super::kv::{Kv, Table};
use super::{decode, key_of, StateError, Store};
use crate::model::Key;
use crate::sorted::SortedBuilder;
use crate::state::records::{GroupRecord, Snapshot, StoredGroup, UserRecord};

impl Store {
    /// Every record, in memory.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        self.records_reader().read()
    }

    /// Every record, each user record passed to `each` as soon as it is decoded, with its key
    /// (a change feed's first pass fits it, and shares its key and its user with the desired
    /// state there, before the next is decoded), and each group record to `each_group`
    /// likewise (its members shared there).
    pub fn snapshot_with(
        &self,
        each: &dyn Fn(&mut Key, &mut UserRecord),
        each_group: &dyn Fn(&Key, &mut GroupRecord),
    ) -> Result<Snapshot, StateError> {
        // A feed pass with nothing kept (the service's first, or one after a failed pass or
        // another writer): the user records' map built a chunk at a time, not beside a list
        // of them all (~11 MB at 100k users, the heap's top at `run`'s first pass).
        self.records_reader().read_as(each, each_group, true)
    }

    /// What reads every record, on another thread if need be (a directory pass reads them
    /// while it reads the directory).
    pub fn records_reader(&self) -> RecordsReader {
        RecordsReader {
            path: self.path.clone(),
            kv: self.kv.clone(),
        }
    }
}

/// Reads every record (see [`Store::records_reader`]).
pub struct RecordsReader {
    path: PathBuf,
    kv: Kv,
}

impl RecordsReader {
    fn io(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Every record, as the store holds them now.
    pub fn read(&self) -> Result<Snapshot, StateError> {
        self.read_with(&|_, _| {}, &|_, _| {})
    }

    /// [`RecordsReader::read`], each user record passed to `each` once decoded, each group
    /// record to `each_group`.
    pub fn read_with(
        &self,
        each: &dyn Fn(&mut Key, &mut UserRecord),
        each_group: &dyn Fn(&Key, &mut GroupRecord),
    ) -> Result<Snapshot, StateError> {
        self.read_as(each, each_group, false)
    }

    /// [`RecordsReader::read_with`]; `chunked`: the user records' map built a chunk at a time
    /// (`src/sorted.rs`: less held beside it, ~0.2 s slower at 100k users).
    fn read_as(
        &self,
        each: &dyn Fn(&mut Key, &mut UserRecord),
        each_group: &dyn Fn(&Key, &mut GroupRecord),
        chunked: bool,
    ) -> Result<Snapshot, StateError> {
        // One read transaction: users and groups as one commit left them. Listed in key
        // order: the maps are built from sorted lists (a bulk build), each allocated once at
        // its size (grown by doubling, the users' list was a third larger), or in chunks.
        let r = self.kv.read().map_err(|e| self.io(e))?;
        let count = |t| {
            let n = r.len(t).map_err(|e| self.io(e))?;
            // Only a first allocation: a count out of reason is not believed.
            Ok::<_, StateError>(usize::try_from(n).unwrap_or(0).min(1 << 22))
        };
        let mut listed = Vec::with_capacity(if chunked { 0 } else { count(Table::Users)? });
        let mut chunks = SortedBuilder::new();
        r.each(Table::Users, false, |k, v| {
            let mut rec: UserRecord = decode(&self.path, k, v)?;
            let mut key = key_of(k);
            each(&mut key, &mut rec);
            if chunked {
                chunks.push(key, rec);
            } else {
                listed.push((key, rec));
            }
            Ok::<_, StateError>(true)
        })
        .map_err(|e| self.io(e))??;
        let users: std::collections::BTreeMap<Key, UserRecord> = if chunked {
            chunks.finish()
        } else {
            listed.into_iter().collect()
        };
        // A member is the user record's own key, not a copy of it. Found through a hash (a group
        // record names ~3 users per user at 100k: searching the tree was slower), but not when
        // the map was built in chunks to hold less: the hash was 3.3 MB at 100k users, the top
        // of `run`'s first pass, and the search there ~0.1 s more.
        let shared: Option<std::collections::HashMap<&str, &Key>> =
            (!chunked).then(|| users.keys().map(|k| (&**k, k)).collect());
        let user_key = |m: &str| match &shared {
            Some(hashed) => hashed.get(m).map(|k| Key::clone(k)),
            None => users.get_key_value(m).map(|(k, _)| Key::clone(k)),
        };
        let mut groups = Vec::with_capacity(count(Table::Groups)?);
        r.each(Table::Groups, false, |k, v| {
            let stored: StoredGroup = decode(&self.path, k, v)?;
            let mut rec = stored.into_record(user_key);
            let key = key_of(k);
            each_group(&key, &mut rec);
            groups.push((key, rec));
            Ok::<_, StateError>(true)
        })
        .map_err(|e| self.io(e))??;
        drop(shared);
        Ok(Snapshot {
            users,
            groups: groups.into_iter().collect(),
        })
    }
}
