//! End to end: the dirbridge binary against a real slapd and a real SCIM server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

#[test]
fn first_sync_creates_everything_and_a_second_sends_nothing() {
    let env = Env::start();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");
    assert_eq!(count(&r, "groups", "created"), 2, "{r:?}");
    assert_eq!(count(&r, "members", "added"), 3, "{r:?}");

    let alice = env.scim.user("alice").expect("alice on the target");
    assert_eq!(alice["name"]["givenName"], "Alice");
    assert_eq!(alice["name"]["familyName"], "Archer");
    assert_eq!(alice["displayName"], "Alice Archer");
    assert_eq!(alice["emails"][0]["value"], "alice@example.org");
    assert_eq!(alice["active"], true);
    // What the second server does not keep is checked where it is kept (tests/targets.md).
    if env.scim.keeps("title") {
        assert_eq!(alice["emails"][0]["type"], "work");
        assert_eq!(alice["title"], "CTO");
        assert_eq!(alice[ENT]["department"], "R&D");
        assert_eq!(alice[ENT]["employeeNumber"], "1001");
    }
    // externalId carries the entryUUID, not the DN.
    let ext = alice["externalId"].as_str().unwrap();
    assert_eq!(ext.len(), 36, "{ext}");
    let bob = env.scim.user("bob").unwrap();
    // displayName falls back to cn; manager is resolved to alice's SCIM id.
    assert_eq!(bob["displayName"], "Bob Baker");
    if env.scim.keeps(ENT) {
        assert_eq!(bob[ENT]["manager"]["value"], alice["id"]);
    }
    assert_eq!(env.scim.users().len(), 3);
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    assert_eq!(env.scim.member_names("sales"), vec!["carol"]);

    let before = env.scim.versions();
    let r = env.sync();
    assert!(
        r.stdout
            .contains("users 0 created, 0 adopted, 0 updated, 0 deactivated, 0 deleted"),
        "{r:?}"
    );
    assert_eq!(count(&r, "members", "added"), 0);
    assert_eq!(
        env.scim.versions(),
        before,
        "the second sync wrote to the target"
    );
}

#[test]
fn an_attribute_change_is_one_patch_of_that_user() {
    let env = Env::start();
    env.sync();
    let before = env.scim.versions();
    let bob_id = env.scim.user("bob").unwrap()["id"].clone();
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: title\ntitle: Staff Engineer\n-\ndelete: employeeNumber\n-\nreplace: givenName\ngivenName: Robert\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    let bob = env.scim.user("bob").unwrap();
    assert_eq!(bob["name"]["givenName"], "Robert");
    if env.scim.keeps("title") {
        assert_eq!(bob["title"], "Staff Engineer");
        assert!(bob[ENT].get("employeeNumber").is_none(), "{bob}");
    }
    // Only bob's resource changed.
    let after = env.scim.versions();
    let changed: Vec<&String> = after
        .iter()
        .zip(before.iter())
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| &a.0)
        .collect();
    assert_eq!(
        changed,
        vec![&format!("Users/{}", bob_id.as_str().unwrap())]
    );
}

#[test]
fn membership_changes_become_member_adds_and_removes() {
    let env = Env::start();
    env.sync();
    env.slapd.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\nmember: uid=carol,ou=people,dc=example,dc=org\n-\ndelete: member\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "members", "added"), 1, "{r:?}");
    assert_eq!(count(&r, "members", "removed"), 1, "{r:?}");
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "carol"]);
}

#[test]
fn a_user_leaving_the_filter_is_deactivated_and_a_deleted_entry_too() {
    let env = Env::start();
    env.sync();
    env.slapd
        .modify("dn: uid=carol,ou=people,dc=example,dc=org\nchangetype: modify\nadd: description\ndescription: excluded\n");
    env.slapd.delete("uid=bob,ou=people,dc=example,dc=org");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 2, "{r:?}");
    assert_eq!(env.scim.user("carol").unwrap()["active"], false);
    assert_eq!(env.scim.user("bob").unwrap()["active"], false);
    assert_eq!(env.scim.user("alice").unwrap()["active"], true);
    // They are no longer members of anything.
    assert_eq!(env.scim.member_names("engineering"), vec!["alice"]);
    assert!(env.scim.member_names("sales").is_empty());
    // Back in the filter: reactivated, same object.
    let carol_id = env.scim.user("carol").unwrap()["id"].clone();
    env.slapd.modify(
        "dn: uid=carol,ou=people,dc=example,dc=org\nchangetype: modify\ndelete: description\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    let carol = env.scim.user("carol").unwrap();
    assert_eq!(carol["active"], true);
    assert_eq!(carol["id"], carol_id);
    assert_eq!(env.scim.member_names("sales"), vec!["carol"]);
}

