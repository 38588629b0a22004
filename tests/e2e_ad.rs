//! Active Directory semantics against a real Samba AD domain controller.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::samba::*;
use common::*;
use serde_json::Value;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// ann (enabled), bob (disabled), carol (reports to ann); Eng = {ann, bob}, Sales = {carol},
/// Staff = {Eng} (nested).
fn populate(dc: &SambaDc) {
    let mut ldif = String::new();
    ldif += &user_ldif(
        "ann",
        "Ann",
        "Archer",
        512,
        "title: CTO\ndepartment: R&D\nemployeeID: E-1001\n",
    );
    ldif += &user_ldif("bob", "Bob", "Baker", 514, "");
    ldif += &user_ldif(
        "carol",
        "Carol",
        "Chen",
        512,
        &format!("manager: CN=Ann Archer,{OU}\n"),
    );
    ldif += &format!(
        "dn: CN=Eng,{OU}\nobjectClass: group\nsAMAccountName: Eng\nmember: CN=Ann Archer,{OU}\nmember: CN=Bob Baker,{OU}\n\n\
         dn: CN=Sales,{OU}\nobjectClass: group\nsAMAccountName: Sales\nmember: CN=Carol Chen,{OU}\n\n\
         dn: CN=Staff,{OU}\nobjectClass: group\nsAMAccountName: Staff\nmember: CN=Eng,{OU}\n"
    );
    dc.add(&ldif);
}

#[test]
fn initial_sync_maps_ad_users_groups_and_nested_groups() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    env.ldap_extra = "nested_groups = true\n".into();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");

    let ann = env
        .scim
        .user("ann@corp.example.org")
        .expect("userName is the UPN");
    assert_eq!(
        ann["externalId"],
        env.dc.guid_of(&format!("CN=Ann Archer,{OU}")),
        "externalId is the objectGUID, as AD writes it"
    );
    assert_eq!(ann["name"]["givenName"], "Ann");
    assert_eq!(ann["title"], "CTO");
    assert_eq!(ann[ENT]["department"], "R&D");
    assert_eq!(ann[ENT]["employeeNumber"], "E-1001");
    assert_eq!(ann["active"], true);
    let bob = env.scim.user("bob@corp.example.org").unwrap();
    assert_eq!(bob["active"], false, "userAccountControl 514 is disabled");
    let carol = env.scim.user("carol@corp.example.org").unwrap();
    assert_eq!(carol[ENT]["manager"]["value"], ann["id"]);
    // Built-in accounts (Administrator, krbtgt, Guest) are not people to provision.
    assert_eq!(env.scim.users().len(), 3);

    assert_eq!(
        env.scim.member_names("Eng"),
        vec!["ann@corp.example.org", "bob@corp.example.org"]
    );
    assert_eq!(
        env.scim.member_names("Staff"),
        vec!["ann@corp.example.org", "bob@corp.example.org"]
    );
    assert_eq!(
        env.scim.member_names("Sales"),
        vec!["carol@corp.example.org"]
    );
    let again = env.sync();
    assert!(
        again
            .stdout
            .contains("users 0 created, 0 adopted, 0 updated"),
        "{again:?}"
    );

    // Nesting changes arrive incrementally too: Eng leaves Staff, Sales joins it.
    env.dc.modify(&format!(
        "dn: CN=Staff,{OU}\nchangetype: modify\ndelete: member\nmember: CN=Eng,{OU}\n-\nadd: member\nmember: CN=Sales,{OU}\n"
    ));
    let (r, line) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(line["mode"], "delta", "{line}");
    assert_eq!(
        env.scim.member_names("Staff"),
        vec!["carol@corp.example.org"]
    );
}

#[test]
fn disable_enable_and_expiry_follow_the_account() {
    let env = AdEnv::start();
    populate(&env.dc);
    env.sync();
    let dn = format!("CN=Ann Archer,{OU}");
    env.dc.modify(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"
    ));
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 1, "{r:?}");
    assert_eq!(
        env.scim.user("ann@corp.example.org").unwrap()["active"],
        false
    );
    env.dc.modify(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 512\n"
    ));
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    assert_eq!(
        env.scim.user("ann@corp.example.org").unwrap()["active"],
        true
    );
    // accountExpires in the past (2001-01-01 as a FILETIME) disables too.
    env.dc.modify(&format!("dn: {dn}\nchangetype: modify\nreplace: accountExpires\naccountExpires: 126227808000000000\n"));
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 1, "{r:?}");
    assert_eq!(
        env.scim.user("ann@corp.example.org").unwrap()["active"],
        false
    );
}

