//! The SCIM requests a resolved operation becomes, for `test-mapping`: the same encoders the
//! client sends with, so what is shown is what is sent (before the adaptations a provider's
//! detected quirks call for, which `status` lists).

use serde_json::Value;

use super::encode;
use crate::plan::apply::Request;
use crate::target::Rendered;

fn one(method: &'static str, path: String, body: Option<Value>) -> Rendered {
    Rendered {
        method: method.into(),
        path,
        body,
        note: None,
    }
}

/// `/{resource}/{id}` as the client names it: the id escaped as one segment, or refused.
fn at(resource: &str, id: &str) -> String {
    use super::client::{resource_url, Unnamed};
    let base = url::Url::parse("http://h/").map_err(|_| Unnamed::Base);
    match base.and_then(|base| resource_url(&base, resource, Some(id))) {
        Ok(u) => u.path().to_string(),
        Err(Unnamed::Id) => format!("/{resource}/{id:?} (not sent: an id no URL can name)"),
        Err(Unnamed::Base) => format!("/{resource}/{id}"),
    }
}

pub(crate) fn render(req: &Request) -> Vec<Rendered> {
    let ids =
        |m: &[(crate::model::Key, String)]| m.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    match req {
        Request::CreateUser {
            key,
            user,
            manager_id,
        } => vec![
            Rendered {
                method: "GET".into(),
                path: format!(
                    "/Users?filter=userName eq {}",
                    super::filter_literal(&user.user_name)
                ),
                body: None,
                note: Some("looked up first: an existing user with this userName is adopted, not duplicated"),
            },
            one(
                "POST",
                "/Users".into(),
                Some(encode::user_resource(key, user, manager_id.as_deref())),
            ),
        ],
        Request::UpdateUser {
            target_id,
            changes,
            before,
            manager_id,
            ..
        } => vec![one(
            "PATCH",
            at("Users", target_id),
            Some(encode::user_patch(changes, before, manager_id.as_deref())),
        )],
        Request::DeactivateUser { target_id, .. } => vec![one(
            "PATCH",
            at("Users", target_id),
            Some(encode::deactivate_patch()),
        )],
        Request::DeleteUser { target_id, .. } => {
            vec![one("DELETE", at("Users", target_id), None)]
        }
        Request::CreateGroup { key, display_name } => vec![one(
            "POST",
            "/Groups".into(),
            Some(encode::group_resource(key, display_name)),
        )],
        Request::RenameGroup {
            target_id,
            display_name,
            ..
        } => vec![one(
            "PATCH",
            at("Groups", target_id),
            Some(encode::rename_patch(display_name)),
        )],
        Request::DeleteGroup { target_id, .. } => {
            vec![one("DELETE", at("Groups", target_id), None)]
        }
        Request::AddMembers {
            group_id, members, ..
        } => vec![one(
            "PATCH",
            at("Groups", group_id),
            Some(encode::add_members_patch(&ids(members))),
        )],
        Request::RemoveMembers {
            group_id, members, ..
        } => vec![one(
            "PATCH",
            at("Groups", group_id),
            Some(encode::remove_members_patch(&ids(members))),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::at;

    #[test]
    fn a_shown_path_names_the_id_as_the_client_does() {
        assert_eq!(at("Users", "a/b %c"), "/Users/a%2Fb%20%25c");
        assert_eq!(at("Groups", "g-1"), "/Groups/g-1");
        for id in ["..", "a\nb", ""] {
            assert!(at("Users", id).contains("(not sent:"), "{id:?}");
        }
    }
}
