//! 389 Directory Server, the second LDAP implementation with a change feed (Content
//! Synchronization over Retro Changelog): `sync`, `resync` and `run` against it. Its sync UUID is
//! the nsUniqueId (not the entryUUID), a refresh resumed from a cookie sends changed entries
//! without operational attributes (entryUUID, the key), and its memberOf includes nested groups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::ds389::{Ds389, DS_PW};
use common::*;
use serde_json::Value;

fn gateway(ds: &Ds389) -> Gateway {
    Gateway::with_scim(
        Scim::start_default(),
        ds.url(),
        DS_PW,
        ds.ldap_settings(),
        String::new(),
    )
}

/// A group `all` whose only member is the engineering group: 389-DS puts it in alice's and bob's
/// memberOf (nested), which is not a direct membership.
fn add_nested_group(ds: &mut Ds389) {
    ds.add(
        "dn: cn=all,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: all\n\
         member: cn=engineering,ou=groups,dc=example,dc=org\n",
    );
}

fn following(port: u16) -> bool {
    http_get(port, "/status")
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
        .map(|d| d["change_feed"] == "following" && d["ready"] == true)
        .unwrap_or(false)
}

fn family_of(gw: &Gateway, user: &str) -> Option<String> {
    gw.scim
        .user(user)
        .and_then(|u| u["name"]["familyName"].as_str().map(str::to_string))
}

fn active(gw: &Gateway, user: &str) -> Option<bool> {
    gw.scim.user(user).and_then(|u| u["active"].as_bool())
}

#[test]
fn sync_and_resync_read_direct_memberships_by_default() {
    let mut ds = Ds389::start();
    add_nested_group(&mut ds);
    let mut gw = gateway(&ds);
    let r = gw.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");
    assert!(r.all().contains("389 Directory Server"), "says why: {r:?}");
    assert_eq!(gw.scim.member_names("engineering"), vec!["alice", "bob"]);
    assert_eq!(gw.scim.member_names("sales"), vec!["carol"]);
    // memberOf says alice and bob are in `all` (through engineering): not pushed as direct.
    assert!(gw.scim.member_names("all").is_empty());

    // A rename keeps the object and its groups (389-DS's referential integrity).
    ds.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=robert\n\
         deleteoldrdn: 1\nnewsuperior: ou=staff,dc=example,dc=org\n",
    );
    let r = gw.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    assert_eq!(gw.scim.member_names("engineering"), vec!["alice", "robert"]);
    let r = gw.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
    assert_eq!(count(&r, "groups", "updated"), 0, "{r:?}");

    // Nested groups flattened when asked for.
    gw.ldap_extra = "nested_groups = true\n".into();
    let r = gw.sync();
    assert_eq!(count(&r, "members", "added"), 2, "{r:?}");
    assert_eq!(gw.scim.member_names("all"), vec!["alice", "robert"]);
}

