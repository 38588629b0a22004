//! The live desired state against `desired.rs` on random sequences of changes: after every
//! change it holds exactly what a full build of the same entries holds, and every key whose
//! desired object or standing changed is among the keys it reports as reached.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::mapping::DesiredBuilder;

pub(crate) fn mapper(nested: bool) -> Mapper {
    let text = format!(
        "[ldap]\nurl = \"ldap://127.0.0.1:389\"\nbase_dn = \"dc=x\"\nmembership = \"member\"\n\
         nested_groups = {nested}\n\
         [mapping.active]\nattribute = \"employeeType\"\ninactive_values = [\"off\"]\n\
         [target]\nkind = \"scim\"\nurl = \"http://127.0.0.1/scim\"\ntoken = \"t\"\n"
    );
    let c = Config::parse(&text, Path::new("t.toml")).unwrap();
    Mapper::new(&c.mapping, &c.ldap)
}

/// One user slot: its DN (a few shared names, so renames and clashes happen), its userName
/// (a few, case varying: collisions), whether mapping fails, active, its manager's DN.
#[derive(Debug, Clone)]
pub(crate) struct UserSpec {
    pub dn: u8,
    pub name: Option<u8>,
    pub upper: bool,
    pub active: bool,
    pub manager: Option<u8>,
}

/// One group slot: its DN, member values (users' and groups' DNs, unknown ones), and whether
/// it is rejected (a member value that is not text).
#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    pub dn: u8,
    /// Member values in upper case (DNs compare case-insensitively).
    pub shout: bool,
    pub users: Vec<u8>,
    pub groups: Vec<u8>,
    pub unknown: bool,
    pub broken: bool,
}

/// User DNs; the 7th is a group's (an entry in both searches, or a clash).
pub(crate) fn user_dn(d: u8) -> String {
    match d {
        6 => group_dn(0),
        _ => format!("uid=u{d},ou=People,dc=x"),
    }
}

pub(crate) fn group_dn(d: u8) -> String {
    format!("cn=g{d},ou=groups,dc=x")
}

fn push(e: &mut RawEntry, attr: &str, v: &[u8]) {
    e.attrs.extend(attr, vec![v.to_vec()]);
}

pub(crate) fn user_entry(key: &str, s: &UserSpec) -> RawEntry {
    let mut e = RawEntry {
        dn: user_dn(s.dn),
        ..Default::default()
    };
    // Slot 7's entries have no key attribute: kept under their DN.
    if !key.starts_with("dn:") {
        push(&mut e, "entryUUID", key.as_bytes());
    }
    if let Some(n) = s.name {
        let n = format!("name{n}");
        let n = if s.upper { n.to_uppercase() } else { n };
        push(&mut e, "uid", n.as_bytes());
    }
    push(&mut e, "mail", format!("{key}@x").as_bytes());
    push(&mut e, "givenName", b"G");
    push(&mut e, "sn", b"S");
    push(&mut e, "cn", b"G S");
    push(&mut e, "title", format!("t{}", s.dn).as_bytes());
    if !s.active {
        push(&mut e, "employeeType", b"off");
    }
    if let Some(m) = s.manager {
        // Managers named by user DNs, or (8 and above) by a group's DN.
        let dn = if m < 8 { user_dn(m) } else { group_dn(m - 8) };
        push(&mut e, "manager", dn.to_uppercase().as_bytes());
    }
    e
}

pub(crate) fn group_entry(key: &str, s: &GroupSpec) -> RawEntry {
    let mut e = RawEntry {
        dn: group_dn(s.dn),
        ..Default::default()
    };
    push(&mut e, "entryUUID", key.as_bytes());
    push(&mut e, "cn", format!("G{}", s.dn).as_bytes());
    let case = |v: String| if s.shout { v.to_uppercase() } else { v };
    for u in &s.users {
        push(&mut e, "member", case(user_dn(*u)).as_bytes());
    }
    for g in &s.groups {
        push(&mut e, "member", case(group_dn(*g)).as_bytes());
    }
    if s.unknown {
        push(&mut e, "member", b"uid=nobody,ou=elsewhere,dc=x");
    }
    if s.broken {
        push(&mut e, "member", &[0xff, 0xfe]);
    }
    e
}

