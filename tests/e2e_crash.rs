//! `kill -9` of the gateway at many points of a sync of a few thousand objects, then a restart:
//! no duplicate, no missing object, no lost membership. Real slapd, real SCIM server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const USERS: usize = 1500;
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
    // Kill points spread over the users' creation and the groups' (bounded: 10 attempts).
    for (k, ms) in [150u64, 400, 700, 1000, 1500, 2000, 3000, 4500, 6500, 9000]
        .iter()
        .enumerate()
    {
        let mut child = env.spawn(&["sync"]);
        std::thread::sleep(Duration::from_millis(*ms));
        if child.try_wait().unwrap().is_some() {
            // Finished before the kill: the rest of the points have nothing left to hit.
            eprintln!("sync finished before kill point {k} ({ms} ms)");
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the sync was too quick to be killed mid-way ({kills} kills)"
    );
    // Restarted: it completes (bounded).
    let mut last = None;
    for _ in 0..3 {
        let r = env.run(&["sync"]);
        let done = r.code == 0;
        last = Some(r);
        if done {
            break;
        }
    }
    let last = last.unwrap();
    assert_eq!(last.code, 0, "{last:?}");

    let users = env.scim.users();
    let names: Vec<String> = users
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(names.len(), unique.len(), "duplicates after {kills} kills");
    assert_eq!(names.len(), USERS + 3, "missing users after {kills} kills");
    let groups = env.scim.groups();
    assert_eq!(groups.len(), GROUPS + 2, "duplicate or missing groups");
    for g in 0..GROUPS {
        let mut got = env.scim.member_names(&format!("crew{g}"));
        got.sort();
        let want: Vec<String> = (g..USERS)
            .step_by(GROUPS)
            .map(|i| format!("c{i:04}"))
            .collect();
        assert_eq!(got, want, "members of crew{g} after {kills} kills");
    }
    // And the records agree: nothing left to do.
    let r = env.run(&["plan", "--json"]);
    assert_eq!(r.stdout.trim(), "[]", "{r:?}");
    // Objects whose create was interrupted were found and recorded as ours, not adopted.
    let doc: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["users"], USERS + 3, "{doc}");
    assert_eq!(doc["users_adopted"], 0, "{doc}");
    eprintln!("{kills} kills");
}
