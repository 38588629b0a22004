use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::config::Config;
use crate::source::entry::RawEntry;

fn config(extra: &str) -> Config {
    let text = format!(
        "[ldap]\nurl = \"ldap://127.0.0.1:389\"\nbase_dn = \"dc=x\"\n{extra}\n\
         [target]\nkind = \"scim\"\nurl = \"http://127.0.0.1/scim\"\ntoken = \"t\"\n"
    );
    Config::parse(&text, Path::new("t.toml")).unwrap()
}

fn mapper(extra: &str, mapping: &str) -> Mapper {
    let c = config(&format!("{extra}\n{mapping}"));
    Mapper::new(&c.mapping, &c.ldap)
}

fn entry(dn: &str, attrs: &[(&str, &str)]) -> RawEntry {
    let mut e = RawEntry {
        dn: dn.into(),
        ..Default::default()
    };
    for (k, v) in attrs {
        e.attrs.extend(k, vec![v.as_bytes().to_vec()]);
    }
    e
}

fn person(uid: &str, extra: &[(&str, &str)]) -> RawEntry {
    let dn = format!("uid={uid},ou=people,dc=x");
    let mail = format!("{uid}@x");
    let key = format!("key-{uid}");
    let mut attrs = vec![
        ("entryUUID", key.as_str()),
        ("uid", uid),
        ("givenName", "G"),
        ("sn", "S"),
        ("cn", "G S"),
        ("mail", mail.as_str()),
    ];
    attrs.extend_from_slice(extra);
    entry(&dn, &attrs)
}

#[test]
fn a_missing_required_attribute_holds_the_entry_with_a_reason_naming_it() {
    let m = mapper("", "");
    let mut e = person("ann", &[]);
    e.attrs.remove("mail");
    let r = m.map_user(&e).unwrap_err();
    assert_eq!(r.key.as_deref(), Some("key-ann"));
    assert!(
        r.reason.contains("emails[type eq \"work\"].value"),
        "{}",
        r.reason
    );
    let mut b = DesiredBuilder::new(m);
    b.add_user(&e);
    let d = b.finish(&BTreeSet::new());
    assert!(d.users.is_empty());
    assert!(d.held.contains("key-ann"));
}

#[test]
fn an_entry_without_a_key_is_rejected_and_a_binary_name_is_not_text() {
    let m = mapper("", "");
    let mut e = person("ann", &[]);
    e.attrs.remove("entryuuid");
    assert!(m.map_user(&e).unwrap_err().reason.contains("entryUUID"));
    let mut e = person("bob", &[]);
    e.attrs.insert("givenname", vec![vec![0xff, 0xfe]]);
    let r = m.map_user(&e).unwrap_err();
    assert!(
        r.reason.contains("givenName") && r.reason.contains("UTF-8"),
        "{}",
        r.reason
    );
}

#[test]
fn the_active_rule_reads_values_or_presence() {
    let m = mapper(
        "",
        "[mapping.active]\nattribute = \"employeeType\"\ninactive_values = [\"Disabled\"]\n",
    );
    assert!(
        m.map_user(&person("a", &[("employeeType", "staff")]))
            .unwrap()
            .user
            .active
    );
    assert!(
        !m.map_user(&person("a", &[("employeeType", "disabled")]))
            .unwrap()
            .user
            .active
    );
    let m = mapper(
        "",
        "[mapping.active]\nattribute = \"pwdAccountLockedTime\"\npresent_means_inactive = true\n",
    );
    assert!(m.map_user(&person("a", &[])).unwrap().user.active);
    assert!(
        !m.map_user(&person("a", &[("pwdAccountLockedTime", "000001010000Z")]))
            .unwrap()
            .user
            .active
    );
}

