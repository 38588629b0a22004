//! What a terminal shows of a long pass: a progress bar (entries read, operations sent of those
//! planned) instead of a line per object; nothing of it when the output is not a terminal. The
//! log's lines carry the run's number.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

const USERS: usize = 1500;

fn populate(env: &Env) {
    let mut ldif = String::new();
    for i in 0..USERS {
        ldif += &format!(
            "dn: uid=p{i:04},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: p{i:04}\n\
             cn: Progress {i}\nsn: Progress\ngivenName: P{i}\nmail: p{i:04}@example.org\n\n"
        );
    }
    env.slapd.add(&ldif);
}

#[test]
fn a_long_sync_shows_progress_in_a_terminal_and_a_line_per_object_only_at_debug_level() {
    let env = Env::start();
    populate(&env);
    env.write_config();
    // In a terminal (a pseudo-terminal made by `script`).
    let command = format!(
        "{} --config {} sync",
        env!("CARGO_BIN_EXE_dirbridge"),
        env.config_path().display()
    );
    let out = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    // Without the terminal's colours and cursor moves.
    let ansi = regex::Regex::new("\x1b\\[[0-9;?]*[A-Za-z]").unwrap();
    let shown = ansi
        .replace_all(&String::from_utf8_lossy(&out.stdout), "")
        .to_string();
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("reading the directory"), "{shown}");
    assert!(shown.contains("sending ["), "{shown}");
    // The plan: 1,503 users, 2 groups, 2 membership batches; never the read's count as a
    // total (1,505 entries read).
    assert!(
        shown.contains(&format!("/{} operations", USERS + 7)),
        "{shown}"
    );
    assert!(
        !shown.contains(&format!("/{} operations", USERS + 5)),
        "{shown}"
    );
    assert!(shown.contains("users 1503 created"), "{shown}");
    // Log lines name their run; no line per object in a pass this long.
    assert!(shown.contains("run{id=1 kind=\"sync\"}"), "{shown}");
    assert!(!shown.contains("outcome=created"), "{shown}");
    assert_eq!(env.scim.users().len(), USERS + 3);

    // Not a terminal: no bar; a short pass logs a line per object.
    env.slapd.modify(
        "dn: uid=p0001,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: sn\nsn: Changed\n",
    );
    let r = env.run(&["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.all().contains("sending ["), "{r:?}");
    assert!(!r.all().contains("reading the directory:"), "{r:?}");
    assert!(
        r.stderr
            .contains("op=\"update_user\" object=\"p0001\" outcome=done"),
        "{r:?}"
    );
    // A long pass logs them at debug level (the state lost: every user adopted again).
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let r = env.run(&["--log-level", "debug", "sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("DEBUG run{id=1 kind=\"sync\"}: dirbridge::engine::execute: sent op=\"create_user\" object=\"p1499\" outcome=adopted"), "{r:?}");
}