#[test]
fn on_disable_delete_removes_disabled_accounts() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    env.extra = "[sync]\non_disable = \"delete\"\n".into();
    env.sync();
    assert!(
        env.scim.user("bob@corp.example.org").is_none(),
        "a disabled account is not provisioned"
    );
    assert_eq!(env.scim.member_names("Eng"), vec!["ann@corp.example.org"]);
    env.dc.modify(&format!("dn: CN=Ann Archer,{OU}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"));
    let r = env.sync();
    assert_eq!(count(&r, "users", "deleted"), 1, "{r:?}");
    assert!(env.scim.user("ann@corp.example.org").is_none());
    assert!(env.scim.member_names("Eng").is_empty());
}

#[test]
fn rename_and_ou_move_keep_the_same_object() {
    let env = AdEnv::start();
    populate(&env.dc);
    env.dc.add(&format!(
        "dn: OU=Moved,{OU}\nobjectClass: organizationalUnit\n"
    ));
    env.sync();
    let ann_id = env.scim.user("ann@corp.example.org").unwrap()["id"].clone();
    env.dc.modify(&format!(
        "dn: CN=Ann Archer,{OU}\nchangetype: modrdn\nnewrdn: CN=Ann Archer-Smith\ndeleteoldrdn: 1\nnewsuperior: OU=Moved,{OU}\n\n\
         dn: CN=Ann Archer-Smith,OU=Moved,{OU}\nchangetype: modify\nreplace: userPrincipalName\nuserPrincipalName: ann.smith@corp.example.org\n-\nreplace: sn\nsn: Archer-Smith\n"
    ));
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    let ann = env
        .scim
        .user("ann.smith@corp.example.org")
        .expect("renamed");
    assert_eq!(ann["id"], ann_id);
    assert_eq!(ann["name"]["familyName"], "Archer-Smith");
    assert_eq!(env.scim.users().len(), 3);
    assert_eq!(
        env.scim.member_names("Eng"),
        vec!["ann.smith@corp.example.org", "bob@corp.example.org"]
    );
    // The report's manager reference followed the move.
    let carol = env.scim.user("carol@corp.example.org").unwrap();
    assert_eq!(carol[ENT]["manager"]["value"], ann_id);
}

#[test]
fn deletions_and_membership_changes_are_followed() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    env.sync();
    env.dc.modify(&format!(
        "dn: CN=Eng,{OU}\nchangetype: modify\ndelete: member\nmember: CN=Bob Baker,{OU}\n-\nadd: member\nmember: CN=Carol Chen,{OU}\n"
    ));
    env.dc.delete(&format!("CN=Sales,{OU}"));
    env.dc.delete(&format!("CN=Bob Baker,{OU}"));
    let r = env.sync();
    assert_eq!(
        count(&r, "users", "deactivated"),
        0,
        "bob was already inactive: {r:?}"
    );
    assert_eq!(count(&r, "groups", "deleted"), 1, "{r:?}");
    assert_eq!(
        env.scim.member_names("Eng"),
        vec!["ann@corp.example.org", "carol@corp.example.org"]
    );
    assert!(env.scim.group("Sales").is_none());
    env.extra = "[sync]\non_remove = \"delete\"\n".into();
    env.dc.delete(&format!("CN=Carol Chen,{OU}"));
    let r = env.sync();
    assert_eq!(
        count(&r, "users", "deleted"),
        2,
        "carol and the earlier-removed bob: {r:?}"
    );
    assert_eq!(env.scim.member_names("Eng"), vec!["ann@corp.example.org"]);
}

