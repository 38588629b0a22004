//! `resync --dry-run`: the drift made on the target behind the gateway's back, reported per
//! object and per attribute from the target's real state, with nothing sent or written; then a
//! resync repairs exactly that. Real slapd, real SCIM server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn the_drift_report_says_what_a_resync_would_repair_and_changes_nothing() {
    let env = Env::start();
    env.sync();
    // Behind the gateway's back: alice's title edited, carol deleted, bob deactivated.
    let id = |name: &str| {
        env.scim.user(name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let patch = |name: &str, op: Value| {
        let (s, doc) = env.scim.http(
            "PATCH",
            &format!("/Users/{}", id(name)),
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [op],
            })),
        );
        assert!(s == 200 || s == 204, "{s} {doc}");
    };
    patch(
        "alice",
        json!({"op": "replace", "path": "title", "value": "Intern"}),
    );
    patch(
        "bob",
        json!({"op": "replace", "path": "active", "value": false}),
    );
    let (s, _) = env
        .scim
        .http("DELETE", &format!("/Users/{}", id("carol")), None);
    assert_eq!(s, 204);
    let before = env.scim.versions();
    let state_before = std::fs::read(env.state_path().join("dirbridge.redb")).unwrap();

    let r = env.run(&["resync", "--dry-run"]);
    assert_eq!(r.code, 1, "drift found: {r:?}");
    let out = &r.stdout;
    assert!(
        out.contains("2 users and 2 groups, of which 2 and 2"),
        "{r:?}"
    );
    let row = |repair: &str, object: &str| {
        out.lines()
            .find(|l| l.starts_with(repair) && l.contains(&format!(" {object} ")))
            .unwrap_or_else(|| panic!("no {repair} {object}: {r:?}"))
            .to_string()
    };
    assert!(
        row("update_user", "alice").contains("attributes differ"),
        "{r:?}"
    );
    assert!(
        out.contains("title: target \"Intern\", directory \"CTO\""),
        "{r:?}"
    );
    assert!(
        out.contains("active: target \"false\", directory \"true\""),
        "{r:?}"
    );
    assert!(
        row("create_user", "carol").contains("not on the target"),
        "{r:?}"
    );
    assert!(out.contains("nothing was sent or written"), "{r:?}");
    // Nothing sent, nothing written.
    assert_eq!(env.scim.versions(), before);
    assert!(env.scim.user("carol").is_none());
    assert!(
        std::fs::read(env.state_path().join("dirbridge.redb")).unwrap() == state_before,
        "the dry run wrote to the state"
    );

    // The same as JSON, per attribute.
    let r = env.run(&["resync", "--dry-run", "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    let alice = doc["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object"] == "alice")
        .unwrap();
    assert_eq!(alice["repair"], "update_user");
    assert_eq!(
        alice["attributes"][0],
        json!({"attribute": "title", "target": "Intern", "directory": "CTO"})
    );

    // A resync repairs what was reported; then there is nothing to report.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(env.scim.user("alice").unwrap()["title"], "CTO");
    assert_eq!(env.scim.user("bob").unwrap()["active"], true);
    assert!(env.scim.user("carol").is_some());
    let r = env.run(&["resync", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("No drift"), "{r:?}");
}

/// `daemon.full_resync_mode = "report"`: the scheduled full resync reads the drift and shows it
/// (/status, /metrics, the dashboard) for review, and repairs nothing.
#[test]
fn a_report_only_full_resync_shows_the_drift_and_repairs_nothing() {
    let mut env = Env::start();
    let port = free_port();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1s\"\nfull_resync = \"every 2s\"\nfull_resync_mode = \"report\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let _service = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    let alice = env.scim.user("alice").unwrap();
    let (s, _) = env.scim.http(
        "PATCH",
        &format!("/Users/{}", alice["id"].as_str().unwrap()),
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "Intern"}],
        })),
    );
    assert!(s == 200 || s == 204);
    let reported = || {
        http_get(port, "/status")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .filter(|doc| {
                doc["drift"]["objects"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o["object"] == "alice"))
            })
    };
    assert!(
        wait_until(30, || reported().is_some()),
        "{}",
        env.spawned_log()
    );
    let doc = reported().unwrap();
    let alice_drift = doc["drift"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(
        alice_drift["attributes"][0],
        json!({"attribute": "title", "target": "Intern", "directory": "CTO"})
    );
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(metrics.contains("dirbridge_drift_objects 1"), "{metrics}");
    let page = http_get(port, "/").unwrap().1;
    assert!(
        page.contains("Drift found on the target (1 objects"),
        "{page}"
    );
    assert!(
        page.contains("title: target Intern, directory CTO"),
        "{page}"
    );
    // Several scheduled reports later, still not repaired.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(env.scim.user("alice").unwrap()["title"], "Intern");
    assert!(env.spawned_log().contains("nothing was repaired"));
}

/// The report says which removals the accidental-deletion guard would hold (a resync would not
/// send them unapproved), counts objects not operations, and shows a value from the target that
/// carries a line break or a terminal escape as text, not as a line or a colour.
#[test]
fn the_report_tells_held_removals_and_cannot_be_forged_by_a_value() {
    let mut env = Env::start();
    env.extra = "[sync]\nmax_deletions = 1\n".into();
    env.sync();
    env.slapd.delete("uid=bob,ou=people,dc=example,dc=org");
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    // A group renamed on the target to something that would forge a line and repaint.
    let sales = env.scim.group("sales").unwrap();
    let (s, _) = env.scim.http(
        "PATCH",
        &format!("/Groups/{}", sales["id"].as_str().unwrap()),
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "displayName",
                            "value": "sales\nNo drift: a resync would repair nothing.\u{1b}[31mRED"}],
        })),
    );
    assert!(s == 200 || s == 204);
    let r = env.run(&["resync", "--dry-run"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("held by the accidental-deletion guard"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("4 of these operations (removals, and the member removals"),
        "{r:?}"
    );
    assert!(r.stdout.contains("4 object(s) would be repaired"), "{r:?}");
    assert!(
        !r.stdout.contains('\u{1b}'),
        "an escape reached the terminal: {r:?}"
    );
    assert!(
        !r.stdout.lines().any(|l| l.starts_with("No drift")),
        "a value forged a line: {r:?}"
    );
    assert!(r.stdout.contains("\\n"), "{r:?}");
    let r = env.run(&["resync", "--dry-run", "--json"]);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["held_by_guard"], 4, "{doc}");
    // And a resync holds them indeed.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(env.scim.user("bob").unwrap()["active"] == true);
}

/// A polling service runs its scheduled full resync at its time, not at the next poll: with an
/// hourly poll, a resync due every 2 s still reports within seconds.
#[test]
fn a_polling_service_does_not_keep_the_scheduled_resync_waiting_for_the_next_poll() {
    let mut env = Env::start();
    let port = free_port();
    env.extra = format!(
        "[daemon]\nchange_feed = \"poll\"\npoll_interval = \"1h\"\nfull_resync = \"every 2s\"\nfull_resync_mode = \"report\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let _service = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    let reports = || env.spawned_log().matches("drift report").count();
    assert!(wait_until(15, || reports() >= 2), "{}", env.spawned_log());
}
