//! Connections: LDAPS and StartTLS with a CA made by the test, and every way a connection can
//! fail giving exit code 2 with a clear message and no secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn assert_no_secret(r: &Run) {
    let all = r.all();
    assert!(!all.contains(ADMIN_PW), "bind password leaked: {r:?}");
    assert!(!all.contains(TOKEN), "token leaked: {r:?}");
}

#[test]
fn ldaps_with_the_corporate_ca_works_and_an_unknown_ca_is_refused() {
    let mut env = Env::start();
    env.ldap_url = format!("ldaps://127.0.0.1:{}", env.slapd.ldaps_port);
    env.ldap_extra = format!("ca_file = \"{}\"\n", certs().ca.display());
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");

    env.ldap_extra = format!("ca_file = \"{}\"\n", certs().other_ca.display());
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("cannot connect to ldaps://127.0.0.1"),
        "{r:?}"
    );
    assert!(r.stderr.to_lowercase().contains("certificate"), "{r:?}");
    assert_no_secret(&r);

    env.ldap_extra = String::new();
    let r = env.run(&["sync"]);
    assert_eq!(
        r.code, 2,
        "a certificate from an unknown CA must be refused: {r:?}"
    );
}

#[test]
fn starttls_with_the_corporate_ca_works() {
    let mut env = Env::start();
    env.ldap_extra = format!("starttls = true\nca_file = \"{}\"\n", certs().ca.display());
    let r = env.sync();
    assert_eq!(count(&r, "users", "created"), 3, "{r:?}");
    env.ldap_extra = "starttls = true\n".into();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn a_wrong_bind_password_is_exit_2_and_names_the_bind_dn() {
    let env = Env::start();
    std::fs::write(env.dir.path().join("bind.pw"), "not-the-password").unwrap();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("bind as cn=admin,dc=example,dc=org failed"),
        "{r:?}"
    );
    assert!(r.stderr.contains("invalid credentials"), "{r:?}");
    assert!(!r.all().contains("not-the-password"), "{r:?}");
    assert!(env.scim.users().is_empty());
}

#[test]
fn a_wrong_token_is_exit_2_with_the_http_status() {
    let env = Env::start();
    std::fs::write(env.dir.path().join("scim.token"), "wrong-token-value").unwrap();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("HTTP 401"), "{r:?}");
    assert!(r.stderr.contains("target.token"), "{r:?}");
    assert!(!r.all().contains("wrong-token-value"), "{r:?}");
    assert_no_secret(&r);
}

#[test]
fn unreachable_servers_are_exit_2() {
    let mut env = Env::start();
    env.ldap_url = format!("ldap://127.0.0.1:{}", free_port());
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("cannot connect to ldap://127.0.0.1"),
        "{r:?}"
    );

    env.ldap_url = env.slapd.url();
    env.target_url = format!("http://127.0.0.1:{}/v2", free_port());
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no answer"), "{r:?}");
    let status = env.run(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["last_run"]["outcome"], "failed", "{doc}");
}

#[test]
fn the_scim_server_going_away_mid_life_is_exit_2_and_loses_nothing() {
    let mut env = Env::start();
    env.sync();
    env.scim.stop();
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    // A new SCIM server is empty: the records still describe the old one, so a resync rebuilds.
    env.scim = Scim::start();
    env.target_url = env.scim.base();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("run `dirbridge resync`"), "{r:?}");
    let r = env.run(&["resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(env.scim.users().len(), 2);
    assert!(env.scim.user("carol").is_none());
}

#[test]
fn a_bad_config_names_the_file_and_the_key() {
    let env = Env::start();
    env.write_config();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        text.replace("page_size = 2", "page_size = \"two\""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirbridge"))
        .arg("--config")
        .arg(env.config_path())
        .arg("sync")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("dirbridge.toml:7:"), "{err}");

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_dirbridge"))
        .args(["--config", "/nonexistent/dirbridge.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/dirbridge.toml"));
}

#[test]
fn secrets_appear_nowhere_even_at_trace_level() {
    let env = Env::start();
    let r = env.run(&["--log-level", "trace", "sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.len() > 1000,
        "trace logging produced little output: {r:?}"
    );
    // The users' paged search: every entry decoded by the relay, none by ldap3.
    assert!(
        r.stderr.contains("entries=3 by_relay=3"),
        "{}",
        r.stderr
            .lines()
            .filter(|l| l.contains("paged search read"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_no_secret(&r);
    let r = env.run(&["--log-level", "trace", "--log-format", "json", "resync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_no_secret(&r);
}