#[test]
fn with_on_remove_delete_a_departed_user_is_deleted_after_leaving_its_groups() {
    let mut env = Env::start();
    env.extra = "[sync]\non_remove = \"delete\"\n".into();
    env.sync();
    let bob_id = env.scim.user("bob").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.slapd.delete("uid=bob,ou=people,dc=example,dc=org");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deleted"), 1, "{r:?}");
    assert_eq!(
        env.scim.http("GET", &format!("/Users/{bob_id}"), None).0,
        404
    );
    // The SCIM server keeps dangling members; the gateway removed bob itself.
    assert_eq!(env.scim.member_names("engineering"), vec!["alice"]);
}

#[test]
fn disabled_accounts_follow_on_disable() {
    let mut env = Env::start();
    env.sync();
    env.slapd
        .modify("dn: uid=carol,ou=people,dc=example,dc=org\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 1, "{r:?}");
    assert_eq!(env.scim.user("carol").unwrap()["active"], false);
    // Still a member while merely deactivated.
    assert_eq!(env.scim.member_names("sales"), vec!["carol"]);

    env.extra = "[sync]\non_disable = \"delete\"\n".into();
    let r = env.sync();
    assert_eq!(count(&r, "users", "deleted"), 1, "{r:?}");
    assert!(env.scim.user("carol").is_none());
    assert!(env.scim.member_names("sales").is_empty());
}

#[test]
fn a_group_deleted_in_the_directory_is_deleted_on_the_target() {
    let env = Env::start();
    env.sync();
    env.slapd.delete("cn=sales,ou=groups,dc=example,dc=org");
    let r = env.sync();
    assert_eq!(count(&r, "groups", "deleted"), 1, "{r:?}");
    assert!(env.scim.group("sales").is_none());
    assert!(env.scim.group("engineering").is_some());
}

#[test]
fn rename_and_move_keep_the_same_scim_object() {
    let env = Env::start();
    env.sync();
    let bob_id = env.scim.user("bob").unwrap()["id"].clone();
    let eng_id = env.scim.group("engineering").unwrap()["id"].clone();
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=robert\ndeleteoldrdn: 1\nnewsuperior: ou=staff,dc=example,dc=org\n",
    );
    env.slapd.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modrdn\nnewrdn: cn=platform\ndeleteoldrdn: 1\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    assert_eq!(count(&r, "groups", "updated"), 1, "{r:?}");
    let robert = env.scim.user("robert").expect("renamed user");
    assert_eq!(robert["id"], bob_id);
    assert!(env.scim.user("bob").is_none());
    assert_eq!(env.scim.users().len(), 3);
    let platform = env.scim.group("platform").expect("renamed group");
    assert_eq!(platform["id"], eng_id);
    assert_eq!(env.scim.member_names("platform"), vec!["alice", "robert"]);
}

#[test]
fn an_existing_user_with_the_same_username_is_adopted_not_duplicated() {
    let env = Env::start();
    let (status, pre) = env.scim.http(
        "POST",
        "/Users",
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "alice", "displayName": "Old Name", "active": false
        })),
    );
    assert_eq!(status, 201, "{pre}");
    let r = env.sync();
    assert_eq!(count(&r, "users", "adopted"), 1, "{r:?}");
    assert_eq!(count(&r, "users", "created"), 2, "{r:?}");
    let alice: Vec<Value> = env
        .scim
        .users()
        .into_iter()
        .filter(|u| u["userName"] == "alice")
        .collect();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0]["id"], pre["id"]);
    // Brought in line with the directory.
    assert_eq!(alice[0]["displayName"], "Alice Archer");
    assert_eq!(alice[0]["active"], true);
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    let again = env.sync();
    assert_eq!(count(&again, "users", "updated"), 0, "{again:?}");
}

