//! An HTTP fault-injection proxy on loopback, in front of the real SCIM server. At a set rate it
//! answers 429 with Retry-After, answers 503, answers slowly, resets the connection before or
//! after the request reached the server, or truncates the answer's body. Which fault, and when,
//! comes from a seeded generator, so a failing run can be replayed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    TooManyRequests,
    Unavailable,
    Slow,
    /// Connection reset before the request is forwarded: never carried out.
    ResetBefore,
    /// Forwarded and carried out, then the connection is reset: the answer is lost.
    ResetAfter,
    /// Carried out; the answer's body is cut in half.
    Truncate,
}

pub const ALL: [Fault; 6] = [
    Fault::TooManyRequests,
    Fault::Unavailable,
    Fault::Slow,
    Fault::ResetBefore,
    Fault::ResetAfter,
    Fault::Truncate,
];

/// What a provider with a quirk does with a request, decided from its request line
/// (`GET /v2/Users?filter=... HTTP/1.1`) and body: pass it on, perhaps rewritten (a filter
/// dropped, an attribute not kept, a removal not carried out), or answer it itself (a parameter
/// refused).
pub enum Route {
    Forward(String),
    /// A new request line and body.
    ForwardWith(String, String),
    Reply(u16, String),
    /// The connection is reset before the request reaches the server (a WAF rule, a poisoned
    /// cache entry): never carried out, never answered.
    Reset,
}

/// A rule applied to every request before any fault: (request line, body) -> route.
pub type Rule = fn(&str, &str) -> Route;

/// A rule applied to every answer the server gave (request line, answer body, the server's
/// port for look-ups of its own) -> the body sent on, as a provider with a quirk would answer.
pub type AnswerRule = fn(&str, &str, u16) -> String;

/// The answer with its body replaced (Content-Length set again).
fn with_body(resp: &[u8], body: &str) -> Vec<u8> {
    let (head, _) = closing(resp);
    let head = String::from_utf8_lossy(&head).to_string();
    let mut out: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("content-length:"))
        .map(str::to_string)
        .collect();
    out.push(format!("Content-Length: {}", body.len()));
    format!("{}\r\n\r\n{body}", out.join("\r\n")).into_bytes()
}

struct Dice {
    state: u64,
    /// Per mille.
    rate: u32,
}

impl Dice {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn roll(&mut self) -> Option<Fault> {
        if (self.next() % 1000) as u32 >= self.rate {
            return None;
        }
        Some(ALL[(self.next() % ALL.len() as u64) as usize])
    }
}

pub struct FaultProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    dice: Arc<Mutex<Dice>>,
    /// Faults injected so far, by kind; and requests forwarded cleanly.
    pub injected: Arc<Mutex<BTreeMap<Fault, u64>>>,
    pub clean: Arc<Mutex<u64>>,
    /// When each request arrived.
    pub arrivals: Arc<Mutex<Vec<Instant>>>,
    /// Each request's line (`POST /v2/Users HTTP/1.1`) as it arrived, with the time.
    pub lines: Arc<Mutex<Vec<(Instant, String)>>>,
    /// Requests in flight now, and the most seen at once.
    flight: Arc<Mutex<(usize, usize)>>,
    /// Added to every answer (to make overlapping requests visible).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    rule: Arc<Mutex<Option<Rule>>>,
    answer_rule: Arc<Mutex<Option<AnswerRule>>>,
}

/// Reads one HTTP request (headers and a Content-Length body). `None` on EOF or garbage.
fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Headers are small; bounded so a broken client cannot make this loop forever.
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 64 * 1024 || s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    buf.extend(body);
    Some(buf)
}

/// Splits an HTTP message into its head, with `Connection: close` in place of any Connection
/// header (and the first line passed through `first`), and its body.
fn closing_head(msg: &[u8], first: impl Fn(&str) -> String) -> (Vec<u8>, Vec<u8>) {
    let split = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(msg.len());
    let head = String::from_utf8_lossy(&msg[..split]);
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_string)
        .collect();
    if let Some(l) = lines.first_mut() {
        *l = first(l);
    }
    lines.push("Connection: close".into());
    (
        (lines.join("\r\n") + "\r\n\r\n").into_bytes(),
        msg[split..].to_vec(),
    )
}

