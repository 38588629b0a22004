//! `kill -9` at random points of a 20,000-user first sync (group commit writes intents and
//! confirmations a window at a time), then restarts until it completes: no duplicate, no
//! missing object, no lost membership, nothing adopted. Real slapd (loaded with slapadd), real
//! SCIM server. The kill times are drawn from a seed printed on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const USERS: usize = 20_000;
const GROUPS: usize = 20;
const KILLS: usize = 5;

/// The users and groups, added by slapadd (slapd stopped meanwhile: an ldapadd of this many
/// entries takes longer than the sync). slapadd runs no overlay, so memberOf is written here.
fn populate(env: &mut Env) {
    let mut ldif = String::with_capacity(USERS * 300);
    for i in 0..USERS {
        ldif += &format!(
            "dn: uid=s{i:05},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: s{i:05}\n\
             cn: Scale {i}\nsn: Scale\ngivenName: S{i}\nmail: s{i:05}@example.org\n\
             memberOf: cn=team{},ou=groups,dc=example,dc=org\n\n",
            i % GROUPS
        );
    }
    for g in 0..GROUPS {
        ldif += &format!(
            "dn: cn=team{g},ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: team{g}\n"
        );
        for i in (g..USERS).step_by(GROUPS) {
            ldif += &format!("member: uid=s{i:05},ou=people,dc=example,dc=org\n");
        }
        ldif += "\n";
    }
    env.slapd.kill();
    let file = env.slapd.dir.path().join("scale.ldif");
    std::fs::write(&file, ldif).unwrap();
    let out = Command::new("/usr/sbin/slapadd")
        .arg("-q")
        .arg("-f")
        .arg(env.slapd.dir.path().join("slapd.conf"))
        .arg("-l")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.slapd.restart();
}

/// A small deterministic generator for the kill times (xorshift).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn kill_9_at_random_points_of_a_20000_user_first_sync_loses_and_duplicates_nothing() {
    let mut env = Env::start();
    populate(&mut env);
    env.gw.ldap_fixed = env
        .gw
        .ldap_fixed
        .replace("page_size = 2", "page_size = 500");
    let mut seed = std::env::var("DIRBRIDGE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let first_seed = seed;
    let mut kills = 0;
    for _ in 0..KILLS {
        // Anywhere from the read of the directory to well into the creates.
        let ms = 300 + next(&mut seed) % 6000;
        if !kill_9_after(env.spawn(&["sync"]), Duration::from_millis(ms)) {
            break;
        }
        kills += 1;
    }
    assert!(
        kills >= 3,
        "seed {first_seed}: too quick to be killed ({kills} kills)"
    );
    let started = Instant::now();
    let last = until_ok(3, || env.run(&["sync"]));
    assert_eq!(last.code, 0, "seed {first_seed}: {last:?}");
    eprintln!(
        "seed {first_seed}: {kills} kills; the completing sync took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    env.scim
        .assert_users_once(USERS + 3, &format!("(seed {first_seed})"));
    let members = env.scim.members_by_group();
    assert_eq!(members.len(), GROUPS + 2, "seed {first_seed}: groups");
    for g in 0..GROUPS {
        let want: Vec<String> = (g..USERS)
            .step_by(GROUPS)
            .map(|i| format!("s{i:05}"))
            .collect();
        assert_eq!(
            members.get(&format!("team{g}")),
            Some(&want),
            "seed {first_seed}: members of team{g}"
        );
    }
    let r = env.run(&["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        plan["operations"],
        serde_json::json!([]),
        "seed {first_seed}: {r:?}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["users"], USERS + 3, "{doc}");
    assert_eq!(
        doc["users_adopted"], 0,
        "seed {first_seed}: interrupted creates are ours, not adopted: {doc}"
    );
}
