//! The REST target under faults: a proxy in front of json-server and its OAuth 2.0 server resets
//! connections before and after requests were carried out, answers 429 / 503, slowly, and cuts
//! answers; and `kill -9` of the gateway at many points of a 2,000-user sync. Either way the
//! target ends equal to the directory: no duplicate, no missing user, no lost membership.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::faults::{self, FaultProxy};
use common::rest::{RestAuth, RestEnv, CLIENT_ID};
use common::{kill_9_after, until_ok, Run};

fn populate(env: &RestEnv, users: usize, groups: usize, prefix: &str) {
    let mut ldif = String::new();
    for i in 0..users {
        ldif += &format!(
            "dn: uid={prefix}{i:04},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: {prefix}{i:04}\n\
             cn: User {i}\nsn: User\ngivenName: U{i}\nmail: {prefix}{i:04}@example.org\ntitle: T{i}\n\n"
        );
    }
    for g in 0..groups {
        ldif += &format!(
            "dn: cn=team{g},ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: team{g}\n"
        );
        for i in (g..users).step_by(groups) {
            ldif += &format!("member: uid={prefix}{i:04},ou=people,dc=example,dc=org\n");
        }
        ldif += "\n";
    }
    env.slapd.add(&ldif);
}

/// The target, read directly: every user once, every group once with exactly its members.
fn assert_target_equals_directory(env: &RestEnv, users: usize, groups: usize, prefix: &str) {
    let listed = env.rest.users();
    let names: Vec<String> = listed
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(names.len(), unique.len(), "duplicate users");
    assert_eq!(names.len(), users + 3, "missing users");
    assert!(listed.iter().all(|u| u["active"] == true));
    let group_names: Vec<String> = env
        .rest
        .groups()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        group_names.len(),
        groups + 2,
        "duplicate or missing groups: {group_names:?}"
    );
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    want.insert("engineering".into(), vec!["alice".into(), "bob".into()]);
    want.insert("sales".into(), vec!["carol".into()]);
    for g in 0..groups {
        want.insert(
            format!("team{g}"),
            (g..users)
                .step_by(groups)
                .map(|i| format!("{prefix}{i:04}"))
                .collect(),
        );
    }
    for (g, members) in want {
        assert_eq!(env.rest.member_names(&g), members, "members of {g}");
    }
}

#[test]
fn a_rest_sync_through_30_percent_faults_ends_equal_to_the_directory() {
    let seeds: Vec<u64> = match std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => vec![20261126, 31, 777],
    };
    let mut all_injected: BTreeMap<faults::Fault, u64> = BTreeMap::new();
    for seed in seeds {
        let mut env = RestEnv::start(RestAuth::OAuth2 { ttl: 3600 });
        populate(&env, 40, 4, "f");
        let proxy = FaultProxy::start(env.rest.port, 0.3, seed);
        // The API and the token endpoint both behind the faults.
        env.target_extra = String::new();
        env.auth = Some(format!(
            "[target.auth]\ntype = \"oauth2\"\ntoken_url = \"http://127.0.0.1:{}/oauth/token\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"client.secret\"\n",
            proxy.port
        ));
        let via = format!("http://127.0.0.1:{}/api", proxy.port);
        let mut runs: Vec<Run> = Vec::new();
        for _ in 0..3 {
            let r = env.run_via(&via, &["sync"]);
            let code = r.code;
            runs.push(r);
            if code == 0 {
                break;
            }
        }
        let last = runs.last().unwrap();
        assert_eq!(
            last.code, 0,
            "not converged in 3 runs (seed {seed}): {last:?}"
        );
        proxy.set_rate(0.0);
        let r = env.run_via(&via, &["sync"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("operations=0"), "seed {seed}: {r:?}");
        assert_target_equals_directory(&env, 40, 4, "f");
        for (f, n) in proxy.injected() {
            *all_injected.entry(f).or_default() += n;
        }
        eprintln!(
            "seed {seed}: {} run(s), faults {:?}",
            runs.len(),
            proxy.injected()
        );
    }
    for f in faults::ALL {
        assert!(
            all_injected.get(&f).copied().unwrap_or(0) > 0,
            "{f:?} never injected: {all_injected:?}"
        );
    }
}

#[test]
fn kill_9_during_a_2000_user_rest_sync_then_a_restart_duplicates_nothing() {
    const USERS: usize = 2000;
    const GROUPS: usize = 10;
    let env = RestEnv::start(RestAuth::Bearer);
    populate(&env, USERS, GROUPS, "c");
    let mut kills = 0;
    for ms in [300u64, 800, 1500, 2500, 4000, 6000, 9000, 13000] {
        if !kill_9_after(env.spawn(&["sync"]), Duration::from_millis(ms)) {
            eprintln!("sync finished before the kill at {ms} ms");
            break;
        }
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the sync was too quick to be killed mid-way ({kills} kills)"
    );
    let last = until_ok(3, || env.run(&["sync"]));
    assert_eq!(last.code, 0, "{last:?}");
    assert_target_equals_directory(&env, USERS, GROUPS, "c");
    let r = env.run(&["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["operations"], serde_json::json!([]), "{r:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["users"], USERS + 3, "{doc}");
    assert_eq!(
        doc["users_adopted"], 0,
        "interrupted creates are found by key, not adopted: {doc}"
    );
    eprintln!("{kills} kills");
}
