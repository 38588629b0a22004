//! The REST target's sending rate against the SCIM target's, at the same concurrency: a first
//! sync of the same users from a real slapd into one sink that answers both protocols at once
//! (so only the clients differ), with the sink's raw ingest of the same number of POSTs at the
//! same concurrency measured in the same run as the baseline.
//!
//! Run: `cargo bench --bench target_rate` (BENCH_USERS=n sets the number of users, 2000 by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::rest::json_server_events;
use common::*;

const CONCURRENCY: usize = 4;

/// A sink on loopback: every POST is created (201, the body with an id), every look-up or
/// listing is empty, every change accepted. SCIM under `/scim`, REST under `/api`.
fn sink() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ids = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let ids = ids.clone();
            std::thread::spawn(move || serve(conn, &ids));
        }
    });
    port
}

fn serve(conn: TcpStream, ids: &AtomicU64) {
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, answer) = route(&method, &path, &body, ids);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn route(method: &str, path: &str, body: &[u8], ids: &AtomicU64) -> (&'static str, String) {
    let scim = path.starts_with("/scim");
    match method {
        "POST" => {
            let mut doc: serde_json::Value =
                serde_json::from_slice(body).unwrap_or(serde_json::json!({}));
            doc["id"] = format!("id{}", ids.fetch_add(1, Ordering::Relaxed)).into();
            ("201 Created", doc.to_string())
        }
        "GET" if scim && path.contains('?') => (
            "200 OK",
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"startIndex":1,"itemsPerPage":0,"Resources":[]}"#.into(),
        ),
        "GET" if scim => ("404 Not Found", r#"{"detail":"not here"}"#.into()),
        "GET" if path.contains("_page=") => ("200 OK", r#"{"data":[],"next":null}"#.into()),
        "GET" if path.contains('?') => ("200 OK", "[]".into()),
        "GET" => {
            let id = path.rsplit('/').next().unwrap_or("");
            ("200 OK", format!(r#"{{"id":"{id}","displayName":"g","members":[]}}"#))
        }
        _ if scim => ("204 No Content", String::new()),
        _ => ("200 OK", "{}".into()),
    }
}

/// The sink's own capacity: `n` POSTs at the same concurrency, one client per worker.
fn raw_ingest(port: u16, n: usize) -> f64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let (http, next) = (http.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while (next.fetch_add(1, Ordering::Relaxed) as usize) < n {
                    // A look-up and a create per user, as both targets send.
                    http.get(format!("http://127.0.0.1:{port}/api/users?userName=x"))
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    http.post(format!("http://127.0.0.1:{port}/api/users"))
                        .header("content-type", "application/json")
                        .body(r#"{"userName":"x","active":true}"#)
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed().as_secs_f64()
    })
}

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
    let port = sink();
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
        raw = raw.min(raw_ingest(port, n));
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
