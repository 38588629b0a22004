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

/// A connection upgraded by StartTLS, for a TLS client of its own (`check`'s probe).
pub(crate) async fn start_tls_plain(
    cfg: &LdapConfig,
    tcp: tokio::net::TcpStream,
) -> Result<tokio::net::TcpStream, String> {
    let mut tcp = BufReader::new(tcp);
    let max = cfg.max_message_kib.saturating_mul(1024);
    match tokio::time::timeout(cfg.timeout, start_tls(&mut tcp, max)).await {
        Ok(r) => r.map_err(|e| format!("StartTLS: {e}"))?,
        Err(_) => return Err("StartTLS: no answer within ldap.timeout_secs".into()),
    }
    Ok(tcp.into_inner())
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
mod tests;
