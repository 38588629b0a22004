//! Mappings an administrator writes: expressions, constants and any SCIM path (sub-attributes,
//! filtered multi-valued paths, extension attributes), sent, changed, removed and read back
//! (resync) against the real SCIM server, with PATCH and with GET + PUT; and `test-mapping`,
//! which shows an entry, its mapping and the exact requests without sending them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

const MAPPING: &str = r#"
[mapping]
display_name = { expr = 'join(" ", upper(sn), givenName)' }
[mapping.custom]
"phoneNumbers[type eq \"mobile\"].value" = "mobile"
"addresses[type eq \"work\"].locality" = "l"
"addresses[type eq \"work\"].postalCode" = "postalCode"
"name.middleName" = { expr = "default(initials, 'X')" }
"userType" = { expr = "switch(employeeType, 'C', 'Contractor', 'Employee')" }
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter" = { value = "CC-1" }
"#;

fn phones(u: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = u["phoneNumbers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["type"].as_str().unwrap_or_default().to_string(),
                p["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn round_trip(update_method: &str) {
    let mut env = Env::start();
    env.extra = MAPPING.into();
    env.target_extra = format!("update_method = \"{update_method}\"\n");
    env.slapd.modify(
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\nadd: mobile\nmobile: +1 555 0100\n-\n\
         add: l\nl: Paris\n-\nadd: postalCode\npostalCode: 75001\n-\nadd: employeeType\nemployeeType: C\n",
    );
    env.sync();
    let alice = env.scim.user("alice").unwrap();
    assert_eq!(alice["displayName"], "ARCHER Alice", "{alice}");
    assert_eq!(phones(&alice), [("mobile".into(), "+1 555 0100".into())]);
    assert_eq!(
        alice["addresses"],
        json!([{"type": "work", "locality": "Paris", "postalCode": "75001"}])
    );
    assert_eq!(alice["name"]["middleName"], "X");
    assert_eq!(alice["userType"], "Contractor");
    assert_eq!(alice[ENT]["costCenter"], "CC-1");
    assert_eq!(env.scim.user("bob").unwrap()["userType"], "Employee");

    // A phone number added by someone else on the target is not ours: it must survive.
    let id = alice["id"].as_str().unwrap();
    let (s, doc) = env.scim.http(
        "PATCH",
        &format!("/Users/{id}"),
        Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
            {"op": "add", "path": "phoneNumbers", "value": [{"type": "home", "value": "+1 555 0199"}]}]})),
    );
    assert!(s == 200 || s == 204, "{s} {doc}");

    // Changed, removed, and a new element on another user.
    env.slapd.modify(
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: mobile\nmobile: +1 555 0101\n-\n\
         replace: l\nl: Lyon\n-\ndelete: postalCode\n-\nadd: initials\ninitials: Q\n\n\
         dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\nadd: mobile\nmobile: +1 555 0200\n-\nadd: l\nl: Nantes\n",
    );
    let r = env.sync();
    assert_eq!(count(&r, "users", "updated"), 2, "{r:?}");
    let alice = env.scim.user("alice").unwrap();
    assert_eq!(
        phones(&alice),
        [
            ("home".into(), "+1 555 0199".into()),
            ("mobile".into(), "+1 555 0101".into())
        ]
    );
    assert_eq!(
        alice["addresses"],
        json!([{"type": "work", "locality": "Lyon"}])
    );
    assert_eq!(alice["name"]["middleName"], "Q");
    let bob = env.scim.user("bob").unwrap();
    assert_eq!(phones(&bob), [("mobile".into(), "+1 555 0200".into())]);
    assert_eq!(
        bob["addresses"],
        json!([{"type": "work", "locality": "Nantes"}])
    );

    // Read back as written: nothing to repair, nothing left to send.
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&r, "users", "updated"), 0, "{r:?}");
    let r = env.sync();
    assert!(r.stderr.contains("operations=0"), "{r:?}");
    // Removing the last mapped value of an element removes the element, not the others.
    env.slapd.modify(
        "dn: uid=alice,ou=people,dc=example,dc=org\nchangetype: modify\ndelete: mobile\n-\ndelete: l\n",
    );
    env.sync();
    let alice = env.scim.user("alice").unwrap();
    assert_eq!(phones(&alice), [("home".into(), "+1 555 0199".into())]);
    assert!(
        alice.get("addresses").is_none() || alice["addresses"] == json!([]),
        "{alice}"
    );
}

#[test]
fn expressions_and_scim_paths_reach_the_target_with_patch() {
    round_trip("patch");
}

