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

#[test]
fn an_already_exists_answer_is_looked_up_afresh_and_adopted() {
    // Without the get event, look-ups go through a listing the service reuses for a while: a
    // user made by hand on miniOrange after that listing is not in it, so the create is answered
    // "User already exists", and the object is then looked up afresh and adopted.
    let mut env = env();
    env.events = "[target.events.find_user]\nenabled = false\n".into();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1s\"\nlisten = \"127.0.0.1:{}\"\n",
        common::free_port()
    );
    // Killed if the test fails before it stops it.
    let mut child = common::Guard(env.spawn(&["run"]));
    assert!(
        common::wait_until(30, || env.rest.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    env.rest
        .seed(&json!({"username": "dave", "email": "dave@example.org", "firstName": "Hand"}));
    env.slapd.add(
        "dn: uid=dave,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave Doe\ngivenName: Dave\nsn: Doe\nmail: dave@example.org\n",
    );
    assert!(
        common::wait_until(30, || env
            .rest
            .user("dave")
            .is_some_and(|u| u["firstName"] == "Dave")),
        "{}",
        env.spawned_log()
    );
    common::terminate(&mut child.0);
    // Four creates: three made users, the fourth was answered "already exists".
    assert_eq!(
        env.rest.stats()["by_endpoint"]["create"],
        4,
        "{}",
        env.spawned_log()
    );
    assert_eq!(env.rest.users().len(), 4);
    let doc: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["users_adopted"], 1, "{doc}");
}

#[test]
fn a_renamed_user_keeps_its_miniorange_username_and_nothing_is_duplicated() {
    let env = env();
    env.sync();
    env.slapd.modify(
        "dn: uid=carol,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=caroline\ndeleteoldrdn: 1\n",
    );
    set_attribute(&env.slapd, "caroline", "mail", "caroline@example.org");
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    assert_eq!(count(&r, "", "errors"), 0, "{r:?}");
    // The update names the user by its id (the old username); the other fields follow.
    let carol = env.rest.user("carol").unwrap();
    assert_eq!(carol["email"], "caroline@example.org");
    assert!(env.rest.user("caroline").is_none());
    assert_eq!(env.rest.users().len(), 3);
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(env.rest.users().len(), 3);
    assert_eq!(env.rest.stats()["rejected"], 0);
}

#[test]
fn a_user_disabled_in_the_directory_is_created_disabled() {
    let env = env();
    set_attribute(&env.slapd, "carol", "employeeType", "disabled");
    env.sync();
    // The create call cannot say it: the disable call follows at once.
    assert_eq!(env.rest.user("carol").unwrap()["status"], "DISABLED");
    assert_eq!(env.rest.user("bob").unwrap()["status"], "ACTIVE");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 0, "{r:?}");
}
