//! `target.kind = "miniorange"` end to end, against the strict emulator of miniOrange's admin User
//! API (tests/fixtures/rest/miniorange.mjs: it checks the three authorization headers, the
//! timestamp and every body field of every request, and answers as miniOrange does).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::rest::{MiniOrange, RestEnv, MO_API_KEY};
use common::{count, set_attribute, Slapd};
use serde_json::json;

fn env() -> RestEnv<MiniOrange> {
    let slapd = Slapd::start();
    slapd.load("base.ldif");
    RestEnv::with(slapd, MiniOrange::start())
}

#[test]
fn users_reach_miniorange_with_signed_requests_and_every_change_follows() {
    let env = env();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");
    // The preset has no group events: groups are not pushed, and it is said.
    assert_eq!(count(&r, "groups", "created"), 0, "{r:?}");
    assert!(
        r.all().contains("groups and memberships are not pushed"),
        "{r:?}"
    );
    let mo = &env.rest;
    let alice = mo.user("alice").unwrap();
    assert_eq!(alice["email"], "alice@example.org");
    assert_eq!(alice["firstName"], "Alice");
    assert_eq!(alice["lastName"], "Archer");
    assert_eq!(mo.stats()["rejected"], 0, "a request the emulator refused");

    // Nothing changed: only look-ups and the preflight's first page, no write.
    let before = mo.stats()["by_endpoint"].clone();
    env.sync();
    let after = mo.stats()["by_endpoint"].clone();
    for e in ["create", "update", "delete", "disable", "enable"] {
        assert_eq!(before[e], after[e], "{e} sent by a sync with nothing to do");
    }

    set_attribute(&env.slapd, "bob", "mail", "robert@example.org");
    set_attribute(&env.slapd, "carol", "employeeType", "disabled");
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    assert_eq!(count(&r, "users", "deactivated"), 1, "{r:?}");
    assert_eq!(mo.user("bob").unwrap()["email"], "robert@example.org");
    assert_eq!(mo.user("carol").unwrap()["status"], "DISABLED");
    set_attribute(&env.slapd, "carol", "employeeType", "staff");
    env.sync();
    assert_eq!(mo.user("carol").unwrap()["status"], "ACTIVE");
    assert_eq!(mo.stats()["rejected"], 0);
    let plan = env.run(&["plan", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(doc["operations"], json!([]), "{plan:?}");
}

#[test]
fn an_existing_miniorange_user_is_adopted_and_a_lost_state_rebuilt_by_resync() {
    let env = env();
    // Already in miniOrange (created by hand): looked up and adopted, never created twice.
    env.rest
        .seed(&json!({"username": "bob", "email": "bob@example.org", "firstName": "Bobby"}));
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 2, "{r:?}");
    assert_eq!(count(&r, "users", "adopted"), 1, "{r:?}");
    assert_eq!(env.rest.user("bob").unwrap()["firstName"], "Bob");

    // Drift behind the gateway's back, then the state lost: resync lists (getall, paged by
    // batchNo) and repairs.
    env.rest
        .edit(&json!({"username": "alice", "lastName": "Changed"}));
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(env.rest.users().len(), 3);
    assert_eq!(env.rest.user("alice").unwrap()["lastName"], "Archer");
    assert_eq!(env.rest.stats()["rejected"], 0);
}

#[test]
fn departures_are_deleted_with_on_remove_delete_and_a_wrong_key_is_refused_without_showing_it() {
    let mut env = env();
    env.extra.push_str("[sync]\non_remove = \"delete\"\n");
    env.sync();
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deleted"), 1, "{r:?}");
    assert!(env.rest.user("carol").is_none());

    // A wrong API key: the hash is refused, the run stops, the key shows nowhere.
    let r = env.run_env(&["sync"], &[("DIRBRIDGE_TEST_MO_KEY", "wrong-api-key")]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("401"), "{r:?}");
    assert!(
        !r.all().contains("wrong-api-key") && !r.all().contains(MO_API_KEY),
        "{r:?}"
    );
}
