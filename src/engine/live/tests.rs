//! The incremental plan is the full plan: random sequences of directory changes, each pass
//! planned both ways against the same records, then sent to an imaginary target that refuses
//! some operations (they stay pending), answers others with a 404 or an object to adopt, under
//! every removal policy, with restarts.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::config::RemovalAction;
use crate::mapping::live::tests::{apply, change, mapper, Change};
use crate::mapping::{DesiredBuilder, Mapper};
use std::sync::Arc;

use crate::model::{DesiredState, User};
use crate::plan::apply::{confirm, prepare, Confirmation, Request};
use crate::plan::plan;
use crate::source::entry::RawEntry;
use crate::state::records::Origin;

/// What the imaginary target answers to one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Done,
    /// Refused: nothing recorded, the operation stays to do.
    Refused,
    /// 404: the object is gone from the target (a create is done as asked).
    Gone,
    /// A create finds an object of that name and takes it over as it is there.
    Adopted,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => Just(Answer::Done),
        2 => Just(Answer::Refused),
        1 => Just(Answer::Gone),
        1 => Just(Answer::Adopted),
    ]
}

/// The target holds no email: left out of what is planned, on both sides.
fn fit(u: &mut User) {
    u.email = None;
}

/// Sends the operations, each answered as `answers` says (cycled), applying what is
/// confirmed to the records as the executor does.
fn send(
    s: &mut Snapshot,
    census: &mut crate::status::Census,
    ops: &[Operation],
    answers: &[Answer],
    next_id: &mut u32,
) -> Moved {
    let mut moved = Moved::default();
    for (i, op) in ops.iter().enumerate() {
        let Ok(req) = prepare(s, op) else { continue };
        let creates = matches!(
            req,
            Request::CreateUser { .. } | Request::CreateGroup { .. }
        );
        let conf = match (answers[i % answers.len()], &req) {
            (Answer::Refused, _) => continue,
            (Answer::Adopted, Request::CreateUser { user, .. }) => {
                *next_id += 1;
                let mut there = User::clone(user);
                there.title = Some("set on the target".into());
                // What the target is not known to hold comes back too.
                there.email = Some("kept@target".into());
                Confirmation::Created {
                    target_id: format!("id-{next_id}"),
                    origin: Origin::Adopted,
                    adopted_user: Some(there),
                    adopted_members: None,
                }
            }
            (Answer::Adopted, Request::CreateGroup { .. }) => {
                *next_id += 1;
                let members = s.users.keys().take(2).cloned().collect();
                Confirmation::Created {
                    target_id: format!("id-{next_id}"),
                    origin: Origin::Adopted,
                    adopted_user: None,
                    adopted_members: Some(members),
                }
            }
            (_, _) if creates => {
                *next_id += 1;
                Confirmation::Created {
                    target_id: format!("id-{next_id}"),
                    origin: Origin::Created,
                    adopted_user: None,
                    adopted_members: None,
                }
            }
            (Answer::Gone, _) => Confirmation::Gone,
            (_, _) => Confirmation::Done,
        };
        for c in confirm(s, &req, conf) {
            moved.note(s, &c);
            census.follow(s, &c);
            s.apply(&c);
        }
    }
    moved
}

fn policy() -> impl Strategy<Value = Policy> {
    let action = prop_oneof![Just(RemovalAction::Deactivate), Just(RemovalAction::Delete)];
    (action.clone(), action).prop_map(|(on_disable, on_remove)| Policy {
        on_disable,
        on_remove,
    })
}

