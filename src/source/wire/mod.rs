//! The bytes between the directory and ldap3. ldap3's BER decoder recurses once per nesting
//! level (a message nested ten thousand deep overflows the stack: an abort no guard can catch),
//! takes any declared length at its word (one message can ask for gigabytes), logs every answer
//! to a request it did not make, and runs in a task of its own where a panic silently ends the
//! connection. So ldap3 talks over a local socket pair to a relay that frames every message
//! itself and forwards only what is sound: a SEQUENCE with definite lengths that add up, at
//! most `ldap.max_message_kib`, at most [`check::MAX_DEPTH`] levels and [`check::max_elements`] elements,
//! single-byte tags (lber reads long-form tags differently, which would let a message look flat
//! here and deep there), made of a message id, one operation and optional controls, the
//! operation being an answer to the kind of request that id was (or, for id 0, an unsolicited
//! notice). TLS (LDAPS and StartTLS) is the relay's, so what it
//! checks is the plaintext. A message that fails a check closes the connection; the reason is
//! kept in the [`Verdict`] and named in the error of the operation that was waiting. The
//! entries of a paged search skip ldap3 ([`Diversion`]): decoding them into ldap3's tree was
//! most of the reading thread's work. A change feed's searches pass through ldap3, gated so
//! that what their reader has not taken stays bounded ([`gate`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::entry::RawEntry;
use super::SourceError;
use crate::config::{LdapConfig, TlsMode};

mod check;
mod entry;
mod gate;

use check::{abandoned, check, result_code};
pub(crate) use gate::Gate;

/// Why the relay closed the connection, when the server sent something unsound.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verdict(Arc<Mutex<Option<String>>>);

impl Verdict {
    fn set(&self, why: String) {
        if let Ok(mut v) = self.0.lock() {
            v.get_or_insert(why);
        }
    }

    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|v| v.clone())
    }
}

/// Entries the relay decoded itself, for one search (see [`Diversion`]).
pub(crate) type Entries = tokio::sync::mpsc::Receiver<RawEntry>;

/// Entries waiting for the reader of a diverted search (two pages of the default size): the
/// relay stops reading the server while they are full.
const ENTRIES_BUFFERED: usize = 1024;

/// Searches whose entries the relay decodes itself ([`entry::decode`]) and hands over through a
/// channel instead of passing them to ldap3, which still sees the rest of the search
/// (references, the result and its controls). A search diverted or not reads the same: what
/// the relay cannot divert (an entry its decoder refuses, which ldap3's path then reports as
/// before) goes to ldap3, and the reader takes entries from both.
#[derive(Debug, Clone, Default)]
pub(crate) struct Diversion(Arc<Mutex<Routes>>);

#[derive(Debug, Default)]
struct Routes {
    /// Nothing is diverted any more (see [`Diversion::stop`]).
    stopped: bool,
    /// For the next search request the relay passes on.
    next: Option<tokio::sync::mpsc::Sender<RawEntry>>,
    /// By message id, until the search's result: dropped before the result reaches ldap3,
    /// so every entry is in the channel when ldap3 says the search is over.
    by_id: HashMap<i64, tokio::sync::mpsc::Sender<RawEntry>>,
    /// The gate for the next search request the relay passes on.
    next_gate: Option<Arc<Gate>>,
    /// Gated searches by message id, until their result.
    gates: HashMap<i64, Arc<Gate>>,
    /// Requests that are not gated searches and await their answer: while there is one, no
    /// gate holds the relay back (it is answered behind what a gate would hold).
    awaited: HashSet<i64>,
    /// Wakes the relay held back by a gate.
    wake: Arc<tokio::sync::Notify>,
    /// Told when the relay takes what was registered for the next search request.
    taken: Arc<tokio::sync::Notify>,
}

impl Diversion {
    fn with<T>(&self, f: impl FnOnce(&mut Routes) -> T) -> Option<T> {
        self.0.lock().ok().map(|mut r| f(&mut r))
    }

