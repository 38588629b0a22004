//! `dirbridge run` following slapd's content synchronization (RFC 4533 refreshAndPersist):
//! changes arrive without polling; the cookie survives restarts; a killed slapd and an
//! unreachable target are ridden out with nothing lost. Real slapd (syncprov), real SCIM server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::proxy::Proxy;
use common::*;
use serde_json::Value;

/// An environment whose gateway follows the feed; polling is set to an hour, so anything that
/// arrives sooner came through the feed.
fn feed_env() -> (Env, u16) {
    let mut env = Env::start();
    env.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    let port = free_port();
    env.extra = format!(
        "[daemon]\nchange_feed = \"syncrepl\"\npoll_interval = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    (env, port)
}

/// The service in automatic mode on `slapd`, polling every second when it cannot follow.
fn polled_env(slapd: Slapd) -> (Env, u16) {
    let mut env = Env::with_slapd(slapd);
    env.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    let port = free_port();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1s\"\nfull_resync = \"off\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    (env, port)
}

/// A user's family name on the target: the attribute these tests change (every server keeps it).
fn family_of(env: &Env, user: &str) -> Option<String> {
    env.scim
        .user(user)
        .and_then(|u| u["name"]["familyName"].as_str().map(str::to_string))
}

fn set_family(env: &Env, user: &str, title: &str) {
    set_attribute(&env.slapd, user, "sn", title);
}

fn add_user(env: &Env, uid: &str) {
    env.slapd.add(&format!(
        "dn: uid={uid},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: {uid}\n\
         cn: {uid} Person\nsn: Person\ngivenName: {uid}\nmail: {uid}@example.org\n"
    ));
}

/// Bob's family name modified, `newcomer` added and put in sales, carol deleted; then waits until the
/// target shows all of it (carol deactivated).
fn change_everything(env: &Env, title: &str, newcomer: &str) {
    set_family(env, "bob", title);
    add_user(env, newcomer);
    env.slapd.modify(&format!(
        "dn: cn=sales,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\nmember: uid={newcomer},ou=people,dc=example,dc=org\n"
    ));
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    assert!(
        wait_until(30, || {
            family_of(env, "bob").as_deref() == Some(title)
                && env.scim.user(newcomer).is_some()
                && env.scim.member_names("sales") == vec![newcomer.to_string()]
                && env
                    .scim
                    .user("carol")
                    .map(|c| c["active"] == false)
                    .unwrap_or(false)
        }),
        "{}",
        env.spawned_log()
    );
}

fn following(port: u16) -> bool {
    http_get(port, "/status")
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
        .map(|d| d["change_feed"] == "following" && d["ready"] == true)
        .unwrap_or(false)
}

#[test]
fn changes_flow_through_the_feed_and_a_restart_resumes_from_the_cookie() {
    let (env, port) = feed_env();
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3 && following(port)),
        "initial refresh did not arrive: {}",
        env.spawned_log()
    );

    // Modify, add, delete, and a membership change (which slapd sends as a change of the group
    // only: memberof's updates of the user are not replicated).
    change_everything(&env, "Architect", "dave");
    let log = env.spawned_log();
    assert!(log.contains("resume=false"), "{log}");
    assert!(!log.contains("kind=sync"), "a poll ran: {log}");

    // The target shows the changes as each is confirmed; the pass is counted when it ends.
    let latencies = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("dirbridge_change_to_push_seconds_count "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let metrics_now = || http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
    assert!(
        wait_until(10, || latencies(&metrics_now()) >= 3),
        "{}",
        metrics_now()
    );
    let metrics = metrics_now();
    assert!(metrics.contains("dirbridge_change_feed_up 1"), "{metrics}");
    assert!(
        metrics.contains("dirbridge_runs_total{kind=\"feed\",outcome=\"ok\"}"),
        "{metrics}"
    );
    let (_, body) = http_get(port, "/status").unwrap();
    let doc: Value = serde_json::from_str(&body).unwrap();
    let recent = doc["recent_operations"].as_array().unwrap();
    assert!(
        recent.iter().any(|o| o["operation"] == "update_user"
            && o["object"] == "bob"
            && o["latency"].is_number()),
        "{doc}"
    );

    // Stopped: the state and the cookies are saved.
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", env.spawned_log());
    assert!(env.spawned_log().contains("stopped; state saved"));

    // Changes made while the gateway is away arrive when it comes back, from the cookie (no
    // full reload: only what changed is sent again).
    set_family(&env, "alice", "Director");
    env.slapd.delete("uid=dave,ou=people,dc=example,dc=org");
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || {
            family_of(&env, "alice").as_deref() == Some("Director")
                && env
                    .scim
                    .user("dave")
                    .map(|d| d["active"] == false)
                    .unwrap_or(false)
                && env.scim.member_names("sales").is_empty()
        }),
        "{}",
        env.spawned_log()
    );
    assert!(
        env.spawned_log().contains("resume=true"),
        "{}",
        env.spawned_log()
    );
    assert_eq!(env.scim.users().len(), 4, "no duplicates");
    let status = terminate(&mut child.0);
    assert!(status.success());
}

