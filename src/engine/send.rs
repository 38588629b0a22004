//! Sends one resolved request to the target, adopting existing objects instead of creating
//! duplicates, and reading a 404 as "already gone".

use std::collections::BTreeSet;

use crate::model::Key;
use crate::plan::apply::{Confirmation, Request};
use crate::state::records::{Origin, Snapshot};
use crate::target::{RemoteGroup, RemoteUser, Target, TargetError};

/// What a request came back with. An adopted object is returned as the target holds it: its
/// references are turned into keys by [`Sent::confirm`], against the records as they are when
/// the answer is handled (other requests may have been confirmed in between).
#[derive(Debug)]
pub(super) enum Sent {
    Confirmed(Confirmation),
    AdoptUser(RemoteUser),
    AdoptGroup(RemoteGroup),
    /// A create whose answer was lost, found on the target: it was carried out, it is ours.
    FoundUser(RemoteUser),
    FoundGroup(RemoteGroup),
}

impl Sent {
    pub(super) fn confirm(self, s: &Snapshot) -> Confirmation {
        let ours = |c: Confirmation| match c {
            Confirmation::Created {
                target_id,
                adopted_user,
                adopted_members,
                ..
            } => Confirmation::Created {
                target_id,
                origin: Origin::Created,
                adopted_user,
                adopted_members,
            },
            other => other,
        };
        match self {
            Sent::Confirmed(c) => c,
            Sent::AdoptUser(r) => adopt_user(s, r),
            Sent::AdoptGroup(r) => adopt_group(s, r),
            Sent::FoundUser(r) => ours(adopt_user(s, r)),
            Sent::FoundGroup(r) => ours(adopt_group(s, r)),
        }
    }
}

/// How many times a create whose answer was lost, and which is then not found on the target
/// (so it was not carried out), is sent again within the run.
const LOST_RESENDS: u32 = 2;

/// Sends one request. It needs nothing but the target and the request, so several may be in
/// flight at once.
pub(super) async fn send<T: Target>(target: &T, req: &Request) -> Result<Sent, TargetError> {
    let gone_ok = |r: Result<(), TargetError>| match r {
        Ok(()) => Ok(Sent::Confirmed(Confirmation::Done)),
        Err(e) if e.is_not_found() => Ok(Sent::Confirmed(Confirmation::Gone)),
        Err(e) => Err(e),
    };
    match req {
        Request::CreateUser {
            key,
            user,
            manager_id,
        } => {
            // Look before creating: a user with this userName may already be there (created by
            // hand, by another tool, or by a run whose answer was lost), unless a listing of
            // this pass says the name is free.
            if !target.user_surely_free(&user.user_name) {
                if let Some(remote) = target.find_user(&user.user_name).await? {
                    return Ok(Sent::AdoptUser(remote));
                }
            }
            let created = create_checked(
                "user",
                || target.create_user(key, user, manager_id.as_deref()),
                || async {
                    match target.find_user_by_key(key).await? {
                        Some(r) => Ok(Some(r)),
                        None => target.find_user(&user.user_name).await,
                    }
                },
            )
            .await?;
            match created {
                Created::Id(id) => Ok(created_confirmation(id)),
                Created::Found(remote) => Ok(Sent::FoundUser(remote)),
                Created::Conflict(e) => match target.find_user(&user.user_name).await? {
                    Some(remote) => Ok(Sent::AdoptUser(remote)),
                    None => Err(e),
                },
            }
        }
        Request::UpdateUser {
            target_id,
            changes,
            before,
            user,
            manager_id,
            ..
        } => gone_ok(
            target
                .update_user(target_id, changes, before, user, manager_id.as_deref())
                .await,
        ),
        Request::DeactivateUser { target_id, .. } => {
            gone_ok(target.deactivate_user(target_id).await)
        }
        Request::DeleteUser { target_id, .. } => gone_ok(target.delete_user(target_id).await),
        Request::CreateGroup { key, display_name } => {
            if !target.group_surely_free(display_name) {
                if let Some(remote) = target.find_group(display_name).await? {
                    return Ok(Sent::AdoptGroup(remote));
                }
            }
            let created = create_checked(
                "group",
                || target.create_group(key, display_name),
                || async {
                    match target.find_group_by_key(key).await? {
                        Some(g) => Ok(Some(g)),
                        None => target.find_group(display_name).await,
                    }
                },
            )
            .await?;
            match created {
                Created::Id(id) => Ok(created_confirmation(id)),
                Created::Found(remote) => Ok(Sent::FoundGroup(remote)),
                Created::Conflict(e) => match target.find_group(display_name).await? {
                    Some(remote) => Ok(Sent::AdoptGroup(remote)),
                    None => Err(e),
                },
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
                return Ok(Sent::Confirmed(Confirmation::Done));
            }
            let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
            gone_ok(target.remove_members(group_id, &ids).await)
        }
    }
}

/// What creating an object came to.
enum Created<R> {
    Id(String),
    /// The target says it exists already.
    Conflict(TargetError),
    /// The answer was lost, and a look-up found it: carried out.
    Found(R),
}