#[test]
fn resync_repairs_drift_made_directly_on_the_target() {
    let env = Env::start();
    env.sync();
    let alice = env.scim.user("alice").unwrap();
    let carol = env.scim.user("carol").unwrap();
    let eng = env.scim.group("engineering").unwrap();
    let patch = |path: &str, op: Value| {
        let (s, b) = env.scim.http(
            "PATCH",
            path,
            Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [op]})),
        );
        assert!(s == 204 || s == 200, "{s} {b}");
    };
    let drifted = if env.scim.keeps("title") {
        json!({"op": "replace", "path": "title", "value": "Intern"})
    } else {
        json!({"op": "replace", "path": "name.givenName", "value": "Intern"})
    };
    patch(
        &format!("/Users/{}", alice["id"].as_str().unwrap()),
        drifted,
    );
    patch(
        &format!("/Users/{}", alice["id"].as_str().unwrap()),
        json!({"op": "replace", "path": "active", "value": false}),
    );
    // The form of removal each server takes (django-scim2 refuses the filtered path,
    // scim2-server a value list).
    let removal = match env.scim.kind {
        ScimKind::Scim2Server => {
            json!({"op": "remove", "path": format!("members[value eq \"{}\"]", alice["id"].as_str().unwrap())})
        }
        ScimKind::Django => {
            json!({"op": "remove", "path": "members", "value": [{"value": alice["id"]}]})
        }
    };
    patch(&format!("/Groups/{}", eng["id"].as_str().unwrap()), removal);
    // bob added to sales behind the gateway's back: a wrong membership.
    let sales = env.scim.group("sales").unwrap();
    let bob = env.scim.user("bob").unwrap();
    patch(
        &format!("/Groups/{}", sales["id"].as_str().unwrap()),
        json!({"op": "add", "path": "members", "value": [{"value": bob["id"]}]}),
    );
    let (s, _) = env.scim.http(
        "DELETE",
        &format!("/Users/{}", carol["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(s, 204);
    // A plain sync trusts its records and does not see the drift.
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");

    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    let alice = env.scim.user("alice").unwrap();
    if env.scim.keeps("title") {
        assert_eq!(alice["title"], "CTO");
    }
    assert_eq!(alice["name"]["givenName"], "Alice");
    assert_eq!(alice["active"], true);
    let carol = env.scim.user("carol").expect("carol recreated");
    assert_eq!(carol["emails"][0]["value"], "carol@example.org");
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    assert_eq!(env.scim.member_names("sales"), vec!["carol"]);
    assert_eq!(env.scim.users().len(), 3);
    // After the repair, both kinds of pass find nothing to do.
    let before = env.scim.versions();
    env.sync();
    assert_eq!(env.run(&["resync"]).code, 0);
    assert_eq!(env.scim.versions(), before);
}

#[test]
fn resync_rebuilds_lost_state_from_the_target_without_duplicates() {
    let env = Env::start();
    env.sync();
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let before = env.scim.versions();
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(env.scim.users().len(), 3);
    assert_eq!(env.scim.groups().len(), 2);
    assert_eq!(
        env.scim.versions(),
        before,
        "nothing differed, so nothing was written"
    );
    // The rebuilt records are good for deltas again.
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 1, "{r:?}");
}

#[test]
fn plan_shows_the_operations_and_sends_nothing() {
    let env = Env::start();
    let r = env.run(&["plan", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["rejected"], json!([]));
    let ops = doc["operations"].as_array().unwrap().clone();
    let names: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "create_user",
            "create_user",
            "create_user",
            "create_group",
            "create_group",
            "add_members",
            "add_members"
        ]
    );
    assert!(env.scim.users().is_empty(), "plan sent something");
    assert!(!env.state_path().exists(), "plan created the state store");

    env.sync();
    env.slapd
        .modify("dn: uid=carol,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: mail\nmail: carol.chen@example.org\n");
    let before = env.scim.versions();
    let r = env.run(&["plan", "--json"]);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    let ops = doc["operations"].as_array().unwrap().clone();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["op"], "update_user");
    assert_eq!(ops[0]["userName"], "carol");
    assert_eq!(ops[0]["changes"][0]["field"], "email");
    assert_eq!(ops[0]["changes"][0]["value"], "carol.chen@example.org");
    let table = env.run(&["plan"]);
    assert!(
        table.stdout.contains("update_user") && table.stdout.contains("carol.chen@example.org"),
        "{table:?}"
    );
    assert_eq!(env.scim.versions(), before);
    // The plan did not move the state: sync still sends the change.
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
}