/// The full plan: every entry mapped and resolved at once, fitted, planned for every key.
fn full_plan(
    m: &Mapper,
    users: &BTreeMap<Key, RawEntry>,
    groups: &BTreeMap<Key, RawEntry>,
    records: &Snapshot,
    policy: &Policy,
) -> Vec<Operation> {
    let mut b = DesiredBuilder::new(m.clone());
    for e in users.values() {
        b.add_user(e);
    }
    for e in groups.values() {
        b.add_group(e);
    }
    let known: BTreeSet<Key> = records.users.keys().cloned().collect();
    let mut desired: DesiredState = b.finish(&known);
    for u in desired.users.values_mut() {
        fit(Arc::make_mut(u));
    }
    // As read from the store: fitted whole.
    let mut records = records.clone();
    for r in records.users.values_mut() {
        fit(Arc::make_mut(&mut r.pushed));
    }
    plan(&desired, &records, policy)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A `Known` change stands for a restart (or kept records dropped): the next pass builds
    /// the live state afresh against the records as they are.
    #[test]
    fn the_incremental_plan_is_the_full_plan(
        nested in any::<bool>(),
        policy in policy(),
        steps in proptest::collection::vec(
            (proptest::collection::vec(change(), 1..4), proptest::collection::vec(answer(), 1..5)),
            1..25,
        ),
    ) {
        let m = mapper(nested);
        let mut users: BTreeMap<Key, RawEntry> = BTreeMap::new();
        let mut groups: BTreeMap<Key, RawEntry> = BTreeMap::new();
        let mut live = LiveDesired::new(m.clone());
        let mut records = Snapshot::default();
        let mut pending = Pending::default();
        let mut known_changed = BTreeSet::new();
        let mut next_id = 0;
        let mut first = true;
        let mut census = crate::status::Census::default();
        for (changes, answers) in steps {
            let (mut cu, mut cg) = (BTreeSet::new(), BTreeSet::new());
            for c in changes {
                if let Change::Known(..) = c {
                    live = LiveDesired::new(m.clone());
                    first = true;
                    cu = users.keys().cloned().collect();
                    cg = groups.keys().cloned().collect();
                    continue;
                }
                let (u, g) = apply(&c, &mut users, &mut groups);
                cu.extend(u);
                cg.extend(g);
            }
            let reached = live.update(
                (&mut |k: &Key| users.get(k).cloned(), &mut |k: &Key| groups.get(k).cloned()),
                (&cu, &cg),
                &|k| records.users.contains_key(k),
                &known_changed,
            );
            let planned = if first {
                let (u, g) = every_key(&live, &records);
                let every = Scope {
                    users: u.cloned().collect(),
                    groups: g.cloned().collect(),
                };
                // Each key once, in order: the union of both sides.
                let (u, g) = every_key(&live, &records);
                let (keys_u, keys_g) = live.keys();
                let union_u: BTreeSet<&Key> = keys_u.chain(records.users.keys()).collect();
                let union_g: BTreeSet<&Key> = keys_g.chain(records.groups.keys()).collect();
                prop_assert_eq!(u.collect::<Vec<_>>(), union_u.into_iter().collect::<Vec<_>>());
                prop_assert_eq!(g.collect::<Vec<_>>(), union_g.into_iter().collect::<Vec<_>>());
                every
            } else {
                scope(reached, &pending, &records)
            };
            if first {
                // As the service does with records read from the store: each equal user
                // shared with the desired state, nothing else changed.
                let before = records.clone();
                share_users(&mut records, &live);
                share_groups(&mut records, &live);
                prop_assert_eq!(&before, &records);
                for (k, r) in &records.users {
                    if let Some(u) = live.user(k) {
                        prop_assert_eq!(**u == *r.pushed, Arc::ptr_eq(u, &r.pushed));
                    }
                }
                for (k, r) in &records.groups {
                    if let Some(g) = live.group(k) {
                        prop_assert_eq!(g.members == r.members, Arc::ptr_eq(&g.members, &r.members));
                    }
                }
            }
            first = false;
            let view = Fitted { desired: &live, fit: &fit };
            let ops = plan_keys(&view, &records, &policy, &planned.users, &planned.groups);
            prop_assert_eq!(&ops, &full_plan(&m, &users, &groups, &records, &policy));

            let moved = send(&mut records, &mut census, &ops, &answers, &mut next_id);
            refit(&mut records, &moved.records, &fit);
            // The counts followed change by change are the counts of the records.
            prop_assert_eq!(census, crate::status::Census::of(&records));
            pending = still_pending(&view, &records, &policy, &keys_of(&ops), &moved.records);
            known_changed = moved.known;
        }
    }
}
