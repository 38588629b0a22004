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

fn without_filter(line: &str) -> Route {
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
fn no_filter_no_count(line: &str) -> Route {
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
    without_filter(line)
}

fn check_ownership(env: &mut Env, rule: fn(&str) -> Route, quirk: &str) {
    add_strangers(&env.scim);
    let before = strangers(&env.scim);
    assert_eq!(before.len(), 10);
    let proxy = FaultProxy::start(env.scim.port, 0.0, 1);
    proxy.set_rule(rule);
    env.target_url = format!("http://127.0.0.1:{}/v2", proxy.port);

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