#[test]
fn bad_entries_are_reported_while_the_rest_syncs() {
    let env = Env::start();
    env.slapd.add(
        "dn: uid=dave,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave\nsn: Doe\ngivenName: Dave\n",
    );
    env.slapd.add(
        "dn: uid=alice2,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: ALICE\ncn: Alice Two\nsn: Two\ngivenName: Alice\nmail: a2@example.org\n",
    );
    // plan names them too, and exits 1.
    let r = env.run(&["plan", "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    let rejected = doc["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 3, "{doc}");
    let dave = rejected
        .iter()
        .find(|r| r["dn"] == "uid=dave,ou=people,dc=example,dc=org")
        .unwrap();
    assert!(
        dave["reason"].as_str().unwrap().contains("emails[type eq"),
        "{doc}"
    );
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("uid=dave,ou=people,dc=example,dc=org"),
        "{r:?}"
    );
    assert!(r.stderr.contains("emails[type eq"), "{r:?}");
    // alice and ALICE collide: neither is pushed on a first run, both are named.
    assert!(r.stderr.contains("is used by more than one entry"), "{r:?}");
    assert_eq!(count(&r, "users", "created"), 2, "{r:?}");
    let status = env.run(&["status", "--json"]);
    let doc: Value = serde_json::from_str(&status.stdout).unwrap();
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{doc}");
    assert!(errors
        .iter()
        .any(|e| e["label"] == "uid=dave,ou=people,dc=example,dc=org"));
    assert_eq!(doc["users"], 2);
    assert_eq!(doc["last_run"]["outcome"], "errors");
    // Fixing the entries clears the errors.
    env.slapd
        .modify("dn: uid=dave,ou=people,dc=example,dc=org\nchangetype: modify\nadd: mail\nmail: dave@example.org\n");
    env.slapd.delete("uid=alice2,ou=people,dc=example,dc=org");
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 2, "{r:?}");
    let doc: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["errors"].as_array().unwrap().len(), 0, "{doc}");
    assert_eq!(doc["users"], 4);
    let text = env.run(&["status"]);
    assert!(
        text.stdout
            .contains("Users:        4 (4 active, 0 adopted)"),
        "{text:?}"
    );
    // Once alice is on the target, an entry taking her userName is held and she keeps it.
    env.slapd.add(
        "dn: uid=alice2,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: ALICE\ncn: Alice Two\nsn: Two\ngivenName: Alice\nmail: a2@example.org\n",
    );
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{doc}");
    assert_eq!(
        errors[0]["label"], "uid=alice2,ou=people,dc=example,dc=org",
        "{doc}"
    );
    assert_eq!(doc["users"], 4, "{doc}");
}

#[test]
fn member_mode_with_nested_groups_flattens_membership() {
    let mut env = Env::start();
    env.ldap_extra = "membership = \"member\"\nnested_groups = true\n".into();
    env.slapd.add(
        "dn: cn=all-staff,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: all-staff\nmember: cn=engineering,ou=groups,dc=example,dc=org\nmember: cn=sales,ou=groups,dc=example,dc=org\n",
    );
    env.sync();
    assert_eq!(
        env.scim.member_names("all-staff"),
        vec!["alice", "bob", "carol"]
    );
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
}

#[test]
fn groups_named_in_member_of_are_created_on_the_fly() {
    let mut env = Env::start();
    // Only engineering matches the group filter; the groups outside it that synced users are
    // members of are read by DN and created too (miniOrange's "create groups on the fly").
    env.ldap_extra = "group_filter = \"(cn=engineering)\"\n".into();
    env.slapd.add(
        "dn: cn=wiki-users,ou=apps,dc=example,dc=org\nobjectClass: groupOfNames\ncn: wiki-users\nmember: uid=carol,ou=people,dc=example,dc=org\n",
    );
    env.sync();
    assert_eq!(env.scim.member_names("wiki-users"), vec!["carol"]);
    assert_eq!(env.scim.member_names("sales"), vec!["carol"]);
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
}

