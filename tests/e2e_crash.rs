//! `kill -9` of the gateway at many points of a sync of a few thousand objects, then a restart:
//! no duplicate, no missing object, no lost membership. Real slapd, real SCIM server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const USERS: usize = 2000;
const GROUPS: usize = 10;

fn populate(env: &Env) {
    let mut ldif = String::new();
    for i in 0..USERS {
        ldif += &format!(
            "dn: uid=c{i:04},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: c{i:04}\n\
             cn: Crash {i}\nsn: Crash\ngivenName: C{i}\nmail: c{i:04}@example.org\n\n"
        );
    }
    for g in 0..GROUPS {
        ldif += &format!(
            "dn: cn=crew{g},ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: crew{g}\n"
        );
        for i in (g..USERS).step_by(GROUPS) {
            ldif += &format!("member: uid=c{i:04},ou=people,dc=example,dc=org\n");
        }
        ldif += "\n";
    }
    env.slapd.add(&ldif);
}

#[test]
fn kill_9_at_many_points_then_a_restart_loses_and_duplicates_nothing() {
    let env = Env::start();
    populate(&env);
    let mut kills = 0;
    // Kill points spread over the users' creation and the groups' (bounded: 11 attempts).
    for (k, ms) in [
        150u64, 400, 700, 1000, 1500, 2000, 3000, 4500, 6500, 9000, 12000,
    ]
    .iter()
    .enumerate()
    {
        if !kill_9_after(env.spawn(&["sync"]), Duration::from_millis(*ms)) {
            // Finished before the kill: the rest of the points have nothing left to hit.
            eprintln!("sync finished before kill point {k} ({ms} ms)");
            break;
        }
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the sync was too quick to be killed mid-way ({kills} kills)"
    );
    // Restarted: it completes (bounded).
    let last = until_ok(3, || env.run(&["sync"]));
    assert_eq!(last.code, 0, "{last:?}");

    env.scim
        .assert_users_once(USERS + 3, &format!("after {kills} kills"));
    let members = env.scim.members_by_group();
    assert_eq!(members.len(), GROUPS + 2, "duplicate or missing groups");
    for g in 0..GROUPS {
        let want: Vec<String> = (g..USERS)
            .step_by(GROUPS)
            .map(|i| format!("c{i:04}"))
            .collect();
        assert_eq!(
            members.get(&format!("crew{g}")),
            Some(&want),
            "members of crew{g} after {kills} kills"
        );
    }
    // And the records agree: nothing left to do.
    let r = env.run(&["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["operations"], serde_json::json!([]), "{r:?}");
    // Objects whose create was interrupted were found and recorded as ours, not adopted.
    let doc: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["users"], USERS + 3, "{doc}");
    assert_eq!(doc["users_adopted"], 0, "{doc}");
    eprintln!("{kills} kills");
}

#[test]
fn an_interrupted_create_is_found_by_its_key_even_after_a_rename() {
    let env = Env::start();
    // The state a crash leaves: alice's create was sent (the target has her, with our key as
    // externalId) but never confirmed; since then her userName changed in the directory.
    let plan: serde_json::Value =
        serde_json::from_str(&env.run(&["plan", "--json"]).stdout).unwrap();
    let key = plan["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["op"] == "create_user" && op["userName"] == "alice")
        .map(|op| op["key"].as_str().unwrap().to_string())
        .unwrap();
    let (s, _) = env.scim.http(
        "POST",
        "/Users",
        Some(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "alice-before-rename",
            "externalId": key,
            "active": true
        })),
    );
    assert_eq!(s, 201);
    {
        let store = dirbridge::state::Store::open(&env.state_path(), 1 << 20).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(store.record_intent(
            &key,
            &dirbridge::state::Intent {
                operation: "create_user".into(),
                label: "alice-before-rename".into(),
                run: 1,
                at: "2026-11-23T00:00:00Z".into(),
            },
        ))
        .unwrap();
    }
    let r = env.sync();
    assert!(r.stderr.contains("writes interrupted by a crash"), "{r:?}");
    let names: BTreeSet<String> = env
        .scim
        .users()
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["alice", "bob", "carol"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "found by key and renamed, not created twice"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["users_adopted"], 0, "{doc}");
    let r = env.run(&["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["operations"], serde_json::json!([]), "{r:?}");
}