pub(crate) fn user_spec() -> impl Strategy<Value = UserSpec> {
    (
        0u8..7,
        prop_oneof![4 => (0u8..4).prop_map(Some), 1 => Just(None)],
        any::<bool>(),
        prop_oneof![4 => Just(true), 1 => Just(false)],
        prop_oneof![1 => Just(None), 2 => (0u8..10).prop_map(Some)],
    )
        .prop_map(|(dn, name, upper, active, manager)| UserSpec {
            dn,
            name,
            upper,
            active,
            manager,
        })
}

pub(crate) fn group_spec() -> impl Strategy<Value = GroupSpec> {
    (
        0u8..3,
        proptest::collection::vec(0u8..7, 0..4),
        proptest::collection::vec(0u8..3, 0..2),
        any::<bool>(),
        prop_oneof![6 => Just(false), 1 => Just(true)],
        any::<bool>(),
    )
        .prop_map(|(dn, users, groups, unknown, broken, shout)| GroupSpec {
            dn,
            shout,
            users,
            groups,
            unknown,
            broken,
        })
}

/// A change: a user or group slot set (Some) or removed (None), or a user now known to the
/// target or not.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    User(u8, Option<UserSpec>),
    Group(u8, Option<GroupSpec>),
    Known(u8, bool),
}

pub(crate) fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        5 => (0u8..8, proptest::option::weighted(0.85, user_spec()))
            .prop_map(|(i, s)| Change::User(i, s)),
        3 => (0u8..4, proptest::option::weighted(0.85, group_spec()))
            .prop_map(|(i, s)| Change::Group(i, s)),
        1 => (0u8..7, any::<bool>()).prop_map(|(i, k)| Change::Known(i, k)),
    ]
}

pub(crate) fn user_key(i: u8) -> Key {
    format!("ku{i}").into()
}

/// Group slot 3 shares its key with user slot 1 (a text key such as cn, or one entry in both
/// searches).
pub(crate) fn group_key(i: u8) -> Key {
    match i {
        3 => user_key(1),
        _ => format!("kg{i}").into(),
    }
}

/// Applies a directory change to the mirror; returns the user and group keys it changed.
pub(crate) fn apply(
    c: &Change,
    users: &mut BTreeMap<Key, RawEntry>,
    groups: &mut BTreeMap<Key, RawEntry>,
) -> (Vec<Key>, Vec<Key>) {
    match c {
        Change::User(i, s) => {
            // Slot 7: an entry without its key attribute, kept under its (fixed) DN.
            let (k, s) = match i {
                7 => (
                    format!("dn:{}", user_dn(5)).into(),
                    s.as_ref().map(|s| UserSpec { dn: 5, ..s.clone() }),
                ),
                _ => (user_key(*i), s.clone()),
            };
            match s {
                Some(s) => users.insert(k.clone(), user_entry(&k, &s)),
                None => users.remove(&k),
            };
            (vec![k], vec![])
        }
        Change::Group(i, s) => {
            let k = group_key(*i);
            match s {
                Some(s) => groups.insert(k.clone(), group_entry(&k, s)),
                None => groups.remove(&k),
            };
            (vec![], vec![k])
        }
        Change::Known(..) => (vec![], vec![]),
    }
}

fn full(
    m: &Mapper,
    users: &BTreeMap<Key, RawEntry>,
    groups: &BTreeMap<Key, RawEntry>,
    known: &BTreeSet<Key>,
) -> DesiredState {
    let mut b = DesiredBuilder::new(m.clone());
    for e in users.values() {
        b.add_user(e);
    }
    for e in groups.values() {
        b.add_group(e);
    }
    b.finish(known)
}

