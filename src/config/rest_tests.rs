//! `[target.auth]` and the REST target's events, as the config check reads them.

use super::rest::{AuthConfig, Event, Missing};
use super::*;

const BASE: &str = r#"
[ldap]
url = "ldap://127.0.0.1:3890"
bind_dn = "cn=admin,dc=example,dc=org"
bind_password = "hunter2"
base_dn = "dc=example,dc=org"

[target]
kind = "rest"
url = "https://api.example.com/v1"

[target.auth]
type = "bearer"
token = "api-tok-123"

[target.events.create_user]
method = "POST"
path = "/users"
id = "data.id"
body = { login = "{userName}", profile = { first = "{givenName}" }, enabled = "{active}", ext = "{externalId}" }

[target.events.update_user]
method = "PUT"
path = "/users/{id}"
body = { login = "{userName}", profile = { first = "{givenName}" }, enabled = "{active}" }

[target.events.deactivate_user]
method = "POST"
path = "/users/{id}/deactivate"

[target.events.find_user]
method = "GET"
path = "/users?login={userName}"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/dirbridge/dirbridge.toml"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn a_minimal_rest_target_reads_back_through_its_create_body() {
    let c = parse(BASE).unwrap();
    let rest = c.target.rest.clone().unwrap();
    assert_eq!(rest.user_fields.paths["id"], "data.id");
    assert_eq!(rest.user_fields.paths["userName"], "login");
    assert_eq!(rest.user_fields.paths["givenName"], "profile.first");
    assert_eq!(rest.user_fields.paths["externalId"], "ext");
    assert_eq!(rest.missing, Missing::Omit);
    assert!(!rest.events.contains_key(&Event::CreateGroup));
    assert!(matches!(c.target.auth, AuthConfig::Bearer { .. }));
    let dbg = format!("{:?}", c.target);
    assert!(!dbg.contains("api-tok-123"), "{dbg}");
}

#[test]
fn a_placeholder_the_event_cannot_fill_is_an_error_naming_the_event() {
    let e = err(&BASE.replace("/users/{id}/deactivate", "/users/{userName}/deactivate"));
    assert!(
        e.contains("target.events.deactivate_user.path") && e.contains("{userName}"),
        "{e}"
    );
    let e = err(&BASE.replace("ext = \"{externalId}\"", "ext = \"{costCenter}\""));
    assert!(
        e.contains("target.events.create_user.body") && e.contains("{costCenter}"),
        "{e}"
    );
    // A custom attribute mapped in [mapping.custom] may be named.
    let ok = format!(
        "{}\n[mapping.custom]\ncostCenter = \"departmentNumber\"\n",
        BASE.replace("ext = \"{externalId}\"", "ext = \"{costCenter}\"")
    );
    parse(&ok).unwrap();
    let e = err(&BASE.replace("path = \"/users\"", "path = \"/users/{id\""));
    assert!(e.contains("create_user.path"), "{e}");
}

#[test]
fn missing_events_are_decisions_the_check_makes_loudly() {
    // Deleting departures needs a delete event.
    let e = err(&format!("{BASE}\n[sync]\non_remove = \"delete\"\n"));
    assert!(e.contains("target.events.delete_user"), "{e}");
    // Deactivation needs its event.
    let e = err(&BASE.replace(
        "[target.events.deactivate_user]",
        "[target.events.delete_user]",
    ));
    assert!(e.contains("deactivate_user"), "{e}");
    // A user enabled again must be reactivated somehow.
    let e = err(&BASE.replace(", enabled = \"{active}\" }", " }"));
    assert!(e.contains("activate_user"), "{e}");
    // Groups: create_group without membership events, or group events without create_group.
    let e = err(&format!(
        "{BASE}\n[target.events.create_group]\nmethod = \"POST\"\npath = \"/groups\"\nid = \"id\"\n"
    ));
    assert!(
        e.contains("add_members") && e.contains("set_members"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}\n[target.events.delete_group]\nmethod = \"DELETE\"\npath = \"/groups/{{id}}\"\n"
    ));
    assert!(e.contains("create_group"), "{e}");
    // A create must say where the new id is.
    let e = err(&BASE.replace("id = \"data.id\"\n", ""));
    assert!(e.contains("create_user.id"), "{e}");
    let e = err(&BASE.replace(
        "[target.events.deactivate_user]",
        "[target.events.deactivate]",
    ));
    assert!(e.contains("not an event"), "{e}");
}

