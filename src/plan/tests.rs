use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::apply::{confirm, prepare, Confirmation, Request};
use super::*;
use crate::model::{DesiredState, Group, User};
use crate::state::records::{GroupRecord, Origin, Snapshot, UserRecord};

fn user(name: &str) -> User {
    User {
        user_name: name.into(),
        given_name: Some("Given".into()),
        family_name: Some("Family".into()),
        display_name: Some(name.to_uppercase().into()),
        email: Some(format!("{name}@example.org").into()),
        active: true,
        ..Default::default()
    }
}

fn deactivate() -> Policy {
    Policy {
        on_disable: RemovalAction::Deactivate,
        on_remove: RemovalAction::Deactivate,
    }
}

/// Sends every operation to an imaginary target that accepts everything, as the engine would.
fn simulate(mut s: Snapshot, ops: &[Operation]) -> Snapshot {
    let mut next_id = 1000;
    for op in ops {
        let Ok(req) = prepare(&s, op) else { continue };
        let conf = match req {
            Request::CreateUser { .. } | Request::CreateGroup { .. } => {
                next_id += 1;
                Confirmation::Created {
                    target_id: format!("id-{next_id}"),
                    origin: Origin::Created,
                    adopted_user: None,
                    adopted_members: None,
                }
            }
            _ => Confirmation::Done,
        };
        for c in confirm(&s, &req, conf) {
            s.apply(&c);
        }
    }
    s
}

#[test]
fn first_plan_creates_managers_before_their_reports_and_groups_after_users() {
    let mut d = DesiredState::default();
    let mut ann = user("ann");
    ann.manager = Some("k-zed".into());
    d.users.insert("k-ann".into(), ann.into());
    d.users.insert("k-zed".into(), user("zed").into());
    d.groups.insert(
        "g1".into(),
        Group {
            display_name: "Eng".into(),
            members: BTreeSet::from([
                crate::model::Key::from("k-ann"),
                crate::model::Key::from("k-zed"),
            ])
            .into(),
        },
    );
    let ops = plan(&d, &Snapshot::default(), &deactivate());
    let names: Vec<(&str, &str)> = ops.iter().map(|o| (o.name(), o.label())).collect();
    assert_eq!(
        names,
        vec![
            ("create_user", "zed"),
            ("create_user", "ann"),
            ("create_group", "Eng"),
            ("add_members", "Eng")
        ]
    );
    let after = simulate(Snapshot::default(), &ops);
    assert_eq!(
        after.users["k-ann"].pushed.manager.as_deref(),
        Some("k-zed")
    );
    assert!(plan(&d, &after, &deactivate()).is_empty());
}

#[test]
fn a_reporting_cycle_is_closed_by_a_follow_up_update() {
    let mut d = DesiredState::default();
    let mut a = user("a");
    a.manager = Some("kb".into());
    let mut b = user("b");
    b.manager = Some("ka".into());
    d.users.insert("ka".into(), a.into());
    d.users.insert("kb".into(), b.into());
    let ops = plan(&d, &Snapshot::default(), &deactivate());
    assert_eq!(ops.iter().filter(|o| o.name() == "update_user").count(), 1);
    let after = simulate(Snapshot::default(), &ops);
    assert_eq!(after.users["ka"].pushed.manager.as_deref(), Some("kb"));
    assert_eq!(after.users["kb"].pushed.manager.as_deref(), Some("ka"));
    assert!(plan(&d, &after, &deactivate()).is_empty());
}

fn synced(d: &DesiredState, p: &Policy) -> Snapshot {
    simulate(Snapshot::default(), &plan(d, &Snapshot::default(), p))
}