#[test]
fn a_shared_user_name_stays_with_the_user_already_pushed() {
    let m = mapper("", "");
    let mut b = DesiredBuilder::new(m.clone());
    b.add_user(&person("ann", &[]));
    let mut twin = person("ann2", &[]);
    twin.attrs.insert("uid", vec![b"ANN".to_vec()]);
    b.add_user(&twin);
    let known: BTreeSet<Key> = ["key-ann".into()].into();
    let d = b.finish(&known);
    assert_eq!(
        d.users.keys().map(|k| &**k).collect::<Vec<_>>(),
        vec!["key-ann"]
    );
    assert!(d.held.contains("key-ann2"));
    // With neither pushed, neither is taken.
    let mut b = DesiredBuilder::new(m.clone());
    b.add_user(&person("ann", &[]));
    b.add_user(&twin);
    let d = b.finish(&BTreeSet::new());
    assert!(d.users.is_empty());
    assert_eq!(d.rejected.len(), 2);
    // Three entries, names differing in the case of a non-ASCII letter: one name, the pushed
    // one keeps it; an unrelated name is untouched.
    let mut b = DesiredBuilder::new(m);
    for (i, name) in ["émile", "Émile", "ÉMILE"].into_iter().enumerate() {
        let mut e = person(&format!("e{i}"), &[]);
        e.attrs.insert("uid", vec![name.as_bytes().to_vec()]);
        b.add_user(&e);
    }
    b.add_user(&person("zoe", &[]));
    let known: BTreeSet<Key> = ["key-e1".into()].into();
    let d = b.finish(&known);
    assert_eq!(
        d.users.keys().map(|k| &**k).collect::<Vec<_>>(),
        vec!["key-e1", "key-zoe"]
    );
    assert_eq!(d.rejected.len(), 2);
    assert!(d.rejected[0]
        .reason
        .contains("\"émile\" is used by more than one entry"));
}

#[test]
fn managers_memberships_and_nesting_are_resolved_across_the_set() {
    let m = mapper("nested_groups = true", "");
    let mut b = DesiredBuilder::new(m);
    b.add_user(&person("boss", &[("memberOf", "CN=Leads, ou=groups,dc=x")]));
    b.add_user(&person(
        "ann",
        &[
            ("manager", "UID=boss,ou=people,dc=x"),
            ("memberOf", "cn=eng,ou=groups,dc=x"),
        ],
    ));
    b.add_user(&person("zed", &[("manager", "uid=nobody,ou=people,dc=x")]));
    b.add_group(&entry(
        "cn=eng,ou=groups,dc=x",
        &[
            ("entryUUID", "g-eng"),
            ("cn", "eng"),
            ("memberOf", "cn=all,ou=groups,dc=x"),
        ],
    ));
    b.add_group(&entry(
        "cn=leads,ou=groups,dc=x",
        &[
            ("entryUUID", "g-leads"),
            ("cn", "leads"),
            ("member", "cn=all,ou=groups,dc=x"),
        ],
    ));
    // "all" contains eng (via eng's memberOf) and leads (a cycle through leads' member).
    b.add_group(&entry(
        "cn=all,ou=groups,dc=x",
        &[
            ("entryUUID", "g-all"),
            ("cn", "all"),
            ("member", "cn=leads,ou=groups,dc=x"),
        ],
    ));
    let d = b.finish(&BTreeSet::new());
    assert_eq!(d.users["key-ann"].manager.as_deref(), Some("key-boss"));
    assert_eq!(
        d.users["key-zed"].manager, None,
        "a manager outside the set is not referenced"
    );
    let members = |g: &str| d.groups[g].members.iter().map(|k| &**k).collect::<Vec<_>>();
    assert_eq!(members("g-eng"), vec!["key-ann"]);
    assert_eq!(members("g-all"), vec!["key-ann", "key-boss"]);
    assert_eq!(members("g-leads"), vec!["key-ann", "key-boss"]);
}

#[test]
fn member_mode_reads_the_groups_and_asks_for_the_right_attributes() {
    let m = mapper("membership = \"member\"", "");
    assert!(!m.user_attributes().iter().any(|a| a == "memberOf"));
    assert!(m.group_attributes().iter().any(|a| a == "member"));
    assert!(m.user_attributes().iter().any(|a| a == "entryUUID"));
    let mut b = DesiredBuilder::new(m);
    b.add_user(&person("ann", &[]));
    b.add_group(&entry(
        "cn=eng,dc=x",
        &[
            ("entryUUID", "g"),
            ("member", "uid=ann,ou=people,dc=x"),
            ("member", "uid=ghost,dc=x"),
        ],
    ));
    let d = b.finish(&BTreeSet::new());
    assert_eq!(
        d.groups["g"].display_name, "eng",
        "falls back to the RDN without cn"
    );
    assert_eq!(d.groups["g"].members.len(), 1);
}

#[test]
fn ad_accounts_are_disabled_by_the_flag_or_by_expiry() {
    let m = mapper(
        "profile = \"ad\"\nstarttls = true",
        "[mapping]\nuser_name = \"uid\"\nkey = \"entryUUID\"\nkey_format = \"auto\"\n",
    )
    .at_unix_time(1_800_000_000);
    let active = |attrs: &[(&str, &str)]| m.map_user(&person("a", attrs)).unwrap().user.active;
    assert!(active(&[("userAccountControl", "512")]));
    assert!(!active(&[("userAccountControl", "514")]));
    assert!(
        !active(&[("userAccountControl", "66050")]),
        "0x10202: disabled, don't expire password"
    );
    assert!(active(&[("accountExpires", "0")]));
    assert!(active(&[("accountExpires", "9223372036854775807")]));
    // 2001-01-01 is past; 2100-01-01 is not.
    assert!(!active(&[("accountExpires", "126227808000000000")]));
    assert!(active(&[("accountExpires", "157766400000000000")]));
}

