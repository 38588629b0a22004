//! `dirbridge run`: the service loop, its status server, its schedule and its clean stop, with a
//! real slapd and a real SCIM server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

fn daemon_env(resync: &str) -> (Env, u16) {
    let mut env = Env::start();
    let port = free_port();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1s\"\nfull_resync = \"{resync}\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    (env, port)
}

#[test]
fn the_service_follows_changes_serves_status_and_stops_cleanly() {
    let (env, port) = daemon_env("off");
    // Killed if the test fails before it stops it.
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "first pass did not arrive: {}",
        env.spawned_log()
    );
    assert_eq!(
        http_get(port, "/healthz").unwrap(),
        (200, "ok\n".to_string())
    );
    assert!(wait_until(10, || http_get(port, "/readyz").map(|r| r.0) == Some(200)));
    // Transparent huge pages are off for the service (each 2 MiB page is resident whole).
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }

    // A change in the directory reaches the target without anyone running a command.
    env.slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: sn\nsn: Architect\n",
    );
    env.slapd.delete("uid=carol,ou=people,dc=example,dc=org");
    assert!(
        wait_until(30, || {
            env.scim
                .user("bob")
                .map(|b| b["name"]["familyName"] == "Architect")
                .unwrap_or(false)
                && env
                    .scim
                    .user("carol")
                    .map(|c| c["active"] == false)
                    .unwrap_or(false)
        }),
        "{}",
        env.spawned_log()
    );

    // The status counts what the pass ended with: the target may show the change a moment
    // before the pass has finished and been counted.
    let mut doc = Value::Null;
    assert!(
        wait_until(10, || {
            let (status, body) = http_get(port, "/status").unwrap();
            assert_eq!(status, 200);
            doc = serde_json::from_str(&body).unwrap();
            doc["store"]["users_active"] == 2
        }),
        "{doc}"
    );
    assert_eq!(doc["ready"], true, "{doc}");
    assert_eq!(doc["store"]["users"], 3);

    // The store's counts are read live; the operations are counted when the pass ends.
    let mut metrics = String::new();
    assert!(
        wait_until(10, || {
            let (status, body) = http_get(port, "/metrics").unwrap();
            assert_eq!(status, 200);
            metrics = body;
            metrics.contains(
                "dirbridge_operations_total{op=\"deactivate_user\",outcome=\"confirmed\"} 1",
            )
        }),
        "{metrics}"
    );
    assert!(metrics.contains("dirbridge_up 1"), "{metrics}");
    assert!(
        metrics.contains("dirbridge_operations_total{op=\"create_user\",outcome=\"confirmed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("dirbridge_operations_total{op=\"deactivate_user\",outcome=\"confirmed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dirbridge_objects{kind=\"user\",state=\"active\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dirbridge_runs_total{kind=\"sync\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dirbridge_last_success_timestamp_seconds"),
        "{metrics}"
    );

    let (status, page) = http_get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("dirbridge sync status") && page.contains("3 (2 active, 0 adopted)"),
        "{page}"
    );
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);

    let status = terminate(&mut child.0);
    assert!(status.success(), "exit {status:?}: {}", env.spawned_log());
    assert!(env.spawned_log().contains("stopping"));
    // State was saved: a one-shot sync afterwards finds nothing to do.
    let r = env.sync();
    assert!(
        r.stdout
            .contains("users 0 created, 0 adopted, 0 updated, 0 deactivated"),
        "{r:?}"
    );
}