#[test]
fn a_user_is_held_once_by_the_desired_state_the_plan_and_the_records() {
    let mut d = DesiredState::default();
    d.users.insert("k1".into(), user("ann").into());
    let mut zed = user("zed");
    // A manager that is not provisioned: dropped from what is sent, so that user is a copy.
    zed.manager = Some("k-nobody".into());
    d.users.insert("k2".into(), zed.into());
    let ops = plan(&d, &Snapshot::default(), &deactivate());
    let created = |key: &str| {
        ops.iter()
            .find_map(|op| match op {
                Operation::CreateUser { key: k, user, .. } if &**k == key => Some(user.clone()),
                _ => None,
            })
            .unwrap()
    };
    assert!(Arc::ptr_eq(&created("k1"), &d.users["k1"]));
    assert!(!Arc::ptr_eq(&created("k2"), &d.users["k2"]));
    assert_eq!(created("k2").manager, None);
    assert_eq!(d.users["k2"].manager.as_deref(), Some("k-nobody"));
    let s = simulate(Snapshot::default(), &ops);
    assert!(Arc::ptr_eq(&s.users["k1"].pushed, &d.users["k1"]));
    // A change to the desired user copies it: the record keeps what was pushed.
    let mut d2 = d.clone();
    Arc::make_mut(d2.users.get_mut("k1").unwrap()).title = Some("CTO".into());
    assert_eq!(s.users["k1"].pushed.title, None);
    assert_eq!(d.users["k1"].title, None);
    assert_eq!(plan(&d2, &s, &deactivate()).len(), 1);
}

#[test]
fn a_changed_attribute_is_one_update_with_only_that_change() {
    let mut d = DesiredState::default();
    d.users.insert("k1".into(), user("ann").into());
    let s = synced(&d, &deactivate());
    Arc::make_mut(d.users.get_mut("k1").unwrap()).title = Some("CTO".into());
    let ops = plan(&d, &s, &deactivate());
    assert_eq!(ops.len(), 1);
    match &ops[0] {
        Operation::UpdateUser { changes, .. } => {
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].field, UserField::Title);
        }
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn a_departure_removes_memberships_before_deleting_under_delete_policy() {
    let p = Policy {
        on_disable: RemovalAction::Deactivate,
        on_remove: RemovalAction::Delete,
    };
    let mut d = DesiredState::default();
    d.users.insert("k1".into(), user("ann").into());
    d.users.insert("k2".into(), user("bob").into());
    d.groups.insert(
        "g".into(),
        Group {
            display_name: "G".into(),
            members: BTreeSet::from([crate::model::Key::from("k1"), crate::model::Key::from("k2")])
                .into(),
        },
    );
    let s = synced(&d, &p);
    d.users.remove("k2");
    Arc::make_mut(&mut d.groups.get_mut("g").unwrap().members).remove("k2");
    let ops = plan(&d, &s, &p);
    let names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
    assert_eq!(names, vec!["remove_members", "delete_user"]);
}

#[test]
fn disabled_users_follow_on_disable() {
    let mut d = DesiredState::default();
    d.users.insert("k1".into(), user("ann").into());
    let s = synced(&d, &deactivate());
    Arc::make_mut(d.users.get_mut("k1").unwrap()).active = false;
    let ops = plan(&d, &s, &deactivate());
    assert_eq!(
        ops.iter().map(|o| o.name()).collect::<Vec<_>>(),
        vec!["deactivate_user"]
    );
    let del = Policy {
        on_disable: RemovalAction::Delete,
        on_remove: RemovalAction::Deactivate,
    };
    let ops = plan(&d, &s, &del);
    assert_eq!(
        ops.iter().map(|o| o.name()).collect::<Vec<_>>(),
        vec!["delete_user"]
    );
    // A disabled user never pushed is not created under the delete policy.
    assert!(plan(&d, &Snapshot::default(), &del).is_empty());
}

#[test]
fn held_entries_keep_their_object_and_memberships() {
    let mut d = DesiredState::default();
    d.users.insert("k1".into(), user("ann").into());
    d.groups.insert(
        "g".into(),
        Group {
            display_name: "G".into(),
            members: BTreeSet::from([crate::model::Key::from("k1")]).into(),
        },
    );
    let s = synced(&d, &deactivate());
    d.users.remove("k1");
    Arc::make_mut(&mut d.groups.get_mut("g").unwrap().members).clear();
    d.held.insert("k1".into());
    assert!(plan(&d, &s, &deactivate()).is_empty());
}