#[test]
fn a_2000_member_group_is_read_through_range_retrieval() {
    let mut env = AdEnv::start();
    let mut ldif = String::new();
    let mut members = String::new();
    for i in 0..2000 {
        ldif += &user_ldif(&format!("u{i:04}"), "User", &format!("N{i:04}"), 512, "");
        members += &format!("member: CN=User N{i:04},{OU}\n");
    }
    ldif +=
        &format!("dn: CN=Everyone,{OU}\nobjectClass: group\nsAMAccountName: Everyone\n{members}\n");
    env.dc.add(&ldif);
    // Samba never forces ranges, so ask for 500 values at a time to run the loop.
    env.ldap_extra = "membership = \"member\"\nrange_step = 500\n".into();
    let r = env.run(&["plan", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    let ops = doc["operations"].as_array().unwrap();
    let creates = ops.iter().filter(|o| o["op"] == "create_user").count();
    let added: usize = ops
        .iter()
        .filter(|o| o["op"] == "add_members")
        .map(|o| o["members"].as_array().unwrap().len())
        .sum();
    assert_eq!(creates, 2000);
    assert_eq!(
        added, 2000,
        "every member of the group, past the first range"
    );
    assert!(ops
        .iter()
        .filter(|o| o["op"] == "add_members")
        .all(|o| o["members"].as_array().unwrap().len() <= 100));
}

#[test]
fn ldaps_starttls_and_plain_binds_are_handled_as_an_administrator_expects() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    // StartTLS with the test CA.
    env.ldap_url = env.dc.url();
    env.ldap_extra = "starttls = true\n".into();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");
    // Plain LDAP with a simple bind must be an explicit choice on AD, even on loopback.
    env.ldap_extra = String::new();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("clear text"), "{r:?}");
    env.ldap_extra = "allow_plaintext = true\n".into();
    env.sync();
    // An LDAPS certificate from an unknown CA is refused.
    env.ldap_url = env.dc.ldaps_url();
    env.ldap_fixed = env.ldap_fixed.replace("ca_file", "# ca_file");
    env.ldap_extra = String::new();
    let r = env.run(&["sync"]);
    assert_eq!(
        r.code,
        2,
        "{r:?}\n{}",
        std::fs::read_to_string(env.config_path()).unwrap()
    );
}

#[test]
fn binds_by_upn_dn_or_down_level_name_and_clear_bind_errors() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    for bind in [
        "Administrator@corp.example.org".to_string(),
        format!("CN=Administrator,CN=Users,{AD_BASE}"),
        "CORP\\\\Administrator".to_string(),
    ] {
        env.ldap_fixed = env
            .ldap_fixed
            .lines()
            .map(|l| {
                if l.starts_with("bind_dn") {
                    format!("bind_dn = \"{bind}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let r = env.run(&["plan"]);
        assert_eq!(r.code, 0, "bind as {bind}: {r:?}");
    }
    std::fs::write(env.dir.path().join("bind.pw"), "Wrong-Pa55word!").unwrap();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("AD: wrong password"), "{r:?}");
    assert!(!r.all().contains("Wrong-Pa55word!"));
}

#[test]
fn primary_groups_are_included_when_asked_and_referrals_are_skipped() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    // Search from the domain root: Samba answers with referrals to the other partitions.
    env.ldap_fixed = env.ldap_fixed.replace(
        &format!("group_base = \"{OU}\""),
        &format!("group_base = \"{AD_BASE}\""),
    );
    env.ldap_extra = "group_filter = \"(|(cn=Domain Users)(cn=Eng))\"\n".into();
    env.sync();
    // Domain Users is every account's primary group, which memberOf never lists.
    assert!(env.scim.member_names("Domain Users").is_empty());
    env.ldap_extra += "include_primary_group = true\n";
    let r = env.sync();
    assert_eq!(count(&r, "members", "added"), 3, "{r:?}");
    assert_eq!(
        env.scim.member_names("Domain Users"),
        vec![
            "ann@corp.example.org",
            "bob@corp.example.org",
            "carol@corp.example.org"
        ]
    );
    assert_eq!(
        env.scim.member_names("Eng"),
        vec!["ann@corp.example.org", "bob@corp.example.org"]
    );
}

#[test]
fn sam_account_name_can_be_the_user_name() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    env.extra = "[mapping]\nuser_name = \"sAMAccountName\"\n".into();
    env.sync();
    assert!(env.scim.user("ann").is_some());
    assert!(env.scim.user("ann@corp.example.org").is_none());
}

/// Runs dirbridge with JSON logs and returns its "directory read" line.
fn read_line(env: &AdEnv, args: &[&str]) -> (Run, Value) {
    let mut all = vec!["--log-format", "json"];
    all.extend_from_slice(args);
    let r = env.run(&all);
    let line = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "directory read")
        .unwrap_or_else(|| panic!("no directory read line: {r:?}"))["fields"]
        .clone();
    (r, line)
}

