//! What the benchmarks share: a sink that answers SCIM and REST requests at once (so only the
//! gateway's own cost is measured), and that sink's raw ingest as a baseline.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// When each change marked `Mark-<digits>` (in the body of a write) reached the sink.
static MARKS: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
static MARKED: Condvar = Condvar::new();

/// Notes the markers a write carries.
fn note_marks(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    let now = Instant::now();
    let mut found = Vec::new();
    for (i, _) in text.match_indices("Mark-") {
        let digits: String = text[i + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        found.push(format!("Mark-{digits}"));
    }
    if found.is_empty() {
        return;
    }
    let mut marks = MARKS.lock().unwrap();
    let map = marks.get_or_insert_with(HashMap::new);
    for m in found {
        map.entry(m).or_insert(now);
    }
    MARKED.notify_all();
}

/// When a write carrying `marker` reached the sink, waiting for it at most `timeout`.
pub(crate) fn marked(marker: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    let mut marks = MARKS.lock().unwrap();
    loop {
        if let Some(at) = marks.as_ref().and_then(|m| m.get(marker)) {
            return Some(*at);
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        marks = MARKED.wait_timeout(marks, left).unwrap().0;
    }
}

/// A sink on loopback: every POST is created (201, the body with an id), every look-up or
/// listing is empty, every change accepted. SCIM under `/scim`, REST under `/api`.
pub(crate) fn sink() -> u16 {
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
    if method != "GET" {
        note_marks(body);
    }
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

/// The sink's own capacity: `n` POSTs at the given concurrency (each preceded by a look-up GET
/// when `lookups`, as the gateway sends today), one client per worker.
pub(crate) fn raw_ingest(
    port: u16,
    n: usize,
    concurrency: usize,
    prefix: &str,
    lookups: bool,
) -> f64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (http, next, prefix) = (http.clone(), next.clone(), prefix.to_string());
            tasks.push(tokio::spawn(async move {
                while (next.fetch_add(1, Ordering::Relaxed) as usize) < n {
                    if lookups {
                        http.get(format!("http://127.0.0.1:{port}{prefix}/users?userName=x"))
                            .send()
                            .await
                            .unwrap()
                            .bytes()
                            .await
                            .unwrap();
                    }
                    http.post(format!("http://127.0.0.1:{port}{prefix}/users"))
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