#[test]
fn a_killed_slapd_is_reconnected_to_and_nothing_is_lost() {
    let (mut env, port) = feed_env();
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3 && following(port)),
        "{}",
        env.spawned_log()
    );
    // A change, then slapd dies without a word.
    set_family(&env, "bob", "Before the crash");
    env.slapd.kill();
    assert!(
        wait_until(30, || http_get(port, "/readyz").map(|r| r.0) == Some(503)),
        "{}",
        env.spawned_log()
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the service died with slapd"
    );
    env.slapd.restart();
    // Changes made as soon as slapd is back, likely before the gateway has reconnected.
    set_family(&env, "alice", "After the crash");
    add_user(&env, "erin");
    assert!(
        wait_until(40, || {
            family_of(&env, "bob").as_deref() == Some("Before the crash")
                && family_of(&env, "alice").as_deref() == Some("After the crash")
                && env.scim.user("erin").is_some()
                && following(port)
        }),
        "{}",
        env.spawned_log()
    );
    // And the feed is live again after the reconnection.
    set_family(&env, "carol", "Live again");
    assert!(
        wait_until(20, || family_of(&env, "carol").as_deref()
            == Some("Live again")),
        "{}",
        env.spawned_log()
    );
    let log = env.spawned_log();
    assert!(log.contains("change feed lost; reconnecting"), "{log}");
    assert_eq!(env.scim.users().len(), 4, "no duplicates");
    let status = terminate(&mut child.0);
    assert!(status.success());
}

#[test]
fn pushes_resume_when_an_unreachable_target_comes_back() {
    let (mut env, port) = feed_env();
    let mut proxy = Proxy::start(env.scim.port);
    env.target_url = env.scim.base_via(proxy.port);
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3 && following(port)),
        "{}",
        env.spawned_log()
    );
    proxy.pause();
    set_family(&env, "bob", "Queued");
    add_user(&env, "frank");
    assert!(
        wait_until(30, || env.spawned_log().contains("change feed pass failed")),
        "{}",
        env.spawned_log()
    );
    assert!(
        wait_until(10, || http_get(port, "/readyz").map(|r| r.0) == Some(503)),
        "{}",
        env.spawned_log()
    );
    // More changes while the target is away: they join the pending ones.
    set_family(&env, "bob", "Queued twice");
    proxy.resume();
    assert!(
        wait_until(40, || {
            family_of(&env, "bob").as_deref() == Some("Queued twice")
                && env.scim.user("frank").is_some()
        }),
        "{}",
        env.spawned_log()
    );
    assert_eq!(env.scim.users().len(), 4, "no duplicates");
    assert!(wait_until(10, || following(port)), "{}", env.spawned_log());
    let status = terminate(&mut child.0);
    assert!(status.success());
}