#[test]
fn an_incremental_run_after_no_change_reads_only_the_watermark() {
    let env = AdEnv::start();
    populate(&env.dc);
    let (r, first) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(first["mode"], "full");
    let before = env.scim.versions();
    let (r, again) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(again["mode"], "unchanged", "{again}");
    assert_eq!(again["users"], 0);
    assert_eq!(again["groups"], 0);
    assert_eq!(env.scim.versions(), before);
}

#[test]
fn changes_are_read_by_usn_and_deletions_come_from_tombstones() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    env.dc.add(&user_ldif("dave", "Dave", "Doe", 512, ""));
    env.dc.add(&format!(
        "dn: OU=Elsewhere,{AD_BASE}\nobjectClass: organizationalUnit\n"
    ));
    env.sync();
    env.dc.modify(&format!(
        "dn: CN=Ann Archer,{OU}\nchangetype: modify\nreplace: title\ntitle: CEO\n\n\
         dn: CN=Eng,{OU}\nchangetype: modify\nadd: member\nmember: CN=Carol Chen,{OU}\n-\ndelete: member\nmember: CN=Ann Archer,{OU}\n"
    ));
    env.dc.delete(&format!("CN=Bob Baker,{OU}"));
    // Out of the scope (user_base) by a move: a departure too.
    env.dc.modify(&format!(
        "dn: CN=Dave Doe,{OU}\nchangetype: modrdn\nnewrdn: CN=Dave Doe\ndeleteoldrdn: 1\nnewsuperior: OU=Elsewhere,{AD_BASE}\n"
    ));
    let (r, line) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(line["mode"], "delta", "{line}");
    assert!(line["changed"].as_u64().unwrap() >= 4, "{line}");
    assert_eq!(
        env.scim.user("ann@corp.example.org").unwrap()["title"],
        "CEO"
    );
    // carol joined, ann left, bob (deleted) is gone: only the group's USN moved for the first two.
    assert_eq!(env.scim.member_names("Eng"), vec!["carol@corp.example.org"]);
    assert_eq!(
        env.scim.user("bob@corp.example.org").unwrap()["active"],
        false
    );
    assert_eq!(
        env.scim.user("dave@corp.example.org").unwrap()["active"],
        false
    );
    // bob was already disabled; now deleted, he has left Eng and Staff.
    assert!(env
        .scim
        .member_names("Staff")
        .iter()
        .all(|n| n != "bob@corp.example.org"));

    env.extra = "[sync]\non_remove = \"delete\"\n".into();
    env.dc.delete(&format!("CN=Carol Chen,{OU}"));
    let (r, line) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(line["mode"], "delta", "{line}");
    assert!(env.scim.user("carol@corp.example.org").is_none());
    assert!(env.scim.member_names("Eng").is_empty());
}

#[test]
fn a_renamed_group_keeps_its_members_in_an_incremental_run() {
    let env = AdEnv::start();
    populate(&env.dc);
    env.sync();
    let eng = env.scim.group("Eng").unwrap()["id"].clone();
    env.dc.modify(&format!(
        "dn: CN=Eng,{OU}\nchangetype: modrdn\nnewrdn: CN=Platform\ndeleteoldrdn: 1\n"
    ));
    let (r, line) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(line["mode"], "delta", "{line}");
    assert_eq!(env.scim.group("Platform").unwrap()["id"], eng);
    assert_eq!(
        env.scim.member_names("Platform"),
        vec!["ann@corp.example.org", "bob@corp.example.org"]
    );
}

#[test]
fn a_changed_invocation_id_forces_a_full_read() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    env.sync();
    assert_eq!(read_line(&env, &["sync"]).1["mode"], "unchanged");
    // What a DC restored from a backup looks like: same name, new database identity.
    env.dc.restore_from_backup();
    let (r, line) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(line["mode"], "full", "{line}");
    assert!(r.stderr.contains("invocationId changed"), "{r:?}");
    // A resync always reads everything.
    assert_eq!(read_line(&env, &["resync"]).1["mode"], "full");
}

