use super::*;

const MINIMAL: &str = r#"
[ldap]
url = "ldap://127.0.0.1:3890"
bind_dn = "cn=admin,dc=example,dc=org"
bind_password = "hunter2"
base_dn = "dc=example,dc=org"

[target]
kind = "scim"
url = "http://127.0.0.1:8080/scim/v2"
token = "tok-123"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/dirbridge/dirbridge.toml"))
}

#[test]
fn minimal_config_gets_openldap_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.ldap.tls, TlsMode::Plain);
    assert_eq!(c.ldap.user_filter, "(objectClass=inetOrgPerson)");
    assert_eq!(c.ldap.membership, Membership::MemberOf);
    assert_eq!(c.mapping.key, "entryUUID");
    assert_eq!(c.mapping.user_name, vec!["uid"]);
    assert_eq!(c.mapping.display_name, vec!["displayName", "cn"]);
    assert_eq!(c.sync.on_remove, RemovalAction::Deactivate);
    assert_eq!(c.state.path, PathBuf::from("/var/lib/dirbridge"));
    assert_eq!(c.ldap.bind_password.unwrap().expose(), "hunter2");
}

#[test]
fn debug_output_of_a_config_holds_no_secret() {
    let c = parse(MINIMAL).unwrap();
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("hunter2") && !dbg.contains("tok-123"),
        "{dbg}"
    );
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = MINIMAL.replace("base_dn =", "base_dnn =");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("dirbridge.toml:6:"), "{err}");
    assert!(err.contains("base_dnn"), "{err}");
}

#[test]
fn a_bad_secret_value_is_not_echoed() {
    let text = MINIMAL.replace("bind_password = \"hunter2\"", "bind_password = 987654321");
    let err = parse(&text).unwrap_err().to_string();
    assert!(!err.contains("987654321"), "{err}");
    assert!(err.contains(":5:"), "{err}");
}

#[test]
fn bad_url_scheme_names_the_key() {
    let text = MINIMAL.replace("ldap://127.0.0.1:3890", "http://127.0.0.1:3890");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("`ldap.url`"), "{err}");
}

#[test]
fn clear_text_bind_to_a_remote_host_must_be_explicit() {
    let text = MINIMAL.replace("127.0.0.1:3890", "dc1.corp.example:389");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("clear text"), "{err}");
    let ok = text.replace("base_dn =", "allow_plaintext = true\nbase_dn =");
    assert!(parse(&ok).is_ok());
    let tls = text.replace("base_dn =", "starttls = true\nbase_dn =");
    assert_eq!(parse(&tls).unwrap().ldap.tls, TlsMode::StartTls);
}

#[test]
fn the_dn_is_refused_as_a_key() {
    let text = format!("{MINIMAL}\n[mapping]\nkey = \"dn\"\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("mapping.key"), "{err}");
}

#[test]
fn custom_paths_are_checked() {
    let ok = format!("{MINIMAL}\n[mapping.custom]\nnickName = \"uid\"\n\"urn:example:params:scim:schemas:extension:acme:2.0:User:costCenter\" = [\"departmentNumber\"]\n");
    let c = parse(&ok).unwrap();
    assert_eq!(c.mapping.custom.len(), 2);
    let bad = format!("{MINIMAL}\n[mapping.custom]\nuserName = \"uid\"\n");
    assert!(parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("dedicated key"));
}

#[test]
fn token_is_required_and_relative_state_path_is_anchored() {
    let text = MINIMAL.replace("token = \"tok-123\"", "") + "\n[state]\npath = \"state\"\n";
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("target.token"), "{err}");
    let c = parse(&format!("{MINIMAL}\n[state]\npath = \"state\"\n")).unwrap();
    assert_eq!(c.state.path, PathBuf::from("/etc/dirbridge/state"));
}

#[test]
fn unknown_required_field_is_refused() {
    let text = format!("{MINIMAL}\n[mapping]\nrequired = [\"phone\"]\n");
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("mapping.required"));
}