#[test]
fn expressions_and_scim_paths_reach_the_target_with_get_and_put() {
    round_trip("put");
}

#[test]
fn test_mapping_shows_the_entry_its_mapping_and_the_exact_requests() {
    let mut env = Env::start();
    env.extra = MAPPING.into();
    // Before anything was synced: a creation, and memberships in groups not created yet.
    let r = env.run(&["test-mapping", "alice"]);
    assert_eq!(r.code, 0, "{r:?}");
    for text in [
        "Entry: uid=alice,ou=people,dc=example,dc=org",
        "  mail: alice@example.org",
        "  memberof: cn=engineering,ou=groups,dc=example,dc=org",
        "  entryuuid: ",
        "POST /Users",
        "\"displayName\": \"ARCHER Alice\"",
        "Groups: engineering",
    ] {
        assert!(r.stdout.contains(text), "`{text}` missing:\n{}", r.stdout);
    }
    let r = env.run(&["test-mapping", "--json", "alice@example.org"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["dn"], "uid=alice,ou=people,dc=example,dc=org");
    assert_eq!(doc["rejected"], Value::Null);
    let reqs = doc["requests"].as_array().unwrap();
    assert_eq!(reqs[0]["method"], "GET");
    assert_eq!(reqs[1]["method"], "POST");
    assert_eq!(reqs[1]["body"]["userName"], "alice");
    assert_eq!(reqs[1]["body"]["userType"], "Employee");
    let member_add = reqs
        .iter()
        .find(|r| r["path"].as_str().unwrap().starts_with("/Groups/"))
        .unwrap();
    assert_eq!(
        member_add["body"]["Operations"][0]["value"][0]["value"],
        "<id of alice once created>"
    );
    assert!(env.scim.users().is_empty(), "test-mapping sent something");
    assert!(
        !env.state_path().exists(),
        "test-mapping created the state store"
    );

    // After a sync and a change: the PATCH against what was last pushed, by DN.
    env.sync();
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: sn\nsn: Brown\n",
    );
    let r = env.run(&[
        "test-mapping",
        "--json",
        "uid=bob,ou=people,dc=example,dc=org",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    let bob_id = env.scim.user("bob").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reqs = doc["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1, "{doc}");
    assert_eq!(reqs[0]["method"], "PATCH");
    assert_eq!(reqs[0]["path"], format!("/Users/{bob_id}"));
    let ops = reqs[0]["body"]["Operations"].as_array().unwrap();
    assert!(
        ops.contains(&json!({"op": "replace", "path": "name.familyName", "value": "Brown"})),
        "{ops:?}"
    );
    assert!(
        ops.contains(&json!({"op": "replace", "path": "displayName", "value": "BROWN Bob"})),
        "{ops:?}"
    );
    assert_eq!(env.scim.user("bob").unwrap()["name"]["familyName"], "Baker");
    let r = env.run(&["test-mapping", "carol"]);
    assert!(r.stdout.contains("Requests: none"), "{r:?}");

    // A rejected entry says why, and exits 1; an unknown one is an error.
    env.slapd.add(
        "dn: uid=dave,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave\nsn: Doe\ngivenName: Dave\n",
    );
    let r = env.run(&["test-mapping", "dave"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("REJECTED:") && r.stdout.contains("emails[type eq"),
        "{r:?}"
    );
    let r = env.run(&["test-mapping", "nobody"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no user entry matches `nobody`"), "{r:?}");
}

#[test]
fn an_attribute_the_directory_does_not_have_is_an_error_at_its_line_and_column() {
    let mut env = Env::start();
    env.extra = "[mapping]\ndisplay_name = { expr = 'join(\" \", givenName, snn)' }\n".into();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    let line = config.lines().position(|l| l.contains("snn")).unwrap() + 1;
    let column = config.lines().nth(line - 1).unwrap().find("snn").unwrap() + 1;
    let at = format!("dirbridge.toml:{line}:{column}: mapping.display_name");
    assert!(r.stderr.contains(&at), "expected `{at}` in {r:?}");
    assert!(r.stderr.contains("has no attribute `snn`"), "{r:?}");
    assert!(env.scim.users().is_empty());
    env.extra = "[mapping.custom]\nnickName = \"uidd\"\n".into();
    let r = env.run(&["plan"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("mapping.custom.\"nickName\"") && r.stderr.contains("`uidd`"),
        "{r:?}"
    );
    // Attributes that exist pass, whatever their case.
    env.extra = "[mapping.custom]\nnickName = \"UID\"\n".into();
    env.sync();
    assert_eq!(env.scim.user("alice").unwrap()["nickName"], "alice");
}
