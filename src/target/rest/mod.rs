//! A REST target configured per event, as miniOrange's Custom Provisioning App is: each thing the
//! gateway does (create a user, list groups, ...) is one request whose method, path, headers and
//! body are templates over the object's canonical fields. Look-ups never trust the server: an
//! object is adopted only when the field looked up really matches.

mod answer;
mod list;
pub(crate) mod template;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use self::answer::Judge;
use self::template::Vars;
use super::http::{Body, HttpCore, Outgoing};
use super::{RemoteGroup, RemoteUser, Target, TargetError, TargetErrorKind};
use crate::config::rest::{BodyFormat, Event, RestConfig};
use crate::config::TargetConfig;
use crate::model::{FieldChange, FieldValue, Key, User, UserField};

/// How long a listing used for look-ups is reused within the service's passes.
const INDEX_AGE: Duration = Duration::from_secs(300);

/// A REST API driven by `[target.events.*]`.
pub(crate) struct RestClient {
    core: HttpCore,
    /// `target.url` without a trailing slash: event paths are appended to it.
    base: url::Url,
    cfg: RestConfig,
    users: tokio::sync::Mutex<Option<(Instant, Vec<RemoteUser>)>>,
    groups: tokio::sync::Mutex<Option<(Instant, Vec<RemoteGroup>)>>,
    /// One membership change per group at a time where members are set as a whole list (read,
    /// change, write back).
    member_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl RestClient {
    pub(crate) fn new(cfg: &TargetConfig) -> Result<RestClient, String> {
        let rest = cfg
            .rest
            .clone()
            .ok_or_else(|| "a REST target needs [target.events]".to_string())?;
        let core = HttpCore::new(cfg, "application/json")?;
        let mut base = cfg.url.clone();
        let trimmed = base.path().trim_end_matches('/').to_string();
        base.set_path(&trimmed);
        let has = |e: Event| rest.events.contains_key(&e);
        if !has(Event::CreateGroup) {
            tracing::info!(
                "the target has no create_group event: groups and memberships are not pushed"
            );
        }
        if !has(Event::ListUsers) {
            tracing::warn!("the target has no list_users event: it cannot be read back, so resync cannot see drift made on the target (it runs as a sync)");
        }
        if !has(Event::FindUser) && !has(Event::ListUsers) {
            tracing::warn!("the target has neither find_user nor list_users: a user is created without first looking for an account of that name, and a create whose answer is lost may leave a duplicate");
        }
        Ok(RestClient {
            core,
            base,
            cfg: rest,
            users: Default::default(),
            groups: Default::default(),
            member_locks: Default::default(),
        })
    }

    fn has(&self, e: Event) -> bool {
        self.cfg.events.contains_key(&e)
    }

    /// Sends an event with its templates filled from `vars`.
    async fn send(&self, event: Event, vars: &Vars) -> Result<Value, TargetError> {
        let ev = self.event(event)?;
        let path = template::url_path(&ev.path, vars)
            .map_err(|e| request_error(&format!("{} {}", ev.method, ev.path), e))?;
        let joined = format!("{}{}", self.base.as_str().trim_end_matches('/'), path);
        let label = format!("{} {}", ev.method, path.split('?').next().unwrap_or(""));
        let url = url::Url::parse(&joined).map_err(|e| request_error(&label, e.to_string()))?;
        if url.origin() != self.base.origin() {
            return Err(request_error(
                &label,
                "the path leaves target.url's origin".into(),
            ));
        }
        self.send_to(event, url, vars, false).await
    }

    /// Sends an event to `url` (the body left out when `no_body`: a next-page URL).
    async fn send_to(
        &self,
        event: Event,
        url: url::Url,
        vars: &Vars,
        no_body: bool,
    ) -> Result<Value, TargetError> {
        let ev = self.event(event)?;
        let mut vars = vars.clone();
        if let Some(ck) = &self.cfg.customer_key {
            vars.set("customerKey", ck.as_str());
        }
        let label = format!("{} {}", ev.method, url.path());
        let mut headers = Vec::new();
        for (name, value) in &ev.headers {
            let v = template::header_value(value, &vars).map_err(|e| request_error(&label, e))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| request_error(&label, e.to_string()))?;
            let v = HeaderValue::from_str(&v).map_err(|e| request_error(&label, e.to_string()))?;
            headers.push((name, v));
        }
        let body = match (&ev.body, no_body) {
            (Some(t), false) => {
                let doc = template::body(t, &vars, self.cfg.missing)
                    .map_err(|e| request_error(&label, e))?;
                Some(match ev.format {
                    BodyFormat::Json => Body::json(&doc, "application/json")
                        .map_err(|e| request_error(&label, e))?,
                    BodyFormat::Form => Body {
                        content_type: "application/x-www-form-urlencoded",
                        bytes: template::form(&doc)
                            .map_err(|e| request_error(&label, e))?
                            .into_bytes(),
                    },
                })
            }
            _ => None,
        };
        let req = Outgoing {
            method: ev.method.clone(),
            url,
            headers: &headers,
            body: body.as_ref(),
            label: &label,
        };
        let judge = Judge {
            rules: &self.cfg.response,
            expect: &ev.expect,
        };
        self.core.call(&req, &judge).await
    }

