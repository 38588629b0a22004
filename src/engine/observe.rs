//! For a resync: what the target really holds, expressed as records, so that planning against it
//! repairs every drift. Pure; the lists come from the target client.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{DesiredState, Key};
use crate::state::records::{GroupRecord, Origin, Snapshot, UserRecord};
use crate::target::{RemoteGroup, RemoteUser};

/// Builds the records that describe the target as it is. An object is matched, in order, by the
/// id the store knows, by `externalId` equal to its key (exactly), or, for a desired object, by
/// userName (in any ASCII case, as RFC 7643 compares it; no Unicode case mapping, which would let look-alikes through) or exact group name (adoption). Objects the
/// gateway neither knows nor wants are left out, so they are never touched.
pub(crate) fn observed(
    desired: &DesiredState,
    known: &Snapshot,
    users: &[RemoteUser],
    groups: &[RemoteGroup],
) -> Snapshot {
    observed_with(desired, known, users, groups, &Also::default())
}

/// Keys another gateway may have pushed while this one was standby (`[ha]`): the change feed
/// saw them change, the records do not know them. A take-over resync matches them by
/// externalId only, as it does the records' own keys: what the gateway before it created is
/// found (and removed, if the directory no longer has it); nothing else is taken.
#[derive(Debug, Default, Clone)]
pub(crate) struct Also {
    pub users: BTreeSet<Key>,
    pub groups: BTreeSet<Key>,
}

/// [`observed`], with keys matched by externalId besides the records' and the directory's.
pub(crate) fn observed_with(
    desired: &DesiredState,
    known: &Snapshot,
    users: &[RemoteUser],
    groups: &[RemoteGroup],
    also: &Also,
) -> Snapshot {
    let mut out = Snapshot::default();

    let user_by_id: HashMap<&str, &RemoteUser> = users.iter().map(|u| (u.id.as_str(), u)).collect();
    let user_by_ext = unique(
        users
            .iter()
            .filter_map(|u| u.external_id.as_deref().map(|e| (e, u))),
    );
    let user_by_name = unique(
        users
            .iter()
            .map(|u| (u.user.user_name.as_str().to_ascii_lowercase(), u)),
    );

    let keys: BTreeSet<&Key> = known
        .users
        .keys()
        .chain(desired.users.keys())
        .chain(desired.held.iter())
        .chain(also.users.iter())
        .collect();
    // Matched in three rounds over all keys, not key by key: an object the store knows for one
    // key is never taken by another key's externalId or name first (a renamed user's old
    // username taken by a newcomer whose key happens to sort first).
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut matched: Vec<(&Key, &RemoteUser, Origin)> = Vec::new();
    let mut done: BTreeSet<&Key> = BTreeSet::new();
    for round in 0..3 {
        for key in &keys {
            if done.contains(key) {
                continue;
            }
            let rec = known.users.get(*key);
            let found = match round {
                0 => rec.and_then(|r| user_by_id.get(r.target_id.as_str()).copied()),
                1 => user_by_ext.get(&***key).copied(),
                // By name, never an object that carries another live entry's key (that
                // entry's own object, renamed in the directory since).
                _ => desired
                    .users
                    .get(*key)
                    .and_then(|u| {
                        user_by_name
                            .get(&u.user_name.as_str().to_ascii_lowercase())
                            .copied()
                    })
                    .filter(|r| {
                        r.external_id.as_ref().is_none_or(|e| {
                            e.as_str() == &***key || !desired.users.contains_key(e.as_str())
                        })
                    }),
            };
            if let Some(remote) = found {
                if claimed.insert(remote.id.as_str()) {
                    done.insert(key);
                    matched.push((
                        key,
                        remote,
                        rec.map(|r| r.origin).unwrap_or(Origin::Adopted),
                    ));
                }
            }
        }
    }
    let key_by_id: BTreeMap<&str, &Key> = matched
        .iter()
        .map(|(k, r, _)| (r.id.as_str(), *k))
        .collect();
    // Some providers list group members by userName instead of id.
    let key_by_name: HashMap<String, &Key> = matched
        .iter()
        .map(|(k, r, _)| (r.user.user_name.as_str().to_ascii_lowercase(), *k))
        .collect();
    for (key, remote, origin) in matched {
        let mut pushed = remote.user.clone();
        pushed.manager = pushed
            .manager
            .as_deref()
            .and_then(|id| key_by_id.get(id))
            .map(|k| crate::model::Text::from(&***k));
        out.users.insert(
            key.clone(),
            UserRecord::new(remote.id.clone(), origin, pushed),
        );
    }

    let group_by_id: HashMap<&str, &RemoteGroup> =
        groups.iter().map(|g| (g.id.as_str(), g)).collect();
    let group_by_ext = unique(
        groups
            .iter()
            .filter_map(|g| g.external_id.as_deref().map(|e| (e, g))),
    );
    let group_by_name = unique(groups.iter().map(|g| (g.display_name.as_str(), g)));
    let gkeys: BTreeSet<&Key> = known
        .groups
        .keys()
        .chain(desired.groups.keys())
        .chain(also.groups.iter())
        .collect();
    let mut gclaimed: BTreeSet<&str> = BTreeSet::new();
    let mut gdone: BTreeSet<&Key> = BTreeSet::new();
    for round in 0..3 {
        for key in &gkeys {
            if gdone.contains(key) {
                continue;
            }
            let rec = known.groups.get(*key);
            let found = match round {
                0 => rec.and_then(|r| group_by_id.get(r.target_id.as_str()).copied()),
                1 => group_by_ext.get(&***key).copied(),
                _ => desired
                    .groups
                    .get(*key)
                    .and_then(|g| group_by_name.get(g.display_name.as_str()).copied()),
            };
            let Some(remote) = found else { continue };
            if !gclaimed.insert(remote.id.as_str()) {
                continue;
            }
            gdone.insert(key);
            let members = remote
                .member_ids
                .iter()
                .filter_map(|id| {
                    key_by_id
                        .get(id.as_str())
                        .or_else(|| key_by_name.get(&id.to_ascii_lowercase()))
                        .map(|k| (*k).clone())
                })
                .collect::<BTreeSet<Key>>();
            out.groups.insert(
                (*key).clone(),
                GroupRecord {
                    target_id: remote.id.clone(),
                    origin: rec.map(|r| r.origin).unwrap_or(Origin::Adopted),
                    display_name: remote.display_name.clone(),
                    members: members.into(),
                },
            );
        }
    }
    out
}