#[test]
fn without_syncprov_changes_are_polled_by_modify_timestamp() {
    let (env, port) = polled_env(Slapd::start_without_syncprov());
    let mut child = Guard(env.spawn(&["run", "--log-level", "debug"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    // Changes in a later second than the fixture's (modifyTimestamp has whole seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    change_everything(&env, "Polled", "gina");
    let log = env.spawned_log();
    assert!(
        log.contains("does not offer content synchronization"),
        "{log}"
    );
    // Once the watermark has moved past the fixture's second, a poll reads only what changed
    // in or after the watermark's second, not every entry again.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let log = env.spawned_log();
    let changed: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("modifyTimestamp poll"))
        .filter_map(|l| l.split("changed=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(changed.len() >= 3, "{log}");
    assert!(
        *changed.last().unwrap() <= 3,
        "later polls re-read everything: {changed:?}\n{log}"
    );
    let (_, body) = http_get(port, "/status").unwrap();
    assert!(body.contains("\"mode\":\"timestamp\""), "{body}");
    // Polling works, so the service is ready (the abandoned syncrepl attempt's "connecting"
    // kept it at 503).
    let ready = http_get(port, "/readyz");
    assert_eq!(ready.as_ref().map(|r| r.0), Some(200), "{ready:?}");
    let status = terminate(&mut child.0);
    assert!(status.success());
}

#[test]
fn a_refused_object_waits_for_its_retry_time_unless_it_changes() {
    let (mut env, port) = feed_env();
    let kind = env.scim.kind;
    let (attribute, bad, good, _) = refusable(kind, &mut env.extra);
    set_attribute(&env.slapd, "carol", attribute, bad);
    let mut child = Guard(env.spawn(&["run", "--log-level", "debug"]));
    let status =
        || -> Value { serde_json::from_str(&http_get(port, "/status").unwrap().1).unwrap() };
    assert!(
        wait_until(30, || env.scim.users().len() == 2
            && status()["store"]["errors"].as_array().map(Vec::len) == Some(1)),
        "{}",
        env.spawned_log()
    );
    let doc = status();
    let err = &doc["store"]["errors"][0];
    assert_eq!(err["operation"], "create_user", "{doc}");
    assert!(err["retry_after"].is_string(), "{doc}");

    // A first pass after that one: what the target was found not to keep is now left out of
    // carol's request (a different request, so it may be tried once more).
    set_family(&env, "bob", "Warm");
    assert!(
        wait_until(20, || family_of(&env, "bob").as_deref() == Some("Warm")),
        "{}",
        env.spawned_log()
    );
    let attempts = status()["store"]["errors"][0]["attempts"].clone();
    let failed_before = status()["recent_operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "failed")
        .count();
    // Another change makes a pass: carol's refused request is not sent again yet.
    set_family(&env, "bob", "Busy");
    assert!(
        wait_until(20, || family_of(&env, "bob").as_deref() == Some("Busy")),
        "{}",
        env.spawned_log()
    );
    let doc = status();
    assert_eq!(doc["store"]["errors"][0]["attempts"], attempts, "{doc}");
    assert!(
        env.spawned_log()
            .contains("refused before; waiting to retry"),
        "{}",
        env.spawned_log()
    );
    let failed = doc["recent_operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "failed")
        .count();
    assert_eq!(failed, failed_before, "{doc}");

    // Fixed in the directory: a different request, sent at once.
    set_attribute(&env.slapd, "carol", attribute, good);
    assert!(
        wait_until(20, || env.scim.user("carol").is_some()
            && status()["store"]["errors"].as_array().map(Vec::len) == Some(0)),
        "{}",
        env.spawned_log()
    );
    assert_eq!(env.scim.member_names("sales"), vec!["carol"]);
    let status = terminate(&mut child.0);
    assert!(status.success());
}

#[test]
fn a_silently_dead_ldap_connection_is_detected_and_replaced() {
    let (mut env, port) = feed_env();
    let proxy = Proxy::start(env.slapd.port);
    env.ldap_url = format!("ldap://127.0.0.1:{}", proxy.port);
    env.ldap_extra += "timeout_secs = 2\n";
    env.extra += "heartbeat = \"1s\"\n";
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3 && following(port)),
        "{}",
        env.spawned_log()
    );
    // The connection goes quiet without being closed: no error would ever come from it.
    proxy.freeze();
    set_family(&env, "bob", "Seen after the reconnection");
    assert!(
        wait_until(30, || family_of(&env, "bob").as_deref()
            == Some("Seen after the reconnection")),
        "{}",
        env.spawned_log()
    );
    let log = env.spawned_log();
    assert!(log.contains("the connection does not answer"), "{log}");
    let status = terminate(&mut child.0);
    assert!(status.success());
}

/// The sync control is on offer (the module is loaded) but no database has the overlay: every
/// content synchronization search is refused. The service falls back to polling, says why, and
/// follows changes.
#[test]
fn a_server_that_refuses_content_synchronization_is_polled() {
    let (env, port) = polled_env(Slapd::start_with_syncprov_unused());
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    change_everything(&env, "Refused", "hugo");
    let (_, body) = http_get(port, "/status").unwrap();
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["mode"], "timestamp", "{doc}");
    assert!(
        doc["mode_reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused content synchronization")),
        "{doc}"
    );
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("dirbridge_change_feed_fallback{from=\"syncrepl\"} 1"),
        "{metrics}"
    );
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
    let log = env.spawned_log();
    assert!(log.contains("refused content synchronization"), "{log}");
    // Refused once, not retried every two seconds for ever.
    assert_eq!(
        log.matches("starting content synchronization").count(),
        2,
        "{log}"
    );
    let status = terminate(&mut child.0);
    assert!(status.success());
}

/// While nothing changes, the target is still checked on the heartbeat: an outage shows on
/// `/readyz` without waiting for a pass to fail, and goes away when the target is back.
#[test]
fn an_idle_service_notices_the_target_going_away() {
    let (mut env, port) = feed_env();
    env.extra.push_str("heartbeat = \"1s\"\n");
    let mut proxy = Proxy::start(env.scim.port);
    env.target_url = env.scim.base_via(proxy.port);
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3 && following(port)),
        "{}",
        env.spawned_log()
    );
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
    proxy.pause();
    assert!(
        wait_until(15, || http_get(port, "/readyz").is_some_and(|(s, b)| s
            == 503
            && b.contains("the target does not answer"))),
        "{:?}\n{}",
        http_get(port, "/readyz"),
        env.spawned_log()
    );
    proxy.resume();
    assert!(
        wait_until(15, || http_get(port, "/readyz").map(|r| r.0) == Some(200)),
        "{:?}\n{}",
        http_get(port, "/readyz"),
        env.spawned_log()
    );
    let status = terminate(&mut child.0);
    assert!(status.success());
}

