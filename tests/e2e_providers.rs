//! Providers that do not behave as RFC 7644 says, played by a proxy in front of the real SCIM
//! server: one that ignores `filter` (answers the first page of everything), one that says it
//! cannot filter and refuses `count`. The target also holds accounts and groups that are not
//! the gateway's, named like the directory's (same first letters, same display names, a group
//! name differing only in case). Whatever the provider does, a sync, a resync, a sync from a
//! wiped state folder and a departure never change any of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::faults::{FaultProxy, Route};
use common::*;
use serde_json::{json, Value};

/// A proxy in front of the real server, playing a provider's quirks, as the gateway's target.
fn quirky(env: &mut Env) -> FaultProxy {
    let proxy = FaultProxy::start(env.scim.port, 0.0, 1);
    env.target_url = format!("http://127.0.0.1:{}/v2", proxy.port);
    proxy
}

/// Accounts on the target that are not the directory's: none may ever be adopted or changed.
fn add_strangers(scim: &Scim) {
    let users = [
        ("alicia", "Alice Archer", "Alice"),
        ("al", "Al Archer", "Alice"),
        ("bobby", "Bob Baker", "Bob"),
        ("bob.baker", "Bob Baker", "Bob"),
        ("carol2", "Carol Chen", "Carol"),
        ("aaron", "Aaron A", "Aaron"),
    ];
    for (i, (name, display, given)) in users.iter().enumerate() {
        let (status, doc) = scim.http(
            "POST",
            "/Users",
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": name, "displayName": display, "externalId": format!("theirs-{i}"),
                "name": {"givenName": given, "familyName": "Stranger"}, "active": true
            })),
        );
        assert_eq!(status, 201, "{doc}");
    }
    let alicia = scim.user("alicia").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["Engineering", "eng", "sales-team", "Sales"] {
        let (status, doc) = scim.http(
            "POST",
            "/Groups",
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": name, "members": [{"value": alicia}]
            })),
        );
        assert_eq!(status, 201, "{doc}");
    }
}

/// The strangers as they are now: id -> the whole resource without `meta`.
fn strangers(scim: &Scim) -> BTreeMap<String, Value> {
    let theirs = |v: &Value| {
        let name = v["userName"]
            .as_str()
            .or(v["displayName"].as_str())
            .unwrap_or_default();
        [
            "alicia",
            "al",
            "bobby",
            "bob.baker",
            "carol2",
            "aaron",
            "Engineering",
            "eng",
            "sales-team",
            "Sales",
        ]
        .contains(&name)
    };
    scim.users()
        .into_iter()
        .chain(scim.groups())
        .filter(theirs)
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("meta");
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn without_filter(line: &str, _body: &str) -> Route {
    // `GET /v2/Users?filter=userName%20eq%20%22alice%22 HTTP/1.1` -> `GET /v2/Users HTTP/1.1`
    let mut parts = line.splitn(3, ' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let target = match target.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("filter="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => target.to_string(),
    };
    Route::Forward(format!("{method} {target} {version}"))
}

/// Says it cannot filter, refuses `count` with a 500, and otherwise ignores filters too.
fn no_filter_no_count(line: &str, body: &str) -> Route {
    if line.contains("/ServiceProviderConfig") {
        return Route::Reply(
            200,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                "patch": {"supported": true}, "filter": {"supported": false, "maxResults": 0},
                "bulk": {"supported": false}, "changePassword": {"supported": false},
                "sort": {"supported": false}, "etag": {"supported": false},
                "authenticationSchemes": []
            })
            .to_string(),
        );
    }
    if line.contains("count=") {
        return Route::Reply(500, r#"{"detail":"count is not supported"}"#.into());
    }
    without_filter(line, body)
}