/// Creates an object; when the answer is lost, looks it up (`look_up`: by the key it was sent
/// with, then by name) before anything else: found, it was carried out; not found, it was not,
/// and it is sent again (at most [`LOST_RESENDS`] times).
async fn create_checked<R, C, CF, L, LF>(
    kind: &str,
    create: C,
    look_up: L,
) -> Result<Created<R>, TargetError>
where
    C: Fn() -> CF,
    CF: std::future::Future<Output = Result<String, TargetError>>,
    L: Fn() -> LF,
    LF: std::future::Future<Output = Result<Option<R>, TargetError>>,
{
    let mut resent = 0;
    loop {
        match create().await {
            Ok(id) => return Ok(Created::Id(id)),
            Err(e) if e.is_conflict() => return Ok(Created::Conflict(e)),
            Err(e) if e.is_lost() && resent < LOST_RESENDS => {
                if let Some(found) = look_up().await? {
                    return Ok(Created::Found(found));
                }
                resent += 1;
                tracing::warn!(error = %e, "a create's answer was lost and the {kind} is not on the target: sending it again");
            }
            Err(e) => return Err(e),
        }
    }
}

fn created_confirmation(id: String) -> Sent {
    Sent::Confirmed(Confirmation::Created {
        target_id: id,
        origin: Origin::Created,
        adopted_user: None,
        adopted_members: None,
    })
}

fn adopt_user(s: &Snapshot, remote: RemoteUser) -> Confirmation {
    let by_id = s.user_keys_by_id();
    let mut user = remote.user;
    user.manager = user.manager.and_then(|id| {
        by_id
            .get(id.as_str())
            .map(|k| crate::model::Text::from(&**k))
    });
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

#[cfg(test)]
mod tests {
    //! The race in which a user appears between the look-up and the creation cannot be staged
    //! with a real server, so a scripted target plays it; everything else is tested end to end.
    use std::sync::Mutex;

    use super::*;
    use crate::model::{FieldChange, User};
    use crate::target::TargetErrorKind;

    #[derive(Default)]
    struct Racing {
        lookups: Mutex<u32>,
    }

    fn unused<T>() -> Result<T, TargetError> {
        Err(TargetError {
            request: "unused".into(),
            kind: TargetErrorKind::Transport("not part of this script".into()),
        })
    }

    impl Target for Racing {
        fn describe(&self) -> String {
            "racing".into()
        }
        async fn find_user_by_key(&self, _: &Key) -> Result<Option<RemoteUser>, TargetError> {
            unused()
        }
        async fn find_group_by_key(&self, _: &Key) -> Result<Option<RemoteGroup>, TargetError> {
            unused()
        }
        async fn preflight(&self) -> Result<(), TargetError> {
            Ok(())
        }
        async fn find_user(&self, user_name: &str) -> Result<Option<RemoteUser>, TargetError> {
            let mut n = self.lookups.lock().unwrap();
            *n += 1;
            // Absent at the first look, present (created by someone else) at the second.
            Ok((*n > 1).then(|| RemoteUser {
                id: "theirs".into(),
                external_id: None,
                user: User {
                    user_name: user_name.into(),
                    active: true,
                    manager: Some("id-of-boss".into()),
                    ..Default::default()
                },
            }))
        }
        async fn create_user(
            &self,
            _: &Key,
            _: &User,
            _: Option<&str>,
        ) -> Result<String, TargetError> {
            Err(TargetError {
                request: "POST /Users".into(),
                kind: TargetErrorKind::Http {
                    status: 409,
                    code: Some("uniqueness".into()),
                    detail: None,
                },
            })
        }
        async fn update_user(
            &self,
            _: &str,
            _: &[FieldChange],
            _: &User,
            _: &User,
            _: Option<&str>,
        ) -> Result<(), TargetError> {
            unused()
        }
        async fn deactivate_user(&self, _: &str) -> Result<(), TargetError> {
            unused()
        }
        async fn delete_user(&self, _: &str) -> Result<(), TargetError> {
            Err(TargetError {
                request: "DELETE /Users/x".into(),
                kind: TargetErrorKind::Http {
                    status: 404,
                    code: None,
                    detail: None,
                },
            })
        }
        async fn find_group(&self, _: &str) -> Result<Option<RemoteGroup>, TargetError> {
            unused()
        }
        async fn create_group(&self, _: &Key, _: &str) -> Result<String, TargetError> {
            unused()
        }
        async fn rename_group(&self, _: &str, _: &str) -> Result<(), TargetError> {
            unused()
        }
        async fn add_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
            unused()
        }
        async fn remove_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
            unused()
        }
        async fn delete_group(&self, _: &str) -> Result<(), TargetError> {
            unused()
        }
        async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
            unused()
        }
        async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
            unused()
        }
    }

    #[tokio::test]
    async fn a_409_on_create_adopts_the_user_that_appeared_meanwhile() {
        let mut records = Snapshot::default();
        records.users.insert(
            "boss-key".into(),
            crate::state::records::UserRecord::new(
                "id-of-boss".into(),
                Origin::Created,
                User::default(),
            ),
        );
        let req = Request::CreateUser {
            key: "k".into(),
            user: User {
                user_name: "ann".into(),
                active: true,
                ..Default::default()
            }
            .into(),
            manager_id: None,
        };
        let conf = send(&Racing::default(), &req)
            .await
            .unwrap()
            .confirm(&records);
        match conf {
            Confirmation::Created {
                target_id,
                origin: Origin::Adopted,
                adopted_user: Some(u),
                ..
            } => {
                assert_eq!(target_id, "theirs");
                assert_eq!(
                    u.manager.as_deref(),
                    Some("boss-key"),
                    "manager id read back as a key"
                );
            }
            other => panic!("expected an adoption, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_404_on_delete_means_already_gone() {
        let req = Request::DeleteUser {
            key: "k".into(),
            target_id: "x".into(),
        };
        let conf = send(&Racing::default(), &req)
            .await
            .unwrap()
            .confirm(&Snapshot::default());
        assert_eq!(conf, Confirmation::Gone);
    }
}
