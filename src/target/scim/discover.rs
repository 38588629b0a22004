//! What a provider says about itself (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes`
//! and `/Schemas`, read at preflight instead of a user listing (which some providers refuse
//! with the parameters it needs). Each is optional; what is missing keeps the protocol's default.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{CORE_USER, ENTERPRISE_USER};
use crate::model::User;

/// The provider's declared abilities. `None` means "not said".
#[derive(Debug, Default, Clone)]
pub(super) struct Capabilities {
    pub patch: Option<bool>,
    pub filter: Option<bool>,
    pub max_results: Option<u64>,
    /// Attribute paths of the core User schema, lowercase (`name`, `name.formatted`, ...).
    pub user_attrs: Option<BTreeSet<String>>,
    /// Required attribute paths of the core User schema, lowercase.
    pub user_required: BTreeSet<String>,
    /// Schema extensions the User resource type takes (lowercase URNs).
    pub user_extensions: Option<BTreeSet<String>>,
}

/// The core attribute paths a resource sets, lower case: `username`, `name`, `name.givenname`,
/// `emails`, `emails.value` (as a schema's attributes and sub-attributes name them).
pub(super) fn paths_of(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(map) = doc.as_object() else {
        return out;
    };
    for (k, v) in map {
        let k = k.to_lowercase();
        let subs: Vec<&serde_json::Map<String, Value>> = match v {
            Value::Object(o) => vec![o],
            Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        };
        for sub in subs {
            out.extend(sub.keys().map(|s| format!("{k}.{}", s.to_lowercase())));
        }
        out.insert(k);
    }
    out
}

/// The `Resources` of a ListResponse, or the body itself when it is a bare array (as some
/// providers answer discovery requests).
fn resources(doc: &Value) -> Vec<&Value> {
    match doc {
        Value::Array(a) => a.iter().collect(),
        _ => doc
            .get("Resources")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
    }
}