fn check_ownership(env: &mut Env, rule: fn(&str, &str) -> Route, quirk: &str) {
    add_strangers(&env.scim);
    let before = strangers(&env.scim);
    assert_eq!(before.len(), 10);
    let proxy = quirky(env);
    proxy.set_rule(rule);

    // First sync: the directory's three users and two groups are created, nothing adopted.
    let r = env.sync();
    assert!(r.stderr.contains(quirk), "quirk not logged: {r:?}");
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");
    assert_eq!(
        strangers(&env.scim),
        before,
        "a stranger was changed by sync"
    );
    assert_eq!(env.scim.member_names("engineering"), ["alice", "bob"]);
    assert_eq!(env.scim.users().len(), 6 + 3);
    let status = env.run(&["status"]);
    assert!(status.stdout.contains("Target quirks"), "{status:?}");
    assert!(status.stdout.contains(quirk), "{status:?}");

    // A resync reads the whole target: still only our own objects.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        strangers(&env.scim),
        before,
        "a stranger was changed by resync"
    );

    // The state folder is lost: the next sync finds exactly its own objects again.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(
        env.scim.users().len(),
        6 + 3,
        "duplicates after a wiped state"
    );
    assert_eq!(env.scim.groups().len(), 4 + 2);
    assert_eq!(
        strangers(&env.scim),
        before,
        "a stranger was changed after a wiped state"
    );
    let status = env.run(&["status", "--json"]);
    let doc: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["users"], 3, "{doc}");
    assert_eq!(doc["groups"], 2, "{doc}");

    // A departure deactivates the directory's user, not its namesakes.
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\nadd: description\ndescription: excluded\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 1, "{r:?}");
    assert_eq!(env.scim.user("bob").unwrap()["active"], false);
    assert_eq!(
        strangers(&env.scim),
        before,
        "a stranger was changed by a departure"
    );
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(strangers(&env.scim), before);
}

#[test]
fn a_provider_that_ignores_filter_never_gets_a_stranger_adopted() {
    let mut env = Env::start();
    check_ownership(&mut env, without_filter, "filter-ignored");
}

#[test]
fn a_provider_that_cannot_filter_or_count_is_listed_and_matched_locally() {
    let mut env = Env::start();
    check_ownership(&mut env, no_filter_no_count, "filter-unsupported");
    let status = env.run(&["status"]);
    assert!(status.stdout.contains("count-refused"), "{status:?}");
}

/// Answers a member removal with success and the group as it was (a read instead of the
/// PATCH): the removal is acknowledged but never carried out.
fn removals_ignored(line: &str, body: &str) -> Route {
    if line.starts_with("PATCH /v2/Groups/") && body.contains("\"op\":\"remove\"") {
        return Route::ForwardWith(line.replacen("PATCH", "GET", 1), String::new());
    }
    Route::Forward(line.to_string())
}

#[test]
fn a_member_removal_acknowledged_but_not_carried_out_is_sent_as_a_replacement() {
    let mut env = Env::start();
    let proxy = quirky(&mut env);
    proxy.set_rule(removals_ignored);
    env.sync();
    assert_eq!(env.scim.member_names("engineering"), ["alice", "bob"]);
    env.slapd.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    let r = env.sync();
    assert!(r.stderr.contains("member-removal-ignored"), "{r:?}");
    assert_eq!(env.scim.member_names("engineering"), ["alice"]);
    let r = env.sync();
    assert!(r.stderr.contains("operations=0"), "{r:?}");
}

/// Keeps no externalId (drops it from what is created), and describes a User schema without
/// `title` that requires `name.formatted`.
fn forgetful(line: &str, body: &str) -> Route {
    if line.starts_with("POST /v2/Users ") {
        let mut doc: Value = serde_json::from_str(body).unwrap();
        doc.as_object_mut().unwrap().remove("externalId");
        return Route::ForwardWith(line.to_string(), doc.to_string());
    }
    if line.starts_with("GET /v2/Schemas") {
        let attrs = json!([
            {"name": "userName", "type": "string", "required": true},
            {"name": "name", "type": "complex", "subAttributes": [
                {"name": "formatted", "type": "string", "required": true},
                {"name": "givenName", "type": "string"}, {"name": "familyName", "type": "string"}]},
            {"name": "displayName", "type": "string"}, {"name": "active", "type": "boolean"},
            {"name": "emails", "type": "complex"}
        ]);
        return Route::Reply(
            200,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1,
                   "Resources": [{"id": "urn:ietf:params:scim:schemas:core:2.0:User", "name": "User", "attributes": attrs}]})
            .to_string(),
        );
    }
    Route::Forward(line.to_string())
}

