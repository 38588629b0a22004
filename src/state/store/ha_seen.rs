//! The keys an `[ha]` standby saw in scope or changing while another gateway pushed: what its
//! take-over looks up by externalId besides its own records (an object the other gateway
//! created and that left the directory before it pushed that). Kept in the store, so that a
//! standby restarted before it takes over still knows them; cleared once a take-over
//! reconciled them.

use std::collections::BTreeSet;

use super::kv::Table;
use super::{key_of, Store};
use crate::model::Key;
use crate::state::StateError;

const USER: u8 = b'u';
const GROUP: u8 = b'g';

fn entry(kind: u8, key: &Key) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(kind);
    k.extend_from_slice(key.as_bytes());
    k
}

impl Store {
    /// Adds keys to those seen, durably (one transaction and one sync).
    pub async fn note_seen<'k>(
        &self,
        users: impl IntoIterator<Item = &'k Key>,
        groups: impl IntoIterator<Item = &'k Key>,
    ) -> Result<(), StateError> {
        let rows: Vec<Vec<u8>> = users
            .into_iter()
            .map(|k| entry(USER, k))
            .chain(groups.into_iter().map(|k| entry(GROUP, k)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut t = tx.table(Table::HaSeen)?;
            for r in &rows {
                t.insert(r.as_slice(), [].as_slice())?;
            }
            Ok(())
        })?;
        self.flush().await
    }

    /// The keys seen: (users, groups).
    pub fn seen(&self) -> Result<(BTreeSet<Key>, BTreeSet<Key>), StateError> {
        let (mut users, mut groups) = (BTreeSet::new(), BTreeSet::new());
        for k in self.keys_of(Table::HaSeen)? {
            match k.as_bytes().split_first() {
                Some((&USER, rest)) => users.insert(key_of(rest)),
                Some((&GROUP, rest)) => groups.insert(key_of(rest)),
                _ => false,
            };
        }
        Ok((users, groups))
    }

    /// Forgets the keys seen (a take-over reconciled them).
    pub async fn clear_seen(&self) -> Result<(), StateError> {
        self.write(|tx| {
            let keys = tx.keys(Table::HaSeen)?;
            for k in keys {
                tx.remove(Table::HaSeen, &k)?;
            }
            Ok(())
        })?;
        self.flush().await
    }
}