fn same(a: &DesiredState, b: &DesiredState) -> Result<(), TestCaseError> {
    prop_assert_eq!(&a.users, &b.users);
    prop_assert_eq!(&a.groups, &b.groups);
    prop_assert_eq!(&a.held, &b.held);
    prop_assert_eq!(&a.dns, &b.dns);
    prop_assert_eq!(a.unresolved_members, b.unresolved_members);
    let sorted = |d: &DesiredState| {
        let mut r: Vec<(String, Option<Key>, String)> = d
            .rejected
            .iter()
            .map(|r| (r.dn.clone(), r.key.clone(), r.reason.clone()))
            .collect();
        r.sort();
        r
    };
    prop_assert_eq!(sorted(a), sorted(b));
    Ok(())
}

/// Whether the user's standing differs between two states (the plan of others depends on it).
fn standing(d: &DesiredState, k: &Key) -> (Option<bool>, bool) {
    (d.users.get(k).map(|u| u.active), d.held.contains(k))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_live_state_is_the_full_build_and_reports_what_changed(
        nested in any::<bool>(),
        changes in proptest::collection::vec(change(), 1..40),
    ) {
        let m = mapper(nested);
        let mut live = LiveDesired::new(m.clone());
        let mut users: BTreeMap<Key, RawEntry> = BTreeMap::new();
        let mut groups: BTreeMap<Key, RawEntry> = BTreeMap::new();
        let mut known: BTreeSet<Key> = BTreeSet::new();
        let mut before = full(&m, &users, &groups, &known);
        for c in changes {
            let (cu, cg) = apply(&c, &mut users, &mut groups);
            let mut ck = Vec::new();
            if let Change::Known(i, on) = c {
                if on { known.insert(user_key(i)); } else { known.remove(&user_key(i)); }
                ck.push(user_key(i));
            }
            let reached = live.update((&mut |k: &Key| users.get(k).cloned(), &mut |k: &Key| groups.get(k).cloned()), (&cu, &cg), &|k| known.contains(k), &ck);
            let after = full(&m, &users, &groups, &known);
            same(&live.to_state(), &after)?;
            prop_assert_eq!(live.no_users(), after.users.is_empty() && after.held.is_empty());
            prop_assert_eq!(live.no_groups(), after.groups.is_empty());
            prop_assert_eq!(live.rejected_count(), after.rejected.len());
            // Held keys include groups': a user record under the same key depends on them.
            let user_keys: BTreeSet<&Key> = before.users.keys().chain(after.users.keys())
                .chain(before.held.iter()).chain(after.held.iter()).collect();
            for k in user_keys {
                if before.users.get(k) != after.users.get(k) || before.held.contains(k) != after.held.contains(k) {
                    prop_assert!(reached.users.contains(k), "{} changed but was not reached", k);
                }
                if standing(&before, k) != standing(&after, k) {
                    prop_assert!(reached.flipped.contains(k), "{}'s standing changed unreported", k);
                }
            }
            let group_keys: BTreeSet<&Key> = before.groups.keys().chain(after.groups.keys()).collect();
            for k in group_keys {
                if before.groups.get(k) != after.groups.get(k) {
                    prop_assert!(reached.groups.contains(k), "{} changed but was not reached", k);
                }
            }
            // A state built at once from the same mirror (a feed's first pass) is the same.
            let mut built = LiveDesired::new(m.clone());
            built.build(
                (&mut |k: &Key| users.get(k).cloned(), &mut |k: &Key| groups.get(k).cloned()),
                (users.keys(), groups.keys()),
                &|k| known.contains(k),
            );
            same(&built.to_state(), &after)?;
            before = after;
        }
    }
}