#[test]
fn a_provider_without_external_id_or_title_and_requiring_a_formatted_name() {
    let mut env = Env::start();
    let proxy = quirky(&mut env);
    proxy.set_rule(forgetful);
    let r = env.sync();
    for quirk in [
        "externalid-dropped",
        "schema-lacks-title",
        "formatted-name-required",
    ] {
        assert!(r.stderr.contains(quirk), "{quirk} not logged: {r:?}");
    }
    let alice = env.scim.user("alice").unwrap();
    assert_eq!(alice["name"]["formatted"], "Alice Archer", "{alice}");
    assert!(alice.get("title").is_none(), "title sent: {alice}");
    assert!(alice.get("externalId").is_none(), "{alice}");
    // Nothing looks changed: title is neither sent nor compared, on sync or resync.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = env.sync();
    assert!(r.stderr.contains("operations=0"), "{r:?}");
    // A renamed given name keeps name.formatted in step.
    env.slapd.modify(
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: givenName\ngivenName: Alicia\n",
    );
    env.sync();
    assert_eq!(
        env.scim.user("alice").unwrap()["name"]["formatted"],
        "Alicia Archer"
    );
    // Without externalId, a wiped state folder is rebuilt by userName: no duplicate.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(env.scim.users().len(), 3);
}

#[test]
fn a_wrong_directory_password_never_reaches_the_target() {
    let mut env = Env::start();
    let proxy = quirky(&mut env);
    std::fs::write(env.dir.path().join("bind.pw"), "not-the-password\n").unwrap();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("49") || r.stderr.to_lowercase().contains("credentials"),
        "{r:?}"
    );
    assert_eq!(proxy.requests(), 0, "the target was contacted: {r:?}");
    // With the right password, the first requests to the target are the discovery documents.
    std::fs::write(env.dir.path().join("bind.pw"), format!("{ADMIN_PW}\n")).unwrap();
    env.sync();
    assert!(proxy.requests() > 0);
}

#[test]
fn the_service_shows_the_quirks_it_found_on_status_and_the_dashboard() {
    let mut env = Env::start();
    let proxy = quirky(&mut env);
    proxy.set_rule(no_filter_no_count);
    let port = free_port();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1s\"\nfull_resync = \"off\"\nchange_feed = \"poll\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let mut child = Guard(env.spawn(&["run"]));
    let quirks = || -> Vec<String> {
        http_get(port, "/status")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|d| d["store"]["target_quirks"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|q| q["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(
        wait_until(30, || {
            let q = quirks();
            q.contains(&"filter-unsupported".to_string())
                && q.contains(&"count-refused".to_string())
        }),
        "{:?} {}",
        quirks(),
        env.spawned_log()
    );
    let (status, page) = http_get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("Target quirks"), "{page}");
    assert!(page.contains("filter.supported = false"), "{page}");
    // Logged once, not at every pass.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let log = env.spawned_log();
    assert_eq!(log.matches("quirk=filter-unsupported").count(), 1, "{log}");
    terminate(&mut child.0);
}

/// A GET to the real server behind the proxy.
fn upstream_get(port: u16, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("null");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Every group in an answer (one resource, or a ListResponse), its members rewritten by `f`.
fn rewrite_members(body: &str, f: &dyn Fn(&str) -> Value) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    let mut fix = |g: &mut Value| {
        if let Some(list) = g.get_mut("members").and_then(Value::as_array_mut) {
            for m in list.iter_mut() {
                if let Some(id) = m["value"].as_str().map(str::to_string) {
                    *m = f(&id);
                }
            }
        }
    };
    if let Some(items) = doc.get_mut("Resources").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(&mut fix);
    } else {
        fix(&mut doc);
    }
    doc.to_string()
}

