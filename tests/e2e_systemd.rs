//! Running under systemd: the notify protocol spoken by `run` to a socket standing in for
//! systemd's (readiness, status, watchdog, stopping), and the unit file as systemd reads it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The datagrams received until `until` holds for one of them, or `secs` pass.
fn receive_until(
    sock: &UnixDatagram,
    secs: u64,
    seen: &mut Vec<String>,
    until: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = until(&msg);
            seen.push(msg);
            if done {
                return true;
            }
        }
    }
    false
}

#[test]
fn run_tells_systemd_it_is_ready_how_it_is_feeds_the_watchdog_and_says_it_stops() {
    let mut env = Env::start();
    let port = free_port();
    env.extra = format!("[daemon]\npoll_interval = \"1s\"\nlisten = \"127.0.0.1:{port}\"\n");
    env.write_config();
    let socket = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Guard(spawn_dirbridge(
        &env.config_path(),
        &["run"],
        &[
            ("NOTIFY_SOCKET", socket.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
        env.dir.path(),
    ));
    let mut seen = Vec::new();
    // Ready once the status server listens: it answers at once.
    assert!(
        receive_until(&sock, 30, &mut seen, |m| m.lines().any(|l| l == "READY=1")),
        "{seen:?} {}",
        env.spawned_log()
    );
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    // The status follows the passes.
    assert!(
        receive_until(&sock, 30, &mut seen, |m| m.lines().any(|l| l
            .starts_with("STATUS=ready;")
            && l.contains("3 users (3 active), 2 groups"))),
        "{seen:?} {}",
        env.spawned_log()
    );
    // Pinged at half the watchdog's interval (100 ms): about ten in a second.
    let mut pings = Vec::new();
    receive_until(&sock, 1, &mut pings, |_| false);
    let watchdog = pings
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!((5..=15).contains(&watchdog), "{pings:?}");
    // A stop is said before the state is saved, and the service ends well.
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let mut end = Vec::new();
    assert!(
        receive_until(&sock, 20, &mut end, |m| m
            .lines()
            .any(|l| l == "STOPPING=1")),
        "{end:?}"
    );
    assert!(
        wait_exit(&mut child.0, 30).success(),
        "{}",
        env.spawned_log()
    );
}

/// `systemd-analyze verify` of the unit, with ExecStart pointing at `binary`: its complaints.
fn verify(unit_text: &str, binary: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("dirbridge.service");
    std::fs::write(
        &unit,
        unit_text.replace("/usr/local/bin/dirbridge", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    format!(
        "{}{}{}",
        if out.status.success() { "" } else { "failed\n" },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_unit_is_one_systemd_reads_without_a_complaint_and_it_is_hardened() {
    let text = std::fs::read_to_string(repo().join("packaging/dirbridge.service")).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_dirbridge"));
    let complaints = verify(&text, binary);
    assert_eq!(complaints, "", "{complaints}");
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=dirbridge",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LoadCredential=bind.pw:",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(text.contains(line), "{line}");
    }
    assert!(text.contains(" run\n"), "ExecStart runs the service");
    // The verification itself catches a key systemd does not know.
    let complaints = verify(
        &text.replace("Type=notify", "Type=notify\nWatchdogSecs=60s"),
        binary,
    );
    assert!(complaints.contains("WatchdogSecs"), "{complaints}");
}

/// As the unit hands them over: secret files named by name alone come from
/// $CREDENTIALS_DIRECTORY when the service has them there, from the config's folder otherwise.
#[test]
fn secrets_come_from_systemd_credentials_when_the_service_has_them() {
    let env = Env::start();
    env.write_config();
    // The copies beside the config are wrong (readable only by root, in the unit's set-up).
    std::fs::write(env.dir.path().join("bind.pw"), "not-the-password\n").unwrap();
    std::fs::write(env.dir.path().join("scim.token"), "not-the-token\n").unwrap();
    let creds = env.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("bind.pw"), format!("{ADMIN_PW}\n")).unwrap();
    std::fs::write(creds.join("scim.token"), TOKEN).unwrap();
    let r = run_dirbridge(
        &env.config_path(),
        &["sync"],
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(env.scim.users().len(), 3);
    // Without them, the files beside the config are read (and here refused).
    let r = run_dirbridge(&env.config_path(), &["sync"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("bind as cn=admin"), "{r:?}");
}
