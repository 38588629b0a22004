//! `dirbridge check` against real servers: the OK, WARN and FAIL lines it prints for slapd
//! (plain, LDAPS, StartTLS) and scim2-server, each with what to fix, and the exit codes 0, 1
//! and 2. Nothing is written to either server, and no secret is printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::Value;

/// The secret files as an administrator should leave them.
fn private(env: &Env) {
    for f in ["bind.pw", "scim.token"] {
        let p = env.dir.path().join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn no_secret(r: &Run) {
    let all = r.all();
    assert!(!all.contains(ADMIN_PW), "bind password printed: {r:?}");
    assert!(!all.contains(TOKEN), "token printed: {r:?}");
}

#[test]
fn a_sound_setup_is_all_ok_before_and_after_the_first_sync() {
    let env = Env::start();
    private(&env);
    let r = env.run(&["check"]);
    assert_eq!(r.code, 0, "{r:?}");
    check_line(&r, "OK", "config");
    assert!(
        check_line(&r, "OK", "state")
            .0
            .contains("does not exist yet"),
        "{r:?}"
    );
    let (d, _) = check_line(&r, "OK", "directory");
    assert!(d.contains("bound as cn=admin,dc=example,dc=org"), "{r:?}");
    assert!(check_line(&r, "OK", "tls").0.contains("loopback"), "{r:?}");
    assert!(
        check_line(&r, "OK", "users").0.starts_with("3 in scope"),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "groups").0.starts_with("2 in scope"),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "membership")
            .0
            .starts_with("3 of the 3 users carry memberOf"),
        "{r:?}"
    );
    let (t, _) = check_line(&r, "OK", "target");
    assert!(
        t.contains("PATCH: yes") && t.contains("filter: yes"),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "credentials")
            .0
            .starts_with("accepted"),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "attributes").0.contains("username"),
        "{r:?}"
    );
    assert!(r.stdout.contains("0 WARN, 0 FAIL"), "{r:?}");
    no_secret(&r);
    // Nothing was written: no state, nobody on the target.
    assert!(!env.state_path().exists());
    assert!(env.scim.users().is_empty());

    env.sync();
    let r = env.run(&["check", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["fail"], 0);
    let checks = doc["checks"].as_array().unwrap();
    let detail = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["detail"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name}: {doc}"))
    };
    assert!(
        detail("state").contains("records of 3 users and 2 groups for this target"),
        "{doc}"
    );
    assert!(detail("last run").contains("sync run 1"), "{doc}");
    assert!(checks
        .iter()
        .all(|c| c["level"] == "OK" && c.get("fix").is_none()));
}

#[test]
fn warnings_say_what_to_mend_and_exit_1() {
    // No memberof overlay: users carry no memberOf.
    let mut env = Env::with_slapd(Slapd::start_with_refint_only());
    env.ldap_extra = "group_filter = \"(cn=nobody-by-this-name)\"\n".into();
    // The secret files readable by everyone, the state folder too.
    std::fs::create_dir(env.state_path()).unwrap();
    std::fs::set_permissions(env.state_path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 1, "{r:?}");
    let (w, fix) = check_line(&r, "WARN", "config");
    assert!(
        w.contains("bind.pw") && w.contains("readable by other local users"),
        "{r:?}"
    );
    assert!(fix.starts_with("chmod 600"), "{r:?}");
    let (w, fix) = check_line(&r, "WARN", "state");
    assert!(w.contains("mode 755"), "{r:?}");
    assert!(fix.starts_with("chmod 700"), "{r:?}");
    let (w, fix) = check_line(&r, "WARN", "groups");
    assert!(w.contains("(cn=nobody-by-this-name)"), "{r:?}");
    assert!(fix.contains("ldap.group_filter"), "{r:?}");
    assert!(
        !r.stdout.contains(" membership "),
        "no groups, nothing to say: {r:?}"
    );
    no_secret(&r);

    // Groups in scope, and no user carries memberOf.
    private(&env);
    env.gw.ldap_extra = String::new();
    let r = env.run(&["check"]);
    let (w, fix) = check_line(&r, "WARN", "membership");
    assert!(w.contains("none of the 3 users carries memberOf"), "{r:?}");
    assert!(fix.contains("ldap.membership = \"member\""), "{r:?}");
    // Read by the groups' member instead, it is fine.
    env.gw.ldap_extra = "membership = \"member\"\n".into();
    let r = env.run(&["check"]);
    assert!(
        check_line(&r, "OK", "membership")
            .0
            .starts_with("2 of the 2 groups carry member"),
        "{r:?}"
    );
}

