//! Canonical users and groups to SCIM JSON: full resources for POST, operation lists for PATCH.

use serde_json::{json, Map, Value};

use std::collections::BTreeMap;

use super::path::ScimPath;
use super::{CORE_GROUP, CORE_USER, ENTERPRISE_USER, PATCH_OP};
use crate::model::{FieldChange, FieldValue, User, UserField};

/// The full User resource sent on creation. The stable key goes in `externalId`.
pub(super) fn user_resource(key: &str, u: &User, manager_id: Option<&str>) -> Value {
    let mut schemas = vec![CORE_USER.to_string()];
    let mut doc = Map::new();
    doc.insert("externalId".into(), json!(key));
    doc.insert("userName".into(), json!(u.user_name));
    let mut name = Map::new();
    if let Some(v) = &u.given_name {
        name.insert("givenName".into(), json!(v));
    }
    if let Some(v) = &u.family_name {
        name.insert("familyName".into(), json!(v));
    }
    if !name.is_empty() {
        doc.insert("name".into(), Value::Object(name));
    }
    if let Some(v) = &u.display_name {
        doc.insert("displayName".into(), json!(v));
    }
    if let Some(v) = &u.email {
        doc.insert("emails".into(), work_email(v));
    }
    doc.insert("active".into(), json!(u.active));
    if let Some(v) = &u.title {
        doc.insert("title".into(), json!(v));
    }
    let mut ent = Map::new();
    if let Some(v) = &u.department {
        ent.insert("department".into(), json!(v));
    }
    if let Some(v) = &u.employee_number {
        ent.insert("employeeNumber".into(), json!(v));
    }
    if let Some(id) = manager_id {
        ent.insert("manager".into(), json!({ "value": id }));
    }
    let mut extensions: Map<String, Value> = Map::new();
    if !ent.is_empty() {
        extensions.insert(ENTERPRISE_USER.into(), Value::Object(ent));
    }
    for (schema, body) in extensions {
        schemas.push(schema.clone());
        doc.insert(schema, body);
    }
    for (path, value) in &u.custom {
        match ScimPath::parse(path) {
            Ok(p) => {
                if let Some(s) = &p.schema {
                    if !schemas.contains(s) {
                        schemas.push(s.clone());
                    }
                }
                p.set(&mut doc, value);
            }
            // Checked when the configuration is read: cannot happen with a loaded config.
            Err(e) => tracing::warn!(path = %path, error = %e, "custom attribute not sent"),
        }
    }
    doc.remove("schemas");
    doc.insert("schemas".into(), json!(schemas));
    Value::Object(doc)
}

fn work_email(address: &str) -> Value {
    json!([{ "value": address, "type": "work", "primary": true }])
}

/// The SCIM attribute path of a canonical field.
fn path_of(field: &UserField) -> String {
    match field {
        UserField::UserName => "userName".into(),
        UserField::GivenName => "name.givenName".into(),
        UserField::FamilyName => "name.familyName".into(),
        UserField::DisplayName => "displayName".into(),
        UserField::Email => "emails".into(),
        UserField::Active => "active".into(),
        UserField::Title => "title".into(),
        UserField::Department => format!("{ENTERPRISE_USER}:department"),
        UserField::EmployeeNumber => format!("{ENTERPRISE_USER}:employeeNumber"),
        UserField::Manager => format!("{ENTERPRISE_USER}:manager"),
        UserField::Custom(p) => p.clone(),
    }
}