#[test]
fn referenced_groups_can_be_left_out() {
    let mut env = Env::start();
    env.ldap_extra = "group_filter = \"(cn=engineering)\"\nreferenced_groups = \"ignore\"\n".into();
    env.sync();
    assert!(env.scim.group("sales").is_none());
    assert_eq!(env.scim.groups().len(), 1);
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
}

#[test]
fn custom_attributes_are_mapped() {
    let mut env = Env::start();
    env.extra = "[mapping.custom]\nnickName = \"uid\"\nuserType = \"employeeType\"\n".into();
    let r = env.sync();
    let add_type = "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\nadd: employeeType\nemployeeType: Employee\n";
    if !env.scim.keeps("nickName") {
        // A server that keeps neither: found at the first creation (nickName) and at the first
        // update (userType); from then on neither sent nor compared.
        assert!(r.stderr.contains("not-kept-nickName"), "{r:?}");
        env.slapd.modify(add_type);
        let r = env.sync();
        assert!(r.stderr.contains("not-kept-userType"), "{r:?}");
        let r = env.run(&["resync"]);
        assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
        let r = env.sync();
        assert!(r.stderr.contains("operations=0"), "{r:?}");
        return;
    }
    let alice = env.scim.user("alice").unwrap();
    assert_eq!(alice["nickName"], "alice");
    assert!(alice.get("userType").is_none());
    env.slapd.modify(add_type);
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 1, "{r:?}");
    assert_eq!(env.scim.user("alice").unwrap()["userType"], "Employee");
}

#[test]
fn a_user_the_target_refuses_is_recorded_and_retried_while_the_rest_syncs() {
    let mut env = Env::start();
    let kind = env.scim.kind;
    let (attribute, bad, good, why) = refusable(kind, &mut env.extra);
    set_attribute(&env.slapd, "carol", attribute, bad);
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(count(&r, "users", "created"), 2, "{r:?}");
    assert_eq!(count(&r, "", "errors"), 1, "{r:?}");
    assert!(env.scim.user("carol").is_none());
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    assert!(env.scim.member_names("sales").is_empty());
    let doc: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{doc}");
    assert_eq!(errors[0]["http_status"], 400);
    assert_eq!(errors[0]["operation"], "create_user");
    let reason = errors[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("POST /Users") && reason.contains(why),
        "{reason}"
    );
    assert!(
        errors[0]["label"]
            .as_str()
            .unwrap()
            .contains("uid=carol,ou=people"),
        "{doc}"
    );

    // Retried next run (and counted), then fixed.
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["errors"][0]["attempts"], 2, "{doc}");
    set_attribute(&env.slapd, "carol", attribute, good);
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 1, "{r:?}");
    assert_eq!(env.scim.member_names("sales"), vec!["carol"]);
    let doc: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert!(doc["errors"].as_array().unwrap().is_empty(), "{doc}");
}

#[test]
fn an_empty_read_is_never_taken_as_everyone_leaving() {
    let mut env = Env::start();
    env.sync();
    let before = env.scim.versions();
    env.ldap_extra = "user_base = \"ou=nobody-here,dc=example,dc=org\"\n".into();
    env.slapd.add(
        "dn: ou=nobody-here,dc=example,dc=org\nobjectClass: organizationalUnit\nou: nobody-here\n",
    );
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("refusing to treat that as 3 removals"),
        "{r:?}"
    );
    assert_eq!(env.run(&["plan"]).code, 2);
    env.ldap_extra =
        "group_filter = \"(cn=no-such-group)\"\nreferenced_groups = \"ignore\"\n".into();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no groups"), "{r:?}");
    assert_eq!(
        env.scim.versions(),
        before,
        "an empty read changed the target"
    );
    // A base that does not exist is a search error, also exit 2.
    env.ldap_extra = "user_base = \"ou=missing,dc=example,dc=org\"\n".into();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no such object"), "{r:?}");
}