#[test]
fn members_go_in_batches_of_at_most_one_hundred() {
    let mut d = DesiredState::default();
    let mut members = BTreeSet::new();
    for i in 0..250 {
        d.users
            .insert(format!("k{i:03}").into(), user(&format!("u{i}")).into());
        members.insert(format!("k{i:03}").into());
    }
    d.groups.insert(
        "g".into(),
        Group {
            display_name: "All".into(),
            members: members.into(),
        },
    );
    let ops = plan(&d, &Snapshot::default(), &deactivate());
    let sizes: Vec<usize> = ops
        .iter()
        .filter_map(|o| match o {
            Operation::AddMembers { members, .. } => Some(members.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);
}

#[test]
fn membership_batches_go_in_rounds_across_groups() {
    // A group's batches wait for each other; sent group by group, they went one at a time.
    let mut d = DesiredState::default();
    let mut big = BTreeSet::new();
    for i in 0..250 {
        d.users
            .insert(format!("k{i:03}").into(), user(&format!("u{i}")).into());
        big.insert(Key::from(format!("k{i:03}")));
    }
    let small: BTreeSet<Key> = big.iter().take(120).cloned().collect();
    for (g, members) in [("a", big.clone()), ("b", small), ("c", big)] {
        d.groups.insert(
            g.into(),
            Group {
                display_name: g.into(),
                members: members.into(),
            },
        );
    }
    let ops = plan(&d, &Snapshot::default(), &deactivate());
    let adds: Vec<(&str, usize)> = ops
        .iter()
        .filter_map(|o| match o {
            Operation::AddMembers { group, members, .. } => Some((&**group, members.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        adds,
        vec![
            ("a", 100),
            ("b", 100),
            ("c", 100),
            ("a", 100),
            ("b", 20),
            ("c", 100),
            ("a", 50),
            ("c", 50)
        ]
    );
}

// ---- property tests

fn arb_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("x".to_string())),
        Just(Some("y".to_string()))
    ]
}

prop_compose! {
    fn arb_user(keys: usize)(
        name in 0..6usize, given in arb_text(), family in arb_text(), title in arb_text(),
        active in any::<bool>(), manager in proptest::option::of(0..keys), nick in arb_text(),
    ) -> User {
        let mut custom = BTreeMap::new();
        if let Some(n) = nick { custom.insert("nickName".to_string(), n); }
        User {
            user_name: format!("user{name}").into(),
            given_name: given.map(Into::into),
            family_name: family.map(Into::into),
            title: title.map(Into::into),
            active,
            manager: manager.map(|m| format!("u{m}").into()),
            custom: custom.into(),
            ..Default::default()
        }
    }
}

const UK: usize = 8;
const GK: usize = 4;

fn arb_desired() -> impl Strategy<Value = DesiredState> {
    (
        proptest::collection::btree_map(0..UK, arb_user(UK), 0..UK),
        proptest::collection::btree_map(
            0..GK,
            (0..3usize, proptest::collection::btree_set(0..UK, 0..UK)),
            0..GK,
        ),
        proptest::collection::btree_set(0..UK, 0..3),
    )
        .prop_map(|(users, groups, held)| {
            let mut d = DesiredState::default();
            for (k, u) in users {
                d.users.insert(format!("u{k}").into(), u.into());
            }
            for (k, (name, members)) in groups {
                d.groups.insert(
                    format!("g{k}").into(),
                    Group {
                        display_name: format!("group{name}"),
                        members: members
                            .into_iter()
                            .map(|m| format!("u{m}").into())
                            .collect::<BTreeSet<_>>()
                            .into(),
                    },
                );
            }
            for h in held {
                let k: Key = format!("u{h}").into();
                if !d.users.contains_key(&k) {
                    d.held.insert(k);
                }
            }
            d
        })
}

/// Arbitrary records: what any earlier history (including failures) could have left.
fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        proptest::collection::btree_map(0..UK, arb_user(UK), 0..UK),
        proptest::collection::btree_map(
            0..GK,
            (0..3usize, proptest::collection::btree_set(0..UK, 0..UK)),
            0..GK,
        ),
    )
        .prop_map(|(users, groups)| {
            let mut s = Snapshot::default();
            for (k, u) in users {
                s.users.insert(
                    format!("u{k}").into(),
                    UserRecord::new(format!("uid-{k}"), Origin::Created, u),
                );
            }
            for (k, (name, members)) in groups {
                s.groups.insert(
                    format!("g{k}").into(),
                    GroupRecord {
                        target_id: format!("gid-{k}"),
                        origin: Origin::Adopted,
                        display_name: format!("group{name}"),
                        members: members
                            .into_iter()
                            .map(|m| format!("u{m}").into())
                            .collect::<BTreeSet<_>>()
                            .into(),
                    },
                );
            }
            s
        })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    let action = prop_oneof![Just(RemovalAction::Deactivate), Just(RemovalAction::Delete)];
    (action.clone(), action).prop_map(|(on_disable, on_remove)| Policy {
        on_disable,
        on_remove,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Applying a plan and planning again gives an empty plan.
    #[test]
    fn planning_after_applying_a_plan_finds_nothing(d in arb_desired(), s in arb_snapshot(), p in arb_policy()) {
        let ops = plan(&d, &s, &p);
        let after = simulate(s, &ops);
        let again = plan(&d, &after, &p);
        prop_assert!(again.is_empty(), "second plan: {:?}", again);
    }

    /// The plan only changes objects in the records (created or adopted) or created by itself,
    /// and never touches a held entry.
    #[test]
    fn the_plan_touches_only_owned_objects(d in arb_desired(), s in arb_snapshot(), p in arb_policy()) {
        let ops = plan(&d, &s, &p);
        let created_users: BTreeSet<&Key> = ops.iter().filter_map(|o| match o {
            Operation::CreateUser { key, .. } => Some(key), _ => None }).collect();
        let created_groups: BTreeSet<&Key> = ops.iter().filter_map(|o| match o {
            Operation::CreateGroup { key, .. } => Some(key), _ => None }).collect();
        for op in &ops {
            match op {
                Operation::CreateUser { key, .. } => prop_assert!(!s.users.contains_key(key)),
                Operation::CreateGroup { key, .. } => prop_assert!(!s.groups.contains_key(key)),
                Operation::UpdateUser { key, .. } | Operation::DeactivateUser { key, .. } | Operation::DeleteUser { key, .. } => {
                    prop_assert!(s.users.contains_key(key) || created_users.contains(key));
                    prop_assert!(!d.held.contains(key));
                }
                Operation::UpdateGroup { key, .. } | Operation::DeleteGroup { key, .. } => {
                    prop_assert!(s.groups.contains_key(key));
                }
                Operation::AddMembers { group, .. } => {
                    prop_assert!(s.groups.contains_key(group) || created_groups.contains(group));
                }
                Operation::RemoveMembers { group, members, .. } => {
                    prop_assert!(s.groups.contains_key(group));
                    for m in members {
                        prop_assert!(!d.held.contains(m) || !s.users.contains_key(m));
                    }
                }
            }
            if let Operation::AddMembers { members, .. } | Operation::RemoveMembers { members, .. } = op {
                prop_assert!(!members.is_empty() && members.len() <= MEMBER_BATCH);
            }
        }
    }

    /// A user disabled in the directory is never created when the policy deletes disabled users,
    /// and a departure is never a deletion under the deactivate policy.
    #[test]
    fn removals_follow_the_policy(d in arb_desired(), s in arb_snapshot(), p in arb_policy()) {
        for op in plan(&d, &s, &p) {
            match op {
                Operation::CreateUser { user, .. } if p.on_disable == RemovalAction::Delete => prop_assert!(user.active),
                Operation::DeleteUser { reason: RemovalReason::Removed, .. } => prop_assert_eq!(p.on_remove, RemovalAction::Delete),
                Operation::DeleteUser { reason: RemovalReason::Disabled, .. } => prop_assert_eq!(p.on_disable, RemovalAction::Delete),
                _ => {}
            }
        }
    }
}

/// The order of creates as it was computed before users moved into their operations (kept to
/// prove the leaner version orders exactly the same).
fn reference_order(to_create: &BTreeMap<&str, User>) -> (Vec<Operation>, Vec<Operation>) {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut creates = Vec::new();
    let mut follow_ups = Vec::new();
    for start in to_create.keys() {
        let mut path: Vec<&str> = Vec::new();
        let mut cur = Some(*start);
        while let Some(k) = cur {
            if placed.contains(k) || path.contains(&k) {
                break;
            }
            let Some(u) = to_create.get(k) else { break };
            path.push(k);
            cur = u
                .manager
                .as_deref()
                .and_then(|m| to_create.get_key_value(m).map(|(k, _)| *k));
        }
        for k in path.into_iter().rev() {
            let Some(u) = to_create.get(k) else { continue };
            let manager_later = u
                .manager
                .as_deref()
                .map(|m| to_create.contains_key(m) && !placed.contains(m))
                .unwrap_or(false);
            placed.insert(k);
            creates.push(Operation::CreateUser {
                key: k.into(),
                user_name: u.user_name.to_string(),
                user: u.clone().into(),
            });
            if manager_later {
                follow_ups.push(Operation::UpdateUser {
                    key: k.into(),
                    user_name: u.user_name.to_string(),
                    changes: vec![crate::model::FieldChange {
                        field: UserField::Manager,
                        value: FieldValue::Text(u.manager.as_deref().map(str::to_string)),
                    }],
                    desired: u.clone().into(),
                });
            }
        }
    }
    (creates, follow_ups)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Managers in chains, cycles and trees, with managers outside the creates: the same
    /// operations in the same order as the reference.
    #[test]
    fn creates_are_ordered_as_the_reference_orders_them(
        users in proptest::collection::btree_map(0..12usize, arb_user(12), 0..12)
    ) {
        let keys: BTreeMap<usize, Key> = users.keys().map(|k| (*k, format!("u{k}").into())).collect();
        let reference: BTreeMap<&str, User> =
            users.iter().map(|(k, u)| (&*keys[k], u.clone())).collect();
        let to_create: BTreeMap<&str, (&Key, Arc<User>)> =
            users.iter().map(|(k, u)| (&*keys[k], (&keys[k], Arc::new(u.clone())))).collect();
        let want = reference_order(&reference);
        prop_assert_eq!(order_creates(to_create), want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A group's member changes, found in one walk of the two sorted sets, are what the sets
    /// say: the listed members provisioned, and the recorded ones kept, are wanted; what is
    /// wanted and not recorded is added, what is recorded and not wanted removed.
    #[test]
    fn member_changes_are_the_differences_of_the_wanted_and_recorded_sets(
        listed in proptest::collection::btree_set(0u8..24, 0..16),
        have in proptest::collection::btree_set(0u8..24, 0..16),
        provisioned in proptest::collection::btree_set(0u8..24, 0..24),
        kept in proptest::collection::btree_set(0u8..24, 0..24),
    ) {
        let key = |n: &u8| -> Key { format!("u{n:02}").into() };
        let set = |s: &BTreeSet<u8>| s.iter().map(key).collect::<BTreeSet<Key>>();
        let (listed, have, provisioned, kept) =
            (set(&listed), set(&have), set(&provisioned), set(&kept));
        let mut want: BTreeSet<Key> =
            listed.iter().filter(|m| provisioned.contains(*m)).cloned().collect();
        want.extend(have.iter().filter(|m| kept.contains(*m)).cloned());
        let reference = (
            want.difference(&have).cloned().collect::<Vec<_>>(),
            have.difference(&want).cloned().collect::<Vec<_>>(),
        );
        let walked = member_changes(
            &listed,
            &have,
            |m| provisioned.contains(m),
            |m| kept.contains(m),
        );
        prop_assert_eq!(walked, reference);
    }
}
