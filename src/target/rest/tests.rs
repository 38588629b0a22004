use serde_json::json;

use super::answer::{self, Judge};
use crate::config::rest::{FieldPaths, ResponseRules};
use crate::target::http::ErrorShape;
use crate::target::TargetErrorKind;

fn mini_rules() -> ResponseRules {
    ResponseRules {
        success_path: Some("status".into()),
        success_value: Some(json!("SUCCESS")),
        message_path: Some("message".into()),
        exists_statuses: vec![409],
        exists_message: Some("already exists".into()),
        not_found_message: None,
        not_found_values: vec![json!("FAILED")],
    }
}

#[test]
fn an_error_in_a_success_status_is_an_error_with_its_message() {
    let rules = mini_rules();
    let j = Judge {
        rules: &rules,
        expect: &[],
    };
    let ok = reqwest::StatusCode::OK;
    assert!(j.body_error(ok, &json!({"status": "SUCCESS"})).is_none());
    match j.body_error(
        ok,
        &json!({"status": "ERROR", "message": "User already exists with this username"}),
    ) {
        Some(TargetErrorKind::Exists {
            status: 200,
            detail,
        }) => {
            assert_eq!(
                detail.as_deref(),
                Some("User already exists with this username")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        j.body_error(ok, &json!({"status": "FAILED"})),
        Some(TargetErrorKind::Missing { .. })
    ));
    match j.body_error(
        ok,
        &json!({"status": "ERROR", "message": "license\r\nlimit"}),
    ) {
        Some(TargetErrorKind::Http {
            status: 200,
            code,
            detail,
        }) => {
            assert_eq!(code.as_deref(), Some("ERROR"));
            assert_eq!(detail.as_deref(), Some("licenselimit"));
        }
        other => panic!("{other:?}"),
    }
    // No status at all is not a success either.
    assert!(j.body_error(ok, &json!({})).is_some());
}

#[test]
fn statuses_read_as_configured() {
    let rules = ResponseRules {
        exists_statuses: vec![409, 422],
        ..Default::default()
    };
    let j = Judge {
        rules: &rules,
        expect: &[201],
    };
    assert!(j.is_success(reqwest::StatusCode::CREATED));
    assert!(!j.is_success(reqwest::StatusCode::OK));
    let e = j.http_error(
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        br#"{"error":"taken"}"#,
    );
    assert!(
        matches!(e, TargetErrorKind::Exists { status: 422, .. }),
        "{e:?}"
    );
    let e = j.http_error(reqwest::StatusCode::NOT_FOUND, b"gone");
    assert!(
        matches!(e, TargetErrorKind::Missing { status: 404, .. }),
        "{e:?}"
    );
}

#[test]
fn a_listed_user_is_read_back_through_the_field_paths() {
    let mut paths = FieldPaths::default();
    for (k, v) in [
        ("id", "id"),
        ("userName", "login"),
        ("givenName", "name.given"),
        ("active", "state"),
        ("externalId", "ext"),
        ("costCenter", "cc"),
    ] {
        paths.paths.insert(k.into(), v.into());
    }
    let u = answer::user(
        &json!({"id": 17, "login": "ann", "name": {"given": "Ann"}, "state": "disabled", "ext": "k1", "cc": 42}),
        &paths,
        &["costCenter".to_string()],
    )
    .unwrap();
    assert_eq!(u.id, "17");
    assert_eq!(u.user.user_name, "ann");
    assert_eq!(u.user.given_name.as_deref(), Some("Ann"));
    assert!(!u.user.active);
    assert_eq!(u.external_id.as_deref(), Some("k1"));
    assert_eq!(
        u.user.custom.get("costCenter").map(String::as_str),
        Some("42")
    );
    // Without an id or a userName it cannot be matched, so it is not read.
    assert!(answer::user(&json!({"login": "ann"}), &paths, &[]).is_none());
    assert!(answer::user(&json!({"id": 1}), &paths, &[]).is_none());
}

#[test]
fn items_come_from_the_data_path_or_the_answer_itself() {
    let doc = json!({"users": {"data": [{"id": 1}]}});
    assert_eq!(answer::items(&doc, Some("users.data")).unwrap().len(), 1);
    assert!(answer::items(&doc, Some("nope")).is_err());
    assert_eq!(
        answer::items(&json!([{"a":1},{"a":2}]), None)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(answer::items(&json!({"a":1}), None).unwrap().len(), 1);
    assert!(answer::items(&json!("text"), None).is_err());
}

mod requests {
    //! What the client sends, recorded by a loopback server that answers canned documents: one
    //! request per member or one per batch, form bodies, values in headers, pages by header.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::super::RestClient;
    use crate::config::Config;
    use crate::model::User;
    use crate::target::Target;

    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    /// How the recorder answers: (method, path, headers) -> (status, body).
    type Answer = fn(&str, &str, &[(String, String)]) -> (u16, String);

    /// A server answering with `answer`; returns its port and what it saw.
    fn recorder(answer: Answer) -> (u16, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut out = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_string();
                        let path = parts.next().unwrap_or("").to_string();
                        let mut headers = Vec::new();
                        let mut length = 0;
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end().to_string();
                            if h.is_empty() {
                                break;
                            }
                            let (k, v) = h.split_once(':').unwrap();
                            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                            if k == "content-length" {
                                length = v.parse().unwrap();
                            }
                            headers.push((k, v));
                        }
                        let mut body = vec![0u8; length];
                        reader.read_exact(&mut body).unwrap();
                        let (status, doc) = answer(&method, &path, &headers);
                        log.lock().unwrap().push(Seen {
                            method,
                            path,
                            headers,
                            body: String::from_utf8(body).unwrap(),
                        });
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            doc.len()
                        );
                        out.write_all(head.as_bytes()).unwrap();
                        out.write_all(doc.as_bytes()).unwrap();
                    }
                });
            }
        });
        (port, seen)
    }

    fn client(port: u16, events: &str) -> RestClient {
        client_with(port, events, true)
    }

    /// `update_active`: whether the update body names `{active}` (else activation is its own
    /// event).
    fn client_with(port: u16, events: &str, update_active: bool) -> RestClient {
        let find_user = if events.contains("[target.events.find_user]") {
            ""
        } else {
            "[target.events.find_user]\nmethod = \"GET\"\npath = \"/users?login={userName}\"\n"
        };
        let update_body = if update_active {
            r#"{ login = "{userName}", active = "{active}" }"#
        } else {
            r#"{ login = "{userName}" }"#
        };
        let text = format!(
            r#"
[ldap]
url = "ldap://127.0.0.1:3890"
bind_dn = "cn=admin,dc=example,dc=org"
bind_password = "pw"
base_dn = "dc=example,dc=org"

[target]
kind = "rest"
url = "http://127.0.0.1:{port}/api/"
retries = 0

[target.auth]
type = "header"
name = "X-Api-Key"
value = "k3y"

[target.events.create_user]
method = "POST"
path = "/users"
id = "id"
body = {{ login = "{{userName}}", active = "{{active}}", ext = "{{externalId}}" }}

[target.events.update_user]
method = "PUT"
path = "/users/{{id}}"
body = {update_body}

[target.events.deactivate_user]
method = "DELETE"
path = "/users/{{id}}/session"

[target.events.create_group]
method = "POST"
path = "/groups"
id = "id"
body = {{ name = "{{displayName}}" }}

[target.events.rename_group]
method = "PATCH"
path = "/groups/{{id}}"
body = {{ name = "{{displayName}}" }}

[target.events.delete_group]
method = "DELETE"
path = "/groups/{{id}}"

[target.events.find_group]
method = "GET"
path = "/groups?name={{displayName}}"
{events}
{find_user}
"#
        );
        let cfg = Config::parse(&text, Path::new("/tmp/c.toml")).unwrap();
        RestClient::new(&cfg.target).unwrap()
    }

    fn ok(_: &str, _: &str, _: &[(String, String)]) -> (u16, String) {
        (200, "{}".into())
    }

    #[tokio::test]
    async fn members_go_one_request_per_member_or_one_per_batch_as_configured() {
        let (port, seen) = recorder(ok);
        let per_member = client(
            port,
            "[target.events.add_members]\nmethod = \"PUT\"\npath = \"/groups/{id}/members/{member}\"\n\
             [target.events.remove_members]\nmethod = \"DELETE\"\npath = \"/groups/{id}/members/{member}\"\n",
        );
        per_member
            .add_members("g 1", &["a/b".into(), "c".into()])
            .await
            .unwrap();
        let batch = client(
            port,
            "[target.events.add_members]\nmethod = \"POST\"\npath = \"/groups/{id}/members\"\nbody = { add = [ { value = \"{member}\" } ] }\n\
             [target.events.remove_members]\nmethod = \"POST\"\npath = \"/groups/{id}/members/remove\"\nbody = { ids = \"{members}\" }\n",
        );
        batch
            .add_members("g1", &["a".into(), "b".into()])
            .await
            .unwrap();
        batch.remove_members("g1", &["a".into()]).await.unwrap();
        let s = seen.lock().unwrap().clone();
        let lines: Vec<String> = s
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.path, r.body))
            .collect();
        assert_eq!(
            lines,
            vec![
                "PUT /api/groups/g%201/members/a%2Fb ".to_string(),
                "PUT /api/groups/g%201/members/c ".to_string(),
                r#"POST /api/groups/g1/members {"add":[{"value":"a"},{"value":"b"}]}"#.to_string(),
                r#"POST /api/groups/g1/members/remove {"ids":["a"]}"#.to_string(),
            ]
        );
        // Every request carried the credential header.
        assert!(s
            .iter()
            .all(|r| r.headers.contains(&("x-api-key".into(), "k3y".into()))));
    }

    fn group_then_ok(method: &str, path: &str, _: &[(String, String)]) -> (u16, String) {
        if method == "GET" && path == "/api/groups/g1" {
            (200, r#"{"id":"g1","name":"G","members":["a","b"]}"#.into())
        } else {
            (200, "{}".into())
        }
    }

    #[tokio::test]
    async fn set_members_reads_the_group_and_sends_the_changed_list() {
        let (port, seen) = recorder(group_then_ok);
        let c = client(
            port,
            "[target.events.get_group]\nmethod = \"GET\"\npath = \"/groups/{id}\"\n\
             [target.events.set_members]\nmethod = \"PATCH\"\npath = \"/groups/{id}\"\nbody = { members = \"{members}\" }\n\
             [target.fields.group]\ndisplayName = \"name\"\n",
        );
        c.add_members("g1", &["c".into(), "a".into()])
            .await
            .unwrap();
        c.remove_members("g1", &["b".into()]).await.unwrap();
        // Nothing to change: only the read.
        c.remove_members("g1", &["zz".into()]).await.unwrap();
        let s = seen.lock().unwrap().clone();
        let lines: Vec<String> = s
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.path, r.body))
            .collect();
        assert_eq!(
            lines,
            vec![
                "GET /api/groups/g1 ".to_string(),
                r#"PATCH /api/groups/g1 {"members":["a","b","c"]}"#.to_string(),
                "GET /api/groups/g1 ".to_string(),
                r#"PATCH /api/groups/g1 {"members":["a"]}"#.to_string(),
                "GET /api/groups/g1 ".to_string(),
            ]
        );
    }

    fn pages(_: &str, path: &str, headers: &[(String, String)]) -> (u16, String) {
        let page = headers
            .iter()
            .find(|(k, _)| k == "x-page")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        match (path, page) {
            ("/api/people", "1") => (200, r#"{"items":[{"id":1,"login":"ann"}]}"#.into()),
            ("/api/people", "2") => (200, r#"{"items":[{"id":2,"login":"bo"}]}"#.into()),
            ("/api/people", _) => (200, r#"{"items":[]}"#.into()),
            ("/api/users", _) => (201, r#"{"id":"new-1"}"#.into()),
            _ => (200, "{}".into()),
        }
    }

    /// Membership events, which a target that pushes groups must have.
    const MEMBERS: &str = "[target.events.get_group]\nmethod = \"GET\"\npath = \"/groups/{id}\"\n\
                           [target.events.set_members]\nmethod = \"PATCH\"\npath = \"/groups/{id}\"\nbody = { members = \"{members}\" }\n";

    #[tokio::test]
    async fn form_bodies_header_values_and_pages_in_a_header() {
        let (port, seen) = recorder(pages);
        let c = client(
            port,
            &format!(
                "[target.events.list_users]\nmethod = \"GET\"\npath = \"/people\"\nheaders = {{ X-Page = \"{{page}}\" }}\ndata = \"items\"\nstart_page = 1\n\
                 [target.events.find_user]\nmethod = \"GET\"\npath = \"/people\"\nheaders = {{ X-Login = \"{{userName}}\", X-Page = \"9\" }}\ndata = \"items\"\n{MEMBERS}"
            ),
        );
        let listed = c.list_users().await.unwrap();
        let names: Vec<&str> = listed.iter().map(|u| u.user.user_name.as_str()).collect();
        assert_eq!(names, ["ann", "bo"]);
        assert_eq!(listed[0].id, "1");
        // A look-up sends the value in its header and adopts only an exact match.
        assert!(c.find_user("o'brien & co").await.unwrap().is_none());
        let before = User {
            user_name: "x".into(),
            active: false,
            ..Default::default()
        };
        let after = User {
            active: true,
            ..before.clone()
        };
        let changes = before.changes_to(&after);
        c.update_user("7&8", &changes, &before, &after, None)
            .await
            .unwrap();
        let s = seen.lock().unwrap().clone();
        let find = s
            .iter()
            .find(|r| r.headers.iter().any(|(k, _)| k == "x-login"))
            .unwrap();
        assert!(find
            .headers
            .contains(&("x-login".into(), "o'brien & co".into())));
        let update = s.iter().find(|r| r.method == "PUT").unwrap();
        assert_eq!(update.path, "/api/users/7%268");
        assert_eq!(update.body, r#"{"active":true,"login":"x"}"#);
        // The update names {active}: no separate activation is sent.
        assert!(!s.iter().any(|r| r.path.ends_with("/on")));

        // Where it does not, a user enabled again gets the activation event alone (its form
        // body encoded as a form).
        let (port, seen) = recorder(pages);
        let c = client_with(
            port,
            &format!("[target.events.activate_user]\nmethod = \"POST\"\npath = \"/users/{{id}}/on\"\nformat = \"form\"\nbody = {{ state = \"on & off\", who = \"{{id}}\" }}\n{MEMBERS}"),
            false,
        );
        c.update_user("7&8", &changes, &before, &after, None)
            .await
            .unwrap();
        let s = seen.lock().unwrap().clone();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].path, "/api/users/7%268/on");
        assert_eq!(s[0].body, "state=on+%26+off&who=7%268");
        assert!(s[0].headers.contains(&(
            "content-type".into(),
            "application/x-www-form-urlencoded".into()
        )));
    }
}