/// Feed passes that ended well so far (from `/metrics`).
fn feed_passes(port: u16) -> u64 {
    http_get(port, "/metrics")
        .map(|r| r.1)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("dirbridge_runs_total{kind=\"feed\",outcome=\"ok\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Group resources' versions on the target: unchanged means no membership was written.
fn group_versions(env: &Env) -> Vec<(String, String)> {
    env.scim
        .versions()
        .into_iter()
        .filter(|(id, _)| id.starts_with("Groups/"))
        .collect()
}

/// A user renamed and moved while `run` follows the feed keeps its groups, with no membership
/// written: slapd rewrites the groups' `member` values (refint) without sending them through
/// syncrepl, so the feed must not go by the old DN. Then a change of the group, a kill -9 and
/// restart, and a one-shot `sync` that finds nothing to do (the feed and a full read agree).
fn a_renamed_user_keeps_its_groups(slapd: Slapd, membership: &str) {
    let mut env = Env::with_slapd(slapd);
    env.ldap_extra = format!("referenced_groups = \"ignore\"\nmembership = \"{membership}\"\n");
    let port = free_port();
    env.extra = format!(
        "[daemon]\nchange_feed = \"syncrepl\"\npoll_interval = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3 && following(port)),
        "{}",
        env.spawned_log()
    );
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    let groups_before = group_versions(&env);
    let passes = feed_passes(port);
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=robert\n\
         deleteoldrdn: 1\nnewsuperior: ou=staff,dc=example,dc=org\n",
    );
    assert!(
        wait_until(30, || env.scim.user("robert").is_some()
            && feed_passes(port) > passes),
        "{}",
        env.spawned_log()
    );
    assert_eq!(
        env.scim.member_names("engineering"),
        vec!["alice", "robert"]
    );
    assert_eq!(
        group_versions(&env),
        groups_before,
        "a membership was written"
    );

    // The group changes later: it arrives with the rewritten DN, and the member stays.
    env.slapd.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n\
         member: uid=carol,ou=people,dc=example,dc=org\n",
    );
    assert!(
        wait_until(30, || env.scim.member_names("engineering")
            == vec!["alice", "carol", "robert"]),
        "{}",
        env.spawned_log()
    );

    // Renamed while the gateway is away (killed): resumed from the cookie, still in its groups.
    child.stop();
    env.slapd.modify(
        "dn: uid=robert,ou=staff,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=rob\n\
         deleteoldrdn: 1\nnewsuperior: ou=people,dc=example,dc=org\n",
    );
    let groups_before = group_versions(&env);
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.user("rob").is_some() && following(port)),
        "{}",
        env.spawned_log()
    );
    assert!(
        wait_until(10, || feed_passes(port) >= 1),
        "{}",
        env.spawned_log()
    );
    assert_eq!(
        env.scim.member_names("engineering"),
        vec!["alice", "carol", "rob"],
        "{}",
        env.spawned_log()
    );
    assert_eq!(
        group_versions(&env),
        groups_before,
        "a membership was written"
    );
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", env.spawned_log());

    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
    assert_eq!(count(&r, "groups", "updated"), 0, "{r:?}");
}