#[test]
fn tls_is_described_with_the_ca_that_verified_it() {
    let mut env = Env::start();
    private(&env);
    env.ldap_url = format!("ldaps://127.0.0.1:{}", env.slapd.ldaps_port);
    env.ldap_extra = format!("ca_file = \"{}\"\n", certs().ca.display());
    let r = env.run(&["check"]);
    // The test's certificate is made for two days: renewing it is due.
    assert_eq!(r.code, 1, "{r:?}");
    let (t, fix) = check_line(&r, "WARN", "tls");
    assert!(t.starts_with("TLSv1."), "{r:?}");
    assert!(
        t.contains("certificate CN=127.0.0.1 (names: 127.0.0.1, localhost)"),
        "{r:?}"
    );
    assert!(t.contains("issued by CN=dirbridge test CA"), "{r:?}");
    assert!(
        t.contains("verified by CN=dirbridge test CA from ldap.ca_file"),
        "{r:?}"
    );
    assert!(fix.contains("expires in 1 day:"), "{r:?}");
    check_line(&r, "OK", "directory");

    // StartTLS: the same certificate, after the upgrade.
    env.ldap_url = env.slapd.url();
    env.ldap_extra = format!("starttls = true\nca_file = \"{}\"\n", certs().ca.display());
    let r = env.run(&["check"]);
    assert!(
        check_line(&r, "WARN", "tls")
            .0
            .contains("from ldap.ca_file"),
        "{r:?}"
    );
    check_line(&r, "OK", "users");

    // A CA that did not sign it: described, refused, and what to do.
    env.ldap_extra = format!(
        "starttls = true\nca_file = \"{}\"\n",
        certs().other_ca.display()
    );
    let r = env.run(&["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    let (t, fix) = check_line(&r, "FAIL", "tls");
    assert!(t.contains("does not verify"), "{r:?}");
    assert!(fix.contains("ldap.ca_file"), "{r:?}");
    let (d, _) = check_line(&r, "FAIL", "directory");
    assert!(d.contains("certificate"), "{r:?}");
    // The target is checked all the same.
    check_line(&r, "OK", "target");
    check_line(&r, "OK", "credentials");

    // Not verified on purpose: a warning that says what it would fail with.
    env.ldap_extra = "starttls = true\ntls_verify = false\n".into();
    let r = env.run(&["check"]);
    let (t, _) = r
        .stdout
        .lines()
        .find(|l| l.contains("not verified (ldap.tls_verify = false)"))
        .map(|l| (l.to_string(), ()))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(t.starts_with("WARN"), "{r:?}");
    check_line(&r, "OK", "directory");
}

#[test]
fn failures_name_the_part_and_exit_2_without_printing_a_secret() {
    let mut env = Env::start();
    private(&env);
    // A wrong bind password and a wrong token.
    std::fs::write(env.dir.path().join("bind.pw"), "not-the-password").unwrap();
    std::fs::write(env.dir.path().join("scim.token"), "not-the-token").unwrap();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    let (d, fix) = check_line(&r, "FAIL", "directory");
    assert!(
        d.contains("bind as cn=admin,dc=example,dc=org failed"),
        "{r:?}"
    );
    assert!(fix.contains("ldap.bind_dn"), "{r:?}");
    // The target answers; it refuses the token.
    check_line(&r, "OK", "target");
    let (c, fix) = check_line(&r, "FAIL", "credentials");
    assert!(c.contains("HTTP 401"), "{r:?}");
    assert!(fix.contains("[target.auth]"), "{r:?}");
    assert!(!r.all().contains("not-the-password") && !r.all().contains("not-the-token"));
    no_secret(&r);

    // Nothing listens: both named with what to check.
    std::fs::write(env.dir.path().join("bind.pw"), ADMIN_PW).unwrap();
    env.gw.target_url = format!("http://127.0.0.1:{}/v2", free_port());
    env.gw.ldap_url = format!("ldap://127.0.0.1:{}", free_port());
    let r = env.run(&["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    let (d, fix) = check_line(&r, "FAIL", "directory");
    assert!(d.starts_with("cannot connect to ldap://127.0.0.1"), "{r:?}");
    assert!(fix.contains("ldap.url"), "{r:?}");
    let (t, fix) = check_line(&r, "FAIL", "target");
    assert!(t.contains("127.0.0.1"), "{r:?}");
    assert!(fix.contains("target.url"), "{r:?}");

    // Records of another target: a sync would refuse them.
    env.gw.ldap_url = env.slapd.url();
    env.gw.target_url = env.scim.base();
    std::fs::write(env.dir.path().join("scim.token"), TOKEN).unwrap();
    env.sync();
    env.gw.target_url = env.scim.base().replace("127.0.0.1", "localhost");
    let r = env.run(&["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    let (s, fix) = check_line(&r, "FAIL", "state");
    assert!(s.contains("holds the records of another target"), "{r:?}");
    assert!(fix.contains("dirbridge resync"), "{r:?}");

    // A file that does not parse: that one line, and where.
    std::fs::write(env.config_path(), "[ldap]\nurl = \n").unwrap();
    let r = run_dirbridge(&env.config_path(), &["check"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    let (c, _) = check_line(&r, "FAIL", "config");
    assert!(c.contains("dirbridge.toml:2:"), "{r:?}");
}

/// A provider whose User schema requires an attribute the mapping does not send: said before
/// the first create is refused; mapped, it is fine.
#[test]
fn a_required_attribute_the_mapping_leaves_out_is_a_warning() {
    let mut env = Env::start();
    private(&env);
    let (status, doc) = env.scim.http("GET", "/Schemas", None);
    assert_eq!(status, 200, "{doc}");
    let mut schemas = doc["Resources"].as_array().unwrap().clone();
    let user = schemas
        .iter_mut()
        .find(|s| s["id"] == "urn:ietf:params:scim:schemas:core:2.0:User")
        .unwrap();
    for a in user["attributes"].as_array_mut().unwrap() {
        if a["name"] == "nickName" {
            a["required"] = Value::Bool(true);
        }
    }
    let file = env.dir.path().join("schemas.json");
    std::fs::write(&file, serde_json::to_string(&schemas).unwrap()).unwrap();
    env.gw.scim = Scim::start_with(&["--schema", file.to_str().unwrap()]);
    env.gw.target_url = env.gw.scim.base();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 1, "{r:?}");
    let (w, fix) = check_line(&r, "WARN", "attributes");
    assert!(
        w.contains("requires nickname, which the mapping does not send"),
        "{r:?}"
    );
    assert!(fix.contains("[mapping.custom]"), "{r:?}");

    env.gw.extra = "[mapping.custom]\nnickName = \"uid\"\n".into();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        check_line(&r, "OK", "attributes")
            .0
            .contains("nickname, username"),
        "{r:?}"
    );
}

/// The state folder is read as it is: its files, their permissions and whatever a link in it
/// points to stay exactly as they were; in use by the service, or under a file, it is said so.
#[test]
fn check_reads_the_state_folder_without_changing_anything() {
    let mut env = Env::start();
    private(&env);
    env.sync();
    let state = env.state_path();
    let store = state.join("dirbridge.redb");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o640)).unwrap();
    // A link in the folder to something outside it.
    let outside = env.dir.path().join("outside.txt");
    std::fs::write(&outside, "not the gateway's").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&outside, state.join("link")).unwrap();
    let before = (
        std::fs::read(&store).unwrap(),
        std::fs::metadata(&store).unwrap().modified().unwrap(),
    );
    let r = env.run(&["check"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        check_line(&r, "OK", "state")
            .0
            .contains("records of 3 users"),
        "{r:?}"
    );
    let after = (
        std::fs::read(&store).unwrap(),
        std::fs::metadata(&store).unwrap().modified().unwrap(),
    );
    assert!(before == after, "check rewrote the store");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o640);
    assert_eq!(mode(&outside), 0o644);
    // A sync tightens the folder's own files, never what a link in it names.
    env.sync();
    assert_eq!(mode(&store), 0o600);
    assert_eq!(
        mode(&outside),
        0o644,
        "a sync followed a link out of the state folder"
    );

    // In use by the service: a one-shot command would refuse, and the line says so.
    let port = free_port();
    env.gw.extra = format!("[daemon]\nlisten = \"127.0.0.1:{port}\"\nfull_resync = \"off\"\n");
    let _service = Guard(env.spawn(&["run"]));
    assert!(wait_until(30, || http_get(port, "/healthz").is_some()));
    let r = run_dirbridge(&env.config_path(), &["check"], &[]);
    let (w, fix) = check_line(&r, "WARN", "state");
    assert!(w.contains("in use by a running dirbridge"), "{r:?}");
    assert!(fix.contains("stop the service first"), "{r:?}");
    let sync = run_dirbridge(&env.config_path(), &["sync"], &[]);
    assert_eq!(sync.code, 2, "{sync:?}");
    assert!(sync.stderr.contains("in use"), "{sync:?}");
}

#[test]
fn a_state_path_under_a_file_fails_before_a_sync_would() {
    let env = Env::start();
    private(&env);
    std::fs::write(env.dir.path().join("statefile"), "hi").unwrap();
    env.write_config();
    let text = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("path = \"state\"", "path = \"statefile/sub\"");
    std::fs::write(env.config_path(), text).unwrap();
    let r = run_dirbridge(&env.config_path(), &["check"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    let (s, _) = check_line(&r, "FAIL", "state");
    assert!(s.contains("statefile is not a folder"), "{r:?}");
}

/// A server that answers every request with the same page, as a web server or a proxy in the
/// wrong place does.
fn same_page_server(status: &'static str, body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// What answers is not a SCIM service: the target line fails, naming what came back and what
/// to check, and no quirk is diagnosed from error pages.
#[test]
fn a_url_that_is_not_the_scim_service_fails_the_target_line() {
    let mut env = Env::start();
    private(&env);
    // A typo in the path on the real server.
    env.gw.target_url = format!("{}typo", env.scim.base());
    let r = env.run(&["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    let (t, fix) = check_line(&r, "FAIL", "target");
    assert!(t.contains("HTTP 404"), "{r:?}");
    assert!(fix.contains("target.url"), "{r:?}");
    assert!(!r.stdout.contains("credentials"), "{r:?}");
    // A web server answering every request with a page.
    for (status, body) in [
        ("200 OK", "<html><body>Welcome</body></html>"),
        ("500 Internal Server Error", "<html>oops</html>"),
    ] {
        let port = same_page_server(status, body);
        env.gw.target_url = format!("http://127.0.0.1:{port}/v2");
        let r = env.run(&["check"]);
        assert_eq!(r.code, 2, "{status}: {r:?}");
        check_line(&r, "FAIL", "target");
        assert!(!r.stdout.contains(" quirk "), "{status}: {r:?}");
        assert!(!r.stdout.contains("OK    target"), "{status}: {r:?}");
    }
}

/// The advice fits what went wrong: a server that takes connections and never answers, a
/// filter written without its parentheses, a config file that is not there.
#[test]
fn the_advice_fits_the_failure() {
    let mut env = Env::start();
    private(&env);
    // Accepts, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    env.gw.ldap_url = format!("ldap://127.0.0.1:{port}");
    env.gw.ldap_extra = "timeout_secs = 2\n".into();
    let r = env.run(&["check"]);
    let (d, fix) = check_line(&r, "FAIL", "directory");
    assert!(d.contains("no answer within"), "{r:?}");
    assert!(
        fix.contains("does not answer") && fix.contains("port"),
        "{r:?}"
    );

    // `objectClass=inetOrgPerson`, as some write it: one term, memberOf found all the same.
    env.gw.ldap_url = env.slapd.url();
    env.gw.ldap_extra = String::new();
    env.write_config();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let start = text.find("user_filter = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}user_filter = \"objectClass=inetOrgPerson\"{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(env.config_path(), text).unwrap();
    let r = run_dirbridge(&env.config_path(), &["check"], &[]);
    assert!(
        check_line(&r, "OK", "membership")
            .0
            .contains("carry memberOf"),
        "{r:?}"
    );

    let r = run_dirbridge(&env.dir.path().join("absent.toml"), &["check"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    let (_, fix) = check_line(&r, "FAIL", "config");
    assert!(fix.contains("dirbridge init"), "{r:?}");
}

/// More of what `check` can print, each against the real servers: a scope that finds nobody,
/// a search over its bound, LDAPS spoken to a plain port, a member attribute no group uses, and
/// the last run's failure.
#[test]
fn the_other_lines_check_can_print() {
    let mut env = Env::start();
    private(&env);
    // Nobody in scope; the groups read by an attribute none of them has.
    env.gw.extra = "[mapping]\nmember_attribute = \"uniqueMember\"\n".into();
    env.write_config();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let start = text.find("user_filter = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let nobody = format!(
        "{}user_filter = \"(uid=nobody-by-this-name)\"{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(env.config_path(), &nobody).unwrap();
    let r = run_dirbridge(&env.config_path(), &["check"], &[]);
    let (w, fix) = check_line(&r, "WARN", "users");
    assert!(w.contains("a sync would find nobody"), "{r:?}");
    assert!(fix.contains("ldap.user_filter"), "{r:?}");
    // With users, and membership read from the groups' uniqueMember: none has one.
    env.gw.ldap_extra = "membership = \"member\"\n".into();
    let r = env.run(&["check"]);
    let (w, fix) = check_line(&r, "WARN", "membership");
    assert!(
        w.contains("none of the 2 groups lists a member in uniqueMember"),
        "{r:?}"
    );
    assert!(fix.contains("mapping.member_attribute"), "{r:?}");

    // A search over ldap.max_entries: the fix names the key.
    env.gw.extra = String::new();
    env.gw.ldap_extra = "max_entries = 1\n".into();
    let r = env.run(&["check"]);
    let (_, fix) = check_line(&r, "FAIL", "users");
    assert!(fix.contains("ldap.max_entries"), "{r:?}");

    // LDAPS spoken to the plain port: no handshake, said on the tls line.
    env.gw.ldap_extra = format!("ca_file = \"{}\"\n", certs().ca.display());
    env.gw.ldap_url = format!("ldaps://127.0.0.1:{}", env.slapd.port);
    let r = env.run(&["check"]);
    let (t, fix) = check_line(&r, "FAIL", "tls");
    assert!(t.starts_with("no TLS handshake"), "{r:?}");
    assert!(fix.contains("LDAPS") && fix.contains("StartTLS"), "{r:?}");

    // The last run failed (a refused token): said, with where to look.
    env.gw.ldap_url = env.slapd.url();
    env.gw.ldap_extra = String::new();
    env.sync();
    std::fs::write(env.dir.path().join("scim.token"), "not-the-token").unwrap();
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    std::fs::write(env.dir.path().join("scim.token"), TOKEN).unwrap();
    let r = env.run(&["check"]);
    let (w, _) = check_line(&r, "WARN", "last run");
    assert!(w.contains("failed") && w.contains("401"), "{r:?}");
    assert!(!r.all().contains("not-the-token"), "{r:?}");
}

/// What the state folder can hold besides a sound store: one a process left mid-write (the
/// service killed), one of an earlier release (sled), one that is not a store at all.
#[test]
fn a_store_left_mid_write_an_old_release_s_store_and_garbage_are_told_apart() {
    let mut env = Env::start();
    private(&env);
    let port = free_port();
    env.gw.extra = format!("[daemon]\nlisten = \"127.0.0.1:{port}\"\nfull_resync = \"off\"\n");
    let service = env.spawn(&["run"]);
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    assert!(kill_9_after(service, std::time::Duration::ZERO));
    env.gw.extra = String::new();
    let r = env.run(&["check"]);
    let (w, fix) = check_line(&r, "WARN", "state");
    assert!(w.contains("left mid-write"), "{r:?}");
    assert!(fix.contains("repairs it"), "{r:?}");
    // A sync repairs it; the check is clean again.
    env.sync();
    let r = env.run(&["check"]);
    check_line(&r, "OK", "state");

    // A store of an earlier release: migrated by the next writer, read by none before.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    std::fs::create_dir(env.state_path()).unwrap();
    std::fs::set_permissions(env.state_path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let old = sled::open(env.state_path()).unwrap();
    old.flush().unwrap();
    drop(old);
    let r = env.run(&["check"]);
    assert!(
        check_line(&r, "OK", "state")
            .0
            .contains("store of an earlier release"),
        "{r:?}"
    );

    // Not a store at all.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    std::fs::create_dir(env.state_path()).unwrap();
    std::fs::set_permissions(env.state_path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(env.state_path().join("dirbridge.redb"), vec![0xAB; 4096]).unwrap();
    let r = env.run(&["check"]);
    assert_eq!(r.code, 2, "{r:?}");
    let (_, fix) = check_line(&r, "FAIL", "state");
    assert!(fix.contains("resync") && fix.contains("move"), "{r:?}");
}

/// Run as a user that may not write in the state folder (as the service's user would be if the
/// folder were made by root): the state line fails and says to chown it. The test takes another
/// user's identity with setpriv, which needs root (as the test machines run).
#[test]
fn a_state_folder_the_user_cannot_write_in_fails() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false);
    assert!(
        root,
        "this test takes another user's identity: run it as root"
    );
    let env = Env::start();
    env.write_config();
    std::fs::create_dir(env.state_path()).unwrap();
    std::fs::set_permissions(env.state_path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Everything else readable by the other user.
    for p in [env.dir.path().to_path_buf(), env.config_path()] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_dirbridge"))
        .arg("--config")
        .arg(env.config_path())
        .arg("check")
        .env_remove("RUST_LOG")
        .output()
        .expect("setpriv (util-linux)");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, 2, "{r:?}");
    let (s, fix) = check_line(&r, "FAIL", "state");
    assert!(s.contains("is not writable by this user"), "{r:?}");
    assert!(fix.contains("chown"), "{r:?}");
}

#[test]
fn the_ha_lease_and_each_server_of_a_list_get_a_line() {
    let mut env = Env::start();
    private(&env);
    let dead = free_port();
    env.ldap_url = format!("[\"{}\", \"ldap://127.0.0.1:{dead}\"]", env.slapd.url());
    let with_lease = |env: &mut Env, dn: &str| {
        env.extra = format!("[ha]\nlease_dn = \"{dn}\"\ninstance_id = \"gw-a\"\n");
    };
    with_lease(&mut env, &format!("cn=dirbridge-lease,{BASE_DN}"));
    // The config writes `url = "<list>"`: the list goes in as TOML, not as a string.
    let fixed = |env: &Env| {
        env.write_config();
        let text = std::fs::read_to_string(env.config_path()).unwrap();
        let text = text.replace(
            &format!("url = \"{}\"", env.ldap_url),
            &format!("url = {}", env.ldap_url),
        );
        std::fs::write(env.config_path(), text).unwrap();
        run_dirbridge(&env.config_path(), &["check"], &[])
    };
    let r = fixed(&env);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        check_line(&r, "OK", "directory")
            .0
            .starts_with(&env.slapd.url()),
        "{r:?}"
    );
    assert!(
        check_line(&r, "OK", "servers")
            .0
            .contains("server 1 of ldap.url"),
        "{r:?}"
    );
    let (w, fix) = check_line(&r, "WARN", "servers");
    assert!(
        w.contains(&format!(
            "127.0.0.1:{dead} (server 2 of ldap.url) does not answer"
        )),
        "{r:?}"
    );
    assert!(fix.contains("fall back"), "{r:?}");
    let (ok, _) = check_line(&r, "OK", "ha");
    assert!(ok.contains("does not exist yet"), "{r:?}");

    // Held by someone: named; a value that is not a lease: a warning; no parent: a failure.
    env.ldap_url = format!("[\"{}\"]", env.slapd.url());
    env.slapd.add(&format!(
        "dn: cn=dirbridge-lease,{BASE_DN}\nobjectClass: applicationProcess\ncn: dirbridge-lease\n\
         description: holder=gw-b;gen=7;beat=3\n"
    ));
    let r = fixed(&env);
    assert_eq!(r.code, 0, "{r:?}");
    let (ok, _) = check_line(&r, "OK", "ha");
    assert!(
        ok.contains("held by gw-b (generation 7); this gateway is gw-a"),
        "{r:?}"
    );
    assert!(
        !r.stdout.contains(" servers "),
        "one server, no line: {r:?}"
    );
    env.slapd.modify(&format!(
        "dn: cn=dirbridge-lease,{BASE_DN}\nchangetype: modify\nreplace: description\ndescription: set by hand\n"
    ));
    let r = fixed(&env);
    let (w, _) = check_line(&r, "WARN", "ha");
    assert!(w.contains("1 value(s) that are not a lease"), "{r:?}");
    with_lease(
        &mut env,
        &format!("cn=dirbridge-lease,ou=nowhere,{BASE_DN}"),
    );
    let r = fixed(&env);
    assert_eq!(r.code, 2, "{r:?}");
    let (f, _) = check_line(&r, "FAIL", "ha");
    assert!(
        f.contains(&format!("ou=nowhere,{BASE_DN} does not exist")),
        "{r:?}"
    );
}