    fn event(&self, event: Event) -> Result<&crate::config::rest::EventConfig, TargetError> {
        self.cfg.events.get(&event).ok_or_else(|| TargetError {
            request: event.name().to_string(),
            kind: TargetErrorKind::Request(format!(
                "the target has no {} event (target.events.{})",
                event.name(),
                event.name()
            )),
        })
    }

    fn user_vars(&self, user: &User, manager_id: Option<&str>) -> Vars {
        let mut v = Vars::default();
        v.set("userName", user.user_name.as_str())
            .set_opt("givenName", user.given_name.as_deref())
            .set_opt("familyName", user.family_name.as_deref())
            .set_opt("displayName", user.display_name.as_deref())
            .set_opt("email", user.email.as_deref())
            .set("active", user.active)
            .set_opt("title", user.title.as_deref())
            .set_opt("department", user.department.as_deref())
            .set_opt("employeeNumber", user.employee_number.as_deref())
            .set_opt("manager", manager_id);
        for (name, value) in &user.custom {
            v.set(name, value.as_str());
        }
        v
    }

    /// The created object's id: where the answer holds it, or the value sent that names it.
    fn created_id(&self, event: Event, doc: &Value, vars: &Vars) -> Result<String, TargetError> {
        let ev = self.event(event)?;
        let label = format!("{} {}", ev.method, ev.path);
        let id = match (&ev.id, &ev.id_from) {
            (Some(p), _) => template::lookup(doc, p).map(|v| answer::text_of(&v)),
            (None, Some(from)) => vars.get(from).map(answer::text_of),
            (None, None) => None,
        };
        id.filter(|s| !s.is_empty() && s != "null")
            .ok_or_else(|| TargetError {
                request: label,
                kind: TargetErrorKind::BadResponse(format!(
                    "the answer to a create has no id at `{}` (target.events.{}.id)",
                    ev.id.as_deref().unwrap_or(""),
                    event.name()
                )),
            })
    }

    /// The users as listed (one listing reused for a while): for look-ups where the API has
    /// no look-up event.
    async fn user_index(&self) -> Result<Vec<RemoteUser>, TargetError> {
        let mut held = self.users.lock().await;
        if let Some((at, users)) = held.as_ref() {
            if at.elapsed() < INDEX_AGE {
                return Ok(users.clone());
            }
        }
        let users = self.list_users().await?;
        *held = Some((Instant::now(), users.clone()));
        Ok(users)
    }

