//! What the gateway last pushed, as plain data. The sled store persists these; the plan reads
//! them; both the engine and the property tests change them only through [`StateChange`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Key, User};

/// How an object came under the gateway's management. Only such objects are ever changed or
/// deleted on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The gateway created it.
    Created,
    /// It existed on the target with the same userName / group name, and the gateway took it over.
    Adopted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub target_id: String,
    pub origin: Origin,
    /// The user as last confirmed by the target. Not inline: the records of 100k users are read
    /// into a sorted list, then a map, and with the user inline both were ~300 B per record
    /// (~70 MB at the peak of a no-change pass, now ~15). Shared (`Arc`) with the desired
    /// state and the operation that sent it, so a confirmed user is held once.
    #[serde(deserialize_with = "shared_user")]
    pub pushed: Arc<User>,
    /// Records used to hold a hash of `pushed`; the plan now compares the fields (cheaper than
    /// hashing every user). The hash an older record holds is ignored, and an empty one is
    /// written so that a binary from before the change still reads these records after a
    /// downgrade (it then compares every user's fields once and finds nothing to send).
    #[serde(
        rename = "hash",
        default,
        skip_deserializing,
        serialize_with = "empty_hash"
    )]
    legacy_hash: (),
}

/// Reads a user straight into its `Arc` (serde's own goes through a `Box`: two allocations
/// and a copy per record).
fn shared_user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<User>, D::Error> {
    User::deserialize(d).map(Arc::new)
}

fn empty_hash<S: serde::Serializer>(_: &(), s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("")
}

impl UserRecord {
    pub fn new(target_id: String, origin: Origin, pushed: impl Into<Arc<User>>) -> Self {
        UserRecord {
            target_id,
            origin,
            pushed: pushed.into(),
            legacy_hash: (),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub target_id: String,
    pub origin: Origin,
    pub display_name: String,
    /// User keys confirmed as members on the target (shared with the desired state's group
    /// while equal: [`crate::model::Members`]).
    pub members: crate::model::Members,
}

/// A group record as the store holds it, its members borrowed from the stored bytes (unless
/// they had to be unescaped): each becomes the key its user record already has, so the ~3
/// members per user of a large directory are neither copied nor allocated one by one.
#[derive(Deserialize)]
// Named as the record it is in the error a damaged one gives.
#[serde(rename = "GroupRecord")]
pub(crate) struct StoredGroup<'a> {
    target_id: String,
    origin: Origin,
    display_name: String,
    #[serde(borrow)]
    members: Vec<StoredMember<'a>>,
}

#[derive(Deserialize)]
struct StoredMember<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

impl StoredGroup<'_> {
    /// The record, each member the key `user_key` gives for it (a copy of the name if none).
    pub(crate) fn into_record(self, user_key: impl Fn(&str) -> Option<Key>) -> GroupRecord {
        let StoredGroup {
            target_id,
            origin,
            display_name,
            members,
        } = self;
        GroupRecord {
            target_id,
            origin,
            display_name,
            members: members
                .iter()
                .map(|m| user_key(&m.0).unwrap_or_else(|| Key::from(&*m.0)))
                .collect::<BTreeSet<Key>>()
                .into(),
        }
    }
}

/// One change to the records, applied in memory and persisted in one transaction.
// A handful exist at a time (one confirmed operation's worth): their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateChange {
    PutUser(Key, UserRecord),
    RemoveUser(Key),
    PutGroup(Key, GroupRecord),
    RemoveGroup(Key),
}

impl StateChange {
    /// The object the change is about.
    pub fn key(&self) -> &Key {
        match self {
            StateChange::PutUser(k, _)
            | StateChange::RemoveUser(k)
            | StateChange::PutGroup(k, _)
            | StateChange::RemoveGroup(k) => k,
        }
    }
}

/// All records, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub users: BTreeMap<Key, UserRecord>,
    pub groups: BTreeMap<Key, GroupRecord>,
}

impl Snapshot {
    pub fn apply(&mut self, change: &StateChange) {
        match change {
            StateChange::PutUser(k, r) => {
                self.users.insert(k.clone(), r.clone());
            }
            StateChange::RemoveUser(k) => {
                self.users.remove(k);
            }
            StateChange::PutGroup(k, r) => {
                self.groups.insert(k.clone(), r.clone());
            }
            StateChange::RemoveGroup(k) => {
                self.groups.remove(k);
            }
        }
    }

    pub fn user_id(&self, key: &str) -> Option<&str> {
        self.users.get(key).map(|r| r.target_id.as_str())
    }

    /// Target user id to key, for reading target answers back.
    pub fn user_keys_by_id(&self) -> BTreeMap<String, Key> {
        self.users
            .iter()
            .map(|(k, r)| (r.target_id.clone(), k.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_with_a_hash_still_reads() {
        let old = r#"{"target_id":"id-1","origin":"created","pushed":{"user_name":"ann","active":true},"hash":"00ff"}"#;
        let r: UserRecord = serde_json::from_str(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.pushed.user_name, "ann");
        let again = serde_json::to_string(&r).unwrap_or_else(|e| panic!("{e}"));
        // An empty hash, for a binary from before the change after a downgrade.
        assert!(again.ends_with(r#","hash":""}"#), "{again}");
        let back: UserRecord = serde_json::from_str(&again).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
    }

    #[test]
    fn a_stored_group_reads_as_the_record_it_was_members_shared_or_copied() {
        let rec = GroupRecord {
            target_id: "g-1".into(),
            origin: Origin::Adopted,
            display_name: "Eng \"core\"".into(),
            members: ["a", "b\\c \"q\"", "é\n", "z"]
                .into_iter()
                .map(Key::from)
                .collect::<BTreeSet<_>>()
                .into(),
        };
        let bytes = serde_json::to_vec(&rec).unwrap_or_else(|e| panic!("{e}"));
        let shared: Key = "a".into();
        let stored: StoredGroup = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let back = stored.into_record(|m| (m == "a").then(|| shared.clone()));
        assert_eq!(back, rec);
        // "a" is the shared key itself, not a copy.
        let a = back
            .members
            .iter()
            .find(|m| &***m == "a")
            .unwrap_or_else(|| panic!("a"));
        assert!(std::sync::Arc::ptr_eq(a, &shared));
    }
}
