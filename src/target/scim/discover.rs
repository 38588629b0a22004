//! What a provider says about itself (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes`
//! and `/Schemas`, read at preflight instead of a user listing (which some providers refuse
//! with the parameters it needs). Each is optional; what is missing keeps the protocol's default.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{CORE_USER, ENTERPRISE_USER};
use crate::model::User;

/// The provider's declared abilities. `None` means "not said".
#[derive(Debug, Default, Clone)]
pub struct Capabilities {
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
    pub fn read_service_provider_config(&mut self, doc: &Value) {
        self.patch = doc.pointer("/patch/supported").and_then(Value::as_bool);
        self.filter = doc.pointer("/filter/supported").and_then(Value::as_bool);
        self.max_results = doc
            .pointer("/filter/maxResults")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0);
    }

    pub fn read_resource_types(&mut self, doc: &Value) {
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

    pub fn read_schemas(&mut self, doc: &Value) {
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

    /// `name.formatted` must be sent (the schema requires it).
    pub fn needs_formatted_name(&self) -> bool {
        self.user_required.contains("name.formatted")
    }

    fn knows(&self, path: &str) -> bool {
        self.user_attrs
            .as_ref()
            .is_none_or(|a| a.contains(&path.to_lowercase()))
    }

    fn takes_extension(&self, schema: &str) -> bool {
        self.user_extensions
            .as_ref()
            .is_none_or(|e| e.contains(&schema.to_lowercase()))
    }

    /// Leaves out of `u` the attributes this provider has declared it does not hold (its schema
    /// lacks them) and names them by SCIM path. Sent anyway, they get a request refused, or never
    /// read back the same and look changed on every resync.
    pub fn fit(&self, u: &mut User) -> Vec<String> {
        let mut dropped = Vec::new();
        let mut drop = |slot: &mut Option<String>, ok: bool, path: &str| {
            if slot.is_some() && !ok {
                *slot = None;
                dropped.push(path.to_string());
            }
        };
        drop(&mut u.title, self.knows("title"), "title");
        drop(
            &mut u.display_name,
            self.knows("displayName"),
            "displayName",
        );
        drop(&mut u.email, self.knows("emails"), "emails");
        drop(
            &mut u.given_name,
            self.knows("name.givenName"),
            "name.givenName",
        );
        drop(
            &mut u.family_name,
            self.knows("name.familyName"),
            "name.familyName",
        );
        let enterprise = self.takes_extension(ENTERPRISE_USER);
        let ent = |a: &str| format!("{ENTERPRISE_USER}:{a}");
        drop(&mut u.department, enterprise, &ent("department"));
        drop(&mut u.employee_number, enterprise, &ent("employeeNumber"));
        drop(&mut u.manager, enterprise, &ent("manager"));
        u.custom.retain(|path, _| {
            let ok = match super::path::ScimPath::parse(path) {
                Ok(p) => match &p.schema {
                    Some(schema) => self.takes_extension(schema),
                    None => self.knows(&p.attr),
                },
                Err(_) => false,
            };
            if !ok {
                dropped.push(path.clone());
            }
            ok
        });
        dropped
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
            vec!["title".to_string(), format!("{ENTERPRISE_USER}:department")]
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
