//! An LDAP server that misbehaves on purpose. It answers a bind, then every search per the
//! [`Misbehaviour`] it is set to: well (three users in one group, paged as asked), or with a
//! malformed control, a truncated PDU, a referral to itself, or an answer that never ends.
//! Real servers do not do these on demand; the gateway must survive each with a clear error.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::asn1::{parse_tag, StructureTag, TagClass, PL};

mod ber;
use ber::*;

pub const BASE: &str = "dc=bad,dc=test";
pub const BIND_DN: &str = "cn=admin,dc=bad,dc=test";
const PAGED: &str = "1.2.840.113556.1.4.319";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers like a directory: three users, one group, pages of the size asked for.
    Well,
    /// The search result's paged-results control has no value.
    PagedWithoutValue,
    /// The paged-results control's value is not BER.
    PagedGarbage,
    /// The paged-results control's value is a sequence of the wrong things.
    PagedWrongShape,
    /// The result's controls are a primitive value, not a sequence.
    ControlsNotASequence,
    /// One control in the result's list is a primitive value, not a sequence (ldap3's message
    /// decoder panics on it, in its connection task).
    ControlNotASequence,
    /// An LDAPMessage that is an empty sequence (ldap3 panics: "element").
    EmptyMessage,
    /// A search answered with a modify response (ldap3 panics: "unrecognized op id").
    WrongOperation,
    /// Half a search entry, then the connection is closed.
    TruncatedPdu,
    /// Bytes that are not BER at all.
    NotBer,
    /// The search result is a referral to this same server.
    ReferralToItself,
    /// Search references to this same server, without end.
    EndlessReferences,
    /// Entries without end.
    EndlessEntries,
    /// Empty pages without end, each with a cookie asking for the next.
    EndlessEmptyPages,
    /// The search is never answered (the connection stays open).
    Silent,
    /// The root DSE (a read of one entry) is answered with entries without end.
    EndlessRootDse,
    /// An entry nested 10,000 levels deep (ldap3's recursive decoder overflows the stack).
    DeepNesting,
    /// A message that says it is 4 GiB long, then zeros for as long as they are read.
    HugeLength,
    /// A message of indefinite length (BER allows it, LDAP does not).
    IndefiniteLength,
    /// Answers to a message id that was never used, without end.
    WrongMessageId,
    /// Intermediate responses without end.
    EndlessIntermediate,
    /// A result whose text carries a newline and terminal escapes (a forged log line).
    ForgedText,
    /// Entries of 64 KiB values without end.
    BigValues,
    /// An entry holding a long-form tag, which lber reads as tag 31 and a length: what follows
    /// looks like content here and like 10,000 nested sequences to lber.
    LongFormTag,
    /// One entry with 100,000 empty values (each costs ldap3 far more than its two bytes).
    EmptyValues,
    /// A StartTLS request is never answered.
    SilentStartTls,
    /// The root DSE is answered with a search reference every 1.5 s, never ending.
    DrippingRootDse,
    /// Users carry `description;range=0-0`, and each read of the next range gives one more
    /// value and another range, without end.
    EndlessRanges,
    /// The search result's code is empty (ldap3 would read it as success).
    EmptyResultCode,
    /// The search result's matched DN is not UTF-8 (ldap3 panics on it).
    MatchedDnNotUtf8,
    /// The root DSE lists the content synchronization control, and every other search is
    /// answered "busy" (result 51) at once.
    SyncBusy,
}

pub struct BadLdap {
    pub port: u16,
    mode: Arc<Mutex<Misbehaviour>>,
    stop: Arc<AtomicBool>,
    searches: Arc<Mutex<u64>>,
}

impl BadLdap {
    pub fn start(mode: Misbehaviour) -> BadLdap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let searches = Arc::new(Mutex::new(0));
        let (m, s, n) = (mode.clone(), stop.clone(), searches.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (m, s, n) = (m.clone(), s.clone(), n.clone());
                std::thread::spawn(move || serve(conn, port, &m, &s, &n));
            }
        });
        BadLdap {
            port,
            mode,
            stop,
            searches,
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Misbehaviour) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Search requests received so far.
    pub fn searches(&self) -> u64 {
        *self.searches.lock().unwrap()
    }
}

impl Drop for BadLdap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

// --- Serving ------------------------------------------------------------------------------

/// The length of the first BER element in `buf`, if it is all there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let first = *buf.get(1)?;
    if first & 0x80 == 0 {
        return Some(2 + first as usize).filter(|&n| buf.len() >= n);
    }
    let k = (first & 0x7f) as usize;
    if buf.len() < 2 + k {
        return None;
    }
    let len = buf[2..2 + k]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
    Some(2 + k + len).filter(|&n| buf.len() >= n)
}