/// Entries written to the store ahead of the feed's save (here every change, as a refresh of
/// thousands is): a rename made while the gateway is stopped arrives in its resumed refresh and
/// is written ahead; the target is away, so the first pass fails before it writes anything, and
/// a kill -9 follows. The next start must not resume from the saved cookie (slapd's replay
/// would not send the groups its refint rewrote, and the stored groups still name the old DN):
/// it refreshes in full, and the renamed user keeps its groups.
#[test]
fn a_rename_written_ahead_then_a_kill_keeps_the_user_in_its_groups() {
    let mut env = Env::with_slapd(Slapd::start());
    env.ldap_extra = "referenced_groups = \"ignore\"\nmembership = \"memberOf\"\n".into();
    let port = free_port();
    env.extra = format!(
        "[daemon]\nchange_feed = \"syncrepl\"\npoll_interval = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    let mut proxy = Proxy::start(env.scim.port);
    env.target_url = env.scim.base_via(proxy.port);
    env.write_config();
    let spawn = |env: &Env| {
        Guard(spawn_dirbridge(
            &env.config_path(),
            &["run"],
            &[("DIRBRIDGE_TEST_WRITE_AHEAD", "1")],
            env.dir.path(),
        ))
    };
    let mut child = spawn(&env);
    assert!(
        wait_until(30, || env.scim.users().len() == 3
            && following(port)
            && feed_passes(port) >= 1),
        "{}",
        env.spawned_log()
    );
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", env.spawned_log());

    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=robert\n\
         deleteoldrdn: 1\nnewsuperior: ou=staff,dc=example,dc=org\n",
    );
    proxy.pause();
    let mut child = spawn(&env);
    assert!(
        wait_until(30, || env.spawned_log().contains("change feed pass failed")),
        "{}",
        env.spawned_log()
    );
    let away = env.spawned_log();
    assert!(away.contains("resume=true"), "{away}");
    child.stop();

    proxy.resume();
    let mut child = spawn(&env);
    assert!(
        wait_until(30, || env.scim.user("robert").is_some()
            && following(port)
            && feed_passes(port) >= 1),
        "{away}\n{}",
        env.spawned_log()
    );
    assert!(
        env.spawned_log().contains("refreshing in full"),
        "{away}\n{}",
        env.spawned_log()
    );
    assert_eq!(
        env.scim.member_names("engineering"),
        vec!["alice", "robert"],
        "{away}\n{}",
        env.spawned_log()
    );
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", env.spawned_log());
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
    assert_eq!(count(&r, "groups", "updated"), 0, "{r:?}");
}

#[test]
fn a_renamed_user_keeps_its_groups_with_memberof_and_refint() {
    a_renamed_user_keeps_its_groups(Slapd::start(), "memberOf");
}

#[test]
fn a_renamed_user_keeps_its_groups_with_refint_alone() {
    a_renamed_user_keeps_its_groups(Slapd::start_with_refint_only(), "member");
}

/// Two users swap their DNs while the gateway is killed (alice -> tmp, carol -> alice,
/// tmp -> carol): the refresh reports both renames at once, and each keeps its own groups.
#[test]
fn a_swap_of_dns_while_killed_keeps_each_in_its_own_groups() {
    let mut env = Env::with_slapd(Slapd::start());
    env.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    // userNames that do not move with the DN (a swap of userNames is another matter).
    env.sections_fixed
        .push_str("[mapping]\nuser_name = \"mail\"\n");
    let port = free_port();
    env.extra = format!(
        "[daemon]\nchange_feed = \"syncrepl\"\npoll_interval = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3 && following(port)),
        "{}",
        env.spawned_log()
    );
    let (alice, carol) = ("alice@example.org", "carol@example.org");
    assert_eq!(env.scim.member_names("sales"), vec![carol]);
    child.stop();
    for (from, to) in [
        ("alice", "swaptmp"),
        ("carol", "alice"),
        ("swaptmp", "carol"),
    ] {
        env.slapd.modify(&format!(
            "dn: uid={from},ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid={to}\n\
             deleteoldrdn: 1\n"
        ));
    }
    let groups_before = group_versions(&env);
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || following(port) && feed_passes(port) >= 1),
        "{}",
        env.spawned_log()
    );
    assert_eq!(
        env.scim.member_names("engineering"),
        vec![alice, "bob@example.org"]
    );
    assert_eq!(env.scim.member_names("sales"), vec![carol]);
    assert_eq!(
        group_versions(&env),
        groups_before,
        "a membership was written"
    );
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", env.spawned_log());
    let r = env.sync();
    assert_eq!(count(&r, "members", "added"), 0, "{r:?}");
    assert_eq!(count(&r, "members", "removed"), 0, "{r:?}");
}