#[test]
fn a_provider_without_patch_gets_get_and_put_instead() {
    let mut env = Env::start();
    // This server refuses every PATCH with 501: only GET + PUT can make the updates below.
    let spc = repo().join("tests/fixtures/spc-no-patch.json");
    env.scim = Scim::start_with(&["--service-provider-config", spc.to_str().unwrap()]);
    env.target_url = env.scim.base();
    let r = env.sync();
    assert_eq!(count(&r, "members", "added"), 3, "{r:?}");
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    // A foreign attribute set on the target survives the replacement.
    let bob = env.scim.user("bob").unwrap();
    let mut doc = bob.clone();
    doc["nickName"] = json!("bobby");
    let (s, b) = env.scim.http(
        "PUT",
        &format!("/Users/{}", bob["id"].as_str().unwrap()),
        Some(&doc),
    );
    assert_eq!(s, 200, "{b}");

    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: title\ntitle: Principal Engineer\n-\ndelete: employeeNumber\n\n\
         dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\ndelete: member\nmember: uid=alice,ou=people,dc=example,dc=org\n-\nadd: member\nmember: uid=carol,ou=people,dc=example,dc=org\n\n\
         dn: cn=sales,ou=groups,dc=example,dc=org\nchangetype: modrdn\nnewrdn: cn=revenue\ndeleteoldrdn: 1\n\n\
         dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "", "errors"), 0, "{r:?}");
    let bob = env.scim.user("bob").unwrap();
    assert_eq!(bob["title"], "Principal Engineer");
    assert!(bob[ENT].get("employeeNumber").is_none(), "{bob}");
    assert_eq!(bob["nickName"], "bobby");
    assert_eq!(env.scim.member_names("engineering"), vec!["bob", "carol"]);
    assert_eq!(env.scim.member_names("revenue"), vec!["carol"]);
    assert_eq!(env.scim.user("alice").unwrap()["active"], false);
    // PATCH really is refused by this server.
    let (s, _) = env.scim.http(
        "PATCH",
        &format!("/Users/{}", bob["id"].as_str().unwrap()),
        Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "title", "value": "x"}]})),
    );
    assert_eq!(s, 501);
}

fn add_people(env: &Env, prefix: &str, n: usize) {
    let mut ldif = String::new();
    for i in 0..n {
        ldif += &format!(
            "dn: uid={prefix}{i:02},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: {prefix}{i:02}\n\
             cn: P {i}\nsn: P\ngivenName: P{i}\nmail: {prefix}{i:02}@example.org\n\n"
        );
    }
    env.slapd.add(&ldif);
}

#[test]
fn mass_removals_are_held_until_approved_while_the_rest_syncs() {
    let env = Env::start();
    add_people(&env, "p", 12);
    env.sync();
    assert_eq!(env.scim.users().len(), 15);

    // 11 of 15 users vanish from the directory (a broken OU move, say), and bob changes.
    for i in 0..11 {
        env.slapd
            .delete(&format!("uid=p{i:02},ou=people,dc=example,dc=org"));
    }
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: sn\nsn: Held-run\n",
    );
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("dirbridge approve-deletes"), "{r:?}");
    assert_eq!(count(&r, "users", "deactivated"), 0, "{r:?}");
    assert!(r.stdout.contains(", 11 deletions held ("), "{r:?}");
    assert!(env.scim.users().iter().all(|u| u["active"] == true));
    assert_eq!(
        env.scim.user("bob").unwrap()["name"]["familyName"],
        "Held-run"
    );
    let s = env.run(&["status"]);
    assert!(s.stdout.contains("HELD:         11"), "{s:?}");
    let doc: Value = serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(doc["last_run"]["outcome"], "held", "{doc}");
    // Held again on the next run: nothing is removed until someone approves.
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 3, "{r:?}");

    let a = env.run(&["approve-deletes"]);
    assert_eq!(a.code, 0, "{a:?}");
    assert!(a.stdout.contains("Approved 11"), "{a:?}");
    let r = env.sync();
    assert_eq!(count(&r, "users", "deactivated"), 11, "{r:?}");
    assert!(!env.run(&["status"]).stdout.contains("HELD"));
    // The approval was spent: a new mass removal is held again, unless approved for the run.
    add_people(&env, "q", 12);
    env.sync();
    for i in 0..12 {
        env.slapd
            .delete(&format!("uid=q{i:02},ou=people,dc=example,dc=org"));
    }
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 3, "{r:?}");
    let r = env.run(&["sync", "--approve-deletes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "users", "deactivated"), 12, "{r:?}");
}

fn b64(s: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn hostile_values_cannot_change_a_query_a_header_or_a_path() {
    let env = Env::start();
    let evil = "o'brien\"*)(uid=*) or 1 eq 1 /../Groups?x=";
    let crlf = "Eve\r\nAuthorization: Bearer stolen";
    let long = "L".repeat(5000);
    env.slapd.add(&format!(
        "dn: uid=evil,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid:: {}\n\
         cn: Evil\nsn: Evil\ngivenName:: {}\nmail: evil@example.org\ntitle: {long}\n\n\
         dn: cn=evil group,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn:: {}\n\
         member: uid=evil,ou=people,dc=example,dc=org\n",
        b64(evil.as_bytes()),
        b64(crlf.as_bytes()),
        b64(b"team \"x\") or (displayName pr / %2e%2e"),
    ));
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 4, "{r:?}");
    let users = env.scim.users();
    let u = users
        .iter()
        .find(|u| u["userName"] == evil)
        .expect("exact userName");
    assert_eq!(u["name"]["givenName"], crlf);
    if env.scim.keeps("title") {
        assert_eq!(u["title"].as_str().unwrap().len(), 5000);
    }
    assert_eq!(
        env.scim
            .member_names("team \"x\") or (displayName pr / %2e%2e"),
        vec![evil.to_string()]
    );
    // Looked up again by those names (filters escaped): found, not created twice.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 0, "{r:?}");
    assert_eq!(count(&r, "users", "adopted"), 4, "{r:?}");
    assert_eq!(count(&r, "groups", "adopted"), 3, "{r:?}");
    assert_eq!(env.scim.users().len(), 4);
    assert_eq!(env.scim.groups().len(), 3);
}

#[test]
fn a_size_limited_read_is_an_error_not_departures() {
    let mut env = Env::start();
    env.sync();
    env.slapd.add(
        "dn: cn=limited,dc=example,dc=org\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: limited\nuserPassword: limited-pw\n",
    );
    // The same directory, read by an account the server cuts off after 2 entries.
    std::fs::write(env.dir.path().join("bind.pw"), "limited-pw").unwrap();
    env.ldap_fixed = env
        .ldap_fixed
        .replace("cn=admin,dc=example,dc=org", "cn=limited,dc=example,dc=org");
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("size limit"), "{r:?}");
    assert!(env.scim.users().iter().all(|u| u["active"] == true));
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
}