    /// The entries of the next search request sent through the relay. Call
    /// [`Diversion::settled`] first.
    pub(crate) fn next_search(&self) -> Entries {
        let (tx, rx) = tokio::sync::mpsc::channel(ENTRIES_BUFFERED);
        self.with(|r| {
            if !r.stopped {
                r.next = Some(tx);
            }
        });
        rx
    }

    /// Waits until the relay has taken what was registered for the last search request sent:
    /// ldap3 hands a request over before the relay reads it (a persist search returns then),
    /// and a registration made meanwhile would be taken by that request instead of its own.
    /// Fails after `patience` (a relay that no longer reads: the connection is of no use),
    /// and nothing is diverted or gated on this connection any more.
    pub(crate) async fn settled(&self, patience: std::time::Duration) -> Result<(), String> {
        let Some(taken) = self.with(|r| r.taken.clone()) else {
            return Ok(());
        };
        let pending = || {
            self.with(|r| r.next.is_some() || r.next_gate.is_some())
                .unwrap_or(false)
        };
        let wait = async {
            while pending() {
                taken.notified().await;
            }
        };
        if tokio::time::timeout(patience, wait).await.is_err() {
            self.stop();
            return Err("the last search request was not taken on its way to the server within ldap.timeout_secs".into());
        }
        Ok(())
    }

    /// Gates the next search request sent through the relay (see [`gate`]): its reader
    /// calls [`Gate::took`] for every message it takes from ldap3. Call
    /// [`Diversion::settled`] first.
    pub(crate) fn gate_next_search(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate::new(self.with(|r| r.wake.clone()).unwrap_or_default()));
        self.with(|r| {
            if !r.stopped {
                r.next_gate = Some(gate.clone());
            }
        });
        gate
    }

    /// Diverts nothing more on this connection: a search request may still be on its way
    /// (its sending timed out), and it would take the next search's channel.
    pub(crate) fn stop(&self) {
        self.with(|r| {
            r.stopped = true;
            r.next = None;
            r.next_gate = None;
        });
    }

    /// Forgets a diversion or gate that no request took (its request was never sent).
    pub(crate) fn cancel_next(&self) {
        self.with(|r| {
            r.next = None;
            r.next_gate = None;
        });
    }

    fn search_sent(&self, id: i64) {
        self.with(|r| {
            if let Some(tx) = r.next.take() {
                r.by_id.insert(id, tx);
            }
            if let Some(gate) = r.next_gate.take() {
                r.gates.insert(id, gate);
            }
            r.taken.notify_one();
        });
    }

    /// A request `id` of kind `op` is on its way to the server.
    fn request(&self, id: i64, op: u8, msg: &[u8]) {
        self.with(|r| match op {
            // Unbind: nothing comes back.
            0x42 => {}
            // Abandon: nothing comes back, and nothing more for the search it names.
            0x50 => {
                if let Some(gone) = abandoned(msg) {
                    r.awaited.remove(&gone);
                    r.gates.remove(&gone);
                }
            }
            _ if r.gates.contains_key(&id) => {}
            _ => {
                r.awaited.insert(id);
                r.wake.notify_one();
            }
        });
    }

    /// The answer `op` to request `id` came: a final one ends what the request awaited.
    fn answered(&self, id: i64, op: u8) -> Option<Arc<Gate>> {
        self.with(|r| match op {
            // An entry, a reference, an intermediate message: more to come.
            0x64 | 0x73 | 0x79 => r.gates.get(&id).cloned(),
            _ => {
                r.awaited.remove(&id);
                r.gates.remove(&id);
                None
            }
        })
        .flatten()
    }

    /// True when a gated search's reader is too far behind and no other request awaits an
    /// answer: the relay waits for [`Diversion::wake`] before it reads the server again.
    fn hold(&self) -> bool {
        self.with(|r| r.awaited.is_empty() && r.gates.values().any(|g| g.hold()))
            .unwrap_or(false)
    }

    fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.with(|r| r.wake.clone()).unwrap_or_default()
    }

    fn route(&self, id: i64) -> Option<tokio::sync::mpsc::Sender<RawEntry>> {
        self.with(|r| r.by_id.get(&id).cloned()).flatten()
    }

    fn search_done(&self, id: i64) {
        self.with(|r| r.by_id.remove(&id));
    }

    fn clear(&self) {
        self.with(|r| {
            // Whoever waits on the old routes looks again.
            r.taken.notify_one();
            *r = Routes::default();
        });
    }
}

