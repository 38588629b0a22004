//! The canonical user and group model that sits between every source and every target.
//!
//! A source (OpenLDAP, Active Directory) maps its entries into these types; a target (SCIM, REST)
//! encodes them. Neither side sees the other's representation, so a new source or target plugs
//! in without touching the plan or the engine.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The stable identity of a directory object (entryUUID, objectGUID, ...). Never a DN: renames
/// and moves must keep the same key so the same target object is updated, not recreated.
///
/// Shared, not copied: one key is named by many indexes (the desired state, the records, the
/// groups' members, the change feed's), and at 100k users a `String` per mention was a tenth
/// of the gateway's memory.
pub(crate) type Key = std::sync::Arc<str>;

/// A user's text: its value held inline up to 24 bytes (most names, mails and titles), so
/// that 100k users do not hold their fields as ~700k allocations of their own (~10 MB).
pub(crate) type Text = compact_str::CompactString;

/// A user as it should look on the target. `manager` holds the manager's [`Key`], not a target
/// id: ids are resolved by the engine when the operation is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct User {
    pub user_name: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Text>,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The manager's key (a target id in a user read back from the target).
    pub manager: Option<Text>,
    /// Custom attributes: SCIM attribute path (e.g. `nickName` or
    /// `urn:...:extension:enterprise:2.0:User:costCenter`) to value.
    #[serde(default, skip_serializing_if = "Custom::is_empty")]
    pub custom: Custom,
}

/// A user's custom attributes, boxed: most users have none, and inline the map made a user
/// 264 bytes with its `Arc`, which the allocator serves from its 320-byte class (~6 MB at
/// 100k users); boxed, a user fits the 256-byte class.
#[derive(Debug, Clone, Default)]
// Boxed on purpose: the box is 8 bytes in every user, the map 24.
#[allow(clippy::box_collection)]
pub struct Custom(Option<Box<BTreeMap<String, String>>>);

impl Custom {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    /// `BTreeMap::retain`, without a map of its own when there is none.
    pub fn retain(&mut self, keep: impl FnMut(&String, &mut String) -> bool) {
        if let Some(m) = &mut self.0 {
            m.retain(keep);
            if m.is_empty() {
                self.0 = None;
            }
        }
    }

    /// `BTreeMap::remove`, without a map of its own when there is none.
    pub fn remove(&mut self, path: &str) -> Option<String> {
        let m = self.0.as_mut()?;
        let out = m.remove(path);
        if m.is_empty() {
            self.0 = None;
        }
        out
    }
}

/// Equal when the attributes are, however they are held (none, or an emptied map).
impl PartialEq for Custom {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Custom {}

/// What an empty [`Custom`] reads as.
static NO_CUSTOM: BTreeMap<String, String> = BTreeMap::new();

impl std::ops::Deref for Custom {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&NO_CUSTOM)
    }
}

impl std::ops::DerefMut for Custom {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<BTreeMap<String, String>> for Custom {
    fn from(map: BTreeMap<String, String>) -> Self {
        Custom((!map.is_empty()).then(|| Box::new(map)))
    }
}

impl<'a> IntoIterator for &'a Custom {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Serialize for Custom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Custom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Custom::from)
    }
}

/// One attribute of a [`User`], used to describe a change precisely enough for a PATCH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case", tag = "field", content = "path")]
pub enum UserField {
    UserName,
    GivenName,
    FamilyName,
    DisplayName,
    Email,
    Active,
    Title,
    Department,
    EmployeeNumber,
    Manager,
    Custom(String),
}

/// The new value of one changed attribute. `Text(None)` means "remove it on the target".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Bool(bool),
    Text(Option<String>),
}

/// One changed attribute: what an update sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    #[serde(flatten)]
    pub field: UserField,
    pub value: FieldValue,
}