#[test]
fn a_user_and_a_group_sharing_a_key_are_named_by_the_users_dn() {
    let mut b = DesiredBuilder::new(mapper("", ""));
    b.add_user(&person("ann", &[]));
    b.add_group(&entry(
        "cn=eng,ou=groups,dc=x",
        &[("entryUUID", "key-ann"), ("cn", "eng")],
    ));
    b.add_group(&entry(
        "cn=ops,ou=groups,dc=x",
        &[("entryUUID", "key-ops"), ("cn", "ops")],
    ));
    let d = b.finish(&BTreeSet::new());
    assert_eq!(d.dns["key-ann"], "uid=ann,ou=people,dc=x");
    assert_eq!(d.dns["key-ops"], "cn=ops,ou=groups,dc=x");
    assert_eq!(d.dns.len(), 2);
    assert!(d.groups.contains_key("key-ann") && d.users.contains_key("key-ann"));
}

#[test]
fn a_user_as_last_pushed_is_held_as_that_user_and_a_changed_one_is_a_copy() {
    let m = mapper("", "");
    let before = [
        person("ann", &[]),
        person("bob", &[("manager", "uid=ann,ou=people,dc=x")]),
        person("cy", &[("manager", "uid=ann,ou=people,dc=x")]),
        person("dee", &[("title", "Clerk")]),
    ];
    let mut b = DesiredBuilder::new(m.clone());
    for e in &before {
        b.add_user(e);
    }
    let pushed = b.finish(&BTreeSet::new());
    assert_eq!(pushed.users["key-bob"].manager.as_deref(), Some("key-ann"));

    // Since then: cy's manager left, dee's title changed, eve joined.
    let now = [
        person("ann", &[]),
        person("bob", &[("manager", "uid=ann,ou=people,dc=x")]),
        person("cy", &[]),
        person("dee", &[("title", "Head clerk")]),
        person("eve", &[]),
    ];
    let records = pushed.users.clone();
    // Known only once the first two entries are mapped (the records are read meanwhile):
    // `finish` shares those.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let known = Arc::clone(&ready);
    let mut b = DesiredBuilder::new(m);
    b.share_with(Box::new(move |k| {
        if !known.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        Some(
            records
                .get_key_value(k)
                .map(|(k, u)| (k.clone(), u.clone())),
        )
    }));
    for (i, e) in now.iter().enumerate() {
        b.add_user(e);
        if i == 1 {
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let d = b.finish(&BTreeSet::new());
    let shared = |k: &str| Arc::ptr_eq(&d.users[k], &pushed.users[k]);
    // Unchanged, a manager kept included: the very user pushed (and its key, once known
    // while mapping).
    assert!(shared("key-ann") && shared("key-bob"));
    let same_key = |key: &str| {
        let (k, _) = d.users.get_key_value(key).unwrap();
        let (pk, _) = pushed.users.get_key_value(key).unwrap();
        Arc::ptr_eq(k, pk)
    };
    assert!(!same_key("key-bob"));
    let mut late = DesiredBuilder::new(mapper("", ""));
    let records = pushed.users.clone();
    late.share_with(Box::new(move |k| {
        Some(
            records
                .get_key_value(k)
                .map(|(k, u)| (k.clone(), u.clone())),
        )
    }));
    late.add_user(&now[1]);
    let d2 = late.finish(&BTreeSet::new());
    let (k, _) = d2.users.get_key_value("key-bob").unwrap();
    assert!(Arc::ptr_eq(
        k,
        pushed.users.get_key_value("key-bob").unwrap().0
    ));
    // Changed: a copy with the change; what was pushed is as it was.
    assert!(!shared("key-cy") && !shared("key-dee"));
    assert_eq!(d.users["key-cy"].manager, None);
    assert_eq!(pushed.users["key-cy"].manager.as_deref(), Some("key-ann"));
    assert_eq!(d.users["key-dee"].title.as_deref(), Some("Head clerk"));
    assert_eq!(pushed.users["key-dee"].title.as_deref(), Some("Clerk"));
    assert_eq!(d.users["key-eve"].user_name, "eve");
    // The same desired state as a builder that shares nothing.
    let mut plain = DesiredBuilder::new(mapper("", ""));
    for e in &now {
        plain.add_user(e);
    }
    assert_eq!(plain.finish(&BTreeSet::new()).users, d.users);
}