/// The request as HTTP/1.0 without keep-alive, so the server closes after answering.
fn one_shot(req: &[u8]) -> Vec<u8> {
    let (mut head, body) = closing_head(req, |l| l.replace("HTTP/1.1", "HTTP/1.0"));
    head.extend(body);
    head
}

/// The answer with `Connection: close`, so the client does not reuse the connection.
fn closing(resp: &[u8]) -> (Vec<u8>, Vec<u8>) {
    closing_head(resp, str::to_string)
}

fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(Shutdown::Both);
}

fn forward(upstream: u16, req: &[u8]) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    up.write_all(&one_shot(req)).ok()?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).ok()?;
    Some(resp)
}

/// What to do with the client connection once the request is dealt with.
enum Answer {
    /// Write these bytes, then close (whole answers, or a truncated one).
    Bytes(Vec<u8>),
    /// Close with a reset, answering nothing.
    Reset,
}

/// The request with its first line, and perhaps its body, replaced.
fn rewritten(req: &[u8], line: &str, body: Option<&str>) -> Vec<u8> {
    let end = req
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(req.len());
    let head_end = req
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(req.len());
    let mut out = line.as_bytes().to_vec();
    match body {
        None => out.extend_from_slice(&req[end..]),
        Some(b) => {
            let head = String::from_utf8_lossy(&req[end..head_end]);
            for l in head.split("\r\n").filter(|l| !l.is_empty()) {
                if !l.to_ascii_lowercase().starts_with("content-length:") {
                    out.extend_from_slice(format!("\r\n{l}").as_bytes());
                }
            }
            out.extend_from_slice(format!("\r\nContent-Length: {}\r\n\r\n{b}", b.len()).as_bytes());
        }
    }
    out
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    p: Arc<Mutex<Dice>>,
    stats: Stats,
    (rule, answer_rule): (Option<Rule>, Option<AnswerRule>),
) {
    let Some(mut req) = read_request(&mut client) else {
        return;
    };
    stats.2.lock().unwrap().push(Instant::now());
    let request_line = String::from_utf8_lossy(&req)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    stats
        .5
        .lock()
        .unwrap()
        .push((Instant::now(), request_line.clone()));
    if let Some(rule) = rule {
        let text = String::from_utf8_lossy(&req).to_string();
        let first = text.lines().next().unwrap_or_default().to_string();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        match rule(&first, body) {
            Route::Forward(line) => req = rewritten(&req, &line, None),
            Route::ForwardWith(line, body) => req = rewritten(&req, &line, Some(&body)),
            Route::Reset => {
                reset(&client);
                return;
            }
            Route::Reply(status, body) => {
                if let Answer::Bytes(b) = reply(&format!("{status} Quirk"), "", &body) {
                    let _ = client.write_all(&b);
                    let _ = client.shutdown(Shutdown::Both);
                }
                return;
            }
        }
    }
    {
        let mut f = stats.3.lock().unwrap();
        f.0 += 1;
        f.1 = f.1.max(f.0);
    }
    let delay = stats.4.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let mut answer = decide(upstream, &p, &stats, &req);
    if let (Some(rewrite), Answer::Bytes(b)) = (answer_rule, &answer) {
        let text = String::from_utf8_lossy(b).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
                let new = rewrite(&request_line, body, upstream);
                answer = Answer::Bytes(with_body(b, &new));
            }
        }
    }
    // Out of flight before the client can see the answer and send its next request.
    stats.3.lock().unwrap().0 -= 1;
    match answer {
        Answer::Bytes(b) => {
            let _ = client.write_all(&b);
            let _ = client.shutdown(Shutdown::Both);
        }
        Answer::Reset => reset(&client),
    }
}