/// Lists members only by `$ref`, as some providers do.
fn members_as_refs(line: &str, body: &str, _: u16) -> String {
    if !line.starts_with("GET /v2/Groups") {
        return body.to_string();
    }
    rewrite_members(
        body,
        &|id| json!({"$ref": format!("https://idp.example.com/v2/Users/{id}"), "type": "User"}),
    )
}

/// Lists members by their userName instead of their id, as some providers do.
fn members_as_user_names(line: &str, body: &str, upstream: u16) -> String {
    if !line.starts_with("GET /v2/Groups") {
        return body.to_string();
    }
    rewrite_members(body, &|id| {
        let u = upstream_get(upstream, &format!("/v2/Users/{id}"));
        json!({"value": u["userName"], "display": u["displayName"]})
    })
}

fn members_survive(rule: fn(&str, &str, u16) -> String) {
    let mut env = Env::start();
    let proxy = quirky(&mut env);
    proxy.set_answer_rule(rule);
    env.sync();
    assert_eq!(env.scim.member_names("engineering"), ["alice", "bob"]);
    // The members read back are the ones sent: nothing to add, nothing dangling to remove.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "members", "added"), 0, "{r:?}");
    assert_eq!(count(&r, "members", "removed"), 0, "{r:?}");
    assert_eq!(env.scim.member_names("engineering"), ["alice", "bob"]);
    env.slapd.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "members", "removed"), 1, "{r:?}");
    assert_eq!(env.scim.member_names("engineering"), ["alice"]);
    // A member removed behind the gateway's back is put back by a resync.
    let gid = env.scim.group("sales").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, doc) = env.scim.http(
        "PATCH",
        &format!("/Groups/{gid}"),
        Some(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "members", "value": []}]}),
        ),
    );
    assert!(s == 200 || s == 204, "{s} {doc}");
    let r = env.run(&["resync"]);
    assert_eq!(count(&r, "members", "added"), 1, "{r:?}");
    assert_eq!(env.scim.member_names("sales"), ["carol"]);
    let r = env.run(&["resync"]);
    assert_eq!(count(&r, "members", "added"), 0, "{r:?}");
}

#[test]
fn members_listed_only_by_ref_are_understood() {
    members_survive(members_as_refs);
}

#[test]
fn members_listed_by_user_name_are_understood() {
    members_survive(members_as_user_names);
}

/// Refuses every member removal by PATCH (501), in whatever form.
fn removals_not_implemented(line: &str, body: &str) -> Route {
    if line.starts_with("PATCH /v2/Groups/") && body.contains("\"op\":\"remove\"") {
        return Route::Reply(501, r#"{"detail":"Not Implemented"}"#.into());
    }
    Route::Forward(line.to_string())
}

#[test]
fn member_removals_refused_in_every_patch_form_go_as_get_and_put() {
    let mut env = Env::start();
    let proxy = quirky(&mut env);
    proxy.set_rule(removals_not_implemented);
    env.sync();
    env.slapd.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    let r = env.sync();
    assert!(r.stderr.contains("member-remove-refused"), "{r:?}");
    assert_eq!(env.scim.member_names("engineering"), ["alice"]);
    let r = env.sync();
    assert!(r.stderr.contains("operations=0"), "{r:?}");
    // A departure: removed from its groups, then deactivated.
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 1, "{r:?}");
    assert!(env.scim.member_names("sales").is_empty());
    let r = env.sync();
    assert!(r.stderr.contains("operations=0"), "{r:?}");
}

#[test]
fn an_answer_larger_than_the_limit_is_an_error_not_memory() {
    let mut env = Env::start();
    env.sync();
    // A listing of three users is a few KiB: over a 1-KiB limit.
    env.target_extra = "max_response_kib = 1\n".into();
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("larger than target.max_response_kib (1 KiB)"),
        "{r:?}"
    );
    env.target_extra = String::new();
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// A provider whose user listing never ends: each page holds 200 users never seen before and
/// says 10,000 more exist than the page reaches.
fn endless_listing(line: &str, _body: &str) -> Route {
    let path = line.split_whitespace().nth(1).unwrap_or_default();
    if line.starts_with("GET ") && path.contains("/Users?") && !path.contains("filter") {
        let start: u64 = path
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("startIndex="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let users: Vec<Value> = (start..start + 200)
            .map(|n| json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "id": format!("ghost-{n}"), "userName": format!("ghost-{n}"), "active": true}))
            .collect();
        return Route::Reply(
            200,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                   "totalResults": start + 10_000, "startIndex": start, "itemsPerPage": 200,
                   "Resources": users})
            .to_string(),
        );
    }
    Route::Forward(line.to_string())
}

