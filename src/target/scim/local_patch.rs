//! Applies the gateway's own PatchOps to a resource read from the target, for providers that
//! do not support PATCH (`patch.supported = false`): the gateway then reads the resource, applies
//! the operations here, and PUTs the result. Attributes the gateway does not manage survive.
//!
//! Only the path forms the gateway itself emits are understood: `attr`, `attr.sub`,
//! `urn:...:Schema:attr`, and `members[value eq "id"]`.

use serde_json::{Map, Value};

/// Applies every operation of `patch` to `doc`.
pub(super) fn apply(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or("a PatchOp without Operations")?;
    let root = doc
        .as_object_mut()
        .ok_or("the resource is not a JSON object")?;
    root.remove("meta");
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("an operation without a path")?;
        let value = op.get("value").cloned();
        if let Some(literal) = path
            .strip_prefix("members[value eq ")
            .and_then(|r| r.strip_suffix(']'))
        {
            let id: String = serde_json::from_str(literal)
                .map_err(|e| format!("bad member filter {path}: {e}"))?;
            if let Some(Value::Array(members)) = root.get_mut("members") {
                members.retain(|m| m.get("value").and_then(Value::as_str) != Some(id.as_str()));
            }
            continue;
        }
        // A value filter other than the members one: phoneNumbers[type eq "mobile"].value.
        if path.contains('[') {
            let p = super::path::ScimPath::parse(path)
                .or_else(|_| {
                    // The whole element: `attr[type eq "x"]` names no sub-attribute.
                    super::path::ScimPath::parse(&format!("{path}.value")).map(|mut p| {
                        p.sub = None;
                        p
                    })
                })
                .map_err(|e| format!("cannot apply {path}: {e}"))?;
            match (kind.as_str(), value.as_ref().and_then(Value::as_str)) {
                ("remove", _) => p.remove(root),
                ("add" | "replace", Some(v)) if p.sub.is_some() => p.set(root, v),
                (other, _) => return Err(format!("cannot apply `{other}` on {path}")),
            }
            continue;
        }
        let (container, attr) = locate(root, path, kind != "remove")?;
        let Some(container) = container else { continue };
        match (kind.as_str(), value) {
            // Only the listed values of a multi-valued attribute.
            ("remove", Some(Value::Array(gone))) => {
                if let Some(Value::Array(existing)) = container.get_mut(attr) {
                    existing.retain(|v| {
                        !gone.iter().any(|g| {
                            g == v || (g.get("value").is_some() && g.get("value") == v.get("value"))
                        })
                    });
                }
            }
            ("remove", _) => {
                container.remove(attr);
            }
            ("add", Some(Value::Array(new))) => match container.get_mut(attr) {
                Some(Value::Array(existing)) => {
                    for v in new {
                        if !existing.contains(&v) {
                            existing.push(v);
                        }
                    }
                }
                _ => {
                    container.insert(attr.to_string(), Value::Array(new));
                }
            },
            ("add" | "replace", Some(v)) => {
                container.insert(attr.to_string(), v);
            }
            (other, _) => return Err(format!("cannot apply `{other}` on {path}")),
        }
    }
    Ok(())
}

/// The object that holds an attribute (None when it does not exist and need not), and the
/// attribute's name.
type Located<'a, 'p> = (Option<&'a mut Map<String, Value>>, &'p str);

/// The object holding the attribute named by `path`, and the attribute's name. With `create`,
/// missing containers (an extension object, `name`) are made, and an extension's schema is
/// added to `schemas`.
fn locate<'a, 'p>(
    root: &'a mut Map<String, Value>,
    path: &'p str,
    create: bool,
) -> Result<Located<'a, 'p>, String> {
    let (parent, attr) = if path.starts_with("urn:") {
        let (schema, attr) = path
            .rsplit_once(':')
            .ok_or_else(|| format!("bad path {path}"))?;
        (Some(schema), attr)
    } else if let Some((parent, attr)) = path.split_once('.') {
        (Some(parent), attr)
    } else {
        (None, path)
    };
    let Some(parent) = parent else {
        return Ok((Some(root), attr));
    };
    if create && parent.starts_with("urn:") {
        let schemas = root
            .entry("schemas")
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(list) = schemas {
            if !list.iter().any(|s| s == parent) {
                list.push(Value::String(parent.to_string()));
            }
        }
    }
    if !root.contains_key(parent) {
        if !create {
            return Ok((None, attr));
        }
        root.insert(parent.to_string(), Value::Object(Map::new()));
    }
    match root.get_mut(parent) {
        Some(Value::Object(m)) => Ok((Some(m), attr)),
        _ => Err(format!("{parent} is not an object in the resource")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_gateways_own_operations_apply_and_foreign_attributes_survive() {
        let mut doc = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "1", "userName": "ann", "title": "CTO", "phoneNumbers": [{"value": "123"}],
            "name": {"givenName": "Ann"}, "meta": {"version": "W/\"1\""}
        });
        let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let patch = json!({"Operations": [
            {"op": "remove", "path": "title"},
            {"op": "replace", "path": "name.familyName", "value": "Archer"},
            {"op": "replace", "path": format!("{ent}:department"), "value": "R&D"},
            {"op": "replace", "path": "active", "value": false},
            {"op": "remove", "path": "nickName"},
        ]});
        apply(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ent],
                "id": "1", "userName": "ann", "phoneNumbers": [{"value": "123"}],
                "name": {"givenName": "Ann", "familyName": "Archer"},
                ent: {"department": "R&D"}, "active": false
            })
        );
    }

    #[test]
    fn members_are_added_once_and_removed_by_filter() {
        let mut doc = json!({"id": "g", "displayName": "G", "members": [{"value": "a"}]});
        apply(
            &mut doc,
            &json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]}]}),
        )
        .unwrap();
        apply(
            &mut doc,
            &json!({"Operations": [{"op": "remove", "path": "members[value eq \"a\"]"}]}),
        )
        .unwrap();
        assert_eq!(doc["members"], json!([{"value": "b"}]));
        assert!(apply(
            &mut doc,
            &json!({"Operations": [{"op": "move", "path": "x", "value": 1}]})
        )
        .is_err());
    }
}