#[test]
fn approve_deletes_for_one_run_is_not_left_for_a_later_one() {
    let env = Env::start();
    add_people(&env, "p", 12);
    env.sync();
    // Nothing to remove in this run: the approval must not survive it.
    let r = env.run(&["sync", "--approve-deletes"]);
    assert_eq!(r.code, 0, "{r:?}");
    for i in 0..11 {
        env.slapd
            .delete(&format!("uid=p{i:02},ou=people,dc=example,dc=org"));
    }
    let r = env.run(&["sync"]);
    assert_eq!(
        r.code, 3,
        "a stale approval let a mass removal through: {r:?}"
    );
    assert!(env.scim.users().iter().all(|u| u["active"] == true));
}

#[test]
fn values_are_sent_byte_for_byte_and_only_the_user_name_is_trimmed() {
    let env = Env::start();
    // Leading and trailing spaces (base64 in LDIF, as LDAP requires for them).
    env.slapd.add(&format!(
        "dn: uid=spacey,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid:: {}\n\
         cn: Spacey\nsn:: {}\ngivenName:: {}\nmail: spacey@example.org\ndisplayName: Spacey\n",
        b64(b" spacey "),
        b64(b"  Space  "),
        b64(b" Sp "),
    ));
    env.sync();
    let u = env.scim.user("spacey").expect("userName trimmed");
    assert_eq!(u["name"]["familyName"], "  Space  ");
    assert_eq!(u["name"]["givenName"], " Sp ");
    let r = env.sync();
    assert!(r.stderr.contains("operations=0"), "{r:?}");
}

#[test]
fn a_member_naming_no_entry_is_reported_not_dropped_silently() {
    let mut env = Env::start();
    env.ldap_extra = "membership = \"member\"\n".into();
    env.slapd.modify(
        "dn: cn=engineering,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\nmember: uid=ghost,ou=people,dc=example,dc=org\n",
    );
    let r = env.sync();
    assert!(
        r.stdout
            .contains("; 1 member references to no user or group read"),
        "{r:?}"
    );
    assert!(r.stderr.contains("members_unresolved=1"), "{r:?}");
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob"]);
    let r = env.run(&["sync", "--log-level", "debug"]);
    assert!(
        r.stderr.contains("uid=ghost,ou=people,dc=example,dc=org"),
        "the DN at debug level: {r:?}"
    );
}