/// A group's member values are held once: the very names of the member index, and of the
/// users' DN index where a user carries the name. The index's lists, built a key at a time,
/// hold no room beyond their keys.
#[test]
fn member_values_are_the_names_the_indexes_hold() {
    let mut users = BTreeMap::new();
    let mut groups = BTreeMap::new();
    let spec = UserSpec {
        dn: 1,
        name: Some(1),
        upper: false,
        active: true,
        manager: None,
    };
    apply(&Change::User(1, Some(spec)), &mut users, &mut groups);
    let group = GroupSpec {
        dn: 0,
        shout: false,
        users: vec![1],
        groups: vec![],
        unknown: true,
        broken: false,
    };
    for n in 0..3 {
        apply(
            &Change::Group(n, Some(group.clone())),
            &mut users,
            &mut groups,
        );
    }
    let mut live = LiveDesired::new(mapper(false));
    live.update(
        (&mut |k: &Key| users.get(k).cloned(), &mut |k: &Key| {
            groups.get(k).cloned()
        }),
        (users.keys(), groups.keys()),
        &|_| false,
        std::iter::empty(),
    );
    let Some(Ok(g)) = live.groups.get(&group_key(0)) else {
        panic!("the group is mapped: {:?}", live.groups);
    };
    assert!(g.mapped.member_dns.is_empty(), "moved out of the mapping");
    assert_eq!(g.members.len(), 2, "{:?}", g.members);
    for m in g.members.iter() {
        let (held, _) = live.named_by.get_key_value(&**m).unwrap();
        assert!(Arc::ptr_eq(held, m), "{m}: the member index's own name");
    }
    let user = g.members.iter().find(|m| m.starts_with("uid=u1")).unwrap();
    let (held, _) = live.user_dns.get_key_value(&**user).unwrap();
    assert!(Arc::ptr_eq(held, user), "{user}: the user's DN as indexed");
    assert_eq!(g.out.members.len(), 1, "{:?}", g.out);
    assert_eq!(live.named_by[&**user].len(), 3, "listed by three groups");
}

/// A DN already in its normalized form is held once, by the user and by the DN index; one that
/// is not keeps its own spelling for the labels and is indexed by its normalized form.
#[test]
fn a_normalized_dn_is_held_once_by_the_user_and_the_index() {
    let spec = |name| UserSpec {
        dn: 1,
        name: Some(name),
        upper: false,
        active: true,
        manager: None,
    };
    let mut users = BTreeMap::new();
    let mut plain = user_entry(&user_key(1), &spec(1));
    plain.dn = "uid=u1,ou=people,dc=x".into();
    users.insert(user_key(1), plain);
    let mut spelled = user_entry(&user_key(2), &spec(2));
    spelled.dn = "UID=u2, OU=People,DC=x".into();
    users.insert(user_key(2), spelled);
    let mut live = LiveDesired::new(mapper(false));
    live.update(
        (&mut |k: &Key| users.get(k).cloned(), &mut |_: &Key| None),
        (users.keys(), std::iter::empty()),
        &|_| false,
        std::iter::empty(),
    );
    let Some(Ok(one)) = live.users.get(&user_key(1)) else {
        panic!("mapped: {:?}", live.users);
    };
    let (held, _) = live
        .user_dns
        .get_key_value("uid=u1,ou=people,dc=x")
        .unwrap();
    assert!(Arc::ptr_eq(held, &one.dn), "one allocation for both");
    let Some(Ok(two)) = live.users.get(&user_key(2)) else {
        panic!("mapped: {:?}", live.users);
    };
    assert_eq!(&*two.dn, "UID=u2, OU=People,DC=x");
    assert_eq!(live.dn(&user_key(2)), Some("UID=u2, OU=People,DC=x"));
    assert_eq!(
        live.user_winner("uid=u2,ou=people,dc=x"),
        Some(&user_key(2)),
        "found by its normalized DN"
    );
    assert!(!live.user_dns.contains_key("UID=u2, OU=People,DC=x"));
}