    async fn group_index(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        let mut held = self.groups.lock().await;
        if let Some((at, groups)) = held.as_ref() {
            if at.elapsed() < INDEX_AGE {
                return Ok(groups.clone());
            }
        }
        let groups = self.list_groups().await?;
        *held = Some((Instant::now(), groups.clone()));
        Ok(groups)
    }

    /// After a create failed or its answer was lost, the next look-up must see the target as
    /// it is now, not a listing from before.
    async fn forget_index(&self) {
        *self.users.lock().await = None;
        *self.groups.lock().await = None;
    }

    /// Users the look-up event answers for `vars` (nothing when the target says not found).
    async fn looked_up_users(
        &self,
        event: Event,
        vars: &Vars,
    ) -> Result<Vec<RemoteUser>, TargetError> {
        let doc = match self.send(event, vars).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let ev = self.event(event)?;
        let items = answer::items(&doc, ev.data.as_deref()).map_err(|m| TargetError {
            request: format!("{} {}", ev.method, ev.path),
            kind: TargetErrorKind::BadResponse(m),
        })?;
        Ok(items
            .iter()
            .filter_map(|i| answer::user(i, &self.cfg.user_fields, &self.cfg.custom))
            .collect())
    }

    async fn looked_up_groups(
        &self,
        event: Event,
        vars: &Vars,
    ) -> Result<Vec<RemoteGroup>, TargetError> {
        let doc = match self.send(event, vars).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let ev = self.event(event)?;
        let items = answer::items(&doc, ev.data.as_deref()).map_err(|m| TargetError {
            request: format!("{} {}", ev.method, ev.path),
            kind: TargetErrorKind::BadResponse(m),
        })?;
        Ok(items
            .iter()
            .filter_map(|i| answer::group(i, &self.cfg.group_fields))
            .collect())
    }

    /// Adds or removes members: per member or as a batch with the add/remove events, else by
    /// reading the group's members and setting the changed list.
    async fn change_members(&self, id: &str, ids: &[String], add: bool) -> Result<(), TargetError> {
        let event = if add {
            Event::AddMembers
        } else {
            Event::RemoveMembers
        };
        if let Some(ev) = self.cfg.events.get(&event) {
            let per_member = template::names(&ev.path)
                .map(|n| n.iter().any(|n| n == "member"))
                .unwrap_or(false)
                || ev.headers.iter().any(|(_, v)| {
                    template::names(v).is_ok_and(|n| n.iter().any(|n| n == "member"))
                })
                || ev
                    .body
                    .as_ref()
                    .is_some_and(template::names_member_outside_lists);
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

    /// The one user among `found` whose `field` is `value`; an error when several are.
    fn only_match(
        found: Vec<RemoteUser>,
        what: &str,
        matches: impl Fn(&RemoteUser) -> bool,
    ) -> Result<Option<RemoteUser>, TargetError> {
        let mut hits: Vec<RemoteUser> = found.into_iter().filter(|u| matches(u)).collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(hits.pop()),
            n => Err(TargetError {
                request: format!("look-up of {what}"),
                kind: TargetErrorKind::BadResponse(format!(
                    "{n} users on the target match; none is adopted (remove the duplicates)"
                )),
            }),
        }
    }

    fn only_group(
        found: Vec<RemoteGroup>,
        what: &str,
        matches: impl Fn(&RemoteGroup) -> bool,
    ) -> Result<Option<RemoteGroup>, TargetError> {
        let mut hits: Vec<RemoteGroup> = found.into_iter().filter(|g| matches(g)).collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(hits.pop()),
            n => Err(TargetError {
                request: format!("look-up of {what}"),
                kind: TargetErrorKind::BadResponse(format!(
                    "{n} groups on the target match; none is adopted (remove the duplicates)"
                )),
            }),
        }
    }
}

fn request_error(label: &str, reason: String) -> TargetError {
    TargetError {
        request: label.to_string(),
        kind: TargetErrorKind::Request(reason),
    }
}

