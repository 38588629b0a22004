//! [`Target`] for the SCIM client: users and groups as RFC 7643 resources, every look-up checked
//! (see `find.rs`), membership removals checked where the answer carries the group.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{json, Value};

use super::client::ScimClient;
use super::lookup::Attr;
use super::path::ScimPath;
use super::{decode, encode, ENTERPRISE_USER, PATCH_OP};
use crate::model::{FieldChange, Key, User, UserField};
use crate::target::quirks::Quirk;
use crate::target::{RemoteGroup, RemoteUser, Target, TargetError};

/// `name.formatted` from what the user has: given and family names, else displayName, else
/// userName.
fn formatted_name(u: &User) -> String {
    let joined: Vec<&str> = [u.given_name.as_deref(), u.family_name.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if !joined.is_empty() {
        return joined.join(" ");
    }
    u.display_name
        .as_deref()
        .unwrap_or(&u.user_name)
        .to_string()
}

/// Attributes a provider must hold exactly as sent to count as kept: a provider that computes
/// them itself (displayName from the names) would otherwise look changed on every resync. Names,
/// emails and the like are only required to be there (a provider may normalize them).
fn compared_by_value(path: &str) -> bool {
    !matches!(
        path,
        "userName" | "name.givenName" | "name.familyName" | "emails" | "active"
    ) && !path.starts_with(ENTERPRISE_USER)
}

/// Clears the field a SCIM path names.
fn drop_path(u: &mut User, path: &str) {
    match path {
        "title" => u.title = None,
        "displayName" => u.display_name = None,
        "name.givenName" => u.given_name = None,
        "name.familyName" => u.family_name = None,
        "emails" => u.email = None,
        super::ENT_DEPARTMENT => u.department = None,
        super::ENT_EMPLOYEE_NUMBER => u.employee_number = None,
        super::ENT_MANAGER => u.manager = None,
        // A custom path, or the multi-valued attribute its elements belong to.
        p => u.custom.retain(|k, _| {
            k != p
                && ScimPath::parse(k)
                    .map(|s| s.attribute() != p)
                    .unwrap_or(true)
        }),
    }
}

impl ScimClient {
    fn needs_formatted_name(&self) -> bool {
        self.caps
            .read()
            .map(|c| c.needs_formatted_name())
            .unwrap_or(false)
    }

    fn user_from(&self, doc: &Value, label: &str) -> Result<RemoteUser, TargetError> {
        decode::user(doc, &self.custom_paths).map_err(|e| Self::bad(label, e))
    }

    async fn create(&self, resource: &str, body: &Value) -> Result<Value, TargetError> {
        let label = format!("POST /{resource}");
        match self
            .call(Method::POST, self.url(resource, None)?, Some(body), &label)
            .await
        {
            Ok(doc) => {
                let id = Self::created_id(&doc, &label)?;
                if resource == "Users" {
                    self.check_kept(body, &doc);
                }
                if doc.get("externalId").is_none() && doc.get("userName").is_some() {
                    self.quirks.note(
                        "externalid-dropped",
                        format!("{label} answered without the externalId it was sent"),
                        "look-ups by the gateway's key fall back to userName and group name",
                    );
                }
                // What was sent, with the id given: the answer may leave attributes out.
                self.remember(resource, body, &id).await;
                Ok(doc)
            }
            Err(e) => {
                if e.is_conflict() || e.is_lost() {
                    // The index missed something (created meanwhile, or by this very request
                    // whose answer was lost): read it again.
                    self.forget_index(resource).await;
                }
                Err(e)
            }
        }
    }

    /// Notes the user attributes a provider answered a create without: it does not keep them,
    /// so they are neither sent nor compared from now on (else every resync would see them
    /// changed and send them again). Only a representation with the userName sent is judged.
    fn check_kept(&self, sent: &Value, answer: &Value) {
        if answer.get("userName") != sent.get("userName") {
            return;
        }
        for (path, p) in &self.kept_paths {
            let altered = compared_by_value(path)
                && matches!((p.get(sent), p.get(answer)), (Some(a), Some(b)) if a != b);
            if (p.present(sent) && !p.present(answer)) || altered {
                self.not_kept(path, "a created user");
            }
        }
    }

    /// Records that the provider does not keep `path` (seen in what `seen_in` came back as).
    fn not_kept(&self, path: &str, seen_in: &str) {
        self.quirks.note(
            &format!("not-kept-{path}"),
            format!("the provider does not keep {path} ({seen_in} comes back without it, or with another value)"),
            format!("{path} is not sent, nor compared on resync"),
        );
        if let Ok(mut s) = self.not_kept.lock() {
            s.insert(path.to_string());
        }
    }

    /// [`ScimClient::check_kept`] for an update: the attributes it set that the resource the
    /// provider answers with (PATCH or PUT) does not hold.
    fn check_kept_ops(&self, patch: &Value, answer: &Value) {
        if answer.get("userName").is_none() {
            return;
        }
        let ops = patch
            .get("Operations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for op in ops {
            let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
            let set = matches!(kind.to_ascii_lowercase().as_str(), "add" | "replace");
            let (Some(path), Some(v)) = (op.get("path").and_then(Value::as_str), op.get("value"))
            else {
                continue;
            };
            if !set || v.is_null() || path == "active" {
                continue;
            }
            let Ok(p) = ScimPath::parse(path) else {
                continue;
            };
            let altered = compared_by_value(path)
                && matches!((v.as_str(), p.get(answer)), (Some(a), Some(b)) if a != b);
            if !p.present(answer) || altered {
                self.not_kept(path, "an updated user");
            }
        }
    }

    /// A removal the provider acknowledged but did not carry out (the group it answers with
    /// still lists the member) is sent again as a replacement of the whole member list.
    async fn check_removal(
        &self,
        id: &str,
        removed: &[String],
        answer: &Value,
    ) -> Result<(), TargetError> {
        if answer.get("members").is_none() && answer.get("displayName").is_none() {
            return Ok(()); // no resource in the answer: resync checks it
        }
        let listed = decode::member_refs(answer);
        let left: Vec<&String> = removed.iter().filter(|r| listed.contains(r)).collect();
        if left.is_empty() {
            return Ok(());
        }
        self.quirks.note(
            "member-removal-ignored",
            format!("PATCH /Groups/{id} removing members answered success, but the group still lists them"),
            "the member list is replaced as a whole instead, and checked again",
        );
        let keep: Vec<Value> = listed
            .iter()
            .filter(|m| !removed.contains(m))
            .map(|m| json!({ "value": m }))
            .collect();
        let body = json!({ "schemas": [PATCH_OP], "Operations": [
            {"op": "replace", "path": "members", "value": keep}
        ]});
        let again = self.patch("Groups", id, &body).await?;
        let still = decode::member_refs(&again);
        if again.is_object() && removed.iter().any(|r| still.contains(r)) {
            return Err(Self::bad(
                &format!("PATCH /Groups/{id}"),
                "the provider keeps members it was told to remove (by removal and by replacement)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Target for ScimClient {
    fn describe(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    async fn preflight(&self) -> Result<(), TargetError> {
        self.discover().await
    }

    async fn reachable(&self) -> bool {
        self.answers().await
    }

    async fn begin_pass(&self) {
        self.taken.clear();
        self.forget_index_older_than("Users", super::find::INDEX_MAX_AGE)
            .await;
        self.forget_index_older_than("Groups", super::find::INDEX_MAX_AGE)
            .await;
    }

    async fn expect_creates(&self, users: usize, groups: usize) -> Result<(), TargetError> {
        self.list_for_creates("Users", users).await?;
        self.list_for_creates("Groups", groups).await
    }

    fn user_surely_free(&self, user_name: &str) -> bool {
        self.taken.user_free(user_name)
    }

    fn group_surely_free(&self, display_name: &str) -> bool {
        self.taken.group_free(display_name)
    }

    fn quirks(&self) -> Vec<Quirk> {
        self.quirks.list()
    }

    fn unsent_required(&self, sample: &User) -> Vec<String> {
        let required = match self.caps.read() {
            Ok(c) => c.user_required.clone(),
            Err(_) => return Vec::new(),
        };
        let mut sample = sample.clone();
        self.fit_user(&mut sample);
        let sent = super::discover::paths_of(&super::encode::user_resource("k", &sample, None));
        required
            .into_iter()
            // Set by the provider, or by the client when the schema asks (`name.formatted`).
            .filter(|p| !matches!(p.as_str(), "id" | "meta" | "schemas" | "name.formatted"))
            .filter(|p| !sent.contains(p))
            .collect()
    }

    fn declared(&self) -> crate::target::Declared {
        self.caps.read().map(|c| c.declared()).unwrap_or_default()
    }

    fn remember_quirks(&self, quirks: &[Quirk]) {
        for q in quirks {
            let path =
                q.id.strip_prefix("not-kept-")
                    .or_else(|| q.id.strip_prefix("schema-lacks-"));
            if let Some(path) = path {
                if let Ok(mut s) = self.not_kept.lock() {
                    s.insert(path.to_string());
                }
            }
            if q.id == "member-remove-filter-refused" {
                self.remove_by_value.store(true, Ordering::Relaxed);
            }
            self.quirks.restore(q.clone());
        }
    }

    fn fit_state(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Ok(paths) = self.not_kept.lock() {
            paths.hash(&mut h);
        }
        if let Ok(c) = self.caps.read() {
            c.user_attrs.hash(&mut h);
            c.user_extensions.hash(&mut h);
        }
        h.finish()
    }

    fn fit_user(&self, user: &mut User) {
        if let Ok(paths) = self.not_kept.lock() {
            for path in paths.iter() {
                drop_path(user, path);
            }
        }
        let dropped = match self.caps.read() {
            Ok(c) => c.fit(user),
            Err(_) => return,
        };
        for path in dropped {
            if self.quirks.has(&format!("schema-lacks-{path}")) {
                continue;
            }
            self.quirks.note(
                &format!("schema-lacks-{path}"),
                format!("the provider's User schema has no {path}"),
                format!("{path} is not sent (nor compared on resync)"),
            );
        }
    }

    async fn find_user(&self, user_name: &str) -> Result<Option<RemoteUser>, TargetError> {
        match self.find_one("Users", Attr::UserName, user_name).await? {
            Some(doc) => self
                .user_from(&doc, "GET /Users?filter=userName eq …")
                .map(Some),
            None => Ok(None),
        }
    }

    async fn find_user_by_key(&self, key: &Key) -> Result<Option<RemoteUser>, TargetError> {
        if self.quirks.has("externalid-dropped") {
            return Ok(None);
        }
        match self.find_one("Users", Attr::ExternalId, key).await? {
            Some(doc) => self
                .user_from(&doc, "GET /Users?filter=externalId eq …")
                .map(Some),
            None => Ok(None),
        }
    }

    async fn find_group_by_key(&self, key: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        if self.quirks.has("externalid-dropped") {
            return Ok(None);
        }
        match self.find_one("Groups", Attr::ExternalId, key).await? {
            Some(doc) => decode::group(&doc)
                .map(Some)
                .map_err(|e| Self::bad("GET /Groups?filter=externalId eq …", e)),
            None => Ok(None),
        }
    }

    async fn create_user(
        &self,
        key: &Key,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<String, TargetError> {
        let mut body = encode::user_resource(key, user, manager_id);
        if self.needs_formatted_name() {
            if let Some(o) = body.as_object_mut() {
                let name = o.entry("name").or_insert_with(|| json!({}));
                if let Some(n) = name.as_object_mut() {
                    n.insert("formatted".into(), json!(formatted_name(user)));
                }
            }
        }
        self.taken.with(|t| t.trying_user(&user.user_name));
        let doc = self.create("Users", &body).await?;
        Self::created_id(&doc, "POST /Users")
    }

    async fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        before: &User,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<(), TargetError> {
        let mut body = encode::user_patch(changes, before, manager_id);
        let names_changed = changes
            .iter()
            .any(|c| matches!(c.field, UserField::GivenName | UserField::FamilyName));
        if names_changed && self.needs_formatted_name() {
            if let Some(ops) = body.get_mut("Operations").and_then(Value::as_array_mut) {
                ops.push(json!({"op": "replace", "path": "name.formatted", "value": formatted_name(user)}));
            }
        }
        let answer = self.patch("Users", id, &body).await?;
        self.check_kept_ops(&body, &answer);
        Ok(())
    }

    async fn deactivate_user(&self, id: &str) -> Result<(), TargetError> {
        self.patch("Users", id, &encode::deactivate_patch())
            .await
            .map(|_| ())
    }

    async fn delete_user(&self, id: &str) -> Result<(), TargetError> {
        self.delete("Users", id).await
    }

    async fn find_group(&self, display_name: &str) -> Result<Option<RemoteGroup>, TargetError> {
        match self
            .find_one("Groups", Attr::DisplayName, display_name)
            .await?
        {
            Some(doc) => decode::group(&doc)
                .map(Some)
                .map_err(|e| Self::bad("GET /Groups?filter=displayName eq …", e)),
            None => Ok(None),
        }
    }

    async fn create_group(&self, key: &Key, display_name: &str) -> Result<String, TargetError> {
        self.taken.with(|t| t.trying_group(display_name));
        let doc = self
            .create("Groups", &encode::group_resource(key, display_name))
            .await?;
        Self::created_id(&doc, "POST /Groups")
    }

    async fn rename_group(&self, id: &str, display_name: &str) -> Result<(), TargetError> {
        self.patch("Groups", id, &encode::rename_patch(display_name))
            .await
            .map(|_| ())
    }

    async fn add_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        self.patch("Groups", id, &encode::add_members_patch(member_ids))
            .await
            .map(|_| ())
    }

    async fn remove_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        let by_filter = encode::remove_members_patch(member_ids);
        let by_value = encode::remove_members_by_value_patch(member_ids);
        let refused = |r: &Option<Result<Value, TargetError>>| matches!(r, Some(Err(e)) if matches!(e.status(), Some(400 | 501)));
        let mut answer = if self.remove_by_value.load(Ordering::Relaxed) {
            self.patch_only("Groups", id, &by_value).await
        } else {
            match self.patch_only("Groups", id, &by_filter).await {
                r if refused(&r) => {
                    let e = r
                        .and_then(Result::err)
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    self.quirks.note(
                        "member-remove-filter-refused",
                        format!("a member removal by `members[value eq ...]` was refused: {e}"),
                        "members are removed by a `remove` of `members` with the members as its value",
                    );
                    self.remove_by_value.store(true, Ordering::Relaxed);
                    self.patch_only("Groups", id, &by_value).await
                }
                other => other,
            }
        };
        if refused(&answer) {
            // Neither form of PATCH removal: the group is read, changed and PUT back (the
            // answer is checked below like any other).
            self.quirks.note(
                "member-remove-refused",
                "member removals by PATCH are refused in both forms",
                "members are removed by GET + PUT of the group",
            );
            answer = None;
        }
        let answer = match answer {
            Some(a) => a?,
            // No PATCH removal: applied to the group locally and PUT.
            None => self.get_and_put("Groups", id, &by_filter).await?,
        };
        self.check_removal(id, member_ids, &answer).await
    }

    async fn delete_group(&self, id: &str) -> Result<(), TargetError> {
        self.delete("Groups", id).await
    }

    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        let listed = self
            .list_all("Users", |d| self.user_from(d, "GET /Users"))
            .await?;
        self.set_index("Users", listed.index).await;
        Ok(listed.items)
    }

    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        let listed = self
            .list_all("Groups", |d| {
                decode::group(d).map_err(|e| Self::bad("GET /Groups", e))
            })
            .await?;
        self.set_index("Groups", listed.index).await;
        Ok(listed.items)
    }
}