/// `run` follows 389-DS's content synchronization; changes made while the gateway is killed
/// (modify, delete, rename, a membership) arrive from the cookie, although 389-DS sends those
/// entries without their entryUUID; 389-DS killed and restarted mid-run is reconnected to.
/// At the end a one-shot `sync` finds nothing to do: `run` and `sync` agree.
#[test]
fn run_follows_changes_across_restarts_and_reconnects() {
    let mut ds = Ds389::start();
    add_nested_group(&mut ds);
    let mut gw = gateway(&ds);
    let port = free_port();
    gw.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    gw.extra = format!(
        "[daemon]\nchange_feed = \"syncrepl\"\npoll_interval = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    let mut child = Guard(gw.spawn(&["run"]));
    assert!(
        wait_until(30, || gw.scim.users().len() == 3 && following(port)),
        "{}",
        gw.spawned_log()
    );
    assert_eq!(gw.scim.member_names("engineering"), vec!["alice", "bob"]);
    assert!(gw.scim.member_names("all").is_empty());
    let passes = feed_passes(port);
    set_family(&ds, "bob", "Persisted");
    // The pass counted too: it saved the mirror and the cookie (killed between its push and
    // its save, the next start would refresh in full rather than resume).
    assert!(
        wait_until(30, || family_of(&gw, "bob").as_deref() == Some("Persisted")
            && feed_passes(port) > passes),
        "{}",
        gw.spawned_log()
    );

    // Killed (-9); meanwhile alice is only modified, carol deleted, bob renamed and moved, and
    // a newcomer joins sales.
    child.stop();
    set_family(&ds, "alice", "Modified");
    ds.delete("uid=carol,ou=people,dc=example,dc=org");
    ds.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=robert\n\
         deleteoldrdn: 1\nnewsuperior: ou=staff,dc=example,dc=org\n",
    );
    ds.add(
        "dn: uid=dave,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: dave\n\
         cn: Dave Doe\nsn: Doe\ngivenName: Dave\nmail: dave@example.org\n",
    );
    ds.modify(
        "dn: cn=sales,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n\
         member: uid=dave,ou=people,dc=example,dc=org\n",
    );
    let mut child = Guard(gw.spawn(&["run"]));
    assert!(
        wait_until(30, || {
            family_of(&gw, "alice").as_deref() == Some("Modified")
                && active(&gw, "carol") == Some(false)
                && gw.scim.user("robert").is_some()
                && gw.scim.member_names("sales") == vec!["dave"]
        }),
        "{}",
        gw.spawned_log()
    );
    let log = gw.spawned_log();
    assert!(log.contains("resume=true"), "{log}");
    assert_eq!(active(&gw, "alice"), Some(true), "{log}");
    assert_eq!(gw.scim.member_names("engineering"), vec!["alice", "robert"]);
    assert_eq!(gw.scim.groups().len(), 3, "no group deleted: {log}");
    assert_eq!(gw.scim.users().len(), 4, "no duplicate: {log}");

    // 389-DS killed and back: the feed reconnects and resumes from its cookie.
    ds.kill();
    ds.restart();
    set_family(&ds, "robert", "Reconnected");
    ds.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\ndelete: member\n\
         member: uid=alice,ou=people,dc=example,dc=org\n",
    );
    assert!(
        wait_until(60, || family_of(&gw, "robert").as_deref()
            == Some("Reconnected")
            && gw.scim.member_names("engineering") == vec!["robert"]),
        "{}",
        gw.spawned_log()
    );
    assert_eq!(active(&gw, "alice"), Some(true));
    assert_eq!(active(&gw, "robert"), Some(true));
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", gw.spawned_log());

    let r = gw.sync();
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
    assert_eq!(count(&r, "groups", "updated"), 0, "{r:?}");
}

fn set_family(ds: &Ds389, user: &str, value: &str) {
    let dn = match user {
        "robert" => "uid=robert,ou=staff,dc=example,dc=org".to_string(),
        u => format!("uid={u},ou=people,dc=example,dc=org"),
    };
    ds.modify(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: sn\nsn: {value}\n"
    ));
}

/// A user who leaves the user filter while the gateway is away: 389-DS's refresh from the
/// cookie does not say so, the check against a listing of the scope does. `run` deactivates
/// her as `sync` would, and a restart does not bring her back.
#[test]
fn a_user_who_left_the_filter_while_the_gateway_was_away_is_deactivated() {
    left_the_filter_while_away(&[]);
}

/// The same with every change written to the store ahead of the feed's save (as a refresh of
/// thousands is): the entries read back by key, a removal written ahead, 389-DS's identities.
#[test]
fn a_user_who_left_the_filter_while_away_is_deactivated_with_entries_written_ahead() {
    left_the_filter_while_away(&[("DIRBRIDGE_TEST_WRITE_AHEAD", "1")]);
}