#[test]
fn an_empty_incremental_read_is_refused_and_not_remembered() {
    let env = AdEnv::start();
    populate(&env.dc);
    env.dc.add(&format!(
        "dn: OU=Away,{AD_BASE}\nobjectClass: organizationalUnit\n"
    ));
    env.sync();
    // Everyone leaves the scope at once (as a wrong move or a broken ACL would make it look).
    for cn in ["Ann Archer", "Bob Baker", "Carol Chen"] {
        env.dc.modify(&format!(
            "dn: CN={cn},{OU}\nchangetype: modrdn\nnewrdn: CN={cn}\ndeleteoldrdn: 1\nnewsuperior: OU=Away,{AD_BASE}\n"
        ));
    }
    let before = env.scim.versions();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("refusing to treat that as 3 removals"),
        "{r:?}"
    );
    // Not remembered: the next run reads the same changes again and refuses again.
    let (r, line) = read_line(&env, &["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(line["mode"], "delta", "{line}");
    assert_eq!(env.scim.versions(), before);
    // Undone in the directory: the run goes through, and nobody was touched.
    for cn in ["Ann Archer", "Bob Baker", "Carol Chen"] {
        env.dc.modify(&format!(
            "dn: CN={cn},OU=Away,{AD_BASE}\nchangetype: modrdn\nnewrdn: CN={cn}\ndeleteoldrdn: 1\nnewsuperior: {OU}\n"
        ));
    }
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 0, "{r:?}");
    assert_eq!(
        env.scim.user("ann@corp.example.org").unwrap()["active"],
        true
    );
}