/// What a stream must be to carry LDAP: both ways, owned by the relay task.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Sets up TLS as configured on `tcp` and starts the relay. Returns ldap3's end of the pair.
pub(crate) async fn open(
    cfg: &LdapConfig,
    tcp: tokio::net::TcpStream,
) -> Result<(std::os::unix::net::UnixStream, Verdict, Diversion), SourceError> {
    let fail = |reason: String| SourceError::Connect {
        url: cfg.url.clone(),
        reason,
    };
    let max = cfg.max_message_kib.saturating_mul(1024);
    let server: Box<dyn Duplex> = match cfg.tls {
        TlsMode::Plain => Box::new(tcp),
        TlsMode::Ldaps => Box::new(tls(cfg, tcp).await?),
        TlsMode::StartTls => {
            let mut tcp = BufReader::new(tcp);
            match tokio::time::timeout(cfg.timeout, start_tls(&mut tcp, max)).await {
                Ok(r) => r.map_err(|e| fail(format!("StartTLS: {e}")))?,
                Err(_) => return Err(fail("StartTLS: no answer within ldap.timeout_secs".into())),
            }
            Box::new(tls(cfg, tcp.into_inner()).await?)
        }
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| fail(format!("cannot make a local socket pair: {e}")))?;
    theirs
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let theirs = tokio::net::UnixStream::from_std(theirs).map_err(|e| fail(e.to_string()))?;
    let verdict = Verdict::default();
    let diversion = Diversion::default();
    tokio::spawn(relay(
        server,
        theirs,
        max,
        cfg.timeout,
        verdict.clone(),
        diversion.clone(),
    ));
    Ok((ours, verdict, diversion))
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: &LdapConfig,
    stream: S,
) -> Result<tokio_native_tls::TlsStream<S>, SourceError> {
    let fail = |reason: String| SourceError::Tls {
        url: cfg.url.clone(),
        reason,
    };
    let connector =
        crate::tls::native_connector(cfg.ca_file.as_deref(), cfg.tls_verify).map_err(fail)?;
    let host = url::Url::parse(&cfg.url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_else(|| "localhost".into());
    let connector = tokio_native_tls::TlsConnector::from(connector);
    let handshake = connector.connect(&host, stream);
    match tokio::time::timeout(cfg.timeout, handshake).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let mut reason = e.to_string();
            if reason.contains("certificate") {
                reason.push_str(
                    " (check ldap.ca_file: it must hold the CA that signed the server's certificate, \
                     and the URL's host must be named in that certificate)",
                );
            }
            Err(SourceError::Connect {
                url: cfg.url.clone(),
                reason,
            })
        }
        Err(_) => Err(fail(format!("no TLS handshake within {:?}", cfg.timeout))),
    }
}

/// RFC 4511 §4.14: asks for TLS (message id 1; ldap3's own ids start later on another
/// layer and never overlap with an operation that is finished) and checks the answer.
async fn start_tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    max: usize,
) -> Result<(), String> {
    const OID: &[u8] = b"1.3.6.1.4.1.1466.20037";
    let mut request = vec![0x30, (7 + OID.len()) as u8, 0x02, 0x01, 0x01];
    request.extend([0x77, (2 + OID.len()) as u8, 0x80, OID.len() as u8]);
    request.extend(OID);
    stream
        .get_mut()
        .write_all(&request)
        .await
        .map_err(|e| e.to_string())?;
    let known: HashMap<i64, u8> = [(1, 0x77)].into();
    let answer = read_message(stream, max)
        .await?
        .ok_or("the server closed the connection")?;
    let (id, op) = check(&answer, Some(&known), check::max_elements(max))?;
    if id != 1 || op != 0x78 {
        return Err("the server did not answer the StartTLS request".into());
    }
    match result_code(&answer) {
        Some(0) => Ok(()),
        Some(rc) => Err(format!(
            "refused: {}",
            super::ldap::describe(u32::try_from(rc).unwrap_or(u32::MAX), "")
        )),
        None => Err("the StartTLS answer has no result code".into()),
    }
}

