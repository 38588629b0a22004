//! Directory scale: a private slapd filled with slapadd (memberOf written into the LDIF, as
//! slapadd runs no overlays) with N users (8 attributes, 3 groups each) and N/100 groups, a sink
//! that answers SCIM at once (so the gateway's own cost is measured), and, measured in one run:
//! the raw paged read (ldapsearch) and the sink's raw ingest of one POST per object at the same
//! concurrency, then the
//! first sync, a no-change pass and a pass after 1% of the users changed, each with its peak RSS
//! (GNU time), and the state store's bytes per object; every time also as a ratio to its raw
//! baseline.
//!
//! Run: `cargo bench --bench scale` (BENCH_SIZES=10000,100000 by default). Run as a test (no
//! `--bench`), it goes through the same steps at 300 users, only to prove it works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/sink.rs"]
mod sink;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

const CONCURRENCY: usize = 4;
const GROUPS_PER_USER: usize = 3;

/// The directory as LDIF for slapadd: the base, N users, N/100 groups (at least 10).
fn ldif(n: usize) -> (String, usize) {
    let groups = (n / 100).max(10);
    let mut out = String::with_capacity(n * 600);
    out.push_str(
        "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,dc=example,dc=org\nobjectClass: organizationalUnit\nou: groups\n\n",
    );
    let group_of = |i: usize, k: usize| (i * 7 + k * 13) % groups;
    for i in 0..n {
        out.push_str(&format!(
            "dn: uid=u{i:06},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: u{i:06}\n\
             cn: User {i}\nsn: Number{i}\ngivenName: User\nmail: u{i:06}@example.org\ntitle: Title {}\n\
             employeeNumber: {i}\ndepartmentNumber: D{}\n",
            i % 50,
            i % 20
        ));
        for k in 0..GROUPS_PER_USER {
            out.push_str(&format!(
                "memberOf: cn=g{:05},ou=groups,dc=example,dc=org\n",
                group_of(i, k)
            ));
        }
        out.push('\n');
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for i in 0..n {
        for k in 0..GROUPS_PER_USER {
            members[group_of(i, k)].push(i);
        }
    }
    for (g, m) in members.iter().enumerate() {
        out.push_str(&format!(
            "dn: cn=g{g:05},ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: g{g:05}\n"
        ));
        if m.is_empty() {
            out.push_str("member: cn=nobody\n");
        }
        for i in m {
            out.push_str(&format!(
                "member: uid=u{i:06},ou=people,dc=example,dc=org\n"
            ));
        }
        out.push('\n');
    }
    (out, groups)
}

/// slapd with the directory loaded by slapadd (stopped for the load, started again).
fn directory(n: usize) -> (Slapd, usize) {
    let mut slapd = Slapd::start();
    slapd.kill();
    let (text, groups) = ldif(n);
    let file = slapd.dir.path().join("bench.ldif");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("/usr/sbin/slapadd")
        .arg("-q")
        .arg("-f")
        .arg(slapd.dir.path().join("slapd.conf"))
        .arg("-l")
        .arg(&file)
        .output()
        .expect("slapadd");
    assert!(
        out.status.success(),
        "slapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    slapd.restart();
    (slapd, groups)
}

/// The raw paged read of what the gateway reads: users and groups, 500 a page.
fn raw_read(slapd: &Slapd) -> f64 {
    let start = Instant::now();
    for (filter, attrs) in [
        (
            "(objectClass=inetOrgPerson)",
            "entryUUID uid cn sn givenName mail title employeeNumber departmentNumber memberOf manager displayName",
        ),
        ("(objectClass=groupOfNames)", "entryUUID cn member"),
    ] {
        let mut cmd = Command::new("ldapsearch");
        cmd.args(["-x", "-LLL", "-H", &slapd.url(), "-D", ADMIN_DN, "-w", ADMIN_PW])
            .args(["-b", BASE_DN, "-E", "pr=500/noprompt", filter])
            .args(attrs.split(' '))
            .stdout(std::process::Stdio::null());
        assert!(cmd.status().unwrap().success());
    }
    start.elapsed().as_secs_f64()
}

/// One dirbridge command under GNU time: (seconds, peak RSS in MiB).
fn timed(config: &Path, args: &[&str]) -> (f64, f64) {
    let report = config.with_extension("time");
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_dirbridge"))
        .arg("--config")
        .arg(config)
        .args(["--log-level", "warn"])
        .args(args)
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "dirbridge {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: f64 = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (secs, kib / 1024.0)
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if bench {
        std::env::var("BENCH_SIZES")
            .unwrap_or_else(|_| "10000,100000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    } else {
        vec![300]
    };
    let port = sink::sink();
    println!(
        "{:>8} {:>8} | {:>9} {:>9} | {:>20} {:>20} {:>20} | {:>9} {:>9} | {:>10}",
        "users",
        "groups",
        "raw read",
        "raw ingest",
        "first sync",
        "no-change pass",
        "1% changed pass",
        "RSS first",
        "RSS again",
        "store/obj"
    );
    for n in sizes {
        let (slapd, groups) = directory(n);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bind.pw"), ADMIN_PW).unwrap();
        let config = dir.path().join("dirbridge.toml");
        std::fs::write(
            &config,
            format!(
                "[ldap]\nurl = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\nbind_password_file = \"bind.pw\"\n\
                 base_dn = \"{BASE_DN}\"\npage_size = 500\n\
                 [target]\nkind = \"scim\"\nurl = \"http://127.0.0.1:{port}/scim\"\ntoken = \"t\"\n\
                 max_concurrency = {CONCURRENCY}\n\
                 [state]\npath = \"state\"\n\
                 [sync]\nmax_deletion_percent = 100\n",
                slapd.url()
            ),
        )
        .unwrap();
        let read = raw_read(&slapd);
        // The ideal: one write per object (no look-up), at the gateway's concurrency.
        let ingest = sink::raw_ingest(port, n + groups, CONCURRENCY, "/scim", false);
        let (first, rss_first) = timed(&config, &["sync"]);
        let (again, rss_again) = timed(&config, &["sync"]);
        let mut ldif = String::new();
        for i in (0..n).step_by(100) {
            ldif += &format!(
                "dn: uid=u{i:06},ou=people,dc=example,dc=org\nchangetype: modify\nreplace: title\ntitle: Changed {i}\n\n"
            );
        }
        slapd.modify(&ldif);
        let (changed, _) = timed(&config, &["sync"]);
        let per_object = dir_bytes(&dir.path().join("state")) as f64 / (n + groups) as f64;
        let slower = read.max(ingest);
        println!(
            "{n:>8} {groups:>8} | {read:>8.2}s {ingest:>8.2}s | {first:>8.2}s ({:>5.1}x) {again:>11.2}s ({:>5.1}x) {changed:>11.2}s ({:>5.1}x) | {rss_first:>6.0} MiB {rss_again:>5.0} MiB | {per_object:>7.0} B",
            first / slower,
            again / read,
            changed / read,
        );
    }
    println!(
        "ratios: first sync to the slower of raw read and raw ingest; the other passes to the raw read (goals: first sync <= 1.5x, no-change pass <= 1.5x, RSS <= 150 MiB at 100k, store <= 1 KB per object)"
    );
}