/// bob is renamed to bob2 and a newcomer takes the name `bob` in the same pass. The look-up by
/// userName finds bob's object (still named bob until its rename lands): it is this gateway's
/// for another entry, so it is never taken over; the newcomer gets its own object.
#[test]
fn a_newcomer_never_takes_over_the_object_of_a_renamed_user() {
    let env = Env::start();
    env.sync();
    let bob = env.scim.user("bob").unwrap();
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modrdn\nnewrdn: uid=bob2\ndeleteoldrdn: 1\n",
    );
    env.slapd.add(
        "dn: uid=bob,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bob\n\
         cn: New Bob\nsn: Newman\ngivenName: New\nmail: newbob@example.org\n",
    );
    env.slapd.modify(
        "dn: cn=sales,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n\
         member: uid=bob,ou=people,dc=example,dc=org\n",
    );
    // One pass, or two when the create was looked up before the rename landed (deferred).
    let first = env.run(&["sync"]);
    assert!(first.code == 0 || first.code == 1, "{first:?}");
    if env.scim.user("bob").is_none() {
        assert!(
            first.stdout.contains("deferred to a later pass"),
            "{first:?}"
        );
    }
    let bob2 = env.scim.user("bob2").expect("renamed");
    assert_eq!(bob2["id"], bob["id"], "{first:?}");
    assert_eq!(bob2["emails"], bob["emails"], "not taken over: {first:?}");
    let again = env.sync();
    let newbob = env
        .scim
        .user("bob")
        .expect("the newcomer has its own object");
    assert_ne!(newbob["id"], bob["id"]);
    assert_eq!(newbob["emails"][0]["value"], "newbob@example.org");
    assert_eq!(env.scim.users().len(), 4, "{again:?}");
    assert_eq!(env.scim.member_names("sales"), vec!["bob", "carol"]);
    assert_eq!(env.scim.member_names("engineering"), vec!["alice", "bob2"]);
    let third = env.sync();
    assert_eq!(count(&third, "users", "updated"), 0, "{third:?}");
    assert_eq!(count(&third, "users", "created"), 0, "{third:?}");
}

/// bob leaves the directory and a new entry with his name arrives (deleted and created again).
/// The new bob gets the deactivated object back (a re-hire, as the target allows one userName
/// per object), active and with his own attributes — never the other way round, the newcomer's
/// object deactivated by the old bob's departure.
#[test]
fn a_user_created_again_after_leaving_takes_over_the_deactivated_object() {
    let env = Env::start();
    env.sync();
    let bob = env.scim.user("bob").unwrap();
    env.slapd.delete("uid=bob,ou=people,dc=example,dc=org");
    env.slapd.add(
        "dn: uid=bob,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bob\n\
         cn: New Bob\nsn: Newman\ngivenName: New\nmail: newbob@example.org\n",
    );
    env.slapd.modify(
        "dn: cn=sales,ou=groups,dc=example,dc=org\nchangetype: modify\nadd: member\n\
         member: uid=bob,ou=people,dc=example,dc=org\n",
    );
    // The departure and the newcomer in one pass: the newcomer waits until the old bob is
    // deactivated (the same pass, or the next).
    let first = env.run(&["sync"]);
    assert!(first.code == 0 || first.code == 1, "{first:?}");
    let second = env.sync();
    let newbob = env.scim.user("bob").expect("bob");
    assert_eq!(newbob["id"], bob["id"], "{first:?}\n{second:?}");
    assert_eq!(newbob["active"], true, "{first:?}\n{second:?}");
    assert_eq!(newbob["emails"][0]["value"], "newbob@example.org");
    assert_eq!(env.scim.users().len(), 3);
    assert_eq!(env.scim.member_names("sales"), vec!["bob", "carol"]);
    assert_eq!(env.scim.member_names("engineering"), vec!["alice"]);
    let third = env.sync();
    assert_eq!(count(&third, "users", "updated"), 0, "{third:?}");
    assert_eq!(count(&third, "users", "created"), 0, "{third:?}");
    assert_eq!(count(&third, "members", "added"), 0, "{third:?}");
}