async fn relay(
    server: Box<dyn Duplex>,
    client: tokio::net::UnixStream,
    max: usize,
    timeout: std::time::Duration,
    verdict: Verdict,
    diversion: Diversion,
) {
    let (server_read, mut server_write) = tokio::io::split(server);
    let (client_read, client_write) = client.into_split();
    let mut client_write = tokio::io::BufWriter::with_capacity(64 * 1024, client_write);
    let mut server_read = BufReader::with_capacity(64 * 1024, server_read);
    let mut client_read = BufReader::new(client_read);
    let ids: Mutex<HashMap<i64, u8>> = Mutex::new(HashMap::new());
    let most = check::max_elements(max);
    let up = async {
        // The client's requests: framed to learn their message ids and kinds, sent on as they
        // are; a server that stops reading them ends the connection rather than the relay
        // waiting on it for ever.
        while let Some(msg) = read_message(&mut client_read, usize::MAX / 2).await? {
            let (id, op) = check(&msg, None, usize::MAX)?;
            if let Ok(mut known) = ids.lock() {
                known.insert(id, op);
            }
            // Before the server can answer it.
            if op == 0x63 {
                diversion.search_sent(id);
            }
            diversion.request(id, op, &msg);
            match tokio::time::timeout(timeout, server_write.write_all(&msg)).await {
                Ok(r) => r.map_err(|e| e.to_string())?,
                Err(_) => return Err("the server does not take requests".to_string()),
            }
        }
        Ok::<(), String>(())
    };
    let wake = diversion.wake();
    let down = async {
        let passed = async {
            loop {
                // A gated search's reader is behind (and nothing else is awaited): what was
                // passed on reaches ldap3, then the server waits.
                if diversion.hold() {
                    client_write.flush().await.map_err(|e| e.to_string())?;
                    while diversion.hold() {
                        wake.notified().await;
                    }
                }
                let Some(msg) = read_message(&mut server_read, max).await? else {
                    break;
                };
                let checked = match ids.lock() {
                    Ok(known) => check(&msg, Some(&known), most),
                    Err(_) => Err("the relay's state is unusable".to_string()),
                };
                let (id, op) = match checked {
                    Ok(answer) => answer,
                    Err(why) => return Err(format!("the server sent an unsound message: {why}")),
                };
                let diverted = match op {
                    0x64 => diversion.route(id),
                    0x65 => {
                        diversion.search_done(id);
                        None
                    }
                    _ => None,
                };
                let gate = diversion.answered(id, op);
                // A reader that gave the search up has dropped its end: its entries go nowhere,
                // as ldap3 would have dropped them. An entry our decoder refuses goes on to
                // ldap3, whose path reports it as it always did (an error of that search, the
                // connection kept).
                let taken = match diverted {
                    Some(to) if to.is_closed() => true,
                    Some(to) => match entry::decode(&msg) {
                        Ok(entry) => {
                            let _ = to.send(entry).await;
                            true
                        }
                        Err(_) => false,
                    },
                    None => false,
                };
                if taken {
                    if !whole_message(server_read.buffer()) {
                        client_write.flush().await.map_err(|e| e.to_string())?;
                    }
                    continue;
                }
                client_write
                    .write_all(&msg)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(g) = gate {
                    g.passed(msg.len());
                }
                // Passed on at once unless another whole message is already here: a search's
                // entries reach ldap3 in a few writes, not one system call each, and a lone
                // message (a change notice) is never held back.
                if !whole_message(server_read.buffer()) {
                    client_write.flush().await.map_err(|e| e.to_string())?;
                }
            }
            Ok::<(), String>(())
        }
        .await;
        // What was sound reaches ldap3 before the connection ends, as before batching.
        let _ = client_write.flush().await;
        passed
    };
    // The client closing its end (or failing to write) ends the session; only what the
    // server sent can be a verdict.
    let ended = tokio::select! {
        _ = up => None,
        r = down => r.err(),
    };
    // Readers of diverted searches see their channels close (and ldap3 the connection end).
    diversion.clear();
    if let Some(why) = ended {
        // An I/O error is the network's, not a verdict on the server.
        if why.starts_with("the server sent") || why.starts_with("a message") {
            tracing::warn!("LDAP connection closed: {why}");
            verdict.set(why);
        }
    }
}