#[test]
fn the_example_config_is_valid_and_sets_every_default_explicitly() {
    let text = include_str!("../../dirbridge.example.toml")
        .replace(
            "bind_password_env = \"DIRBRIDGE_BIND_PASSWORD\"",
            "bind_password = \"x\"",
        )
        .replace("token_env = \"DIRBRIDGE_SCIM_TOKEN\"", "token = \"y\"")
        .replace("ca_file = \"certs/corporate-ca.pem\"", "");
    let c = parse(&text).unwrap();
    let d = parse(MINIMAL).unwrap();
    assert_eq!(c.ldap.tls, TlsMode::Ldaps);
    assert_eq!(c.ldap.user_filter, d.ldap.user_filter);
    assert_eq!(c.ldap.page_size, d.ldap.page_size);
    assert_eq!(c.mapping.display_name, d.mapping.display_name);
    assert_eq!(c.mapping.required, d.mapping.required);
    assert_eq!(c.sync, d.sync);
    assert_eq!(c.state.cache_capacity_bytes, d.state.cache_capacity_bytes);
}

#[test]
fn the_ad_profile_brings_ad_defaults_and_each_can_be_overridden() {
    let text = MINIMAL.replace("[ldap]\n", "[ldap]\nprofile = \"ad\"\nstarttls = true\n")
        + "\n[mapping]\nuser_name = \"sAMAccountName\"\n";
    let c = parse(&text).unwrap();
    assert_eq!(c.ldap.profile, Profile::ActiveDirectory);
    assert_eq!(c.mapping.key, "objectGUID");
    assert_eq!(c.mapping.key_format, KeyFormat::Guid);
    assert_eq!(c.mapping.user_name, vec!["sAMAccountName"]);
    assert_eq!(c.mapping.employee_number, vec!["employeeID"]);
    assert!(c.mapping.active.user_account_control && c.mapping.active.account_expires);
    assert!(c.ldap.user_filter.contains("objectCategory=person"));
    assert_eq!(c.ldap.referenced_groups, ReferencedGroups::Ignore);
    // On AD, a clear-text simple bind is refused even to a loopback address.
    let plain = MINIMAL.replace("[ldap]\n", "[ldap]\nprofile = \"ad\"\n");
    assert!(parse(&plain)
        .unwrap_err()
        .to_string()
        .contains("clear text"));
    let d = parse(MINIMAL).unwrap();
    assert_eq!(d.mapping.key_format, KeyFormat::Auto);
    assert!(!d.mapping.active.user_account_control);
}