impl User {
    /// The attributes in which `self` (last pushed) differs from `desired`, in a fixed order.
    pub fn changes_to(&self, desired: &User) -> Vec<FieldChange> {
        let mut out = Vec::new();
        let mut text = |field: UserField, old: Option<&str>, new: Option<&str>| {
            if old != new {
                out.push(FieldChange {
                    field,
                    value: FieldValue::Text(new.map(str::to_string)),
                });
            }
        };
        fn both<'u>(
            old: &'u Option<Text>,
            new: &'u Option<Text>,
        ) -> (Option<&'u str>, Option<&'u str>) {
            (old.as_deref(), new.as_deref())
        }
        text(
            UserField::UserName,
            Some(&self.user_name),
            Some(&desired.user_name),
        );
        let fields = [
            (
                UserField::GivenName,
                both(&self.given_name, &desired.given_name),
            ),
            (
                UserField::FamilyName,
                both(&self.family_name, &desired.family_name),
            ),
            (
                UserField::DisplayName,
                both(&self.display_name, &desired.display_name),
            ),
            (UserField::Email, both(&self.email, &desired.email)),
            (UserField::Title, both(&self.title, &desired.title)),
            (
                UserField::Department,
                both(&self.department, &desired.department),
            ),
            (
                UserField::EmployeeNumber,
                both(&self.employee_number, &desired.employee_number),
            ),
            (UserField::Manager, both(&self.manager, &desired.manager)),
        ];
        for (field, (old, new)) in fields {
            text(field, old, new);
        }
        let paths: BTreeSet<&String> = self.custom.keys().chain(desired.custom.keys()).collect();
        for path in paths {
            text(
                UserField::Custom(path.clone()),
                self.custom.get(path).map(String::as_str),
                desired.custom.get(path).map(String::as_str),
            );
        }
        if self.active != desired.active {
            out.push(FieldChange {
                field: UserField::Active,
                value: FieldValue::Bool(desired.active),
            });
        }
        out
    }

    /// Applies changes to this representation, as a confirmed update does on the target.
    pub fn apply(&mut self, changes: &[FieldChange]) {
        for change in changes {
            let text = match &change.value {
                FieldValue::Text(v) => v.clone(),
                FieldValue::Bool(_) => None,
            };
            let short = || text.as_deref().map(Text::from);
            match &change.field {
                UserField::UserName => {
                    if let Some(v) = short() {
                        self.user_name = v;
                    }
                }
                UserField::GivenName => self.given_name = short(),
                UserField::FamilyName => self.family_name = short(),
                UserField::DisplayName => self.display_name = short(),
                UserField::Email => self.email = short(),
                UserField::Title => self.title = short(),
                UserField::Department => self.department = short(),
                UserField::EmployeeNumber => self.employee_number = short(),
                UserField::Manager => self.manager = short(),
                UserField::Custom(path) => match text {
                    Some(v) => {
                        self.custom.insert(path.clone(), v);
                    }
                    None => {
                        self.custom.remove(path);
                    }
                },
                UserField::Active => {
                    if let FieldValue::Bool(b) = change.value {
                        self.active = b;
                    }
                }
            }
        }
    }
}

/// A group as it should look on the target; members are user [`Key`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Group {
    pub display_name: String,
    pub members: Members,
}

/// A group's members, shared: the service's record of a group holds the very set its desired
/// state holds when the two are equal as the records are read, or after a pass looked at the
/// group (300k memberships at 100k users were ~5 MB twice). Changed copy-on-write
/// (`Arc::make_mut`).
pub(crate) type Members = Arc<BTreeSet<Key>>;

/// Applies `fit` to a user that may be shared, copying it only if `fit` changes it.
pub(crate) fn fit_shared(user: &mut Arc<User>, fit: &dyn Fn(&mut User)) {
    if let Some(only) = Arc::get_mut(user) {
        return fit(only);
    }
    let mut fitted = User::clone(user);
    fit(&mut fitted);
    if fitted != **user {
        *user = Arc::new(fitted);
    }
}