#[test]
fn a_listing_that_never_ends_is_bounded_by_the_first_total_and_changes_nothing() {
    let mut env = Env::start();
    env.sync();
    let before = (env.scim.users(), env.scim.groups());
    let proxy = quirky(&mut env);
    proxy.set_rule(endless_listing);
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(
            "the provider sent more than 16001 Users though its first page said 10001 exist"
        ),
        "{r:?}"
    );
    // Bounded: the first page said 10,000; about 16,000 were taken, in about 80 pages.
    assert!(proxy.requests() < 200, "{} requests", proxy.requests());
    assert_eq!((env.scim.users(), env.scim.groups()), before);
}

static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Passes everything on, counting look-ups of users by userName.
fn counting_lookups(line: &str, _body: &str) -> Route {
    if line.starts_with("GET ") && line.contains("filter=userName") {
        LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Route::Forward(line.to_string())
}

#[test]
fn many_creates_go_without_a_look_up_each_yet_adopt_what_is_there() {
    let mut env = Env::start();
    add_strangers(&env.scim);
    let before = strangers(&env.scim);
    let mut ldif = String::new();
    for i in 0..60 {
        ldif += &format!(
            "dn: uid=n{i:03},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: n{i:03}\n\
             cn: New {i}\nsn: New\ngivenName: N{i}\nmail: n{i:03}@example.org\n\n"
        );
    }
    env.slapd.add(&ldif);
    // Made by hand before the gateway ran: the same userName (in another case) is adopted.
    let (status, _) = env.scim.http(
        "POST",
        "/Users",
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "N007", "active": true
        })),
    );
    assert_eq!(status, 201);
    let proxy = quirky(&mut env);
    proxy.set_rule(counting_lookups);
    let r = env.sync();
    assert!(
        r.stderr.contains("listed the target once"),
        "63 creates list the target: {r:?}"
    );
    assert_eq!(count(&r, "users", "created"), 62, "{r:?}");
    assert_eq!(count(&r, "users", "adopted"), 1, "{r:?}");
    // Only the name the listing holds is looked up (not one request per create; the two
    // groups, too few to list for, are looked up by name).
    let lookups = LOOKUPS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        lookups == 1,
        "{lookups} filtered look-ups for 63 creates: {r:?}"
    );
    let users = env.scim.users();
    assert_eq!(
        users.len(),
        6 + 1 + 62,
        "no duplicate, nothing else created"
    );
    assert_eq!(strangers(&env.scim), before, "a look-alike was touched");
    let r = env.run(&["plan", "--json"]);
    let plan: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["operations"], json!([]), "{r:?}");
}

/// `check` against a provider that cannot filter or count: the quirks its look-up found are
/// listed with what the gateway does about them, and the credentials are still proven.
#[test]
fn check_lists_the_quirks_it_finds_on_the_way() {
    let mut env = Env::start();
    let proxy = quirky(&mut env);
    proxy.set_rule(no_filter_no_count);
    let r = env.run(&["check"]);
    assert_ne!(r.code, 2, "{r:?}");
    let target = r
        .stdout
        .lines()
        .find(|l| l.starts_with("OK    target "))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(target.contains("filter: no"), "{r:?}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("OK    credentials ")),
        "{r:?}"
    );
    let quirks: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("OK    quirk "))
        .collect();
    assert!(
        quirks
            .iter()
            .any(|l| l.contains("filter.supported = false")),
        "{r:?}"
    );
    assert!(env.scim.users().is_empty(), "check wrote to the target");
}
