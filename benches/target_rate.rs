//! The REST target's sending rate against the SCIM target's, at the same concurrency: a first
//! sync of the same users from a real slapd into one sink that answers both protocols at once
//! (so only the clients differ), with the sink's raw ingest of the same number of POSTs at the
//! same concurrency measured in the same run as the baseline.
//!
//! Run: `cargo bench --bench target_rate` (BENCH_USERS=n sets the number of users, 2000 by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/sink.rs"]
mod sink;

use std::time::Instant;

use common::rest::json_server_events;
use common::*;

const CONCURRENCY: usize = 4;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this with no argument: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let slapd = Slapd::start();
    slapd.load("base.ldif");
    let mut ldif = String::new();
    for i in 0..n {
        ldif += &format!(
            "dn: uid=b{i:05},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: b{i:05}\n\
             cn: Bench {i}\nsn: Bench\ngivenName: B{i}\nmail: b{i:05}@example.org\ntitle: T{i}\n\n"
        );
    }
    slapd.add(&ldif);
    let port = sink::sink();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bind.pw"), ADMIN_PW).unwrap();
    let config = |kind: &str| {
        let target = if kind == "scim" {
            format!(
                "[target]\nkind = \"scim\"\nurl = \"http://127.0.0.1:{port}/scim\"\ntoken = \"t\"\nmax_concurrency = {CONCURRENCY}\n"
            )
        } else {
            format!(
                "[target]\nkind = \"rest\"\nurl = \"http://127.0.0.1:{port}/api\"\nmax_concurrency = {CONCURRENCY}\n{}\n[target.auth]\ntype = \"bearer\"\ntoken = \"t\"\n",
                json_server_events()
            )
        };
        format!(
            "[ldap]\nurl = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\nbind_password_file = \"bind.pw\"\nbase_dn = \"{BASE_DN}\"\n{target}\n[state]\npath = \"state-{kind}\"\n",
            slapd.url()
        )
    };
    let sync = |kind: &str| -> f64 {
        let _ = std::fs::remove_dir_all(dir.path().join(format!("state-{kind}")));
        let path = dir.path().join(format!("{kind}.toml"));
        std::fs::write(&path, config(kind)).unwrap();
        let start = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dirbridge"))
            .arg("--config")
            .arg(&path)
            .args(["--log-level", "warn", "sync"])
            .output()
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{kind}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        secs
    };
    // Alternated, best of three each: the machine's noise hits both alike.
    let (mut scim, mut rest, mut raw) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        scim = scim.min(sync("scim"));
        rest = rest.min(sync("rest"));
        raw = raw.min(sink::raw_ingest(port, n, CONCURRENCY, "/api", true));
    }
    let users = (n + 3) as f64;
    println!(
        "first sync of {} users (+2 groups), concurrency {CONCURRENCY}, one sink for both:",
        n + 3
    );
    println!(
        "  raw ingest (GET + POST per user)  {raw:7.2} s  {:8.0} users/s",
        users / raw
    );
    println!(
        "  SCIM target                       {scim:7.2} s  {:8.0} users/s  ({:.2}x raw)",
        users / scim,
        scim / raw
    );
    println!(
        "  REST target                       {rest:7.2} s  {:8.0} users/s  ({:.2}x raw)",
        users / rest,
        rest / raw
    );
    println!("  REST / SCIM time                  {:.2}x", rest / scim);
}
