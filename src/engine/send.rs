//! Sends one resolved request to the target, adopting existing objects instead of creating
//! duplicates, and reading a 404 as "already gone".

use std::collections::BTreeSet;

use crate::model::Key;
use crate::plan::apply::{Confirmation, Request};
use crate::state::records::{Origin, Snapshot};
use crate::target::{RemoteGroup, RemoteUser, Target, TargetError};

pub async fn send<T: Target>(
    target: &T,
    s: &Snapshot,
    req: &Request,
) -> Result<Confirmation, TargetError> {
    let gone_ok = |r: Result<(), TargetError>| match r {
        Ok(()) => Ok(Confirmation::Done),
        Err(e) if e.is_not_found() => Ok(Confirmation::Gone),
        Err(e) => Err(e),
    };
    match req {
        Request::CreateUser {
            key,
            user,
            manager_id,
        } => {
            // Look before creating: a user with this userName may already be there (created by
            // hand, by another tool, or by a run whose answer was lost).
            if let Some(remote) = target.find_user(&user.user_name).await? {
                return Ok(adopt_user(s, remote));
            }
            match target.create_user(key, user, manager_id.as_deref()).await {
                Ok(id) => Ok(Confirmation::Created {
                    target_id: id,
                    origin: Origin::Created,
                    adopted_user: None,
                    adopted_members: None,
                }),
                Err(e) if e.is_conflict() => match target.find_user(&user.user_name).await? {
                    Some(remote) => Ok(adopt_user(s, remote)),
                    None => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Request::UpdateUser {
            target_id,
            changes,
            user,
            manager_id,
            ..
        } => gone_ok(
            target
                .update_user(target_id, changes, user, manager_id.as_deref())
                .await,
        ),
        Request::DeactivateUser { target_id, .. } => {
            gone_ok(target.deactivate_user(target_id).await)
        }
        Request::DeleteUser { target_id, .. } => gone_ok(target.delete_user(target_id).await),
        Request::CreateGroup { key, display_name } => {
            if let Some(remote) = target.find_group(display_name).await? {
                return Ok(adopt_group(s, remote));
            }
            match target.create_group(key, display_name).await {
                Ok(id) => Ok(Confirmation::Created {
                    target_id: id,
                    origin: Origin::Created,
                    adopted_user: None,
                    adopted_members: None,
                }),
                Err(e) if e.is_conflict() => match target.find_group(display_name).await? {
                    Some(remote) => Ok(adopt_group(s, remote)),
                    None => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Request::RenameGroup {
            target_id,
            display_name,
            ..
        } => gone_ok(target.rename_group(target_id, display_name).await),
        Request::DeleteGroup { target_id, .. } => gone_ok(target.delete_group(target_id).await),
        Request::AddMembers {
            group_id, members, ..
        } => {
            let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
            gone_ok(target.add_members(group_id, &ids).await)
        }
        Request::RemoveMembers {
            group_id, members, ..
        } => {
            if members.is_empty() {
                return Ok(Confirmation::Done);
            }
            let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
            gone_ok(target.remove_members(group_id, &ids).await)
        }
    }
}

fn adopt_user(s: &Snapshot, remote: RemoteUser) -> Confirmation {
    let by_id = s.user_keys_by_id();
    let mut user = remote.user;
    user.manager = user.manager.and_then(|id| by_id.get(&id).cloned());
    Confirmation::Created {
        target_id: remote.id,
        origin: Origin::Adopted,
        adopted_user: Some(user),
        adopted_members: None,
    }
}

fn adopt_group(s: &Snapshot, remote: RemoteGroup) -> Confirmation {
    let by_id = s.user_keys_by_id();
    let members: BTreeSet<Key> = remote
        .member_ids
        .iter()
        .filter_map(|id| by_id.get(id).cloned())
        .collect();
    Confirmation::Created {
        target_id: remote.id,
        origin: Origin::Adopted,
        adopted_user: None,
        adopted_members: Some(members),
    }
}
