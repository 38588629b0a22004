//! The requests a resolved operation becomes on a REST target, for `test-mapping`: built from
//! the same events and values the client sends with, so what is shown is what is sent.

use serde_json::Value;

use super::template::{self, Vars};
use super::RestClient;
use crate::config::rest::{BodyFormat, Event};
use crate::plan::apply::Request;
use crate::target::Rendered;

impl RestClient {
    pub(crate) fn render(&self, req: &Request) -> Vec<Rendered> {
        let id_vars = |id: &str| {
            let mut v = Vars::default();
            v.set("id", id);
            v
        };
        match req {
            Request::CreateUser {
                key,
                user,
                manager_id,
            } => {
                let mut out = Vec::new();
                if self.has(Event::FindUser) {
                    let mut v = Vars::default();
                    v.set("userName", user.user_name.as_str());
                    out.push(self.rendered(
                        Event::FindUser,
                        &v,
                        Some("looked up first: an existing user with this userName is adopted, not duplicated"),
                    ));
                } else if self.has(Event::ListUsers) {
                    out.push(self.rendered(
                        Event::ListUsers,
                        &Vars::default(),
                        Some(
                            "the users are listed (once for a while) and matched by userName first",
                        ),
                    ));
                }
                let mut v = self.user_vars(user, manager_id.as_deref());
                v.set("externalId", &key[..]);
                out.push(self.rendered(Event::CreateUser, &v, None));
                out
            }
            Request::UpdateUser {
                target_id,
                changes,
                user,
                manager_id,
                ..
            } => self
                .update_steps(target_id, changes, user, manager_id.as_deref())
                .iter()
                .map(|(e, v)| self.rendered(*e, v, None))
                .collect(),
            Request::DeactivateUser { target_id, .. } => {
                vec![self.rendered(Event::DeactivateUser, &id_vars(target_id), None)]
            }
            Request::DeleteUser { target_id, .. } => {
                vec![self.rendered(Event::DeleteUser, &id_vars(target_id), None)]
            }
            Request::CreateGroup { key, display_name } => {
                let mut v = Vars::default();
                v.set("displayName", display_name.as_str())
                    .set("externalId", &key[..])
                    .set("members", Vec::<String>::new());
                vec![self.rendered(Event::CreateGroup, &v, None)]
            }
            Request::RenameGroup {
                target_id,
                display_name,
                ..
            } => {
                let mut v = id_vars(target_id);
                v.set("displayName", display_name.as_str());
                vec![self.rendered(Event::RenameGroup, &v, None)]
            }
            Request::DeleteGroup { target_id, .. } => {
                vec![self.rendered(Event::DeleteGroup, &id_vars(target_id), None)]
            }
            Request::AddMembers {
                group_id, members, ..
            } => self.rendered_members(group_id, members, true),
            Request::RemoveMembers {
                group_id, members, ..
            } => self.rendered_members(group_id, members, false),
        }
    }

    fn rendered_members(
        &self,
        id: &str,
        members: &[(crate::model::Key, String)],
        add: bool,
    ) -> Vec<Rendered> {
        let event = if add {
            Event::AddMembers
        } else {
            Event::RemoveMembers
        };
        let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
        if !self.has(event) {
            let mut v = Vars::default();
            v.set("id", id);
            let get = self.rendered(Event::GetGroup, &v, Some("the group's members are read"));
            v.set("members", ids);
            let set = self.rendered(
                Event::SetMembers,
                &v,
                Some(if add {
                    "the list read, with these members added, is sent whole ({members} shows only the change here)"
                } else {
                    "the list read, without these members, is sent whole ({members} shows only the change here)"
                }),
            );
            return vec![get, set];
        }
        if self.per_member(event) {
            ids.iter()
                .map(|m| {
                    let mut v = Vars::default();
                    v.set("id", id).set("member", m.as_str());
                    self.rendered(event, &v, None)
                })
                .collect()
        } else {
            let mut v = Vars::default();
            v.set("id", id).set("members", ids);
            vec![self.rendered(event, &v, None)]
        }
    }

    /// One event with its values, as it would be sent (or why it could not be).
    fn rendered(&self, event: Event, vars: &Vars, note: Option<&'static str>) -> Rendered {
        let Some(ev) = self.cfg.events.get(&event) else {
            return Rendered {
                method: "-".into(),
                path: format!("(no {} event)", event.name()),
                body: None,
                note,
            };
        };
        let mut vars = vars.clone();
        if let Some(ck) = &self.cfg.customer_key {
            vars.set("customerKey", ck.as_str());
        }
        if let Some(p) = ev.start_page {
            vars.set("page", p);
        }
        let path = template::url_path(&ev.path, &vars)
            .map(|p| format!("{}{p}", self.base.path().trim_end_matches('/')))
            .unwrap_or_else(|e| format!("(not sent: {e})"));
        let body = ev
            .body
            .as_ref()
            .map(|t| match template::body(t, &vars, self.cfg.missing) {
                Ok(doc) if ev.format == BodyFormat::Form => Value::String(
                    template::form(&doc).unwrap_or_else(|e| format!("(not sent: {e})")),
                ),
                Ok(doc) => doc,
                Err(e) => Value::String(format!("(not sent: {e})")),
            });
        Rendered {
            method: ev.method.to_string(),
            path,
            body,
            note,
        }
    }
}
