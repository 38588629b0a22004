//! The REST target end to end: slapd into a real generic REST server (json-server, npm) behind
//! real credentials (OAuth 2.0 client credentials from oidc-provider, Basic, a bearer token, a
//! custom header), configured per event as a newcomer would from the README.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::rest::{RestAuth, RestEnv, API_KEY, API_PASSWORD, API_TOKEN, CLIENT_SECRET};
use common::{check_line, count, set_attribute};
use serde_json::Value;

fn names(users: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = users
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or("").to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn first_sync_pushes_users_groups_and_members_and_a_second_sends_nothing() {
    let env = RestEnv::start(RestAuth::OAuth2 { ttl: 3600 });
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");
    let rest = &env.rest;
    assert_eq!(names(&rest.users()), ["alice", "bob", "carol"]);
    let alice = rest.user("alice").unwrap();
    assert_eq!(alice["email"], "alice@example.org");
    assert_eq!(alice["title"], "CTO");
    assert_eq!(alice["active"], true);
    assert!(alice["externalId"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(alice["name"]["family"], "Archer");
    assert_eq!(rest.member_names("engineering"), ["alice", "bob"]);
    assert_eq!(rest.member_names("sales"), ["carol"]);
    // One token for the whole run.
    assert_eq!(rest.tokens_issued(), 1);

    // Nothing changed: nothing is written, and the plan is empty.
    let before = rest.stats()["forwarded_by_method"].clone();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    let after = rest.stats()["forwarded_by_method"].clone();
    for m in ["POST", "PATCH", "PUT", "DELETE"] {
        assert_eq!(before[m], after[m], "{m} sent by a sync with nothing to do");
    }
    let plan = env.run(&["plan", "--json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let doc: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(doc["operations"], serde_json::json!([]), "{plan:?}");
    // A resync reads the target back and finds it equal: fields the events do not send
    // (department, employeeNumber) are not drift.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
    let again = rest.stats()["forwarded_by_method"].clone();
    for m in ["POST", "PATCH", "PUT", "DELETE"] {
        assert_eq!(
            after[m], again[m],
            "{m} sent by a resync with nothing to repair"
        );
    }
    // test-mapping shows the configured requests, not SCIM's.
    set_attribute(&env.slapd, "carol", "title", "VP");
    let t = env.run(&["test-mapping", "carol", "--json"]);
    let doc: Value = serde_json::from_str(&t.stdout).unwrap();
    let req = &doc["requests"][0];
    assert_eq!(req["method"], "PATCH", "{t:?}");
    assert!(
        req["path"].as_str().unwrap().starts_with("/api/users/"),
        "{t:?}"
    );
    assert_eq!(req["body"]["title"], "VP", "{t:?}");
    // The client secret never shows.
    let debug = env.run(&["--log-level", "debug", "sync"]);
    assert!(!debug.all().contains(CLIENT_SECRET), "{debug:?}");
}

#[test]
fn changes_renames_departures_and_memberships_reach_the_api() {
    let env = RestEnv::start(RestAuth::Basic);
    env.sync();
    let rest = &env.rest;
    let bob_id = rest.user("bob").unwrap()["id"].clone();

    set_attribute(&env.slapd, "bob", "title", "Staff Engineer");
    env.slapd.modify(
        "dn: cn=sales,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    env.slapd.modify(
        "dn: uid=carol,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=caroline\ndeleteoldrdn: 1\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 2, "{r:?}");
    let bob = rest.user("bob").unwrap();
    assert_eq!(bob["title"], "Staff Engineer");
    assert_eq!(bob["id"], bob_id, "an update keeps the object");
    assert!(rest.user("carol").is_none());
    assert!(rest.user("caroline").is_some());
    assert_eq!(rest.member_names("sales"), ["bob", "caroline"]);

    // A title removed in the directory is removed on the target (null, as configured).
    env.slapd
        .modify("dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\ndelete: title\n");
    // Bob leaves the filter: deactivated, and out of his groups.
    set_attribute(&env.slapd, "alice", "employeeType", "disabled");
    env.sync();
    assert_eq!(rest.user("bob").unwrap()["title"], Value::Null);
    assert_eq!(rest.user("alice").unwrap()["active"], false);
    // Enabled again: reactivated by the update.
    set_attribute(&env.slapd, "alice", "employeeType", "staff");
    env.sync();
    assert_eq!(rest.user("alice").unwrap()["active"], true);

    env.slapd.delete("uid=bob,ou=people,dc=example,dc=org");
    env.sync();
    assert_eq!(rest.user("bob").unwrap()["active"], false);
    assert_eq!(rest.member_names("engineering"), ["alice"]);
    assert_eq!(rest.member_names("sales"), ["caroline"]);
    let plan = env.run(&["plan", "--json"]);
    let doc: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(doc["operations"], serde_json::json!([]), "{plan:?}");
}

#[test]
fn with_on_remove_delete_a_departed_user_is_deleted() {
    let mut env = RestEnv::start(RestAuth::Bearer);
    env.extra.push_str("[sync]\non_remove = \"delete\"\n");
    env.sync();
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    env.sync();
    assert!(env.rest.user("carol").is_none());
    assert_eq!(names(&env.rest.users()), ["alice", "bob"]);
    assert!(env.rest.member_names("sales").is_empty());
}

#[test]
fn resync_repairs_drift_made_on_the_server_and_a_lost_state_is_adopted_back() {
    let env = RestEnv::start(RestAuth::Header);
    env.sync();
    let rest = &env.rest;
    let alice = rest.user("alice").unwrap();
    let carol = rest.user("carol").unwrap();
    let eng = rest.group("engineering").unwrap();
    // Drift behind the gateway's back: a changed title, a deleted user, bob put in sales, and a
    // stranger (not ours) in engineering.
    let id = alice["id"].as_str().unwrap();
    rest.http(
        "PATCH",
        &format!("/__raw/users/{id}"),
        Some(&serde_json::json!({"title": "Intern"})),
    );
    rest.http(
        "DELETE",
        &format!("/__raw/users/{}", carol["id"].as_str().unwrap()),
        None,
    );
    let (_, stranger) = rest.http(
        "POST",
        "/__raw/users",
        Some(&serde_json::json!({"userName": "mallory", "active": true})),
    );
    let mut members = eng["members"].as_array().unwrap().clone();
    members.push(stranger["id"].clone());
    rest.http(
        "PATCH",
        &format!("/__raw/groups/{}", eng["id"].as_str().unwrap()),
        Some(&serde_json::json!({"members": members})),
    );
    let sales = rest.group("sales").unwrap();
    let bob = rest.user("bob").unwrap();
    let mut members = sales["members"].as_array().unwrap().clone();
    members.push(bob["id"].clone());
    rest.http(
        "PATCH",
        &format!("/__raw/groups/{}", sales["id"].as_str().unwrap()),
        Some(&serde_json::json!({"members": members})),
    );
    // A sync trusts its records; a resync reads the target.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(rest.user("alice").unwrap()["title"], "CTO");
    assert!(
        rest.user("carol").is_some(),
        "deleted behind our back: created again"
    );
    assert_eq!(rest.member_names("sales"), ["carol"]);
    // The stranger is not ours: left alone, and so is its membership.
    assert_eq!(
        rest.member_names("engineering"),
        ["alice", "bob", "mallory"]
    );
    assert_eq!(rest.user("mallory").unwrap()["active"], true);

    // The state folder lost: everything is found again, nothing duplicated.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let users_before = rest.users().len();
    let groups_before = rest.groups().len();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(rest.users().len(), users_before);
    assert_eq!(rest.groups().len(), groups_before);
    let plan = env.run(&["plan", "--json"]);
    let doc: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(doc["operations"], serde_json::json!([]), "{plan:?}");
}

#[test]
fn hostile_values_reach_the_server_byte_exact() {
    let env = RestEnv::start(RestAuth::None);
    let hostile = [
        ("o'brien \"q\" {x}", "a&b=c?d#e/f"),
        ("100% {{userName}}", "line\\two"),
        ("emoji 🧑‍💻 ünï", "plus+and space"),
    ];
    for (i, (cn, title)) in hostile.iter().enumerate() {
        let uid = format!("h{i}");
        env.slapd.add(&format!(
            "dn: uid={uid},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\ngivenName: {cn}\nsn: {cn}\ntitle: {title}\nmail: {uid}@example.org\n"
        ));
    }
    // A userName with a slash, a question mark and quotes: a path and a query stay theirs.
    env.slapd.add(
        "dn: uid=x/y?z#\\\"w\\\",ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: x/y?z#\"w\"\ncn: Odd Name\ngivenName: Odd\nsn: Name\nmail: odd@example.org\n",
    );
    let r = env.sync();
    assert_eq!(r.code, 0, "{r:?}");
    for (i, (cn, title)) in hostile.iter().enumerate() {
        let u = env.rest.user(&format!("h{i}")).unwrap();
        assert_eq!(u["displayName"], *cn, "{u}");
        assert_eq!(u["title"], *title, "{u}");
    }
    let odd = env
        .rest
        .user("x/y?z#\"w\"")
        .expect("the odd userName, byte-exact");
    assert_eq!(odd["name"]["family"], "Name");
    // Nothing to do afterwards: the look-ups found each by its exact name.
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(env.rest.users().len(), 7);
}

#[test]
fn the_oauth2_token_is_reused_renewed_after_expiry_and_after_revocation() {
    let env = RestEnv::start(RestAuth::OAuth2 { ttl: 3 });
    env.sync();
    assert_eq!(env.rest.tokens_issued(), 1, "one token for a whole run");
    std::thread::sleep(std::time::Duration::from_secs(4));
    set_attribute(&env.slapd, "bob", "title", "Lead");
    env.sync();
    assert_eq!(env.rest.tokens_issued(), 2);
    assert_eq!(env.rest.user("bob").unwrap()["title"], "Lead");

    // A service keeps its token across passes; revoked, it is refused once, renewed once.
    let mut env = env;
    env.rest.stop();
    let slapd = env.slapd;
    let rest = common::rest::RestServer::start(RestAuth::OAuth2 { ttl: 3600 });
    let mut env2 = RestEnv::with(slapd, rest);
    env2.extra.push_str(&format!(
        "[daemon]\npoll_interval = \"1s\"\nlisten = \"127.0.0.1:{}\"\n",
        common::free_port()
    ));
    // Killed if the test fails before it stops it.
    let mut child = common::Guard(env2.spawn(&["run"]));
    assert!(
        common::wait_until(30, || env2.rest.user("carol").is_some()),
        "{}",
        env2.spawned_log()
    );
    assert_eq!(env2.rest.tokens_issued(), 1);
    assert!(env2.rest.revoke() >= 1);
    set_attribute(&env2.slapd, "carol", "title", "VP Sales");
    assert!(
        common::wait_until(30, || env2.rest.user("carol").unwrap()["title"]
            == "VP Sales"),
        "{}",
        env2.spawned_log()
    );
    assert_eq!(
        env2.rest.tokens_issued(),
        2,
        "renewed once after the refusal"
    );
    common::terminate(&mut child.0);
    let log = env2.spawned_log();
    assert!(log.contains("a new one was fetched"), "{log}");
    assert!(!log.contains(CLIENT_SECRET), "{log}");
}

#[test]
fn refused_credentials_stop_the_run_and_say_so_without_the_secret() {
    for auth in [
        RestAuth::Basic,
        RestAuth::Bearer,
        RestAuth::Header,
        RestAuth::OAuth2 { ttl: 60 },
    ] {
        let mut env = RestEnv::start(auth);
        let (wrong, secret) = match auth {
            RestAuth::Basic => (
                "[target.auth]\ntype = \"basic\"\nuser = \"gateway\"\npassword = \"wrong-pass\"\n".to_string(),
                API_PASSWORD,
            ),
            RestAuth::Bearer => (
                "[target.auth]\ntype = \"bearer\"\ntoken = \"wrong-token\"\n".to_string(),
                API_TOKEN,
            ),
            RestAuth::Header => (
                "[target.auth]\ntype = \"header\"\nname = \"X-Api-Key\"\nvalue = \"wrong-key\"\n".to_string(),
                API_KEY,
            ),
            _ => (
                format!(
                    "[target.auth]\ntype = \"oauth2\"\ntoken_url = \"{}\"\nclient_id = \"dirbridge-gw\"\nclient_secret = \"wrong-secret\"\n",
                    env.rest.token_url()
                ),
                CLIENT_SECRET,
            ),
        };
        env.auth = Some(wrong);
        let r = env.run(&["sync"]);
        assert_ne!(r.code, 0, "{auth:?}: {r:?}");
        let all = r.all();
        assert!(
            all.contains("401") || all.contains("invalid_client"),
            "{auth:?}: {r:?}"
        );
        assert!(
            !all.contains("wrong-") && !all.contains(secret),
            "{auth:?}: {r:?}"
        );
        assert!(env.rest.users().is_empty());
    }
}

/// The json-server events without the named ones.
fn events_without(names: &[&str]) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in common::rest::json_server_events().lines() {
        if let Some(name) = line
            .strip_prefix("[target.events.")
            .and_then(|l| l.split(']').next())
        {
            skip = names.contains(&name);
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn without_look_up_events_users_are_matched_in_a_listing_and_never_duplicated() {
    let mut env = RestEnv::start(RestAuth::None);
    env.events = events_without(&["find_user", "find_user_by_key", "find_group"]);
    // bob is already there (made by hand): found in the listing, adopted, not created again.
    env.rest.http(
        "POST",
        "/__raw/users",
        Some(&serde_json::json!({"userName": "bob", "active": true})),
    );
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 2, "{r:?}");
    assert_eq!(count(&r, "users", "adopted"), 1, "{r:?}");
    assert_eq!(names(&env.rest.users()), ["alice", "bob", "carol"]);
    assert_eq!(env.rest.user("bob").unwrap()["title"], "Engineer");
    // The state lost: the listing finds every user by its key again.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(env.rest.users().len(), 3);
    assert_eq!(env.rest.groups().len(), 2);
}

#[test]
fn without_list_events_resync_says_it_cannot_read_the_target_and_runs_as_a_sync() {
    let mut env = RestEnv::start(RestAuth::None);
    env.events = events_without(&["list_users", "list_groups"]);
    env.sync();
    set_attribute(&env.slapd, "bob", "title", "Lead");
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.all().contains("cannot be read back"), "{r:?}");
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    assert_eq!(env.rest.user("bob").unwrap()["title"], "Lead");
    assert_eq!(env.rest.users().len(), 3);
}

#[test]
fn numeric_and_boolean_looking_user_names_are_found_again_after_the_state_is_lost() {
    let env = RestEnv::start(RestAuth::None);
    for uid in ["12345", "true", "0x10"] {
        env.slapd.add(&format!(
            "dn: uid={uid},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: N {uid}\ngivenName: N\nsn: {uid}\nmail: n{uid}@example.org\n"
        ));
    }
    env.sync();
    assert_eq!(env.rest.users().len(), 6);
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(count(&r, "users", "adopted"), 6, "{r:?}");
    assert_eq!(env.rest.users().len(), 6);
}

#[test]
fn a_manager_stays_through_updates_and_a_wrong_path_is_an_error_not_a_departure() {
    // bob's manager is alice (base.ldif).
    let mut env = RestEnv::start(RestAuth::None);
    env.sync();
    let alice_id = env.rest.user("alice").unwrap()["id"].clone();
    assert_eq!(env.rest.user("bob").unwrap()["manager"], alice_id);
    // Any other change sends the whole user: the manager goes with it.
    set_attribute(&env.slapd, "bob", "title", "Architect");
    env.sync();
    let bob = env.rest.user("bob").unwrap();
    assert_eq!(bob["title"], "Architect");
    assert_eq!(bob["manager"], alice_id, "{bob}");

    // A typo in the deactivation's path: the server answers 404, but carol is still listed,
    // so it is an error of that user (kept, retried), never taken for "already gone".
    env.events = env.events.replace(
        "[target.events.deactivate_user]\nmethod = \"PATCH\"\npath = \"/users/{id}\"",
        "[target.events.deactivate_user]\nmethod = \"PATCH\"\npath = \"/user/{id}\"",
    );
    assert!(env.events.contains("/user/{id}"));
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    let r = env.run(&["sync"]);
    assert_eq!(count(&r, "", "errors"), 1, "{r:?}");
    assert!(r.all().contains("still lists"), "{r:?}");
    assert_eq!(env.rest.user("carol").unwrap()["active"], true);
    // Fixed: the next run deactivates her.
    env.events = common::rest::json_server_events();
    env.sync();
    assert_eq!(env.rest.user("carol").unwrap()["active"], false);
}

#[test]
fn answers_that_do_not_fit_the_config_stop_the_run_instead_of_duplicating() {
    let mut env = RestEnv::start(RestAuth::None);
    env.sync();
    let readme_events = env.events.clone();
    // A listing whose array is not where `data` says (here: left out): the target must not
    // look empty, so neither the run nor a resync creates anyone again.
    env.events = readme_events.replace("data = \"data\"\n", "");
    for cmd in ["sync", "resync"] {
        let r = env.run(&[cmd]);
        assert_eq!(r.code, 2, "{cmd}: {r:?}");
        assert!(r.all().contains("set the event's `data`"), "{cmd}: {r:?}");
    }
    assert_eq!(env.rest.users().len(), 3);

    // A create answered without an id where `id` says: the run stops at the first one, and
    // once fixed, the user it made is found, not made again.
    env.events = readme_events.replacen("id = \"id\"", "id = \"data.id\"", 1);
    env.slapd.add(
        "dn: uid=dora,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: dora\ncn: Dora D\ngivenName: Dora\nsn: D\nmail: dora@example.org\n",
    );
    env.slapd.add(
        "dn: uid=emil,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: emil\ncn: Emil E\ngivenName: Emil\nsn: E\nmail: emil@example.org\n",
    );
    // (Here the users already listed show the path is wrong before anything is sent.)
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.all().contains("`data.id`"), "{r:?}");
    assert_eq!(env.rest.users().len(), 3);
    env.events = readme_events.clone();
    let r = env.sync();
    assert_eq!(count(&r, "", "errors"), 0, "{r:?}");
    assert_eq!(
        names(&env.rest.users()),
        ["alice", "bob", "carol", "dora", "emil"]
    );
}

#[test]
fn a_create_answered_without_its_id_stops_the_run_and_is_found_once_fixed() {
    // An empty target: nothing listed shows the wrong path, the first create does.
    let mut env = RestEnv::start(RestAuth::None);
    let readme_events = env.events.clone();
    env.events = readme_events.replacen("id = \"id\"", "id = \"data.id\"", 1);
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.all().contains("target.events.create_user.id"), "{r:?}");
    let made = env.rest.users().len();
    assert!((1..=4).contains(&made), "{made} users made before the stop");
    env.events = readme_events;
    let r = env.sync();
    assert_eq!(count(&r, "", "errors"), 0, "{r:?}");
    assert_eq!(names(&env.rest.users()), ["alice", "bob", "carol"]);
}

#[test]
fn after_a_lost_state_a_newcomer_never_takes_the_object_of_a_renamed_user() {
    let env = RestEnv::start(RestAuth::None);
    env.sync();
    let bob = env.rest.user("bob").unwrap();
    // bob renamed to bob2 and a newcomer named bob, then the state folder lost before a run.
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=bob2\ndeleteoldrdn: 1\n",
    );
    env.slapd.add(
        "dn: uid=bob,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bob\ncn: New Bob\nsn: Newman\ngivenName: New\nmail: newbob@example.org\n",
    );
    std::fs::remove_dir_all(env.state_path()).unwrap();
    for cmd in ["sync", "sync", "resync", "sync"] {
        let r = env.run(&[cmd]);
        assert!(r.code == 0 || r.code == 1, "{cmd}: {r:?}");
        // Bob Original's object keeps his data, whatever runs.
        let old = env
            .rest
            .users()
            .into_iter()
            .find(|u| u["id"] == bob["id"])
            .expect("bob's object is still there");
        assert_eq!(old["email"], "bob@example.org", "{cmd}: {old}");
        assert_eq!(old["name"]["family"], bob["name"]["family"], "{cmd}: {old}");
    }
}

#[test]
fn a_group_deleted_and_made_again_is_never_bound_to_the_deleted_object() {
    // Look-ups of groups through the listing the service keeps for a while.
    let mut env = RestEnv::start(RestAuth::None);
    env.events = events_without(&["find_group"]);
    env.extra = format!(
        "[daemon]\npoll_interval = \"1s\"\nlisten = \"127.0.0.1:{}\"\n",
        common::free_port()
    );
    // Made by a one-shot sync, so the service's first listing holds them.
    env.sync();
    // Killed if the test fails before it stops it.
    let mut child = common::Guard(env.spawn(&["run"]));
    let old = env.rest.group("sales").unwrap();
    // A new group makes the service read the listing (sales in it)...
    env.slapd.add(
        "dn: cn=ops,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: ops\nmember: uid=alice,ou=people,dc=example,dc=org\n",
    );
    assert!(
        common::wait_until(30, || env.rest.group("ops").is_some()),
        "{}",
        env.spawned_log()
    );
    // ...then sales is deleted.
    env.slapd.delete("cn=sales,ou=groups,dc=example,dc=org");
    assert!(
        common::wait_until(30, || env.rest.group("sales").is_none()),
        "{}",
        env.spawned_log()
    );
    // Later than the listing's freshness: made again with the same name.
    std::thread::sleep(std::time::Duration::from_secs(6));
    env.slapd.add(
        "dn: cn=sales,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: sales\nmember: uid=carol,ou=people,dc=example,dc=org\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    assert!(
        common::wait_until(30, || env
            .rest
            .group("sales")
            .is_some_and(|g| g["members"].as_array().is_some_and(|m| m.len() == 2))),
        "{}",
        env.spawned_log()
    );
    common::terminate(&mut child.0);
    let log = env.spawned_log();
    assert!(
        !log.contains("op=\"create_group\" object=\"sales\" outcome=adopted"),
        "bound to the deleted object: {log}"
    );
    assert_ne!(env.rest.group("sales").unwrap()["id"], old["id"]);
    assert_eq!(env.rest.member_names("sales"), ["bob", "carol"]);
}

/// `check` on a REST API (json-server behind a real OAuth 2.0 server): the token is fetched and
/// a page of users read with it; a wrong client secret fails the credentials line; an API that
/// cannot list proves them by a look-up.
#[test]
fn check_proves_the_credentials_by_reading_and_says_when_it_cannot() {
    let mut env = RestEnv::start(RestAuth::OAuth2 { ttl: 3600 });
    // The secret files as an administrator leaves them (else a warning each).
    for f in std::fs::read_dir(env.dir.path()).unwrap().flatten() {
        if f.path().is_file() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let r = env.run(&["check"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(check_line(&r, "OK", "target").0.contains("REST "), "{r:?}");
    assert!(
        check_line(&r, "OK", "credentials")
            .0
            .contains("the preflight read a page of users"),
        "{r:?}"
    );
    assert!(env.rest.users().is_empty(), "check wrote to the API");

    env.auth = Some(format!(
        "[target.auth]\ntype = \"oauth2\"\ntoken_url = \"{}\"\nclient_id = \"dirbridge-gw\"\nclient_secret = \"wrong-secret\"\n",
        env.rest.token_url()
    ));
    let r = env.run(&["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    let failed = check_line(&r, "FAIL", "credentials").0;
    assert!(
        failed.contains("invalid_client") || failed.contains("401"),
        "{r:?}"
    );
    assert!(!r.all().contains("wrong-secret") && !r.all().contains(CLIENT_SECRET));

    env.auth = None;
    env.events = events_without(&["list_users", "list_groups"]);
    let r = env.run(&["check"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        check_line(&r, "OK", "credentials")
            .0
            .contains("a look-up of the userName"),
        "{r:?}"
    );
    assert!(env.rest.users().is_empty(), "check wrote to the API");
}

#[test]
fn ha_two_gateways_on_a_rest_target_take_over_and_carry_out_a_deletion_never_pushed() {
    let mut env = RestEnv::start(RestAuth::OAuth2 { ttl: 3600 });
    let mut nodes = Vec::new();
    for i in 0..2 {
        let dir = env.dir.path().join(format!("gw{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["bind.pw", "client.secret", "api.token", "api.password"] {
            std::fs::copy(env.dir.path().join(f), dir.join(f)).unwrap();
        }
        let status = common::free_port();
        env.extra = format!(
            "[daemon]\npoll_interval = \"1s\"\nfull_resync = \"off\"\n\
             listen = \"127.0.0.1:{status}\"\n[sync]\nmax_deletion_percent = 100\n\
             [ha]\nlease_dn = \"cn=dirbridge-lease,dc=example,dc=org\"\ninstance_id = \"gw{i}\"\n\
             renew = \"500ms\"\nlease_ttl = \"3s\"\nmargin = \"1s\"\n"
        );
        env.write_config();
        std::fs::copy(env.config_path(), dir.join("dirbridge.toml")).unwrap();
        nodes.push(common::HaNode { dir, status });
    }
    let mut children: Vec<Option<common::Guard>> = nodes.iter().map(|n| Some(n.spawn())).collect();
    let first = common::ha_active(&nodes, &[true, true], 60)
        .unwrap_or_else(|| panic!("{}", common::ha_logs(&nodes)));
    let rest = &env.rest;
    assert!(
        common::wait_until(60, || names(&rest.users()) == ["alice", "bob", "carol"]),
        "{}",
        common::ha_logs(&nodes)
    );
    // The standby (polling: referenced groups rule the change feed out) has listed carol; the
    // active dies before it pushes her leaving.
    std::thread::sleep(std::time::Duration::from_secs(2));
    children[first].take().unwrap().stop();
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    set_attribute(&env.slapd, "bob", "sn", "Taken");
    assert!(
        common::wait_until(30, || {
            rest.user("carol").is_some_and(|c| c["active"] == false)
                && rest
                    .user("bob")
                    .is_some_and(|b| b["name"]["family"] == "Taken")
        }),
        "{}",
        common::ha_logs(&nodes)
    );
    assert_eq!(nodes[1 - first].role().as_deref(), Some("active"));
    assert_eq!(
        names(&rest.users()),
        ["alice", "bob", "carol"],
        "no duplicate"
    );
}