fn left_the_filter_while_away(env: &[(&str, &str)]) {
    let ds = Ds389::start();
    let mut gw = gateway(&ds);
    gw.ldap_fixed = gw.ldap_fixed.replace(
        "user_filter = \"(objectClass=inetOrgPerson)\"",
        "user_filter = \"(&(objectClass=inetOrgPerson)(!(description=out)))\"",
    );
    let port = free_port();
    gw.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    gw.extra = format!(
        "[daemon]\nchange_feed = \"syncrepl\"\npoll_interval = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    gw.write_config();
    let spawn = |gw: &Gateway| {
        Guard(spawn_dirbridge(
            &gw.config_path(),
            &["run"],
            env,
            gw.dir.path(),
        ))
    };
    let mut child = spawn(&gw);
    assert!(
        wait_until(30, || gw.scim.users().len() == 3
            && following(port)
            && feed_passes(port) >= 1),
        "{}",
        gw.spawned_log()
    );
    child.stop();
    ds.modify(
        "dn: uid=carol,ou=people,dc=example,dc=org\nchangetype: modify\nadd: description\n\
         description: out\n",
    );
    let mut child = spawn(&gw);
    assert!(
        wait_until(30, || active(&gw, "carol") == Some(false)),
        "{}",
        gw.spawned_log()
    );
    assert!(gw.scim.member_names("sales").is_empty());
    assert_eq!(active(&gw, "alice"), Some(true));
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", gw.spawned_log());
    let r = gw.sync();
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
    assert_eq!(count(&r, "members", "added"), 0, "{r:?}");
    let mut child = spawn(&gw);
    // The first pass after a start runs whether or not anything changed.
    assert!(
        wait_until(30, || following(port) && feed_passes(port) >= 1),
        "{}",
        gw.spawned_log()
    );
    assert_eq!(active(&gw, "carol"), Some(false), "{}", gw.spawned_log());
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

/// `check` against 389-DS says what a sync will do there: memberships from the groups' member
/// values (its memberOf includes nested groups), unless ldap.membership is set.
#[test]
fn check_on_389_ds_reports_the_membership_a_sync_uses() {
    let mut ds = Ds389::start();
    add_nested_group(&mut ds);
    let gw = gateway(&ds);
    let r = gw.run(&["check"]);
    assert_ne!(r.code, 2, "{r:?}");
    assert!(
        check_line(&r, "OK", "directory")
            .0
            .contains("reached and bound"),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "users").0.contains("3 in scope"),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "membership")
            .0
            .contains("(ldap.membership = \"member\")"),
        "{r:?}"
    );
    assert!(gw.scim.users().is_empty(), "check wrote to the target");
}

#[test]
fn ha_on_389_ds_one_gateway_pushes_and_the_other_takes_over_a_kill() {
    let ds = Ds389::start();
    let mut gw = gateway(&ds);
    gw.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    let nodes = ha_nodes(
        &mut gw,
        "cn=dirbridge-lease,dc=example,dc=org",
        "change_feed = \"syncrepl\"\npoll_interval = \"1h\"",
        2,
    );
    let mut children: Vec<Option<Guard>> = nodes.iter().map(|n| Some(n.spawn())).collect();
    let first =
        ha_active(&nodes, &[true, true], 60).unwrap_or_else(|| panic!("{}", ha_logs(&nodes)));
    assert!(
        wait_until(60, || gw.scim.users().len() == 3),
        "{}",
        ha_logs(&nodes)
    );
    // 389-DS took the lease entry the first gateway created (an applicationProcess).
    assert!(
        nodes[first].log().contains("HA: created the lease entry")
            || nodes[1 - first]
                .log()
                .contains("HA: created the lease entry")
    );
    children[first].take().unwrap().stop();
    set_family(&ds, "bob", "AfterTheKill");
    assert!(
        wait_until(30, || family_of(&gw, "bob").as_deref()
            == Some("AfterTheKill")),
        "{}",
        ha_logs(&nodes)
    );
    assert_eq!(nodes[1 - first].role().as_deref(), Some("active"));
}