/// Whether `buf` begins with a whole message (framed as [`read_message`] frames it; anything
/// it would refuse counts as not whole, so what came before is passed on first).
fn whole_message(buf: &[u8]) -> bool {
    let (header, len) = match buf.get(1) {
        None | Some(0x80) => return false,
        Some(&n) if n < 0x80 => (2, usize::from(n)),
        Some(&n) => {
            let k = usize::from(n & 0x7f);
            let Some(bytes) = buf.get(2..2 + k).filter(|_| k <= 4) else {
                return false;
            };
            let len = bytes
                .iter()
                .fold(0usize, |acc, x| (acc << 8) | usize::from(*x));
            (2 + k, len)
        }
    };
    buf.len() >= header.saturating_add(len)
}

/// Reads one whole message (`None` at a clean end of stream). A declared length over `max`, an
/// indefinite length, or something that is not a SEQUENCE is refused before its body is read.
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, String> {
    let mut first = [0u8; 1];
    match r.read(&mut first).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    if first[0] != 0x30 {
        return Err(format!(
            "the server sent something that is not an LDAP message (first byte {:#04x})",
            first[0]
        ));
    }
    let mut msg = vec![first[0]];
    let mut b = [0u8; 1];
    r.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    msg.push(b[0]);
    let len = match b[0] {
        n if n < 0x80 => usize::from(n),
        0x80 => return Err("the server sent a message of indefinite length".into()),
        n => {
            let k = usize::from(n & 0x7f);
            if k > 4 {
                return Err(format!(
                    "the server sent a message whose length takes {k} bytes"
                ));
            }
            let mut l = [0u8; 4];
            r.read_exact(&mut l[..k]).await.map_err(|e| e.to_string())?;
            msg.extend_from_slice(&l[..k]);
            l[..k]
                .iter()
                .fold(0usize, |acc, x| (acc << 8) | usize::from(*x))
        }
    };
    if len.saturating_add(msg.len()) > max {
        return Err(format!(
            "a message of {} bytes, over ldap.max_message_kib ({} KiB)",
            len.saturating_add(msg.len()),
            max / 1024
        ));
    }
    // Grown as the bytes come (a declared length alone does not get its memory).
    msg.reserve(len.min(64 * 1024));
    let got = r
        .take(len as u64)
        .read_to_end(&mut msg)
        .await
        .map_err(|e| e.to_string())?;
    if got < len {
        return Err(format!(
            "the server sent {got} of a message's {len} bytes and closed the connection"
        ));
    }
    Ok(Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay between a test "server" (a duplex of `buffer` bytes) and a test "ldap3": the
    /// server's end, ldap3's ends, the diversion and the relay's task.
    fn relay_between(
        buffer: usize,
    ) -> (
        tokio::io::DuplexStream,
        (
            tokio::net::unix::OwnedReadHalf,
            tokio::net::unix::OwnedWriteHalf,
        ),
        Diversion,
        tokio::task::JoinHandle<()>,
    ) {
        let (server_end, server) = tokio::io::duplex(buffer);
        let (ldap3_end, relay_end) =
            tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let diversion = Diversion::default();
        let task = tokio::spawn(relay(
            Box::new(server_end),
            relay_end,
            1 << 20,
            std::time::Duration::from_secs(5),
            Verdict::default(),
            diversion.clone(),
        ));
        (server, ldap3_end.into_split(), diversion, task)
    }

    /// A bind response with result 0.
    fn bind_ok(id: u8) -> Vec<u8> {
        vec![
            0x30, 0x0c, 0x02, 0x01, id, 0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
        ]
    }

    #[test]
    fn a_message_is_whole_only_when_every_byte_it_declares_is_there() {
        let ok = bind_ok(1);
        assert!(whole_message(&ok));
        assert!(whole_message(&[ok.clone(), ok.clone()].concat()));
        for cut in 0..ok.len() {
            assert!(!whole_message(&ok[..cut]), "{cut}");
        }
        // Long-form lengths: 0x81 0x80 is 128 bytes of body.
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend(std::iter::repeat_n(0u8, 128));
        assert!(whole_message(&long));
        assert!(!whole_message(&long[..long.len() - 1]));
        // What framing refuses is never "whole": indefinite, or a length of over 4 bytes.
        assert!(!whole_message(&[0x30, 0x80, 0x00, 0x00]));
        assert!(!whole_message(&[0x30, 0x85, 0, 0, 0, 0, 1, 0]));
    }

    /// `SEQUENCE { id, op }` with short lengths.
    fn message(id: u8, op: &[u8]) -> Vec<u8> {
        let mut m = vec![0x30, (3 + op.len()) as u8, 0x02, 0x01, id];
        m.extend_from_slice(op);
        m
    }

    fn entry_op(dn: &str, value: &str) -> Vec<u8> {
        let (dn, value) = (dn.as_bytes(), value.as_bytes());
        let set = [
            &[0x31, (2 + value.len()) as u8, 0x04, value.len() as u8][..],
            value,
        ]
        .concat();
        let attr = [&[0x30, (4 + set.len()) as u8, 0x04, 0x02][..], b"cn", &set].concat();
        let list = [&[0x30, attr.len() as u8][..], &attr].concat();
        let body = [&[0x04, dn.len() as u8][..], dn, &list].concat();
        [&[0x64, body.len() as u8][..], &body].concat()
    }

    /// The relay between a test "server" and a test "ldap3", a diverted search request sent
    /// through it: the entries come through the diversion, the rest to ldap3's side, the
    /// channel closed before the result is passed on; a second search, not diverted, reaches
    /// ldap3 whole.
    #[tokio::test]
    async fn a_diverted_search_s_entries_reach_the_reader_and_the_rest_reaches_ldap3() {
        let (mut server, (mut ldap3_read, mut ldap3_write), diversion, _relay_task) =
            relay_between(1 << 16);
        let search = |id| message(id, &[0x63, 0x00]);
        let done = |id| message(id, &[0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00]);
        for (id, diverted) in [(2u8, true), (3, false), (4, true)] {
            let mut entries = diverted.then(|| diversion.next_search());
            ldap3_write
                .write_all(&search(id))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut request = vec![0u8; search(id).len()];
            server
                .read_exact(&mut request)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(request, search(id));
            let (e1, mut e2) = (
                message(id, &entry_op("cn=a", "a")),
                message(id, &entry_op("cn=b", "b")),
            );
            // The last search's second entry has a DN that is not UTF-8: refused by the relay's
            // decoder, it goes to ldap3, whose path reports it (the connection stays).
            let refused = id == 4;
            if refused {
                let at = 9; // message and operation headers, the id, the DN's header
                assert_eq!(&e2[at..at + 4], b"cn=b");
                e2[at + 3] = 0xff;
            }
            let answers = [e1.clone(), e2.clone(), done(id)].concat();
            server
                .write_all(&answers)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let expected = match (diverted, refused) {
                (true, false) => done(id),
                (true, true) => [e2.clone(), done(id)].concat(),
                (false, _) => answers.clone(),
            };
            let mut passed = vec![0u8; expected.len()];
            ldap3_read
                .read_exact(&mut passed)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(passed, expected, "search {id}");
            if let Some(entries) = entries.as_mut() {
                // Closed before the result was passed on: both entries are there, then the end.
                let mut dns = Vec::new();
                while let Ok(e) = entries.try_recv() {
                    dns.push(e.dn);
                }
                assert_eq!(
                    dns,
                    if refused {
                        vec!["cn=a"]
                    } else {
                        vec!["cn=a", "cn=b"]
                    }
                );
                assert!(matches!(
                    entries.try_recv(),
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
                ));
            }
        }
    }

    /// Reads what reaches ldap3's side until nothing more comes for a moment: how many
    /// messages of `size` bytes.
    async fn messages_within_a_moment<R: AsyncRead + Unpin>(r: &mut R, size: usize) -> usize {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(300), r.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len() % size, 0, "whole messages");
        got.len() / size
    }

    /// A gated search whose reader takes nothing: the relay passes on `HIGH` + 1 of its
    /// messages and stops reading the server; the reader taking them down to `LOW` lets as
    /// many more through. Another request on the connection (a heartbeat's read) is never
    /// held back behind them: its answer comes, after the rest of the search's messages.
    #[tokio::test]
    async fn a_gated_search_holds_the_server_back_while_its_reader_is_behind_but_never_an_awaited_answer(
    ) {
        use gate::{HIGH, LOW};
        let (mut server, (mut ldap3_read, mut ldap3_write), diversion, _relay_task) =
            relay_between(1 << 22);
        let request = |id| message(id, &[0x63, 0x00]);
        let gate = diversion.gate_next_search();
        ldap3_write
            .write_all(&request(2))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = vec![0u8; request(2).len()];
        server
            .read_exact(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let entry = message(2, &entry_op("cn=a", "a"));
        let n = 2000usize;
        server
            .write_all(&entry.repeat(n))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let high = usize::try_from(HIGH).unwrap_or(usize::MAX);
        let low = usize::try_from(LOW).unwrap_or(usize::MAX);
        assert_eq!(
            messages_within_a_moment(&mut ldap3_read, entry.len()).await,
            high + 1,
            "held back once the reader is behind"
        );
        for _ in 0..(high - low) {
            gate.took();
        }
        assert_eq!(
            messages_within_a_moment(&mut ldap3_read, entry.len()).await,
            0,
            "still over LOW"
        );
        gate.took();
        assert_eq!(
            messages_within_a_moment(&mut ldap3_read, entry.len()).await,
            high + 1 - low,
            "down to LOW: read on up to HIGH again"
        );
        assert_eq!(gate.peak(), HIGH + 1);
        // The heartbeat: a base search, answered behind the search's remaining messages.
        ldap3_write
            .write_all(&request(3))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = vec![0u8; request(3).len()];
        server
            .read_exact(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let done = message(3, &[0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00]);
        server
            .write_all(&done)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rest = n - 2 * (high + 1) + low;
        let mut passed = vec![0u8; rest * entry.len() + done.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ldap3_read.read_exact(&mut passed),
        )
        .await
        .unwrap_or_else(|_| panic!("the awaited answer was held back"))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&passed[rest * entry.len()..], &done[..]);
    }

    /// A BER element with a definite length of any size.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// Large messages (a group of many members) hold the relay back by their bytes, before
    /// their count would: it passes on just over `HIGH_BYTES` of them, then waits.
    #[tokio::test]
    async fn a_gated_search_of_large_messages_is_held_back_by_their_bytes() {
        use gate::{HIGH, HIGH_BYTES};
        let (mut server, (mut ldap3_read, mut ldap3_write), diversion, _relay_task) =
            relay_between(1 << 26);
        let request = message(2, &[0x63, 0x00]);
        let _gate = diversion.gate_next_search();
        ldap3_write
            .write_all(&request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = vec![0u8; request.len()];
        server
            .read_exact(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let value = vec![b'm'; 64 * 1024];
        let attr = tlv(
            0x30,
            &[tlv(0x04, b"member"), tlv(0x31, &tlv(0x04, &value))].concat(),
        );
        let op = tlv(0x64, &[tlv(0x04, b"cn=g"), tlv(0x30, &attr)].concat());
        let entry = tlv(0x30, &[&[0x02, 0x01, 0x02][..], &op].concat());
        let size = entry.len() as u64;
        let n = 500u64;
        assert!(n * size > HIGH_BYTES + 10 * size && n < HIGH);
        for _ in 0..n {
            server
                .write_all(&entry)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let passed = messages_within_a_moment(&mut ldap3_read, entry.len()).await as u64;
        assert_eq!(passed, HIGH_BYTES / size + 1, "held back by bytes");
    }

    /// Two persist searches started back to back: ldap3 hands each request over before the
    /// relay reads it, so the second registration waits until the relay has taken the first
    /// (else the first request would take the second gate). A registration no request takes
    /// is given up after the patience, and the connection diverts nothing more.
    #[tokio::test]
    async fn each_registration_is_taken_by_its_own_request() {
        let (mut server, (_ldap3_read, mut ldap3_write), diversion, relay_task) =
            relay_between(1 << 16);
        let patience = std::time::Duration::from_secs(5);
        let mut gates = Vec::new();
        for id in [2u8, 3] {
            gates.push((i64::from(id), diversion.gate_next_search()));
            ldap3_write
                .write_all(&message(id, &[0x63, 0x00]))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // Handed over, not yet read by the relay (or just read): wait for it.
            diversion
                .settled(patience)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for (id, gate) in &gates {
            let attached = diversion.with(|r| r.gates.get(id).cloned()).flatten();
            assert!(attached.is_some_and(|g| Arc::ptr_eq(&g, gate)), "{id}");
        }
        let mut requests = vec![0u8; 2 * message(2, &[0x63, 0x00]).len()];
        server
            .read_exact(&mut requests)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A registration that no request takes: an error, nothing gated or diverted after.
        let _orphan = diversion.gate_next_search();
        assert!(diversion
            .settled(std::time::Duration::from_millis(100))
            .await
            .is_err());
        let _late = diversion.gate_next_search();
        assert!(diversion.with(|r| r.next_gate.is_none()) == Some(true));
        relay_task.abort();
    }

    #[test]
    fn a_stopped_diversion_diverts_nothing_and_a_cancelled_one_takes_no_request() {
        let d = Diversion::default();
        let _rx = d.next_search();
        d.cancel_next();
        d.search_sent(5);
        assert!(d.route(5).is_none());
        d.stop();
        let mut rx = d.next_search();
        d.search_sent(6);
        assert!(d.route(6).is_none());
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[tokio::test]
    async fn framing_refuses_oversized_and_indefinite_messages_before_reading_them() {
        let mut huge: &[u8] = &[0x30, 0x84, 0xff, 0xff, 0xff, 0xf0, 0x00];
        assert!(read_message(&mut huge, 1024)
            .await
            .unwrap_err()
            .contains("max_message_kib"));
        let mut indefinite: &[u8] = &[0x30, 0x80, 0x00, 0x00];
        assert!(read_message(&mut indefinite, 1024).await.is_err());
        let mut not_ldap: &[u8] = &[0xff; 8];
        assert!(read_message(&mut not_ldap, 1024)
            .await
            .unwrap_err()
            .contains("not an LDAP message"));
        let ok = bind_ok(1);
        let mut two = [ok.clone(), ok.clone()].concat();
        let mut r: &[u8] = &mut two;
        assert_eq!(read_message(&mut r, 1024).await, Ok(Some(ok.clone())));
        assert_eq!(read_message(&mut r, 1024).await, Ok(Some(ok)));
        assert_eq!(read_message(&mut r, 1024).await, Ok(None));
        let mut cut: &[u8] = &bind_ok(1)[..6];
        assert!(read_message(&mut cut, 1024)
            .await
            .unwrap_err()
            .contains("closed"));
    }
}