#[test]
fn daemon_keys_are_checked() {
    let d = parse(MINIMAL).unwrap();
    assert_eq!(d.daemon.poll_interval, Duration::from_secs(60));
    assert_eq!(d.daemon.listen, Some("127.0.0.1:8086".parse().unwrap()));
    let off = parse(&format!(
        "{MINIMAL}\n[daemon]\nlisten = \"off\"\nfull_resync = \"off\"\n"
    ))
    .unwrap();
    assert_eq!(off.daemon.listen, None);
    assert_eq!(off.daemon.full_resync, crate::schedule::Schedule::Off);
    let bad = parse(&format!("{MINIMAL}\n[daemon]\npoll_interval = \"soon\"\n"))
        .unwrap_err()
        .to_string();
    assert!(bad.contains("daemon.poll_interval"), "{bad}");
    let bad = parse(&format!(
        "{MINIMAL}\n[daemon]\nfull_resync = \"sometimes\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("daemon.full_resync"), "{bad}");
}

#[test]
fn change_feed_choices_are_checked_against_the_directory() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.daemon.change_feed, ChangeFeed::Auto);
    assert_eq!(c.daemon.coalesce, Duration::from_millis(100));
    assert_eq!(c.daemon.notify_fallback, Duration::from_secs(5));

    // syncrepl follows the group scope: groups outside it named by memberOf would vanish.
    let e = parse(&format!(
        "{MINIMAL}\n[daemon]\nchange_feed = \"syncrepl\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("referenced_groups"), "{e}");
    let ok = MINIMAL.replace(
        "base_dn = \"dc=example,dc=org\"",
        "base_dn = \"dc=example,dc=org\"\nreferenced_groups = \"ignore\"",
    );
    let c = parse(&format!(
        "{ok}\n[daemon]\nchange_feed = \"syncrepl\"\ncoalesce = \"250ms\"\n"
    ))
    .unwrap();
    assert_eq!(c.daemon.change_feed, ChangeFeed::Syncrepl);
    assert_eq!(c.daemon.coalesce, Duration::from_millis(250));

    let e = parse(&format!("{ok}\n[daemon]\nchange_feed = \"notify\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Active Directory"), "{e}");
    let e = parse(&format!("{ok}\n[daemon]\ncoalesce = \"1m\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("daemon.coalesce"), "{e}");
    let e = parse(&format!("{ok}\n[daemon]\nchange_feed = \"sometimes\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dirbridge.toml:15") && e.contains("`syncrepl`"),
        "{e}"
    );
    let c = parse(&format!(
        "{ok}\n[daemon]\nfull_resync = \"cron 0 3 * * 1-5\"\n"
    ))
    .unwrap();
    assert!(matches!(
        c.daemon.full_resync,
        crate::schedule::Schedule::At(_)
    ));
}

#[test]
fn expressions_and_constants_are_read_and_their_mistakes_located() {
    let ok = format!(
        "{MINIMAL}\n[mapping]\ndisplay_name = {{ expr = 'join(\" \", givenName, sn)' }}\n\
         [mapping.custom]\nuserType = {{ expr = \"switch(employeeType, 'C', 'Contractor', 'Employee')\" }}\n\
         \"urn:example:params:scim:schemas:extension:acme:2.0:User:site\" = {{ value = \"HQ\" }}\n"
    );
    let c = parse(&ok).unwrap();
    assert!(matches!(c.mapping.display_name, FieldSource::Expr { .. }));
    let mut attrs: Vec<String> = c
        .mapping
        .custom
        .iter()
        .flat_map(|(_, s)| s.attributes())
        .collect();
    attrs.extend(c.mapping.display_name.attributes());
    assert!(attrs.contains(&"employeeType".to_string()), "{attrs:?}");
    assert!(attrs.contains(&"sn".to_string()), "{attrs:?}");

    // An unknown function: reported at its line and column in the file.
    let bad = format!(
        "{MINIMAL}\n[mapping]\ndisplay_name = {{ expr = 'join(\" \", givenName, lowr(sn))' }}\n"
    );
    let err = parse(&bad).unwrap_err();
    let line = bad.lines().position(|l| l.contains("lowr")).unwrap() + 1;
    let column = bad.lines().nth(line - 1).unwrap().find("lowr").unwrap() + 1;
    match &err {
        ConfigError::Parse {
            line: l,
            column: c,
            message,
            ..
        } => {
            assert_eq!((*l, *c), (line, column), "{err}");
            assert!(message.contains("mapping.display_name"), "{err}");
            assert!(message.contains("unknown function `lowr`"), "{err}");
        }
        other => panic!("expected a located error, got {other}"),
    }
    let both = format!("{MINIMAL}\n[mapping]\ntitle = {{ expr = 'sn', value = 'x' }}\n");
    assert!(parse(&both).unwrap_err().to_string().contains("either"));
    let manager = format!("{MINIMAL}\n[mapping]\nmanager = {{ expr = 'sn' }}\n");
    assert!(parse(&manager).unwrap_err().to_string().contains("manager"));
}

#[test]
fn any_scim_path_not_owned_by_a_dedicated_key_may_be_mapped() {
    for ok in [
        "name.middleName",
        "name.formatted",
        "phoneNumbers[type eq \\\"mobile\\\"].value",
        "addresses[type eq \\\"work\\\"].locality",
        "emails[type eq \\\"home\\\"].value",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter",
    ] {
        let text = format!("{MINIMAL}\n[mapping.custom]\n\"{ok}\" = \"uid\"\n");
        parse(&text).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, why) in [
        ("name.givenName", "dedicated key"),
        ("name", "dedicated key"),
        ("emails[type eq \\\"work\\\"].value", "dedicated key"),
        ("emails", "dedicated key"),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "dedicated key",
        ),
        ("phoneNumbers[type eq mobile].value", "quoted text"),
        ("phoneNumbers[type eq \\\"mobile\\\"]", "sub-attribute"),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName",
            "without its schema",
        ),
    ] {
        let text = format!("{MINIMAL}\n[mapping.custom]\n\"{bad}\" = \"uid\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn a_mistake_in_a_multi_line_expression_is_located_on_its_own_line() {
    let text = format!(
        "{MINIMAL}\n[mapping]\ndisplay_name = {{ expr = '''\njoin(\" \",\n  givenName,\n  bogus(sn))''' }}\n"
    );
    let line = text.lines().position(|l| l.contains("bogus")).unwrap() + 1;
    match parse(&text).unwrap_err() {
        ConfigError::Parse {
            line: l, column, ..
        } => assert_eq!((l, column), (line, 3)),
        other => panic!("{other}"),
    }
}

#[test]
fn a_value_of_the_wrong_shape_says_what_is_expected() {
    let text = format!("{MINIMAL}\n[mapping]\ntitle = {{ exp = \"sn\" }}\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("an attribute name, a list of attribute names"),
        "{err}"
    );
}

#[test]
fn durations_and_schedules_have_a_range_and_overflow_is_an_error_naming_the_key() {
    for (key, value) in [
        ("heartbeat", "18446744073709551615s"),
        ("heartbeat", "18446744073709551615ms"),
        ("full_resync", "every 3000000d"),
        ("poll_interval", "400d"),
        ("coalesce", "99999999999999999999s"),
    ] {
        let text = format!("{MINIMAL}\n[daemon]\n{key} = \"{value}\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("daemon.{key}")), "{value}: {err}");
    }
    let ok = format!("{MINIMAL}\n[daemon]\nfull_resync = \"every 366d\"\nheartbeat = \"1d\"\n");
    parse(&ok).unwrap();
}

#[test]
fn an_empty_inline_secret_is_refused_like_an_empty_file() {
    let text = MINIMAL.replace("bind_password = \"hunter2\"", "bind_password = \"\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("ldap.bind_password") && err.contains("empty"),
        "{err}"
    );
    let text = MINIMAL.replace("token = \"tok-123\"", "token = \"\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("target.token") && err.contains("empty"),
        "{err}"
    );
}

#[test]
fn a_token_over_plain_http_off_loopback_is_refused_unless_allowed() {
    let text = MINIMAL.replace("http://127.0.0.1:8080", "http://idp.example.com");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("target.url") && err.contains("clear text"),
        "{err}"
    );
    let allowed = text.replace(
        "token = \"tok-123\"",
        "token = \"tok-123\"\nallow_plaintext = true",
    );
    parse(&allowed).unwrap();
    // Loopback (a local proxy) stays allowed.
    parse(MINIMAL).unwrap();
}

#[test]
fn the_answer_size_limit_has_a_range() {
    let text = MINIMAL.replace(
        "token = \"tok-123\"",
        "token = \"tok-123\"\nmax_response_kib = 0",
    );
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("target.max_response_kib"));
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.target.max_response_bytes, 64 * 1024 * 1024);
}

#[test]
fn an_active_attribute_without_inactive_values_is_refused() {
    let e = parse(&format!(
        "{MINIMAL}\n[mapping.active]\nattribute = \"employeeType\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mapping.active.attribute") && e.contains("inactive_values"),
        "{e}"
    );
    parse(&format!(
        "{MINIMAL}\n[mapping.active]\nattribute = \"pwdAccountLockedTime\"\npresent_means_inactive = true\n"
    ))
    .unwrap();
}

#[test]
fn a_secret_set_inline_is_recognised_however_its_key_is_written() {
    use super::raw::is_secret_line;
    for line in [
        "bind_password = \"x\"",
        "  token = 12",
        "\"bind_password\" = 98765432123",
        "ldap.bind_password = 1",
        "target = { url = \"https://x\", token = 5 }",
        "value = \"k\"",
        "auth.value = \"k\"",
        "'client_secret' = \"s\"",
        "status_token = \"t\"",
    ] {
        assert!(is_secret_line(line), "{line}");
    }
    for line in [
        "bind_password_file = \"bind.pw\"",
        "token_env = \"TOKEN\"",
        "nickName = { value = \"constant\" }",
        "inactive_values = [\"disabled\"]",
        "description = \"tokens are rotated\"",
    ] {
        assert!(!is_secret_line(line), "{line}");
    }
    // A parse error on such a line never shows the value.
    let text = format!("{MINIMAL}\n\"bind_password\" = 98765432123\n");
    let err = Config::parse(&text, Path::new("/etc/d.toml"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(!err.contains("98765432123"), "{err}");
}

#[test]
fn credentials_in_the_directory_url_are_refused_without_being_shown() {
    let text = MINIMAL.replace(
        "ldap://127.0.0.1:3890",
        "ldap://admin:hunter2pw@127.0.0.1:3890",
    );
    let err = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains("ldap.url") && err.contains("must not carry credentials"),
        "{err}"
    );
    assert!(!err.contains("hunter2pw"), "{err}");
}

/// Every key the configuration accepts is described in dirbridge.example.toml (set, or in a
/// comment), so that the reference an administrator reads is the whole of it. The keys are the
/// fields of the raw structs (`deny_unknown_fields`: nothing else is accepted).
#[test]
fn every_key_the_config_accepts_is_in_the_example() {
    let example = include_str!("../../dirbridge.example.toml");
    let sources = [
        include_str!("raw/mod.rs"),
        include_str!("raw/ldap.rs"),
        include_str!("raw/target.rs"),
        include_str!("raw/auth.rs"),
        include_str!("raw/rest.rs"),
        include_str!("raw/mapping.rs"),
        include_str!("raw/daemon.rs"),
        include_str!("raw/ha.rs"),
    ];
    let field = regex::Regex::new(r"^\s+(?:pub(?:\([a-z]+\))?\s+)?([a-z][a-z0-9_]*):\s").unwrap();
    let rename = regex::Regex::new(r#"rename\s*=\s*"([^"]+)""#).unwrap();
    let word = |k: &str| {
        regex::Regex::new(&format!(
            r"(^|[^a-z0-9_]){}([^a-z0-9_]|$)",
            regex::escape(k)
        ))
        .unwrap()
    };
    let mut missing = Vec::new();
    let mut keys = 0;
    for src in sources {
        let mut in_struct = false;
        let mut renamed: Option<String> = None;
        for line in src.lines() {
            if line.starts_with("pub(super) struct Raw") || line.starts_with("struct Raw") {
                in_struct = line.trim_end().ends_with('{');
                continue;
            }
            if in_struct && line.starts_with('}') {
                in_struct = false;
                continue;
            }
            if !in_struct {
                continue;
            }
            if line.trim_start().starts_with("#[serde(") {
                if line.contains("skip") || line.contains("flatten") {
                    renamed = Some(String::new());
                } else if let Some(c) = rename.captures(line) {
                    renamed = Some(c[1].to_string());
                }
                continue;
            }
            if let Some(c) = field.captures(line) {
                let key = renamed.take().unwrap_or_else(|| c[1].to_string());
                if key.is_empty() {
                    continue;
                }
                keys += 1;
                if !word(&key).is_match(example) {
                    missing.push(key);
                }
            }
        }
    }
    assert!(
        keys > 80,
        "only {keys} keys found: the scan no longer reads the structs"
    );
    assert!(
        missing.is_empty(),
        "not in dirbridge.example.toml: {missing:?}"
    );
}

#[test]
fn several_ldap_servers_are_tried_in_order_and_must_share_a_scheme() {
    let text = MINIMAL.replace(
        "url = \"ldap://127.0.0.1:3890\"",
        "url = [\"ldap://127.0.0.1:3890\", \"ldap://127.0.0.2:3890\"]",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.ldap.url, "ldap://127.0.0.1:3890");
    assert_eq!(
        c.ldap.servers,
        vec!["ldap://127.0.0.1:3890", "ldap://127.0.0.2:3890"]
    );
    for (list, words) in [
        ("[]", "the list is empty"),
        (
            "[\"ldap://127.0.0.1:3890\", \"ldaps://127.0.0.2\"]",
            "differ in scheme",
        ),
        (
            "[\"ldap://127.0.0.1:3890\", \"ldap://u:p@127.0.0.2\"]",
            "must not carry credentials",
        ),
        (
            "[\"ldap://127.0.0.1:3890\", \"http://x\"]",
            "ldap:// or ldaps://",
        ),
    ] {
        let text = MINIMAL.replace("url = \"ldap://127.0.0.1:3890\"", &format!("url = {list}"));
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("ldap.url") && err.contains(words),
            "{list}: {err}"
        );
    }
    // A password in clear text is allowed to loopback only if every server is one.
    let text = MINIMAL.replace(
        "url = \"ldap://127.0.0.1:3890\"",
        "url = [\"ldap://127.0.0.1:3890\", \"ldap://dc2.example.org\"]",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("clear text"), "{err}");
}

#[test]
fn ha_has_defaults_and_refuses_timings_that_cannot_be_safe() {
    let with = |ha: &str| parse(&format!("{MINIMAL}\n[ha]\n{ha}\n"));
    let c =
        with("lease_dn = \"cn=lease,dc=example,dc=org\"\ninstance_id = \"gw-1.example\"").unwrap();
    let h = c.ha.unwrap();
    assert_eq!(h.instance, "gw-1.example");
    assert_eq!(h.renew, Duration::from_secs(3));
    assert_eq!(h.lease_ttl, Duration::from_secs(15));
    assert_eq!(h.margin, Duration::from_secs(5));
    // The host name by default.
    let c = with("lease_dn = \"cn=lease,dc=example,dc=org\"").unwrap();
    assert!(!c.ha.unwrap().instance.is_empty());
    assert!(parse(MINIMAL).unwrap().ha.is_none());
    for (ha, key, words) in [
        (
            "lease_dn = \"cn=lease,dc=x\"\nrenew = \"5s\"\nlease_ttl = \"12s\"",
            "ha.lease_ttl",
            "at least twice ha.renew plus ha.margin",
        ),
        (
            "lease_dn = \"cn=lease,dc=x\"\nrenew = \"100ms\"",
            "ha.renew",
            "at least 200ms",
        ),
        ("lease_dn = \"ou=lease,dc=x\"", "ha.lease_dn", "cn=..."),
        (
            "lease_dn = \"cn=lease,dc=x\"\nrenew = \"200ms\"\nlease_ttl = \"401ms\"\nmargin = \"1ms\"",
            "ha.margin",
            "at least 1s",
        ),
        (
            "lease_dn = \"cn=lease\"",
            "ha.lease_dn",
            "under an existing entry",
        ),
        (
            "lease_dn = \"cn=lease,dc=x\"\ninstance_id = \"gw;gen=9\"",
            "ha.instance_id",
            "only letters",
        ),
        (
            "lease_dn = \"cn=lease,dc=x\"\ninstance_id = \"\"",
            "ha.instance_id",
            "1 to 64",
        ),
        (
            "lease_dn = \"cn=lease,dc=x\"\nttl = \"3s\"",
            "ttl",
            "unknown",
        ),
    ] {
        let err = with(ha).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(words), "{ha}: {err}");
    }
}