fn reply(status: &str, extra: &str, body: &str) -> Answer {
    Answer::Bytes(
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn decide(upstream: u16, p: &Mutex<Dice>, stats: &Stats, req: &[u8]) -> Answer {
    let fault = p.lock().unwrap().roll();
    match fault {
        None => *stats.1.lock().unwrap() += 1,
        Some(f) => *stats.0.lock().unwrap().entry(f).or_default() += 1,
    }
    match fault {
        Some(Fault::TooManyRequests) => reply(
            "429 Too Many Requests",
            "Retry-After: 1\r\n",
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"429","detail":"slow down"}"#,
        ),
        Some(Fault::Unavailable) => reply(
            "503 Service Unavailable",
            "",
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"503","detail":"maintenance"}"#,
        ),
        Some(Fault::ResetBefore) => Answer::Reset,
        Some(Fault::ResetAfter) => {
            let _ = forward(upstream, req);
            Answer::Reset
        }
        Some(Fault::Truncate) => match forward(upstream, req) {
            Some(resp) => {
                let (mut head, body) = closing(&resp);
                head.extend_from_slice(&body[..body.len() / 2]);
                Answer::Bytes(head)
            }
            None => Answer::Reset,
        },
        Some(Fault::Slow) | None => {
            if fault == Some(Fault::Slow) {
                std::thread::sleep(Duration::from_millis(300));
            }
            match forward(upstream, req) {
                Some(resp) => {
                    let (mut head, body) = closing(&resp);
                    head.extend(body);
                    Answer::Bytes(head)
                }
                None => Answer::Reset,
            }
        }
    }
}

type Stats = (
    Arc<Mutex<BTreeMap<Fault, u64>>>,
    Arc<Mutex<u64>>,
    Arc<Mutex<Vec<Instant>>>,
    Arc<Mutex<(usize, usize)>>,
    Arc<std::sync::atomic::AtomicU64>,
    Arc<Mutex<Vec<(Instant, String)>>>,
);

impl FaultProxy {
    /// Starts a proxy to `upstream` that injects a fault into `rate` (0.0 to 1.0) of requests.
    pub fn start(upstream: u16, rate: f64, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let proxy = FaultProxy {
            port,
            up: Arc::new(AtomicBool::new(true)),
            dice: Arc::new(Mutex::new(Dice {
                state: seed.max(1),
                rate: (rate * 1000.0) as u32,
            })),
            injected: Arc::new(Mutex::new(BTreeMap::new())),
            clean: Arc::new(Mutex::new(0)),
            arrivals: Arc::new(Mutex::new(Vec::new())),
            lines: Arc::new(Mutex::new(Vec::new())),
            flight: Arc::new(Mutex::new((0, 0))),
            delay_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            rule: Arc::new(Mutex::new(None)),
            answer_rule: Arc::new(Mutex::new(None)),
        };
        let (up, dice, rule) = (proxy.up.clone(), proxy.dice.clone(), proxy.rule.clone());
        let answer_rule = proxy.answer_rule.clone();
        let stats: Stats = (
            proxy.injected.clone(),
            proxy.clean.clone(),
            proxy.arrivals.clone(),
            proxy.flight.clone(),
            proxy.delay_ms.clone(),
            proxy.lines.clone(),
        );
        std::thread::spawn(move || {
            // Bounded by the flag: ends when the proxy is dropped.
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (d, s) = (dice.clone(), stats.clone());
                        let r = (*rule.lock().unwrap(), *answer_rule.lock().unwrap());
                        std::thread::spawn(move || serve(client, upstream, d, s, r));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        proxy
    }

    /// Applies `rule` to every answer from now on.
    pub fn set_answer_rule(&self, rule: AnswerRule) {
        *self.answer_rule.lock().unwrap() = Some(rule);
    }

    /// Applies `rule` to every request from now on.
    pub fn set_rule(&self, rule: Rule) {
        *self.rule.lock().unwrap() = Some(rule);
    }

    /// Delays every answer by `ms` milliseconds.
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The most requests that were in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.flight.lock().unwrap().1
    }

    /// Changes the fault rate (0.0 stops injecting).
    pub fn set_rate(&self, rate: f64) {
        self.dice.lock().unwrap().rate = (rate * 1000.0) as u32;
    }

    /// The most requests that arrived within any window of `window`.
    pub fn busiest(&self, window: Duration) -> usize {
        let mut t = self.arrivals.lock().unwrap().clone();
        t.sort();
        let mut best = 0;
        let mut start = 0;
        for end in 0..t.len() {
            while t[end].duration_since(t[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// The writes (POST, PUT, PATCH, DELETE) that reached the proxy, with when.
    pub fn writes(&self) -> Vec<(Instant, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| !l.starts_with("GET ") && !l.starts_with("HEAD "))
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    pub fn injected(&self) -> BTreeMap<Fault, u64> {
        self.injected.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.up.store(false, Ordering::SeqCst);
    }
}
