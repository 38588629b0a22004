//! A REST target configured per event, as miniOrange's Custom Provisioning App is: each thing the
//! gateway does (create a user, list groups, ...) is one request whose method, path, headers and
//! body are templates over the object's canonical fields. Look-ups never trust the server: an
//! object is adopted only when the field looked up really matches.

mod answer;
mod list;
mod lookup;
mod members;
mod preview;
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
/// A listing younger than this is taken as the target's present state for an adoption.
const FRESH: Duration = Duration::from_secs(5);
/// How long a preflight's check of the listing is reused.
const RECHECK: Duration = Duration::from_secs(600);

/// A REST API driven by `[target.events.*]`.
pub(crate) struct RestClient {
    core: HttpCore,
    /// `target.url` without a trailing slash: event paths are appended to it.
    base: url::Url,
    cfg: RestConfig,
    /// When the first page of users was last checked to read as configured (preflight).
    listing_checked: std::sync::Mutex<Option<Instant>>,
    /// The user fields some user event sends (the others cannot reach the target).
    sent: std::collections::BTreeSet<String>,
    users: tokio::sync::Mutex<Option<(Instant, Vec<RemoteUser>)>>,
    groups: tokio::sync::Mutex<Option<(Instant, Vec<RemoteGroup>)>>,
    /// One membership change per group at a time where members are set as a whole list (read,
    /// change, write back).
    member_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Names listed in this pass for creates without look-ups.
    pub(super) taken: crate::target::taken::SharedTaken,
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
        let mut sent = std::collections::BTreeSet::new();
        for e in [Event::CreateUser, Event::UpdateUser] {
            if let Some(ev) = rest.events.get(&e) {
                let mut names = template::names(&ev.path).unwrap_or_default();
                for (_, h) in &ev.headers {
                    names.extend(template::names(h).unwrap_or_default());
                }
                if let Some(b) = &ev.body {
                    names.extend(template::body_names(b).unwrap_or_default());
                }
                sent.extend(names);
            }
        }
        Ok(RestClient {
            core,
            base,
            sent,
            listing_checked: Default::default(),
            cfg: rest,
            users: Default::default(),
            groups: Default::default(),
            member_locks: Default::default(),
            taken: Default::default(),
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
            let Some(v) =
                template::header_value(value, &vars).map_err(|e| request_error(&label, e))?
            else {
                continue;
            };
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
                            .into_bytes()
                            .into(),
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
                kind: TargetErrorKind::Config(format!(
                    "the target answered the create, but its answer has no id at `{}`: fix \
                     target.events.{}.id (the object was probably created; the next run finds \
                     it by its name or key instead of creating it again)",
                    ev.id.as_deref().unwrap_or(""),
                    event.name()
                )),
            })
    }

    /// Whether an event's body (or path, or headers) names `name`.
    fn event_names(&self, event: Event, name: &str) -> bool {
        let Some(ev) = self.cfg.events.get(&event) else {
            return false;
        };
        let has = |t: &str| template::names(t).is_ok_and(|n| n.iter().any(|x| x == name));
        has(&ev.path)
            || ev.headers.iter().any(|(_, v)| has(v))
            || ev
                .body
                .as_ref()
                .and_then(|b| template::body_names(b).ok())
                .is_some_and(|n| n.iter().any(|x| x == name))
    }

    /// The requests an update becomes: the update event (unless the only change is a
    /// reactivation its body cannot say), then the activation event where the update body does
    /// not carry `{active}`.
    fn update_steps(
        &self,
        id: &str,
        changes: &[FieldChange],
        user: &User,
        manager_id: Option<&str>,
    ) -> Vec<(Event, Vars)> {
        let switched = |on: bool| {
            changes
                .iter()
                .any(|c| c.field == UserField::Active && c.value == FieldValue::Bool(on))
        };
        let update_names_active = self.event_names(Event::UpdateUser, "active");
        let only_active = changes.iter().all(|c| c.field == UserField::Active);
        let mut steps = Vec::new();
        if !only_active || update_names_active {
            let mut v = self.user_vars(user, manager_id);
            v.set("id", id);
            steps.push((Event::UpdateUser, v));
        }
        // Where the update cannot say it, switching a user on or off is its own event.
        if !update_names_active {
            for (on, event) in [(true, Event::ActivateUser), (false, Event::DeactivateUser)] {
                if switched(on) && self.has(event) {
                    let mut v = Vars::default();
                    v.set("id", id);
                    steps.push((event, v));
                }
            }
        }
        steps
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
        // the API can list them: a wrong data key or field path is found before anything is
        // sent.
        self.core.auth_headers().await?;
        // The service's passes (one per change burst) reuse a recent check: a listing request
        // per pass would be latency for nothing.
        if self
            .listing_checked
            .lock()
            .map(|at| at.is_some_and(|at| at.elapsed() < RECHECK))
            .unwrap_or(false)
        {
            return Ok(());
        }
        if let Some(ev) = self.cfg.events.get(&Event::ListUsers) {
            let mut v = Vars::default();
            if let Some(p) = ev.start_page {
                v.set("page", p);
            }
            let doc = self.send(Event::ListUsers, &v).await?;
            let page =
                list::page_items(&doc, ev.data.as_deref(), true).map_err(|m| TargetError {
                    request: format!("{} {}", ev.method, ev.path),
                    kind: TargetErrorKind::Config(m),
                })?;
            let read = page
                .iter()
                .filter(|i| answer::user(i, &self.cfg.user_fields, &self.cfg.custom).is_some())
                .count();
            self.decoded(Event::ListUsers, page.len(), read, "user", "userName")?;
        }
        if let Ok(mut at) = self.listing_checked.lock() {
            *at = Some(Instant::now());
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
        self.taken.clear();
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

    /// Fields no user event sends cannot reach the target: left out of both sides, so a
    /// resync does not take them for drift.
    fn fit_user(&self, user: &mut User) {
        let sent = |f: &str| self.sent.contains(f);
        for (name, field) in [
            ("givenName", &mut user.given_name),
            ("familyName", &mut user.family_name),
            ("displayName", &mut user.display_name),
            ("email", &mut user.email),
            ("title", &mut user.title),
            ("department", &mut user.department),
            ("employeeNumber", &mut user.employee_number),
            ("manager", &mut user.manager),
        ] {
            if !sent(name) {
                *field = None;
            }
        }
        user.custom.retain(|k, _| self.sent.contains(k));
    }

    fn can_list(&self) -> bool {
        self.has(Event::ListUsers)
    }

    async fn expect_creates(&self, users: usize, groups: usize) -> Result<(), TargetError> {
        self.list_for_creates(users, groups).await
    }

    fn user_surely_free(&self, user_name: &str) -> bool {
        self.taken.user_free(user_name)
    }

    fn group_surely_free(&self, display_name: &str) -> bool {
        self.taken.group_free(display_name)
    }

    async fn find_user(&self, user_name: &str) -> Result<Option<RemoteUser>, TargetError> {
        let found = if self.has(Event::FindUser) {
            let mut v = Vars::default();
            v.set("userName", user_name);
            self.looked_up_users(Event::FindUser, &v).await?
        } else if self.has(Event::ListUsers) {
            let matches = |u: &RemoteUser| same_user_name(&u.user.user_name, user_name);
            let hit = Self::only_match(self.user_index().await?, "a userName", matches)?;
            if hit.is_none() || !self.index_is_old(&self.users).await {
                return Ok(hit);
            }
            // About to be adopted from a listing read a while ago: read again, so a deleted
            // object is never taken for the one to adopt.
            self.forget_index().await;
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
            v.set("externalId", &key[..]);
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
            u.external_id.as_deref() == Some(&key[..])
        })
    }

    async fn find_group_by_key(&self, key: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        let found = if self.has(Event::FindGroupByKey) {
            let mut v = Vars::default();
            v.set("externalId", &key[..]);
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
            g.external_id.as_deref() == Some(&key[..])
        })
    }

    async fn create_user(
        &self,
        key: &Key,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<String, TargetError> {
        let mut v = self.user_vars(user, manager_id);
        v.set("externalId", &key[..]);
        self.taken.with(|t| t.trying_user(&user.user_name));
        let id = match self.send(Event::CreateUser, &v).await {
            Ok(doc) => self.created_id(Event::CreateUser, &doc, &v)?,
            Err(e) => {
                self.forget_index().await;
                return Err(e);
            }
        };
        // Created disabled where the create cannot say so: switched off at once.
        if !user.active
            && !self.event_names(Event::CreateUser, "active")
            && self.has(Event::DeactivateUser)
        {
            let mut d = Vars::default();
            d.set("id", id.as_str());
            self.send(Event::DeactivateUser, &d).await?;
        }
        Ok(id)
    }

    async fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        _before: &User,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<(), TargetError> {
        for (event, vars) in self.update_steps(id, changes, user, manager_id) {
            let r = self.send(event, &vars).await.map(|_| ());
            self.gone_checked(r, id, false).await?;
        }
        Ok(())
    }

    async fn deactivate_user(&self, id: &str) -> Result<(), TargetError> {
        let mut v = Vars::default();
        v.set("id", id);
        let r = self.send(Event::DeactivateUser, &v).await.map(|_| ());
        self.gone_checked(r, id, false).await
    }

    async fn delete_user(&self, id: &str) -> Result<(), TargetError> {
        let mut v = Vars::default();
        v.set("id", id);
        let r = self.send(Event::DeleteUser, &v).await.map(|_| ());
        self.gone_checked(r, id, false).await
    }

    async fn find_group(&self, display_name: &str) -> Result<Option<RemoteGroup>, TargetError> {
        let found = if self.has(Event::FindGroup) {
            let mut v = Vars::default();
            v.set("displayName", display_name);
            self.looked_up_groups(Event::FindGroup, &v).await?
        } else if self.has(Event::ListGroups) {
            let matches = |g: &RemoteGroup| g.display_name == display_name;
            let hit = Self::only_group(self.group_index().await?, "a group name", matches)?;
            if hit.is_none() || !self.index_is_old(&self.groups).await {
                return Ok(hit);
            }
            self.forget_index().await;
            self.group_index().await?
        } else {
            return Ok(None);
        };
        Self::only_group(found, "a group name", |g| g.display_name == display_name)
    }

    async fn create_group(&self, key: &Key, display_name: &str) -> Result<String, TargetError> {
        let mut v = Vars::default();
        v.set("displayName", display_name)
            .set("externalId", &key[..])
            .set("members", Vec::<String>::new());
        self.taken.with(|t| t.trying_group(display_name));
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
        let r = self.send(Event::RenameGroup, &v).await.map(|_| ());
        self.gone_checked(r, id, true).await
    }

    async fn add_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        let r = self.change_members(id, member_ids, true).await;
        self.gone_checked(r, id, true).await
    }

    async fn remove_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        let r = self.change_members(id, member_ids, false).await;
        self.gone_checked(r, id, true).await
    }

    async fn delete_group(&self, id: &str) -> Result<(), TargetError> {
        let mut v = Vars::default();
        v.set("id", id);
        let r = self.send(Event::DeleteGroup, &v).await.map(|_| ());
        self.gone_checked(r, id, true).await
    }

    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        let raw = self.list_raw(Event::ListUsers).await?;
        let users: Vec<RemoteUser> = raw
            .iter()
            .filter_map(|i| answer::user(i, &self.cfg.user_fields, &self.cfg.custom))
            .collect();
        self.decoded(Event::ListUsers, raw.len(), users.len(), "user", "userName")?;
        Ok(users)
    }

    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        let raw = self.list_raw(Event::ListGroups).await?;
        let groups: Vec<RemoteGroup> = raw
            .iter()
            .filter_map(|i| answer::group(i, &self.cfg.group_fields))
            .collect();
        self.decoded(
            Event::ListGroups,
            raw.len(),
            groups.len(),
            "group",
            "displayName",
        )?;
        Ok(groups)
    }
}

#[cfg(test)]
mod tests;