/// The values held by exactly one object: a value two objects share identifies neither, so
/// neither is adopted by it.
fn unique<K: std::hash::Hash + Eq, V: Copy>(items: impl Iterator<Item = (K, V)>) -> HashMap<K, V> {
    let mut seen: HashMap<K, Option<V>> = HashMap::new();
    for (k, v) in items {
        seen.entry(k)
            .and_modify(|slot| *slot = None)
            .or_insert(Some(v));
    }
    seen.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Member references of the gateway's groups that point at no user or group on the target (the
/// target deleted the object but kept the reference). A resync removes them: (group key, group
/// id, dangling member ids).
pub(crate) fn dangling_members(
    seen: &Snapshot,
    users: &[RemoteUser],
    groups: &[RemoteGroup],
) -> Vec<(Key, String, Vec<String>)> {
    // A provider that lists members by userName names existing users that way.
    let names: BTreeSet<String> = users
        .iter()
        .map(|u| u.user.user_name.as_str().to_ascii_lowercase())
        .collect();
    let existing: BTreeSet<&str> = users
        .iter()
        .map(|u| u.id.as_str())
        .chain(groups.iter().map(|g| g.id.as_str()))
        .collect();
    let by_id: HashMap<&str, &RemoteGroup> = groups.iter().map(|g| (g.id.as_str(), g)).collect();
    let mut out = Vec::new();
    for (key, rec) in &seen.groups {
        let Some(remote) = by_id.get(rec.target_id.as_str()) else {
            continue;
        };
        let dangling: Vec<String> = remote
            .member_ids
            .iter()
            .filter(|id| {
                !existing.contains(id.as_str()) && !names.contains(&id.to_ascii_lowercase())
            })
            .cloned()
            .collect();
        if !dangling.is_empty() {
            out.push((key.clone(), rec.target_id.clone(), dangling));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Group, User};

    fn remote(id: &str, name: &str, ext: Option<&str>) -> RemoteUser {
        RemoteUser {
            id: id.into(),
            external_id: ext.map(str::to_string),
            user: User {
                user_name: name.into(),
                active: true,
                ..Default::default()
            },
        }
    }

    fn group(id: &str, name: &str, members: &[&str]) -> RemoteGroup {
        RemoteGroup {
            id: id.into(),
            external_id: None,
            display_name: name.into(),
            member_ids: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn desired() -> DesiredState {
        let mut d = DesiredState::default();
        for (k, n) in [("k-ann", "ann"), ("k-bob", "bob"), ("k-cy", "cy")] {
            d.users.insert(
                k.into(),
                User {
                    user_name: n.into(),
                    active: true,
                    ..Default::default()
                }
                .into(),
            );
        }
        d.groups.insert(
            "g-eng".into(),
            Group {
                display_name: "Engineering".into(),
                members: BTreeSet::from([crate::model::Key::from("k-ann")]).into(),
            },
        );
        d
    }

    #[test]
    fn only_exact_matches_are_adopted_and_members_resolve_by_id_or_user_name() {
        let users = vec![
            remote("1", "ANN", None),            // userName in another case: ours
            remote("2", "bobby", Some("K-BOB")), // externalId in another case: not ours
            remote("3", "cy", None),             // two "cy": neither is adopted
            remote("4", "Cy", None),
            remote("5", "dan", Some("k-stranger")), // a stranger
        ];
        let groups = vec![
            group("g1", "engineering", &["1"]), // another case: not ours
            group("g2", "Engineering", &["ann", "5"]), // members listed by userName
        ];
        let seen = observed(&desired(), &Snapshot::default(), &users, &groups);
        let ids: BTreeMap<&str, &str> = seen
            .users
            .iter()
            .map(|(k, r)| (&**k, r.target_id.as_str()))
            .collect();
        assert_eq!(ids, BTreeMap::from([("k-ann", "1")]));
        let eng = &seen.groups["g-eng"];
        assert_eq!(eng.target_id, "g2");
        assert_eq!(*eng.members, BTreeSet::from([Key::from("k-ann")]));
        // Members listed by userName are not dangling: resync must not remove them.
        assert!(dangling_members(&seen, &users, &groups).is_empty());
    }

    #[test]
    fn an_object_the_store_knows_is_never_taken_by_another_key_first() {
        // "a-new" (sorting first) wants the userName "carol"; the object named carol is the
        // one the store holds for "z-old" (renamed to carol2 in the directory; the target
        // could not rename it).
        let mut d = DesiredState::default();
        for (k, n) in [("a-new", "carol"), ("z-old", "carol2")] {
            d.users.insert(
                k.into(),
                User {
                    user_name: n.into(),
                    active: true,
                    ..Default::default()
                }
                .into(),
            );
        }
        let mut known = Snapshot::default();
        known.users.insert(
            "z-old".into(),
            UserRecord::new(
                "carol".into(),
                Origin::Created,
                User {
                    user_name: "carol2".into(),
                    active: true,
                    ..Default::default()
                },
            ),
        );
        let users = vec![remote("carol", "carol", None)];
        let seen = observed(&d, &known, &users, &[]);
        assert_eq!(seen.users["z-old"].target_id, "carol");
        assert!(!seen.users.contains_key("a-new"));
        // The store lost: the object still carries z-old's key, so a-new never takes it by
        // name (it is created; z-old's object is left as it is).
        let users = vec![remote("carol", "carol", Some("z-old"))];
        let seen = observed(&d, &Snapshot::default(), &users, &[]);
        assert_eq!(seen.users["z-old"].target_id, "carol");
        assert!(!seen.users.contains_key("a-new"));
        let seen = observed(
            &d,
            &Snapshot::default(),
            &[
                remote("c2", "carol", Some("z-old")),
                remote("c3", "carol2", Some("z-old")),
            ],
            &[],
        );
        assert!(!seen.users.contains_key("a-new"), "{:?}", seen.users);
    }

    proptest::proptest! {
        /// Whatever the target holds, a user is adopted only by its exact externalId or by a
        /// userName (any case) that no other target user shares; nothing else is touched.
        #[test]
        fn no_look_alike_is_ever_adopted(
            wanted in proptest::collection::btree_map("k[0-3]", "[aAbB]{1,2}", 0..4),
            present in proptest::collection::vec(("[aAbB]{1,2}", proptest::option::of("[kK][0-5]")), 0..8),
        ) {
            let mut d = DesiredState::default();
            for (k, n) in &wanted {
                d.users.insert(k.as_str().into(), User { user_name: n.as_str().into(), active: true, ..Default::default() }.into());
            }
            let users: Vec<RemoteUser> = present
                .iter()
                .enumerate()
                .map(|(i, (n, e))| remote(&format!("id{i}"), n, e.as_deref()))
                .collect();
            let seen = observed(&d, &Snapshot::default(), &users, &[]);
            for (key, rec) in &seen.users {
                let r = users.iter().find(|u| u.id == rec.target_id).unwrap();
                let by_key = r.external_id.as_deref() == Some(&**key);
                let name = d.users[key].user_name.as_str().to_ascii_lowercase();
                let same_name = users.iter().filter(|u| u.user.user_name.as_str().to_ascii_lowercase() == name).count();
                let by_name = r.user.user_name.as_str().to_ascii_lowercase() == name && same_name == 1;
                proptest::prop_assert!(by_key || by_name, "{key} adopted {r:?}");
            }
        }
    }
}
