//! Faults between the gateway and the target: a proxy in front of the real SCIM server answers
//! 429 with Retry-After, 503, slowly, resets connections before and after the request was
//! carried out, and truncates answers. Whatever it does, repeated syncs end with the target
//! exactly equal to the directory: no duplicate, no missing object, no lost membership.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::faults::{self, FaultProxy};
use common::*;

const USERS: usize = 60;
const GROUPS: usize = 4;

fn populate(env: &Env) {
    let mut ldif = String::new();
    for i in 0..USERS {
        ldif += &format!(
            "dn: uid=u{i:03},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: u{i:03}\n\
             cn: User {i}\nsn: User\ngivenName: U{i}\nmail: u{i:03}@example.org\ntitle: T{i}\n\n"
        );
    }
    for g in 0..GROUPS {
        ldif += &format!(
            "dn: cn=team{g},ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: team{g}\n"
        );
        for i in (g..USERS).step_by(GROUPS) {
            ldif += &format!("member: uid=u{i:03},ou=people,dc=example,dc=org\n");
        }
        ldif += "\n";
    }
    env.slapd.add(&ldif);
}

/// What the directory says the target must hold: userNames, and members by group.
fn expected() -> (BTreeSet<String>, BTreeMap<String, Vec<String>>) {
    let mut users: BTreeSet<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut groups = BTreeMap::new();
    for i in 0..USERS {
        users.insert(format!("u{i:03}"));
    }
    groups.insert(
        "engineering".to_string(),
        vec!["alice".to_string(), "bob".to_string()],
    );
    groups.insert("sales".to_string(), vec!["carol".to_string()]);
    for g in 0..GROUPS {
        let members = (g..USERS)
            .step_by(GROUPS)
            .map(|i| format!("u{i:03}"))
            .collect();
        groups.insert(format!("team{g}"), members);
    }
    (users, groups)
}

fn assert_target_equals_directory(env: &Env) {
    let (users, groups) = expected();
    let listed = env.scim.users();
    let names: Vec<String> = listed
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(names.len(), unique.len(), "duplicate users: {names:?}");
    assert_eq!(unique, users);
    assert!(listed.iter().all(|u| u["active"] == true));
    let group_names: Vec<String> = env
        .scim
        .groups()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        group_names.len(),
        groups.len(),
        "duplicate or missing groups: {group_names:?}"
    );
    for (g, members) in groups {
        let mut got = env.scim.member_names(&g);
        got.sort();
        assert_eq!(got, members, "members of {g}");
    }
}

#[test]
fn a_full_sync_through_30_percent_faults_ends_equal_to_the_directory() {
    let mut env = Env::start();
    populate(&env);
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261123);
    let proxy = FaultProxy::start(env.scim.port, 0.3, seed);
    env.target_url = env.scim.base_via(proxy.port);
    // Retries: the default 4 per request; the rest is left to later runs (bounded).
    let mut runs = Vec::new();
    let mut done = false;
    for _ in 0..15 {
        let r = env.run(&["sync"]);
        let code = r.code;
        runs.push(r);
        if code == 0 {
            done = true;
            break;
        }
    }
    let last = runs.last().unwrap();
    assert!(
        done,
        "no clean sync after {} runs (seed {seed}): {last:?}",
        runs.len()
    );
    // Nothing left to do, seen without faults: the records agree with the directory, and the
    // target (read directly, not through the proxy) agrees with both.
    proxy.set_rate(0.0);
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("operations=0"), "{r:?}");
    assert_target_equals_directory(&env);

    // Every kind of fault was met, and retries were logged.
    let injected = proxy.injected();
    for f in faults::ALL {
        assert!(
            injected.get(&f).copied().unwrap_or(0) > 0,
            "{f:?} never injected: {injected:?}"
        );
    }
    let all: String = runs.iter().map(Run::all).collect();
    assert!(all.contains("retrying"), "{all}");
    eprintln!("faults injected: {injected:?}; runs: {}", runs.len());
}

#[test]
fn the_gateway_keeps_to_the_target_rate_limit() {
    let mut env = Env::start();
    populate(&env);
    let proxy = FaultProxy::start(env.scim.port, 0.0, 1);
    env.target_url = env.scim.base_via(proxy.port);
    env.target_extra = "rate_limit = \"20/s\"\n".into();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_target_equals_directory(&env);
    // Well over a second's worth of requests went through, never more than 20 in any second.
    assert!(proxy.requests() > 60, "{}", proxy.requests());
    let busiest = proxy.busiest(std::time::Duration::from_secs(1));
    assert!(busiest <= 20, "{busiest} requests within one second");
}

#[test]
fn requests_overlap_up_to_the_concurrency_limit_and_no_further() {
    let mut env = Env::start();
    populate(&env);
    let proxy = FaultProxy::start(env.scim.port, 0.0, 1);
    // Every answer takes 40 ms: requests that may overlap do.
    proxy.set_delay(40);
    env.target_url = env.scim.base_via(proxy.port);
    env.target_extra = "max_concurrency = 3\n".into();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_target_equals_directory(&env);
    assert_eq!(
        proxy.peak_in_flight(),
        3,
        "never more than 3 at once, and 3 used"
    );
    // One at a time when so configured (state dropped: everything is looked up and adopted).
    let proxy1 = FaultProxy::start(env.scim.port, 0.0, 1);
    proxy1.set_delay(20);
    env.target_url = env.scim.base_via(proxy1.port);
    env.target_extra = "max_concurrency = 1\n".into();
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(proxy1.peak_in_flight(), 1);
    assert_target_equals_directory(&env);
}