/// `dirbridge run` against AD: change notification wakes the service for an incremental read.
/// Polling is set to an hour and the fallback too, so a change that arrives came through the
/// notification.
#[test]
fn the_service_reacts_to_ad_change_notifications() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    let port = free_port();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1h\"\nnotify_fallback = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    let mut child = Guard(env.spawn(&["run", "--log-level", "debug"]));
    assert!(
        wait_until(60, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    // Registered: give the registration a moment to be in place before changing things.
    assert!(
        wait_until(20, || http_get(port, "/status")
            .map(|(_, b)| b.contains("\"mode\":\"notify\""))
            .unwrap_or(false)),
        "{}",
        env.spawned_log()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    env.dc.modify(&format!(
        "dn: CN=Ann Archer,{OU}\nchangetype: modify\nreplace: title\ntitle: Chief Architect\n"
    ));
    assert!(
        wait_until(30, || env
            .scim
            .user("ann@corp.example.org")
            .map(|u| u["title"] == "Chief Architect")
            .unwrap_or(false)),
        "{}",
        env.spawned_log()
    );
    // A deletion notifies too (the registration carries Show Deleted): carol is deactivated
    // at once, not at the next poll (an hour away). The time it took is printed, not asserted
    // (timing is the benchmark's business).
    let deleted = std::time::Instant::now();
    env.dc.delete(&format!("CN=Carol Chen,{OU}"));
    assert!(
        wait_until(10, || env
            .scim
            .user("carol@corp.example.org")
            .map(|u| u["active"] == false)
            .unwrap_or(false)),
        "{}",
        env.spawned_log()
    );
    eprintln!(
        "deleted user deactivated {:?} after the delete",
        deleted.elapsed()
    );
    // Notified passes time their changes from the notification: the latency histogram fills
    // on AD too (it has no entryCSN). The target shows a change as soon as it is confirmed; the
    // pass is counted when it ends, a moment later, so the count is waited for.
    let latencies = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("dirbridge_change_to_push_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let metrics_now = || http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
    assert!(
        wait_until(10, || latencies(&metrics_now()) >= 2),
        "{}",
        metrics_now()
    );
    let metrics = metrics_now();
    let count = latencies(&metrics);
    let sum: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dirbridge_change_to_push_seconds_sum "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    eprintln!(
        "AD change-to-push: {count} objects, mean {:.3} s",
        sum / count as f64
    );
    let log = env.spawned_log();
    assert!(log.contains("change notification"), "{log}");
    assert!(!log.contains("AD change notification unavailable"), "{log}");
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", env.spawned_log());
}

#[test]
fn test_mapping_on_ad_finds_a_user_by_sam_account_name_and_shows_its_guid_key() {
    let env = AdEnv::start();
    populate(&env.dc);
    let r = env.run(&["test-mapping", "--json", "carol"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["dn"], format!("CN=Carol Chen,{OU}"), "{doc}");
    assert_eq!(doc["key"], env.dc.guid_of(&format!("CN=Carol Chen,{OU}")));
    // Binary values are shown as hex, text as it is.
    assert!(
        doc["attributes"]["objectguid"][0]
            .as_str()
            .unwrap()
            .starts_with("hex:"),
        "{doc}"
    );
    assert_eq!(doc["attributes"]["samaccountname"][0], "carol");
    assert_eq!(doc["user"]["user_name"], "carol@corp.example.org");
    let create = &doc["requests"][1];
    assert_eq!(create["method"], "POST");
    assert_eq!(create["body"]["externalId"], doc["key"]);
    // carol's manager is created first: the request refers to it by its coming id.
    assert_eq!(
        create["body"][ENT]["manager"]["value"], "<id of ann@corp.example.org once created>",
        "{doc}"
    );
    assert!(env.scim.users().is_empty());
}

/// `check` against a Samba AD DC: the bind (StartTLS, the test CA), the users and groups in the
/// AD scope, memberOf, and the DC's certificate described with the CA that verified it.
#[test]
fn check_on_active_directory_describes_the_dc_and_its_scope() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    env.ldap_url = env.dc.url();
    env.ldap_extra = "starttls = true\n".into();
    let r = env.run(&["check"]);
    assert_ne!(r.code, 2, "{r:?}");
    assert!(
        check_line(&r, "OK", "directory")
            .0
            .contains("reached and bound"),
        "{r:?}"
    );
    let tls = r
        .stdout
        .lines()
        .find(|l| l.contains(" tls ") && l.contains("from ldap.ca_file"))
        .unwrap_or_else(|| panic!("no tls line: {r:?}"));
    assert!(tls.starts_with("OK") || tls.starts_with("WARN"), "{r:?}");
    assert!(
        check_line(&r, "OK", "users").0.contains("3 in scope"),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "membership")
            .0
            .contains("carry memberOf"),
        "{r:?}"
    );
    assert!(env.scim.users().is_empty(), "check wrote to the target");
    // A clear-text bind to a DC, allowed on purpose: a warning, even on loopback.
    env.ldap_extra = "allow_plaintext = true\n".into();
    let r = env.run(&["check"]);
    let tls = r
        .stdout
        .lines()
        .find(|l| l.starts_with("WARN  tls "))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(tls.contains("cross the network in clear"), "{r:?}");
}

#[test]
fn ha_on_active_directory_a_standby_takes_over_and_carries_out_a_deletion_never_pushed() {
    let mut env = AdEnv::start();
    populate(&env.dc);
    let lease = format!("CN=dirbridge-lease,{AD_BASE}");
    let nodes = ha_nodes(
        &mut env.gw,
        &lease,
        "poll_interval = \"1s\"\nnotify_fallback = \"1s\"",
        2,
    );
    let mut children: Vec<Option<Guard>> = nodes.iter().map(|n| Some(n.spawn())).collect();
    let first =
        ha_active(&nodes, &[true, true], 60).unwrap_or_else(|| panic!("{}", ha_logs(&nodes)));
    assert!(
        wait_until(60, || env.scim.users().len() == 3),
        "{}",
        ha_logs(&nodes)
    );
    // The lease is a container the first gateway created, with its value.
    let value = env.dc.read(&lease, "description");
    assert!(
        value.len() == 1 && value[0].starts_with(&format!("holder=gw{first};")),
        "{value:?}"
    );
    // `check` reads whether the bind DN may write it (AD says so: allowedAttributesEffective).
    let r = run_dirbridge(&nodes[0].dir.join("dirbridge.toml"), &["check"], &[]);
    let (ok, _) = check_line(&r, "OK", "ha");
    assert!(ok.contains(&format!("held by gw{first}")), "{r:?}");
    assert!(!ok.contains("shows at the first renewal"), "{r:?}");

    // A newcomer pushed, listed by the standby; the active dies; the newcomer leaves.
    env.dc.add(&user_ldif("dan", "Dan", "Dunn", 512, ""));
    assert!(
        wait_until(30, || env.scim.user("dan@corp.example.org").is_some()),
        "{}",
        ha_logs(&nodes)
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    children[first].take().unwrap().stop();
    env.dc.delete(&format!("CN=Dan Dunn,{OU}"));
    assert!(
        wait_until(30, || {
            env.scim
                .user("dan@corp.example.org")
                .is_some_and(|u| u["active"] == false)
        }),
        "{}",
        ha_logs(&nodes)
    );
    assert_eq!(nodes[1 - first].role().as_deref(), Some("active"));
    let value = env.dc.read(&lease, "description");
    assert!(
        value[0].starts_with(&format!("holder=gw{};gen=2;", 1 - first)),
        "{value:?}"
    );
}
