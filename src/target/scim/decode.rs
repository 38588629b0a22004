//! SCIM JSON back to canonical form, for adoption and resync. Lenient about what it does not
//! need, strict about what it does (`id`).

use serde_json::Value;

use super::path::ScimPath;
use super::ENTERPRISE_USER;
use crate::model::User;
use crate::target::{RemoteGroup, RemoteUser};

fn text<T: for<'a> From<&'a str>>(v: Option<&Value>) -> Option<T> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(T::from)
}

/// Reads a User resource. `custom` lists the custom attribute paths to read back.
pub(crate) fn user(doc: &Value, custom: &[String]) -> Result<RemoteUser, String> {
    let id: String = text(doc.get("id")).ok_or("a User resource has no id")?;
    let user_name: String =
        text(doc.get("userName")).ok_or_else(|| format!("User {id} has no userName"))?;
    let name = doc.get("name");
    let ent = doc.get(ENTERPRISE_USER);
    let email = doc
        .get("emails")
        .and_then(Value::as_array)
        .and_then(|list| {
            let pick = list
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
                .or_else(|| {
                    list.iter()
                        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
                })
                .or_else(|| list.first());
            pick.and_then(|e| text(e.get("value")))
        });
    let mut u = User {
        user_name: user_name.into(),
        given_name: text(name.and_then(|n| n.get("givenName"))),
        family_name: text(name.and_then(|n| n.get("familyName"))),
        display_name: text(doc.get("displayName")),
        email,
        // A resource without `active` is taken as active, as SCIM providers treat it.
        active: doc.get("active").and_then(Value::as_bool).unwrap_or(true),
        title: text(doc.get("title")),
        department: text(ent.and_then(|e| e.get("department"))),
        employee_number: text(ent.and_then(|e| e.get("employeeNumber"))),
        manager: text(
            ent.and_then(|e| e.get("manager"))
                .and_then(|m| m.get("value")),
        ),
        custom: Default::default(),
    };
    for path in custom {
        if let Some(v) = ScimPath::parse(path).ok().and_then(|p| p.get(doc)) {
            u.custom.insert(path.clone(), v);
        }
    }
    Ok(RemoteUser {
        id,
        external_id: text(doc.get("externalId")),
        user: u,
    })
}

pub(crate) fn group(doc: &Value) -> Result<RemoteGroup, String> {
    let id = text(doc.get("id")).ok_or("a Group resource has no id")?;
    let display_name =
        text(doc.get("displayName")).ok_or_else(|| format!("Group {id} has no displayName"))?;
    let member_ids = member_refs(doc);
    Ok(RemoteGroup {
        id,
        external_id: text(doc.get("externalId")),
        display_name,
        member_ids,
    })
}

/// The members a Group resource lists: each `value`, or, where a provider gives only `$ref`, the
/// last segment of that URI (the member's id).
pub(crate) fn member_refs(doc: &Value) -> Vec<String> {
    doc.get("members")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    text(m.get("value")).or_else(|| {
                        text::<String>(m.get("$ref")).and_then(|r| {
                            r.trim_end_matches('/')
                                .rsplit('/')
                                .next()
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                        })
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `Resources` of a ListResponse, and `totalResults`.
pub(crate) fn list(doc: &Value) -> Result<(Vec<Value>, Option<u64>), String> {
    let total = doc.get("totalResults").and_then(Value::as_u64);
    match doc.get("Resources") {
        Some(Value::Array(items)) => Ok((items.clone(), total)),
        None | Some(Value::Null) => Ok((Vec::new(), total)),
        Some(_) => Err("ListResponse.Resources is not an array".into()),
    }
}