/// userName compared as SCIM does: ASCII letters without case, nothing else folded.
fn same_user_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Target for RestClient {
    fn describe(&self) -> String {
        format!("REST {}", self.base)
    }

    async fn preflight(&self) -> Result<(), TargetError> {
        // Credentials first (an OAuth 2.0 token is fetched now), then one page of users when
        // the API can list them: a wrong data key is found before anything is sent.
        self.core.auth_headers().await?;
        if let Some(ev) = self.cfg.events.get(&Event::ListUsers) {
            let mut v = Vars::default();
            if let Some(p) = ev.start_page {
                v.set("page", p);
            }
            let doc = self.send(Event::ListUsers, &v).await?;
            answer::items(&doc, ev.data.as_deref()).map_err(|m| TargetError {
                request: format!("{} {}", ev.method, ev.path),
                kind: TargetErrorKind::BadResponse(m),
            })?;
        }
        Ok(())
    }

    async fn reachable(&self) -> bool {
        let Ok(auth) = self.core.auth_headers().await else {
            return false;
        };
        let req = Outgoing {
            method: reqwest::Method::GET,
            url: self.base.clone(),
            headers: &[],
            body: None,
            label: "GET /",
        };
        let judge = Judge {
            rules: &self.cfg.response,
            expect: &[],
        };
        match self.core.call_once(&req, &judge, &auth).await {
            Ok(_) => true,
            Err((e, _, _)) => match e.kind {
                TargetErrorKind::Http { status, .. } => !matches!(status, 401 | 403),
                TargetErrorKind::Transport(_) | TargetErrorKind::Timeout => false,
                _ => true,
            },
        }
    }

    async fn begin_pass(&self) {
        let mut users = self.users.lock().await;
        if users
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() >= INDEX_AGE)
        {
            *users = None;
        }
        drop(users);
        let mut groups = self.groups.lock().await;
        if groups
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() >= INDEX_AGE)
        {
            *groups = None;
        }
    }

    fn holds_groups(&self) -> bool {
        self.has(Event::CreateGroup)
    }

    fn can_list(&self) -> bool {
        self.has(Event::ListUsers)
    }

    async fn find_user(&self, user_name: &str) -> Result<Option<RemoteUser>, TargetError> {
        let found = if self.has(Event::FindUser) {
            let mut v = Vars::default();
            v.set("userName", user_name);
            self.looked_up_users(Event::FindUser, &v).await?
        } else if self.has(Event::ListUsers) {
            self.user_index().await?
        } else {
            return Ok(None);
        };
        Self::only_match(found, "a userName", |u| {
            same_user_name(&u.user.user_name, user_name)
        })
    }

    async fn find_user_by_key(&self, key: &Key) -> Result<Option<RemoteUser>, TargetError> {
        let found = if self.has(Event::FindUserByKey) {
            let mut v = Vars::default();
            v.set("externalId", key.as_str());
            self.looked_up_users(Event::FindUserByKey, &v).await?
        } else if self.has(Event::ListUsers)
            && self.cfg.user_fields.paths.contains_key("externalId")
        {
            // Fresh: this look-up follows a create whose outcome is unknown.
            self.forget_index().await;
            self.user_index().await?
        } else {
            return Ok(None);
        };
        Self::only_match(found, "an externalId", |u| {
            u.external_id.as_deref() == Some(key.as_str())
        })
    }

    async fn find_group_by_key(&self, key: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        let found = if self.has(Event::FindGroupByKey) {
            let mut v = Vars::default();
            v.set("externalId", key.as_str());
            self.looked_up_groups(Event::FindGroupByKey, &v).await?
        } else if self.has(Event::ListGroups)
            && self.cfg.group_fields.paths.contains_key("externalId")
        {
            self.forget_index().await;
            self.group_index().await?
        } else {
            return Ok(None);
        };
        Self::only_group(found, "an externalId", |g| {
            g.external_id.as_deref() == Some(key.as_str())
        })
    }

    async fn create_user(
        &self,
        key: &Key,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<String, TargetError> {
        let mut v = self.user_vars(user, manager_id);
        v.set("externalId", key.as_str());
        match self.send(Event::CreateUser, &v).await {
            Ok(doc) => self.created_id(Event::CreateUser, &doc, &v),
            Err(e) => {
                self.forget_index().await;
                Err(e)
            }
        }
    }

    async fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        _before: &User,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<(), TargetError> {
        let reactivated = changes
            .iter()
            .any(|c| c.field == UserField::Active && c.value == FieldValue::Bool(true));
        let update_names_active = self
            .cfg
            .events
            .get(&Event::UpdateUser)
            .and_then(|e| e.body.as_ref())
            .and_then(|b| template::body_names(b).ok())
            .is_some_and(|n| n.iter().any(|n| n == "active"));
        let only_active = changes.iter().all(|c| c.field == UserField::Active);
        if !(only_active && reactivated && !update_names_active) {
            let mut v = self.user_vars(user, manager_id);
            v.set("id", id);
            self.send(Event::UpdateUser, &v).await?;
        }
        if reactivated && !update_names_active {
            let mut v = Vars::default();
            v.set("id", id);
            self.send(Event::ActivateUser, &v).await?;
        }
        Ok(())
    }

    async fn deactivate_user(&self, id: &str) -> Result<(), TargetError> {
        let mut v = Vars::default();
        v.set("id", id);
        self.send(Event::DeactivateUser, &v).await.map(|_| ())
    }

    async fn delete_user(&self, id: &str) -> Result<(), TargetError> {
        let mut v = Vars::default();
        v.set("id", id);
        self.send(Event::DeleteUser, &v).await.map(|_| ())
    }

    async fn find_group(&self, display_name: &str) -> Result<Option<RemoteGroup>, TargetError> {
        let found = if self.has(Event::FindGroup) {
            let mut v = Vars::default();
            v.set("displayName", display_name);
            self.looked_up_groups(Event::FindGroup, &v).await?
        } else if self.has(Event::ListGroups) {
            self.group_index().await?
        } else {
            return Ok(None);
        };
        Self::only_group(found, "a group name", |g| g.display_name == display_name)
    }

    async fn create_group(&self, key: &Key, display_name: &str) -> Result<String, TargetError> {
        let mut v = Vars::default();
        v.set("displayName", display_name)
            .set("externalId", key.as_str())
            .set("members", Vec::<String>::new());
        match self.send(Event::CreateGroup, &v).await {
            Ok(doc) => self.created_id(Event::CreateGroup, &doc, &v),
            Err(e) => {
                self.forget_index().await;
                Err(e)
            }
        }
    }

    async fn rename_group(&self, id: &str, display_name: &str) -> Result<(), TargetError> {
        let mut v = Vars::default();
        v.set("id", id).set("displayName", display_name);
        self.send(Event::RenameGroup, &v).await.map(|_| ())
    }

    async fn add_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        self.change_members(id, member_ids, true).await
    }

    async fn remove_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        self.change_members(id, member_ids, false).await
    }

    async fn delete_group(&self, id: &str) -> Result<(), TargetError> {
        let mut v = Vars::default();
        v.set("id", id);
        self.send(Event::DeleteGroup, &v).await.map(|_| ())
    }

    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        Ok(self
            .list_raw(Event::ListUsers)
            .await?
            .iter()
            .filter_map(|i| answer::user(i, &self.cfg.user_fields, &self.cfg.custom))
            .collect())
    }

    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        Ok(self
            .list_raw(Event::ListGroups)
            .await?
            .iter()
            .filter_map(|i| answer::group(i, &self.cfg.group_fields))
            .collect())
    }
}

#[cfg(test)]
mod tests;
