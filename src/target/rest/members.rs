//! Memberships on a REST target: one request per member, one per batch, or the group's list
//! read, changed and set whole (one change per group at a time).

use super::template::{self, Vars};
use super::RestClient;
use crate::config::rest::Event;
use crate::target::{TargetError, TargetErrorKind};

impl RestClient {
    /// Adds or removes members: per member or as a batch with the add/remove events, else by
    /// reading the group's members and setting the changed list.
    pub(super) async fn change_members(
        &self,
        id: &str,
        ids: &[String],
        add: bool,
    ) -> Result<(), TargetError> {
        let event = if add {
            Event::AddMembers
        } else {
            Event::RemoveMembers
        };
        if self.has(event) {
            let per_member = self.per_member(event);
            if per_member {
                for m in ids {
                    let mut v = Vars::default();
                    v.set("id", id).set("member", m.as_str());
                    match self.send(event, &v).await {
                        // Already there (adding) or already gone (removing): what was wanted.
                        Err(e) if (add && e.is_conflict()) || (!add && e.is_not_found()) => {}
                        other => {
                            other?;
                        }
                    }
                }
            } else {
                let mut v = Vars::default();
                v.set("id", id).set("members", ids.to_vec());
                self.send(event, &v).await?;
            }
            return Ok(());
        }
        let lock = {
            let mut locks = self.member_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(id.to_string()).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        let mut v = Vars::default();
        v.set("id", id);
        let groups = self.looked_up_groups(Event::GetGroup, &v).await?;
        let current = match groups.as_slice() {
            [g] if g.id == id => g.member_ids.clone(),
            [] => {
                return Err(TargetError {
                    request: format!("get_group {id}"),
                    kind: TargetErrorKind::Missing {
                        status: 404,
                        detail: Some("the group is not there".into()),
                    },
                })
            }
            _ => return Err(TargetError {
                request: format!("get_group {id}"),
                kind: TargetErrorKind::BadResponse(
                    "the answer is not the group asked for (its id differs, or several came back)"
                        .into(),
                ),
            }),
        };
        let mut next = current.clone();
        if add {
            for m in ids {
                if !next.contains(m) {
                    next.push(m.clone());
                }
            }
        } else {
            next.retain(|m| !ids.contains(m));
        }
        if next == current {
            return Ok(());
        }
        v.set("members", next);
        self.send(Event::SetMembers, &v).await.map(|_| ())
    }

    /// Whether members are added (or removed) one request per member: the event names
    /// `{member}` in its path, a header, or its body outside a per-member list.
    pub(super) fn per_member(&self, event: Event) -> bool {
        let Some(ev) = self.cfg.events.get(&event) else {
            return false;
        };
        let names_member =
            |t: &str| template::names(t).is_ok_and(|n| n.iter().any(|n| n == "member"));
        names_member(&ev.path)
            || ev.headers.iter().any(|(_, v)| names_member(v))
            || ev
                .body
                .as_ref()
                .is_some_and(template::names_member_outside_lists)
    }
}