#[test]
fn bodies_methods_and_formats_are_checked() {
    let e = err(&BASE.replace("method = \"PUT\"", "method = \"TRACE\""));
    assert!(e.contains("update_user.method"), "{e}");
    let e = err(&format!(
        "{BASE}\n[target.events.find_user_by_key]\nmethod = \"GET\"\npath = \"/users\"\nbody = {{ q = \"{{externalId}}\" }}\n"
    ));
    assert!(e.contains("GET request carries no body"), "{e}");
    let e = err(&BASE.replace(
        "path = \"/users/{id}/deactivate\"",
        "path = \"/users/{id}/deactivate\"\nformat = \"form\"\nbody = { a = { b = \"c\" } }",
    ));
    assert!(e.contains("form body"), "{e}");
    let e = err(&BASE.replace("path = \"/users\"", "path = \"users\""));
    assert!(e.contains("must start with `/`"), "{e}");
    let e = err(&format!(
        "{BASE}\n[target.events.find_user_by_key]\nmethod = \"GET\"\npath = \"/users?q={{externalId}}\"\nnext = \"next\"\n"
    ));
    assert!(e.contains("pagination"), "{e}");
}

#[test]
fn auth_types_take_their_own_keys_and_secrets_in_three_forms() {
    let with_auth = |auth: &str| {
        let start = BASE.find("[target.auth]").unwrap();
        let end = BASE.find("[target.events.create_user]").unwrap();
        format!("{}{auth}\n{}", &BASE[..start], &BASE[end..])
    };
    let c = parse(&with_auth(
        "[target.auth]\ntype = \"oauth2\"\ntoken_url = \"https://idp.example.com/token\"\nclient_id = \"gw\"\nclient_secret = \"cs-9\"\nscope = \"users:write\"\n",
    ))
    .unwrap();
    match &c.target.auth {
        AuthConfig::OAuth2(o) => {
            assert_eq!(o.token_key, "access_token");
            assert_eq!(o.expiry_key, "expires_in");
            assert_eq!(o.scope.as_deref(), Some("users:write"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{c:?}").contains("cs-9"));
    let e = err(&with_auth(
        "[target.auth]\ntype = \"oauth2\"\ntoken_url = \"http://idp.example.com/token\"\nclient_id = \"gw\"\nclient_secret = \"cs-9\"\n",
    ));
    assert!(
        e.contains("token_url") && e.contains("clear text") && !e.contains("cs-9"),
        "{e}"
    );
    let e = err(&with_auth(
        "[target.auth]\ntype = \"basic\"\nuser = \"gw\"\ntoken = \"t\"\n",
    ));
    assert!(
        e.contains("type = \\\"bearer\\\"") || e.contains("bearer"),
        "{e}"
    );
    let e = err(&with_auth(
        "[target.auth]\ntype = \"basic\"\nuser = \"gw\"\n",
    ));
    assert!(e.contains("target.auth.password"), "{e}");
    let e = err(&with_auth(
        "[target.auth]\ntype = \"header\"\nname = \"Bad Name\"\nvalue = \"v\"\n",
    ));
    assert!(e.contains("target.auth.name"), "{e}");
    let e = err(&with_auth("[target.auth]\ntype = \"kerberos\"\n"));
    assert!(e.contains("target.auth.type"), "{e}");
    // Both a token and an auth table: which one is meant is not guessed.
    let e = err(&BASE.replace("[target.auth]", "token = \"x\"\n[target.auth]"));
    assert!(e.contains("not both"), "{e}");
    // Over plain http off loopback, any credentials are refused unless allowed.
    let e = err(&BASE.replace("https://api.example.com", "http://api.example.com"));
    assert!(e.contains("clear text"), "{e}");
}

#[test]
fn the_miniorange_preset_takes_overrides_and_needs_its_authorization() {
    let mo = r#"
[ldap]
url = "ldap://127.0.0.1:3890"
bind_dn = "cn=admin,dc=example,dc=org"
bind_password = "hunter2"
base_dn = "dc=example,dc=org"

[target]
kind = "miniorange"
url = "https://login.xecurify.com/moas"

[target.auth]
type = "miniorange"
customer_key = "248751"
api_key = "k-1"
"#;
    let c = parse(mo).unwrap();
    let rest = c.target.rest.unwrap();
    assert_eq!(rest.customer_key.as_deref(), Some("248751"));
    assert_eq!(
        rest.events[&Event::CreateUser].path,
        "/api/admin/users/create"
    );
    assert_eq!(
        rest.events[&Event::CreateUser].id_from.as_deref(),
        Some("userName")
    );
    assert_eq!(rest.user_fields.paths["id"], "username");
    assert!(rest.events.contains_key(&Event::ListUsers));
    // One key of one event overridden; the rest of the preset kept.
    let c = parse(&format!(
        "{mo}\n[target.events.update_user]\npath = \"/api/admin/users/update-v2\"\n\n[target.events.list_users]\nenabled = false\n"
    ))
    .unwrap();
    let rest = c.target.rest.unwrap();
    assert_eq!(
        rest.events[&Event::UpdateUser].path,
        "/api/admin/users/update-v2"
    );
    assert_eq!(
        rest.events[&Event::UpdateUser].method,
        reqwest::Method::POST
    );
    assert!(!rest.events.contains_key(&Event::ListUsers));
    let e = err(&mo.replace(
        "type = \"miniorange\"\ncustomer_key = \"248751\"\napi_key = \"k-1\"",
        "type = \"bearer\"\ntoken = \"t\"",
    ));
    assert!(e.contains("target.auth.type"), "{e}");
}

#[test]
fn rest_keys_on_a_scim_target_are_refused() {
    let scim = BASE.replace("kind = \"rest\"", "kind = \"scim\"");
    let e = err(&scim);
    assert!(
        e.contains("kind = \\\"rest\\\"") || e.contains("are for kind"),
        "{e}"
    );
}

/// The README's REST examples, as a newcomer copies them, are valid configurations.
#[test]
fn the_readme_rest_examples_are_valid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = |name: &str| {
        readme
            .split(&format!("```toml\n# example: {name}\n"))
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap_or_else(|| panic!("no `# example: {name}` block in the README"))
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    for f in ["bind.pw", "client.secret", "miniorange.key"] {
        std::fs::write(dir.path().join(f), "s3cret\n").unwrap();
    }
    let at = format!("{}/", dir.path().display());
    let read = |text: String| {
        let text = text.replace("/etc/dirbridge/", &at);
        Config::parse(&text, &dir.path().join("dirbridge.toml"))
    };
    let rest = read(block("rest")).unwrap();
    let r = rest.target.rest.as_ref().unwrap();
    assert!(r.events.contains_key(&Event::SetMembers));
    assert_eq!(r.group_fields.paths["members"], "members");
    assert_eq!(r.user_fields.paths["givenName"], "name.given");
    // The fragment replaces set_members with per-member events and adds response rules.
    let with_fragment = block("rest")
        .replace(
            "[target.events.get_group]\nmethod = \"GET\"\npath = \"/groups/{id}\"\n",
            "",
        )
        .replace(
            "[target.events.set_members]\nmethod = \"PATCH\"\npath = \"/groups/{id}\"\nbody = { members = \"{members}\" }\n",
            "",
        )
        .replace("[state]", &format!("{}\n[state]", block("rest-fragment")));
    let c = read(with_fragment).unwrap();
    let r = c.target.rest.as_ref().unwrap();
    assert!(
        r.events.contains_key(&Event::AddMembers) && !r.events.contains_key(&Event::SetMembers)
    );
    assert_eq!(r.response.success_value, Some(serde_json::json!(true)));
    let mo = read(block("miniorange")).unwrap();
    assert!(matches!(mo.target.auth, AuthConfig::MiniOrange { .. }));
}

#[test]
fn paths_headers_ids_and_member_events_that_cannot_work_are_refused() {
    let e = err(&BASE.replace("path = \"/users\"", "path = \"/users#x\""));
    assert!(e.contains("fragment"), "{e}");
    let e = err(&BASE.replace("path = \"/users\"", "path = \"/api/../users\""));
    assert!(e.contains("`..`"), "{e}");
    let e = err(&BASE.replace("path = \"/users\"", "path = \"/api/%2E%2e/users\""));
    assert!(e.contains("`..`"), "{e}");
    let e = err(&format!(
        "{BASE}\n[target.events.list_users]\nmethod = \"GET\"\npath = \"/users?p={{page}}\"\n"
    ));
    assert!(e.contains("start_page"), "{e}");
    let e = err(&BASE.replace(
        "path = \"/users\"",
        "path = \"/users\"\nheaders = { X-A = \"a\\r\\nX-Injected: 1\" }",
    ));
    assert!(e.contains("control character"), "{e}");
    let e = err(&BASE.replace(
        "id = \"data.id\"",
        "id = \"data.id\"\nid_from = \"userName\"",
    ));
    assert!(e.contains("not both"), "{e}");
    let e = err(&BASE.replace(
        "https://api.example.com/v1",
        "https://api.example.com/v1?tenant=a",
    ));
    assert!(e.contains("target.url") && e.contains("query"), "{e}");
    let groups = format!(
        "{BASE}\n[target.events.find_group]\nmethod = \"GET\"\npath = \"/groups?n={{displayName}}\"\n\
         [target.events.create_group]\nmethod = \"POST\"\npath = \"/groups\"\nid = \"id\"\n\
         [target.events.rename_group]\nmethod = \"PATCH\"\npath = \"/groups/{{id}}\"\n\
         [target.events.delete_group]\nmethod = \"DELETE\"\npath = \"/groups/{{id}}\"\n\
         [target.events.add_members]\nmethod = \"POST\"\npath = \"/groups/{{id}}/members\"\n\
         [target.events.remove_members]\nmethod = \"DELETE\"\npath = \"/groups/{{id}}/members/{{member}}\"\n"
    );
    let e = err(&groups);
    assert!(e.contains("add_members") && e.contains("{member}"), "{e}");
    parse(&groups.replace(
        "path = \"/groups/{id}/members\"\n",
        "path = \"/groups/{id}/members\"\nbody = { ids = \"{members}\" }\n",
    ))
    .unwrap();
}

#[test]
fn a_create_without_any_look_up_is_refused() {
    let e = err(&BASE.replace(
        "[target.events.find_user]\nmethod = \"GET\"\npath = \"/users?login={userName}\"",
        "[target.events.delete_user]\nmethod = \"DELETE\"\npath = \"/users/{id}\"",
    ));
    assert!(
        e.contains("target.events.find_user") && e.contains("list_users"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}\n[target.events.create_group]\nmethod = \"POST\"\npath = \"/groups\"\nid = \"id\"\n\
         [target.events.rename_group]\nmethod = \"PATCH\"\npath = \"/groups/{{id}}\"\n\
         [target.events.delete_group]\nmethod = \"DELETE\"\npath = \"/groups/{{id}}\"\n\
         [target.events.get_group]\nmethod = \"GET\"\npath = \"/groups/{{id}}\"\n\
         [target.events.set_members]\nmethod = \"PATCH\"\npath = \"/groups/{{id}}\"\nbody = {{ m = \"{{members}}\" }}\n"
    ));
    assert!(e.contains("find_group"), "{e}");
}
