//! For a resync: what the target really holds, expressed as records, so that planning against it
//! repairs every drift. Pure; the lists come from the target client.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{DesiredState, Key};
use crate::state::records::{GroupRecord, Origin, Snapshot, UserRecord};
use crate::target::{RemoteGroup, RemoteUser};

/// Builds the records that describe the target as it is. An object is matched, in order, by the
/// id the store knows, by `externalId` equal to its key, or, for a desired object, by userName /
/// group name (adoption). Objects the gateway neither knows nor wants are left out, so they are
/// never touched.
pub fn observed(
    desired: &DesiredState,
    known: &Snapshot,
    users: &[RemoteUser],
    groups: &[RemoteGroup],
) -> Snapshot {
    let mut out = Snapshot::default();

    let user_by_id: HashMap<&str, &RemoteUser> = users.iter().map(|u| (u.id.as_str(), u)).collect();
    let user_by_ext: HashMap<String, &RemoteUser> = users
        .iter()
        .filter_map(|u| u.external_id.as_ref().map(|e| (e.to_lowercase(), u)))
        .collect();
    let user_by_name: HashMap<String, &RemoteUser> = users
        .iter()
        .map(|u| (u.user.user_name.to_lowercase(), u))
        .collect();

    let keys: BTreeSet<&Key> = known
        .users
        .keys()
        .chain(desired.users.keys())
        .chain(desired.held.iter())
        .collect();
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut matched: Vec<(&Key, &RemoteUser, Origin)> = Vec::new();
    for key in keys {
        let rec = known.users.get(key);
        let found = rec
            .and_then(|r| user_by_id.get(r.target_id.as_str()).copied())
            .or_else(|| user_by_ext.get(&key.to_lowercase()).copied())
            .or_else(|| {
                desired
                    .users
                    .get(key)
                    .and_then(|u| user_by_name.get(&u.user_name.to_lowercase()).copied())
            });
        if let Some(remote) = found {
            if claimed.insert(remote.id.as_str()) {
                matched.push((
                    key,
                    remote,
                    rec.map(|r| r.origin).unwrap_or(Origin::Adopted),
                ));
            }
        }
    }
    let key_by_id: BTreeMap<&str, &Key> = matched
        .iter()
        .map(|(k, r, _)| (r.id.as_str(), *k))
        .collect();
    for (key, remote, origin) in matched {
        let mut pushed = remote.user.clone();
        pushed.manager = pushed
            .manager
            .as_deref()
            .and_then(|id| key_by_id.get(id))
            .map(|k| (*k).clone());
        out.users.insert(
            key.clone(),
            UserRecord::new(remote.id.clone(), origin, pushed),
        );
    }

    let group_by_id: HashMap<&str, &RemoteGroup> =
        groups.iter().map(|g| (g.id.as_str(), g)).collect();
    let group_by_ext: HashMap<String, &RemoteGroup> = groups
        .iter()
        .filter_map(|g| g.external_id.as_ref().map(|e| (e.to_lowercase(), g)))
        .collect();
    let group_by_name: HashMap<String, &RemoteGroup> = groups
        .iter()
        .map(|g| (g.display_name.to_lowercase(), g))
        .collect();
    let gkeys: BTreeSet<&Key> = known.groups.keys().chain(desired.groups.keys()).collect();
    let mut gclaimed: BTreeSet<&str> = BTreeSet::new();
    for key in gkeys {
        let rec = known.groups.get(key);
        let found = rec
            .and_then(|r| group_by_id.get(r.target_id.as_str()).copied())
            .or_else(|| group_by_ext.get(&key.to_lowercase()).copied())
            .or_else(|| {
                desired
                    .groups
                    .get(key)
                    .and_then(|g| group_by_name.get(&g.display_name.to_lowercase()).copied())
            });
        let Some(remote) = found else { continue };
        if !gclaimed.insert(remote.id.as_str()) {
            continue;
        }
        let members = remote
            .member_ids
            .iter()
            .filter_map(|id| key_by_id.get(id.as_str()).map(|k| (*k).clone()))
            .collect();
        out.groups.insert(
            key.clone(),
            GroupRecord {
                target_id: remote.id.clone(),
                origin: rec.map(|r| r.origin).unwrap_or(Origin::Adopted),
                display_name: remote.display_name.clone(),
                members,
            },
        );
    }
    out
}

/// Member references of the gateway's groups that point at no user or group on the target (the
/// target deleted the object but kept the reference). A resync removes them: (group key, group
/// id, dangling member ids).
pub fn dangling_members(
    seen: &Snapshot,
    users: &[RemoteUser],
    groups: &[RemoteGroup],
) -> Vec<(Key, String, Vec<String>)> {
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
            .filter(|id| !existing.contains(id.as_str()))
            .cloned()
            .collect();
        if !dangling.is_empty() {
            out.push((key.clone(), rec.target_id.clone(), dangling));
        }
    }
    out
}