/// What the directory says the target should hold, after mapping.
#[derive(Debug, Clone, Default)]
pub(crate) struct DesiredState {
    /// Shared (`Arc`) with the operations that send them and the records that confirm them:
    /// a first sync of 100k users held each user three times (desired, planned, recorded).
    pub users: BTreeMap<Key, Arc<User>>,
    pub groups: BTreeMap<Key, Group>,
    /// Keys of objects that exist in the directory but could not be mapped this time (missing
    /// attribute, duplicate userName, ...). The plan leaves them alone: a bad entry must never
    /// look like a departure.
    pub held: BTreeSet<Key>,
    /// Entries that could not be mapped, with the reason, for the run report.
    pub rejected: Vec<Rejected>,
    /// Where each desired object came from, for messages.
    pub dns: BTreeMap<Key, String>,
    /// Member values (DNs) of groups that name no user or group read (a deleted entry, one
    /// outside the configured scope): reported, not dropped silently.
    pub unresolved_members: usize,
}

/// The desired state as the plan and the executor read it, one key at a time: a
/// [`DesiredState`] built by a full read, or the state a change feed keeps between passes
/// (`mapping::live`).
pub(crate) trait Desired {
    /// The user the directory wants under `key` (its manager resolved), unless held or absent.
    fn user(&self, key: &str) -> Option<&Arc<User>>;
    fn group(&self, key: &str) -> Option<&Group>;
    /// True for an entry in the directory that could not be mapped this time.
    fn held(&self, key: &str) -> bool;
    /// The DN a desired object came from, for messages.
    fn dn(&self, key: &Key) -> Option<&str>;
    /// Leaves out of a user what the target cannot hold (applied to the copy the plan sends).
    fn fit(&self, _user: &mut User) {}
    /// True when [`Desired::fit`] changes nothing (the users were fitted before): the plan
    /// then compares a user with its record without copying it first.
    fn fitted(&self) -> bool {
        true
    }
}

impl Desired for DesiredState {
    fn user(&self, key: &str) -> Option<&Arc<User>> {
        self.users.get(key)
    }
    fn group(&self, key: &str) -> Option<&Group> {
        self.groups.get(key)
    }
    fn held(&self, key: &str) -> bool {
        self.held.contains(key)
    }
    fn dn(&self, key: &Key) -> Option<&str> {
        self.dns.get(key).map(String::as_str)
    }
}

/// A directory entry that was read but not turned into a user or group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rejected {
    pub dn: String,
    /// The stable key, when it could be read; such an object is held, not removed.
    pub key: Option<Key>,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_user_fits_the_allocators_256_byte_class() {
        // An `Arc` adds two counters; beyond 256 bytes the user is served from the 320-byte
        // class (mimalloc's and glibc's alike round up).
        assert!(std::mem::size_of::<User>() + 16 <= 256);
    }

    #[test]
    fn custom_attributes_compare_and_read_as_a_map_however_they_are_held() {
        let mut a = User::default();
        let b = User::default();
        a.custom.insert("nickName".into(), "annie".into());
        assert_ne!(a, b);
        assert_eq!(a.custom.remove("nickName").as_deref(), Some("annie"));
        assert_eq!(a, b);
        assert!(a.custom.is_empty());
        // An emptied map equals none at all.
        let mut c = User::default();
        c.custom.insert("x".into(), "1".into());
        c.custom.retain(|_, _| false);
        assert_eq!(c, b);
        let mut d = User::default();
        d.custom.clear();
        assert_eq!(d, b);
        // Read and written as the map it is; none is not written at all.
        a.custom.insert("urn:x:costCenter".into(), "42".into());
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["custom"]["urn:x:costCenter"], "42");
        let back: User = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
        assert!(serde_json::to_value(&b).unwrap().get("custom").is_none());
        let none: User =
            serde_json::from_str(r#"{"user_name":"u","active":true,"custom":{}}"#).unwrap();
        assert!(none.custom.0.is_none());
        assert_eq!(
            (&a.custom).into_iter().collect::<Vec<_>>(),
            vec![(&"urn:x:costCenter".to_string(), &"42".to_string())]
        );
    }
}