#[test]
fn the_scheduled_resync_repairs_drift_and_failures_show_in_readiness() {
    let (mut env, port) = daemon_env("every 2s");
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    // Drift made on the target: a plain sync would not see it, the scheduled resync does.
    let alice = env.scim.user("alice").unwrap();
    let (s, _) = env.scim.http(
        "DELETE",
        &format!("/Users/{}", alice["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(s, 204);
    assert!(
        wait_until(30, || env.scim.user("alice").is_some()),
        "alice was not recreated: {}",
        env.spawned_log()
    );
    // The target goes away: runs fail, readiness says so, the service keeps going.
    env.scim.stop();
    assert!(
        wait_until(30, || http_get(port, "/readyz").map(|r| r.0) == Some(503)),
        "{}",
        env.spawned_log()
    );
    let (_, reason) = http_get(port, "/readyz").unwrap();
    assert!(reason.contains("the last run failed"), "{reason}");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the service died with its target"
    );
    let status = terminate(&mut child.0);
    assert!(status.success(), "{}", env.spawned_log());
}

/// The page as headless Chromium renders it (its DOM after parsing), and a screenshot of it.
fn render(url: &str, dir: &std::path::Path) -> String {
    let profile = dir.join("chromium-profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ];
    let shot = std::process::Command::new("chromium")
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!(
            "--screenshot={}",
            dir.join("dashboard.png").display()
        ))
        .arg("--window-size=1000,800")
        .arg(url)
        .output()
        .expect("chromium: scripts/setup.sh installs it");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let out = std::process::Command::new("chromium")
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_shows_an_administrator_the_sync_status() {
    let (env, port) = daemon_env("off");
    // Two entries that cannot be synced (they share a userName), named with markup that must
    // be shown as text.
    for n in ["d1", "d2"] {
        env.slapd.add(&format!(
            "dn: uid={n},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: <b>dup</b>\n\
             cn: D\nsn: D\ngivenName: D\nmail: {n}@example.org\n"
        ));
    }
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || http_get(port, "/status")
            .map(|(_, b)| b.contains("\"users\":3"))
            .unwrap_or(false)),
        "{}",
        env.spawned_log()
    );
    let dom = render(&format!("http://127.0.0.1:{port}/"), env.dir.path());
    assert!(dom.contains("dirbridge sync status"), "{dom}");
    // The state in one sentence, times as how long ago, the exact time on hover (turned into
    // the browser's time zone by the page's own script: no longer the UTC text).
    assert!(
        dom.contains("<strong>Ready</strong>: the last sync (run "),
        "{dom}"
    );
    assert!(
        dom.contains(">just now</time>") || dom.contains(" s ago</time>"),
        "{dom}"
    );
    let titles = regex::Regex::new(r#"<time datetime="([^"]+)" title="([^"]+)""#).unwrap();
    let first = titles.captures(&dom).expect("a time element");
    assert_ne!(
        &first[1], &first[2],
        "the hover text was not localised: {dom}"
    );
    // What needs a person comes first: the objects in error, with what to do.
    let errors_at = dom.find("Objects in error (2)").expect("errors section");
    assert!(errors_at < dom.find("The last 24 hours").unwrap(), "{dom}");
    assert!(dom.contains("mend the entry in the directory"), "{dom}");
    // The chart of the last 24 hours, drawn on the server.
    assert!(dom.contains("<svg id=\"activity\""), "{dom}");
    assert!(dom.contains("operations confirmed, 0 failed"), "{dom}");
    // Runs read as words, not as counters' names.
    assert!(dom.contains("rejected 2"), "{dom}");
    assert!(!dom.contains("users_created"), "{dom}");
    assert!(
        dom.contains("<td id=\"users\">3 (3 active, 0 adopted)</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<td id=\"groups\">2 (3 memberships)</td>"),
        "{dom}"
    );
    assert!(dom.contains("uid=d1,ou=people,dc=example,dc=org"), "{dom}");
    assert!(dom.contains("&lt;b&gt;dup&lt;/b&gt;"), "{dom}");
    assert!(dom.contains("id=\"last-run\""), "{dom}");
    // Recent operations, newest first, from the journal.
    assert!(dom.contains("<table id=\"recent\">"), "{dom}");
    assert!(
        dom.contains("<td>create_user</td><td>alice</td><td>created</td>"),
        "{dom}"
    );
    // No latency column where none is known (a polled service).
    assert!(!dom.contains("Change to push"), "{dom}");
    assert!(dom.contains("id=\"mode\">polling every 1s"), "{dom}");
    assert!(
        !dom.contains("<b>"),
        "markup from the directory reached the page: {dom}"
    );
    // DASHBOARD_SCREENSHOT=<file>: the screenshot kept, to look at.
    if let Ok(to) = std::env::var("DASHBOARD_SCREENSHOT") {
        std::fs::copy(env.dir.path().join("dashboard.png"), to).unwrap();
    }
    assert!(
        std::fs::metadata(env.dir.path().join("dashboard.png"))
            .unwrap()
            .len()
            > 1000
    );
    let status = terminate(&mut child.0);
    assert!(status.success());
}

/// GET with extra header lines: (status, body).
fn get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

#[test]
fn off_loopback_the_status_server_needs_a_token_and_bounds_its_connections() {
    let mut env = Env::start();
    let port = free_port();
    // Reachable from the network without a token: refused before anything starts.
    env.extra = format!("[daemon]\npoll_interval = \"1s\"\nlisten = \"0.0.0.0:{port}\"\n");
    let r = env.run(&["run"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("daemon.listen") && r.stderr.contains("status_token_file"),
        "{r:?}"
    );

    std::fs::write(env.dir.path().join("status.token"), "st-t0ken-0123\n").unwrap();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1s\"\nlisten = \"0.0.0.0:{port}\"\nstatus_token_file = \"status.token\"\n"
    );
    let mut child = Guard(env.spawn(&["run"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    assert_eq!(get_with(port, "/healthz", "").map(|r| r.0), Some(200));
    assert!(wait_until(10, || get_with(port, "/readyz", "")
        .map(|r| r.0)
        == Some(200)));
    for path in ["/status", "/metrics", "/"] {
        let none = get_with(port, path, "").unwrap();
        assert_eq!(none.0, 401, "{path} without a token: {none:?}");
        assert!(!none.1.contains("alice"), "{none:?}");
        let wrong = get_with(port, path, "Authorization: Bearer st-t0ken-012\r\n").unwrap();
        assert_eq!(wrong.0, 401, "{path} with a wrong token");
        let right = get_with(port, path, "Authorization: Bearer st-t0ken-0123\r\n").unwrap();
        assert_eq!(right.0, 200, "{path} with the token");
    }
    let metrics = get_with(port, "/metrics", "Authorization: Bearer st-t0ken-0123\r\n")
        .unwrap()
        .1;
    assert!(
        metrics.contains("dirbridge_objects{kind=\"user\",state=\"active\"} 3"),
        "{metrics}"
    );

    // Connections are bounded: with all slots held by idle clients, the next one is closed at
    // once (its request unanswered); once they go, requests are answered again.
    let idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        get_with(port, "/healthz", ""),
        None,
        "a 65th connection was served"
    );
    drop(idle);
    assert!(wait_until(10, || get_with(port, "/healthz", "")
        .map(|r| r.0)
        == Some(200)));

    let log = env.spawned_log();
    assert!(log.contains("require the bearer token"), "{log}");
    assert!(!log.contains("st-t0ken-0123"), "{log}");
    assert_eq!(terminate(&mut child.0).code(), Some(0));
}