struct Request {
    id: i64,
    op: u64,
    /// The search's base and whether it is a search of users.
    base: String,
    users: bool,
    size: i64,
    /// Where an attribute asked for as `name;range=N-*` starts.
    range_start: Option<u64>,
}

fn children(t: StructureTag) -> Vec<StructureTag> {
    match t.payload {
        PL::C(v) => v,
        PL::P(_) => Vec::new(),
    }
}

fn prim_bytes(t: &StructureTag) -> Vec<u8> {
    match &t.payload {
        PL::P(v) => v.clone(),
        PL::C(_) => Vec::new(),
    }
}

fn int_of(b: &[u8]) -> i64 {
    b.iter().fold(0i64, |acc, x| (acc << 8) | i64::from(*x))
}

fn read_request(msg: &[u8]) -> Option<Request> {
    let (_, t) = parse_tag(msg).ok()?;
    let mut parts = children(t).into_iter();
    let id = int_of(&prim_bytes(&parts.next()?));
    let op = parts.next()?;
    let op_id = op.id;
    let mut req = Request {
        id,
        op: op_id,
        base: String::new(),
        users: false,
        size: 500,
        range_start: None,
    };
    if op_id == 3 {
        let op_parts = children(op);
        req.base = String::from_utf8_lossy(&prim_bytes(op_parts.first()?)).into_owned();
    }
    if let Some(ctrls) = parts.next() {
        for c in children(ctrls) {
            let c = children(c);
            let oid = c.first().map(prim_bytes).unwrap_or_default();
            if oid == PAGED.as_bytes() {
                if let Some(v) = c.last().map(prim_bytes) {
                    if let Ok((_, pv)) = parse_tag(&v) {
                        let pv = children(pv);
                        req.size = pv.first().map(|t| int_of(&prim_bytes(t))).unwrap_or(500);
                    }
                }
            }
        }
    }
    // A users' search names inetOrgPerson in its filter.
    req.users = op_id == 3 && msg.windows(13).any(|w| w == b"inetOrgPerson");
    req.range_start = msg.windows(6).position(|w| w == b"range=").map(|at| {
        msg[at + 6..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
    });
    Some(req)
}

fn serve(
    mut conn: TcpStream,
    port: u16,
    mode: &Mutex<Misbehaviour>,
    stop: &AtomicBool,
    searches: &Mutex<u64>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        while let Some(n) = frame_len(&buf) {
            let msg: Vec<u8> = buf.drain(..n).collect();
            let Some(req) = read_request(&msg) else {
                return;
            };
            let out = match req.op {
                0 => message(req.id, result(1, 0, "", None), None),
                2 => return,
                3 => {
                    *searches.lock().unwrap() += 1;
                    let m = *mode.lock().unwrap();
                    match answer(&mut conn, &req, m, port, stop) {
                        Some(bytes) => bytes,
                        None => return,
                    }
                }
                // StartTLS (an extended request): this server does not speak TLS. Refused,
                // unless it is to stay silent.
                23 if *mode.lock().unwrap() == Misbehaviour::SilentStartTls => continue,
                23 => message(req.id, result(24, 2, "no TLS here", None), None),
                // Abandon and anything else: no answer.
                _ => continue,
            };
            if conn.write_all(&out).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// The answer to a search, written whole or in part to `conn`; `None` ends the connection.
fn answer(
    conn: &mut TcpStream,
    req: &Request,
    m: Misbehaviour,
    port: u16,
    stop: &AtomicBool,
) -> Option<Vec<u8>> {
    let id = req.id;
    let done = |ctrls: Option<StructureTag>| message(id, result(5, 0, "", None), ctrls);
    let last_page = || controls(vec![control(PAGED, Some(&paged_value(0, b"")))]);
    let well = || {
        let mut out = Vec::new();
        if req.users {
            for n in 1..=3 {
                out.extend(message(id, user(n), None));
            }
        } else if req.base.is_empty() {
            // The root DSE.
            let mut attrs = vec![("namingContexts", vec![BASE.to_string()])];
            if m == Misbehaviour::SyncBusy {
                attrs.push((
                    "supportedControl",
                    vec!["1.3.6.1.4.1.4203.1.9.1.1".to_string()],
                ));
            }
            out.extend(message(id, entry("", &attrs), None));
        } else {
            out.extend(message(id, group(), None));
        }
        out
    };
    if m == Misbehaviour::SyncBusy && !req.base.is_empty() {
        return Some(message(id, result(5, 51, "busy", None), None));
    }
    if m == Misbehaviour::EndlessRanges && !req.base.is_empty() {
        let k = req.range_start.unwrap_or(0);
        let mut out = Vec::new();
        if req.users {
            for n in 1..=3 {
                out.extend(message(
                    id,
                    entry(
                        &format!("uid=user{n},ou=people,{BASE}"),
                        &[
                            ("objectClass", vec!["inetOrgPerson".into()]),
                            ("uid", vec![format!("user{n}")]),
                            ("cn", vec![format!("User {n}")]),
                            ("sn", vec![format!("Number{n}")]),
                            (
                                "entryUUID",
                                vec![format!("00000000-0000-4000-8000-{n:012}")],
                            ),
                            ("description;range=0-0", vec!["x".into()]),
                        ],
                    ),
                    None,
                ));
            }
        } else if req.range_start.is_some() {
            out.extend(message(
                id,
                entry(
                    &req.base,
                    &[(&format!("description;range={k}-{k}"), vec!["x".into()])],
                ),
                None,
            ));
        } else {
            out.extend(message(id, group(), None));
        }
        out.extend(done(Some(last_page())));
        return Some(out);
    }
    if req.base.is_empty() && m == Misbehaviour::DrippingRootDse {
        while !stop.load(Ordering::SeqCst) {
            let url = format!("ldap://127.0.0.1:{port}/{BASE}");
            let r = message(
                id,
                cons(TagClass::Application, 19, vec![octets(url.as_bytes())]),
                None,
            );
            if conn.write_all(&r).is_err() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1500));
        }
        return None;
    }
    if req.base.is_empty() && m == Misbehaviour::EndlessRootDse {
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let e = message(
                id,
                entry("", &[("namingContexts", vec![format!("dc=n{n}")])]),
                None,
            );
            if conn.write_all(&e).is_err() {
                return None;
            }
            n += 1;
        }
        return None;
    }
    // The root DSE is otherwise answered well: the misbehaviour is in the read of the directory.
    if req.base.is_empty()
        || matches!(
            m,
            Misbehaviour::Well
                | Misbehaviour::EndlessRootDse
                | Misbehaviour::DrippingRootDse
                | Misbehaviour::SilentStartTls
        )
    {
        let mut out = well();
        out.extend(done(Some(last_page())));
        return Some(out);
    }
    let mut out = well();
    match m {
        Misbehaviour::Well
        | Misbehaviour::EndlessRootDse
        | Misbehaviour::DrippingRootDse
        | Misbehaviour::EndlessRanges
        | Misbehaviour::SyncBusy
        | Misbehaviour::SilentStartTls => {}
        Misbehaviour::LongFormTag => {
            let mut deep = Vec::new();
            for _ in 0..10_000 {
                deep.extend([0x30, 0x84]);
                deep.extend([0, 0, 0, 0]);
            }
            // `1f 81 05`: a long-form tag here; tag 31, length 5 to lber, then the sequences.
            let mut smuggled = vec![0x1f, 0x81, 0x05, 0x84];
            smuggled.extend((deep.len() as u32).to_be_bytes());
            smuggled.extend(deep);
            out.extend(raw_entry(id, b"cn=smuggled", smuggled));
            out.extend(done(Some(last_page())));
        }
        Misbehaviour::EmptyValues => {
            let values = vec![String::new(); 100_000];
            out.extend(message(
                id,
                entry(
                    &format!("uid=empty,ou=people,{BASE}"),
                    &[("description", values)],
                ),
                None,
            ));
            out.extend(done(Some(last_page())));
        }
        Misbehaviour::PagedWithoutValue => {
            out.extend(done(Some(controls(vec![control(PAGED, None)]))));
        }
        Misbehaviour::PagedGarbage => {
            out.extend(done(Some(controls(vec![control(
                PAGED,
                Some(b"\x30\x7fgarbage"),
            )]))));
        }
        Misbehaviour::PagedWrongShape => {
            let v = encode(seq(vec![octets(b"500"), integer(7)]));
            out.extend(done(Some(controls(vec![control(PAGED, Some(&v))]))));
        }
        Misbehaviour::ControlsNotASequence => {
            out.extend(done(Some(prim(TagClass::Context, 0, b"\x01\x02"))));
        }
        Misbehaviour::ControlNotASequence => {
            out.extend(done(Some(controls(vec![octets(b"1.2.3")]))));
        }
        Misbehaviour::EmptyMessage => {
            out.extend(encode(seq(Vec::new())));
        }
        Misbehaviour::WrongOperation => {
            out.extend(message(id, result(7, 0, "", None), None));
        }
        Misbehaviour::DeepNesting => {
            // Built by hand: lber's encoder recurses too.
            let mut inner = vec![0x04, 0x01, b'x'];
            for _ in 0..10_000 {
                let mut outer = vec![0x30, 0x84];
                outer.extend((inner.len() as u32).to_be_bytes());
                outer.extend(inner);
                inner = outer;
            }
            out.extend(raw_entry(id, b"cn=deep", inner));
            out.extend(done(Some(last_page())));
        }
        Misbehaviour::HugeLength => {
            let _ = conn.write_all(&out);
            let _ = conn.write_all(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xf0]);
            let zeros = [0u8; 64 * 1024];
            while !stop.load(Ordering::SeqCst) {
                if conn.write_all(&zeros).is_err() {
                    break;
                }
            }
            return None;
        }
        Misbehaviour::IndefiniteLength => {
            out.extend([
                0x30, 0x80, 0x02, 0x01, id as u8, 0x65, 0x80, 0x0a, 0x01, 0x00,
            ]);
            out.extend([0x04, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]);
        }
        Misbehaviour::WrongMessageId | Misbehaviour::EndlessIntermediate => {
            let _ = conn.write_all(&out);
            while !stop.load(Ordering::SeqCst) {
                let item = if m == Misbehaviour::WrongMessageId {
                    message(9999, user(1), None)
                } else {
                    message(
                        id,
                        cons(
                            TagClass::Application,
                            25,
                            vec![prim(TagClass::Context, 0, b"1.2.3")],
                        ),
                        None,
                    )
                };
                if conn.write_all(&item).is_err() {
                    break;
                }
            }
            return None;
        }
        Misbehaviour::EmptyResultCode => {
            out.extend(message(
                id,
                cons(
                    TagClass::Application,
                    5,
                    vec![prim(TagClass::Universal, 10, b""), octets(b""), octets(b"")],
                ),
                None,
            ));
        }
        Misbehaviour::MatchedDnNotUtf8 => {
            out.extend(message(
                id,
                cons(
                    TagClass::Application,
                    5,
                    vec![enumerated(0), octets(b"\xff\xfe"), octets(b"")],
                ),
                None,
            ));
        }
        Misbehaviour::ForgedText => {
            out = message(
                id,
                result(5, 1, "boom\nERROR fake: all fine\r\n\x1b[2J", None),
                None,
            );
        }
        Misbehaviour::BigValues => {
            let big = "v".repeat(64 * 1024);
            let mut n = 10usize;
            while !stop.load(Ordering::SeqCst) {
                let e = entry(
                    &format!("uid=big{n},ou=people,{BASE}"),
                    &[("uid", vec![format!("big{n}")]), ("cn", vec![big.clone()])],
                );
                if conn.write_all(&message(id, e, None)).is_err() {
                    break;
                }
                n += 1;
            }
            return None;
        }
        Misbehaviour::TruncatedPdu => {
            let e = message(id, user(9), None);
            let _ = conn.write_all(&out);
            let _ = conn.write_all(&e[..e.len() / 2]);
            let _ = conn.flush();
            std::thread::sleep(Duration::from_millis(100));
            return None;
        }
        Misbehaviour::NotBer => {
            let _ = conn.write_all(&out);
            let _ = conn.write_all(&[0xff; 64]);
            std::thread::sleep(Duration::from_millis(500));
            return None;
        }
        Misbehaviour::ReferralToItself => {
            let url = format!("ldap://127.0.0.1:{port}/{BASE}");
            out = message(id, result(5, 10, "go elsewhere", Some(&url)), None);
        }
        Misbehaviour::EndlessReferences | Misbehaviour::EndlessEntries => {
            let mut n = 10usize;
            while !stop.load(Ordering::SeqCst) {
                let item = if m == Misbehaviour::EndlessEntries {
                    message(id, user(n), None)
                } else {
                    let url = format!("ldap://127.0.0.1:{port}/{BASE}??sub");
                    message(
                        id,
                        cons(TagClass::Application, 19, vec![octets(url.as_bytes())]),
                        None,
                    )
                };
                out.extend(item);
                if conn.write_all(&out).is_err() {
                    return None;
                }
                out.clear();
                n += 1;
            }
            return None;
        }
        Misbehaviour::EndlessEmptyPages => {
            return Some(done(Some(controls(vec![control(
                PAGED,
                Some(&paged_value(req.size, b"more")),
            )]))));
        }
        Misbehaviour::Silent => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            return None;
        }
    }
    Some(out)
}