impl Capabilities {
    pub(super) fn read_service_provider_config(&mut self, doc: &Value) {
        self.patch = doc.pointer("/patch/supported").and_then(Value::as_bool);
        self.filter = doc.pointer("/filter/supported").and_then(Value::as_bool);
        self.max_results = doc
            .pointer("/filter/maxResults")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0);
    }

    pub(super) fn read_resource_types(&mut self, doc: &Value) {
        for rt in resources(doc) {
            let is_user = rt.get("schema").and_then(Value::as_str) == Some(CORE_USER)
                || rt.get("name").and_then(Value::as_str) == Some("User");
            if !is_user {
                continue;
            }
            let ext = rt
                .get("schemaExtensions")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|e| e.get("schema").and_then(Value::as_str))
                        .map(str::to_lowercase)
                        .collect()
                })
                .unwrap_or_default();
            self.user_extensions = Some(ext);
        }
    }

    pub(super) fn read_schemas(&mut self, doc: &Value) {
        let single = doc.get("id").is_some().then_some(doc);
        let list = resources(doc);
        let Some(user) = single
            .into_iter()
            .chain(list)
            .find(|s| s.get("id").and_then(Value::as_str) == Some(CORE_USER))
        else {
            return;
        };
        let Some(attrs) = user.get("attributes").and_then(Value::as_array) else {
            return;
        };
        let mut names = BTreeSet::new();
        let mut required = BTreeSet::new();
        for a in attrs {
            let Some(name) = a.get("name").and_then(Value::as_str) else {
                continue;
            };
            let name = name.to_lowercase();
            if a.get("required").and_then(Value::as_bool) == Some(true) {
                required.insert(name.clone());
            }
            for sub in a
                .get("subAttributes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = sub.get("name").and_then(Value::as_str) {
                    let path = format!("{name}.{}", s.to_lowercase());
                    if sub.get("required").and_then(Value::as_bool) == Some(true) {
                        required.insert(path.clone());
                    }
                    names.insert(path);
                }
            }
            names.insert(name);
        }
        // A schema without userName is not a usable description of the User resource.
        if names.contains("username") {
            self.user_attrs = Some(names);
            self.user_required = required;
        }
    }

    /// What `check` shows of it.
    pub(super) fn declared(&self) -> crate::target::Declared {
        let said = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not said",
        };
        let mut abilities = vec![
            format!("PATCH: {}", said(self.patch)),
            match (self.filter, self.max_results) {
                (Some(true), Some(n)) => format!("filter: yes (at most {n} results)"),
                (f, _) => format!("filter: {}", said(f)),
            },
        ];
        abilities.push(match &self.user_attrs {
            Some(a) => format!("User schema: {} attributes", a.len()),
            None => "User schema: not published".into(),
        });
        if let Some(ext) = &self.user_extensions {
            abilities.push(format!("User extensions: {}", ext.len()));
        }
        crate::target::Declared {
            abilities,
            user_required: self.user_required.iter().cloned().collect(),
        }
    }

    /// `name.formatted` must be sent (the schema requires it).
    pub(super) fn needs_formatted_name(&self) -> bool {
        self.user_required.contains("name.formatted")
    }

    /// `path` in lower case.
    fn knows(&self, path: &str) -> bool {
        self.user_attrs.as_ref().is_none_or(|a| a.contains(path))
    }

    fn takes_extension(&self, schema: &str) -> bool {
        self.user_extensions
            .as_ref()
            .is_none_or(|e| e.contains(schema) || e.iter().any(|x| x.eq_ignore_ascii_case(schema)))
    }

    /// Leaves out of `u` the attributes this provider has declared it does not hold (its schema
    /// lacks them) and names them by SCIM path. Sent anyway, they get a request refused, or never
    /// read back the same and look changed on every resync.
    pub(super) fn fit(&self, u: &mut User) -> Vec<String> {
        let mut dropped = Vec::new();
        if self.user_attrs.is_none() && self.user_extensions.is_none() {
            return dropped; // nothing declared: everything is assumed held
        }
        // Checked only for fields that have a value (this runs for every user of every pass).
        let mut drop =
            |slot: &mut Option<crate::model::Text>, ok: &dyn Fn() -> bool, path: &str| {
                if slot.is_some() && !ok() {
                    *slot = None;
                    dropped.push(path.to_string());
                }
            };
        drop(&mut u.title, &|| self.knows("title"), "title");
        drop(
            &mut u.display_name,
            &|| self.knows("displayname"),
            "displayName",
        );
        drop(&mut u.email, &|| self.knows("emails"), "emails");
        drop(
            &mut u.given_name,
            &|| self.knows("name.givenname"),
            "name.givenName",
        );
        drop(
            &mut u.family_name,
            &|| self.knows("name.familyname"),
            "name.familyName",
        );
        let enterprise = || self.takes_extension(ENTERPRISE_USER);
        drop(&mut u.department, &enterprise, super::ENT_DEPARTMENT);
        drop(
            &mut u.employee_number,
            &enterprise,
            super::ENT_EMPLOYEE_NUMBER,
        );
        drop(&mut u.manager, &enterprise, super::ENT_MANAGER);
        if !u.custom.is_empty() {
            u.custom.retain(|path, _| {
                let ok = self.holds_custom(path);
                if !ok {
                    dropped.push(path.clone());
                }
                ok
            });
        }
        dropped
    }

    /// Whether a custom path's attribute is one the provider declares.
    pub(super) fn holds_custom(&self, path: &str) -> bool {
        match super::path::ScimPath::parse(path) {
            Ok(p) => match &p.schema {
                Some(schema) => self.takes_extension(schema),
                None => self.knows(&p.attr.to_lowercase()),
            },
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_documents_are_read() {
        let mut c = Capabilities::default();
        c.read_service_provider_config(&json!({
            "patch": {"supported": false}, "filter": {"supported": false, "maxResults": 50}
        }));
        assert_eq!(
            (c.patch, c.filter, c.max_results),
            (Some(false), Some(false), Some(50))
        );
        c.read_resource_types(&json!({"Resources": [
            {"name": "User", "schema": CORE_USER, "schemaExtensions": []},
            {"name": "Group", "schema": "urn:ietf:params:scim:schemas:core:2.0:Group"}
        ]}));
        c.read_schemas(&json!([{ "id": CORE_USER, "attributes": [
            {"name": "userName", "required": true},
            {"name": "name", "subAttributes": [
                {"name": "formatted", "required": true}, {"name": "givenName"}, {"name": "familyName"}
            ]},
            {"name": "emails"}
        ]}]));
        assert!(c.needs_formatted_name());
        let mut u = User {
            user_name: "ann".into(),
            given_name: Some("Ann".into()),
            title: Some("CTO".into()),
            department: Some("R&D".into()),
            email: Some("a@x".into()),
            ..Default::default()
        };
        assert_eq!(
            c.fit(&mut u),
            vec![
                "title".to_string(),
                super::super::ENT_DEPARTMENT.to_string()
            ]
        );
        assert_eq!((u.title, u.department), (None, None));
        assert_eq!(u.given_name.as_deref(), Some("Ann"));
    }

    #[test]
    fn what_a_provider_does_not_say_is_assumed_supported() {
        let c = Capabilities::default();
        let mut u = User {
            title: Some("x".into()),
            department: Some("y".into()),
            ..Default::default()
        };
        u.custom.insert("nickName".into(), "n".into());
        let before = u.clone();
        assert!(c.fit(&mut u).is_empty());
        assert_eq!(u, before);
        assert!(!c.needs_formatted_name());
    }
}