/// A PatchOp carrying only the changed attributes. `before` is the user as last pushed: an
/// element of a multi-valued attribute that did not exist is added whole (a replace through a
/// value filter that matches nothing is refused with `noTarget`, RFC 7644 §3.5.2.3).
pub(super) fn user_patch(
    changes: &[FieldChange],
    before: &User,
    manager_id: Option<&str>,
) -> Value {
    let mut ops: Vec<Value> = Vec::new();
    let mut after = before.clone();
    after.apply(changes);
    // New elements of multi-valued attributes: (attribute path, filter) -> element.
    let mut new_elements: BTreeMap<(String, String, String), Map<String, Value>> = BTreeMap::new();
    for c in changes {
        let path = path_of(&c.field);
        if let (UserField::Custom(p), FieldValue::Text(v)) = (&c.field, &c.value) {
            if let Ok(sp) = ScimPath::parse(p) {
                if let (Some((fa, fv)), Some(sub)) = (&sp.filter, &sp.sub) {
                    let existed = before
                        .custom
                        .keys()
                        .filter_map(|k| ScimPath::parse(k).ok())
                        .any(|o| o.attribute() == sp.attribute() && o.filter == sp.filter);
                    match v {
                        Some(v) if !existed => {
                            let e = new_elements
                                .entry((sp.attribute(), fa.clone(), fv.clone()))
                                .or_insert_with(|| {
                                    let mut m = Map::new();
                                    m.insert(fa.clone(), json!(fv));
                                    m
                                });
                            e.insert(sub.clone(), json!(v));
                        }
                        Some(v) => {
                            ops.push(json!({"op": "replace", "path": sp.to_string(), "value": v}))
                        }
                        None => {
                            // The last mapped value of the element goes: the element goes too
                            // (else an empty `{"type": "mobile"}` would stay behind).
                            let element_left = after
                                .custom
                                .keys()
                                .filter_map(|k| ScimPath::parse(k).ok())
                                .any(|o| o.attribute() == sp.attribute() && o.filter == sp.filter);
                            let path = if element_left {
                                sp.to_string()
                            } else {
                                sp.element()
                            };
                            let op = json!({"op": "remove", "path": path});
                            if !ops.contains(&op) {
                                ops.push(op);
                            }
                        }
                    }
                    continue;
                }
            }
        }
        ops.push(match (&c.field, &c.value) {
            (_, FieldValue::Bool(b)) => json!({"op": "replace", "path": path, "value": b}),
            (_, FieldValue::Text(None)) => json!({"op": "remove", "path": path}),
            (UserField::Email, FieldValue::Text(Some(v))) => {
                json!({"op": "replace", "path": path, "value": work_email(v)})
            }
            (UserField::Manager, FieldValue::Text(Some(_))) => {
                json!({"op": "replace", "path": path, "value": {"value": manager_id.unwrap_or_default()}})
            }
            (_, FieldValue::Text(Some(v))) => json!({"op": "replace", "path": path, "value": v}),
        });
    }
    for ((attr, _, _), element) in new_elements {
        ops.push(json!({"op": "add", "path": attr, "value": [Value::Object(element)]}));
    }
    json!({ "schemas": [PATCH_OP], "Operations": ops })
}

pub(super) fn deactivate_patch() -> Value {
    json!({ "schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}] })
}

pub(super) fn group_resource(key: &str, display_name: &str) -> Value {
    json!({ "schemas": [CORE_GROUP], "externalId": key, "displayName": display_name, "members": [] })
}

pub(super) fn rename_patch(display_name: &str) -> Value {
    json!({ "schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": display_name}] })
}

/// One `add` operation with every new member.
pub(super) fn add_members_patch(ids: &[String]) -> Value {
    let values: Vec<Value> = ids.iter().map(|id| json!({ "value": id })).collect();
    json!({ "schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": values}] })
}

/// One `remove` operation per member, each with a `members[value eq "id"]` path: the form every
/// service provider accepts (a remove with a value list is refused by some).
pub(super) fn remove_members_patch(ids: &[String]) -> Value {
    let ops: Vec<Value> = ids
        .iter()
        .map(|id| json!({"op": "remove", "path": format!("members[value eq {}]", super::filter_literal(id))}))
        .collect();
    json!({ "schemas": [PATCH_OP], "Operations": ops })
}

/// One `remove` of `members` with the members as its value: the form of RFC 7644 §3.5.2.2's
/// example, for providers that refuse the filtered path.
pub(super) fn remove_members_by_value_patch(ids: &[String]) -> Value {
    let values: Vec<Value> = ids.iter().map(|id| json!({ "value": id })).collect();
    json!({ "schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members", "value": values}] })
}
