//! The bytes between the directory and ldap3. ldap3's BER decoder recurses once per nesting
//! level (a message nested ten thousand deep overflows the stack: an abort no guard can catch),
//! takes any declared length at its word (one message can ask for gigabytes), logs every answer
//! to a request it did not make, and runs in a task of its own where a panic silently ends the
//! connection. So ldap3 talks over a local socket pair to a relay that frames every message
//! itself and forwards only what is sound: a SEQUENCE with definite lengths that add up, at
//! most `ldap.max_message_kib`, at most [`MAX_DEPTH`] levels, answering a message id the client
//! used (or 0, an unsolicited notice). TLS (LDAPS and StartTLS) is the relay's, so what it
//! checks is the plaintext. A message that fails a check closes the connection; the reason is
//! kept in the [`Verdict`] and named in the error of the operation that was waiting.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::SourceError;
use crate::config::{LdapConfig, TlsMode};

/// Nesting levels a message may have. LDAP's deepest answers (an entry's values, a control's
/// parts) stay under ten.
pub(crate) const MAX_DEPTH: usize = 32;

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

/// What a stream must be to carry LDAP: both ways, owned by the relay task.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Sets up TLS as configured on `tcp` and starts the relay. Returns ldap3's end of the pair.
pub(crate) async fn open(
    cfg: &LdapConfig,
    tcp: tokio::net::TcpStream,
) -> Result<(std::os::unix::net::UnixStream, Verdict), SourceError> {
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
            start_tls(&mut tcp, max)
                .await
                .map_err(|e| fail(format!("StartTLS: {e}")))?;
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
    tokio::spawn(relay(server, theirs, max, verdict.clone()));
    Ok((ours, verdict))
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
    let known: HashSet<i64> = [1].into();
    let answer = read_message(stream, max)
        .await?
        .ok_or("the server closed the connection")?;
    let (id, op) = check(&answer, Some(&known))?;
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

/// The result code of an answer (the first element of its operation).
fn result_code(msg: &[u8]) -> Option<i64> {
    let (_, seq) = header(msg, 0).ok()?;
    let (id_len, id_hdr) = header(msg, seq).ok()?;
    let op_at = seq + id_hdr + id_len;
    let (_, op_hdr) = header(msg, op_at).ok()?;
    let rc_at = op_at + op_hdr;
    let (rc_len, rc_hdr) = header(msg, rc_at).ok()?;
    let bytes = msg.get(rc_at + rc_hdr..rc_at + rc_hdr + rc_len)?;
    integer(bytes)
}

async fn relay(
    server: Box<dyn Duplex>,
    client: tokio::net::UnixStream,
    max: usize,
    verdict: Verdict,
) {
    let (server_read, mut server_write) = tokio::io::split(server);
    let (client_read, mut client_write) = client.into_split();
    let mut server_read = BufReader::with_capacity(64 * 1024, server_read);
    let mut client_read = BufReader::new(client_read);
    let ids: Mutex<HashSet<i64>> = Mutex::new(HashSet::new());
    let up = async {
        // The client's requests: framed to learn their message ids, sent on as they are.
        while let Some(msg) = read_message(&mut client_read, usize::MAX / 2).await? {
            let (id, _) = check(&msg, None)?;
            if let Ok(mut known) = ids.lock() {
                known.insert(id);
            }
            server_write
                .write_all(&msg)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    let down = async {
        while let Some(msg) = read_message(&mut server_read, max).await? {
            let checked = match ids.lock() {
                Ok(known) => check(&msg, Some(&known)).map(|_| ()),
                Err(_) => Err("the relay's state is unusable".to_string()),
            };
            if let Err(why) = checked {
                return Err(format!("the server sent an unsound message: {why}"));
            }
            client_write
                .write_all(&msg)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    // The client closing its end (or failing to write) ends the session; only what the
    // server sent can be a verdict.
    let ended = tokio::select! {
        _ = up => None,
        r = down => r.err(),
    };
    if let Some(why) = ended {
        // An I/O error is the network's, not a verdict on the server.
        if why.starts_with("the server sent") || why.starts_with("a message") {
            tracing::warn!("LDAP connection closed: {why}");
            verdict.set(why);
        }
    }
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
    if len > max {
        return Err(format!(
            "a message of {len} bytes, over ldap.max_message_kib ({} KiB)",
            max / 1024
        ));
    }
    let mut body = Vec::new();
    let got = r
        .take(len as u64)
        .read_to_end(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if got < len {
        return Err(format!(
            "the server sent {got} of a message's {len} bytes and closed the connection"
        ));
    }
    msg.extend_from_slice(&body);
    Ok(Some(msg))
}

/// One BER header at `at`: (content length, header length). Definite lengths only (RFC 4511
/// §5.1), tags of at most four bytes.
fn header(buf: &[u8], at: usize) -> Result<(usize, usize), String> {
    let tag = *buf.get(at).ok_or("a truncated element")?;
    let mut i = at + 1;
    if tag & 0x1f == 0x1f {
        // A multi-byte tag number.
        loop {
            let b = *buf.get(i).ok_or("a truncated tag")?;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            if i - at > 4 {
                return Err("a tag of more than four bytes".into());
            }
        }
    }
    let l = *buf.get(i).ok_or("a truncated length")?;
    i += 1;
    let len = match l {
        n if n < 0x80 => usize::from(n),
        0x80 => return Err("an indefinite length".into()),
        n => {
            let k = usize::from(n & 0x7f);
            if k > 4 {
                return Err(format!("a length of {k} bytes"));
            }
            let bytes = buf.get(i..i + k).ok_or("a truncated length")?;
            i += k;
            bytes
                .iter()
                .fold(0usize, |acc, x| (acc << 8) | usize::from(*x))
        }
    };
    Ok((len, i - at))
}

fn integer(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    let mut n: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    for x in b {
        n = (n << 8) | i64::from(*x);
    }
    Some(n)
}

/// Checks a whole message: every length fits in its parent, nothing nests deeper than
/// [`MAX_DEPTH`], and it starts with an INTEGER message id that is 0 or one of `known`.
/// Returns (message id, operation tag).
fn check(msg: &[u8], known: Option<&HashSet<i64>>) -> Result<(i64, u8), String> {
    let (len, hdr) = header(msg, 0)?;
    if hdr + len != msg.len() {
        return Err("a message whose length does not match its content".into());
    }
    // Ends of the constructed elements we are inside, innermost last.
    let mut open: Vec<usize> = vec![msg.len()];
    let mut at = hdr;
    while at < msg.len() {
        while open.last() == Some(&at) {
            open.pop();
        }
        let (len, hdr) = header(msg, at)?;
        let end = at
            .checked_add(hdr)
            .and_then(|x| x.checked_add(len))
            .ok_or("an element too long")?;
        if open.last().is_some_and(|&parent| end > parent) {
            return Err("an element longer than what holds it".into());
        }
        if msg[at] & 0x20 != 0 {
            if open.len() + 1 > MAX_DEPTH {
                return Err(format!("elements nested more than {MAX_DEPTH} deep"));
            }
            open.push(end);
            at += hdr;
        } else {
            at = end;
        }
    }
    let (id_len, id_hdr) = header(msg, hdr)?;
    if msg.get(hdr) != Some(&0x02) {
        return Err("a message without a message id".into());
    }
    let id = msg
        .get(hdr + id_hdr..hdr + id_hdr + id_len)
        .and_then(integer)
        .ok_or("a message id that is not a number")?;
    let op = *msg
        .get(hdr + id_hdr + id_len)
        .ok_or("a message without an operation")?;
    if let Some(known) = known {
        if id != 0 && !known.contains(&id) {
            return Err(format!("an answer to message {id}, which was never sent"));
        }
    }
    Ok((id, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u8, op: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, id];
        body.extend_from_slice(op);
        let mut m = if body.len() < 0x80 {
            vec![0x30, body.len() as u8]
        } else {
            let mut h = vec![0x30, 0x84];
            h.extend((body.len() as u32).to_be_bytes());
            h
        };
        m.extend(body);
        m
    }

    /// A bind response with result 0.
    fn bind_ok(id: u8) -> Vec<u8> {
        msg(id, &[0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00])
    }

    #[test]
    fn sound_messages_pass_and_their_ids_and_codes_are_read() {
        let known: HashSet<i64> = [3].into();
        assert_eq!(check(&bind_ok(3), Some(&known)), Ok((3, 0x61)));
        assert_eq!(result_code(&bind_ok(3)), Some(0));
        // An unsolicited notice (id 0) is always let through.
        assert!(check(&bind_ok(0), Some(&known)).is_ok());
    }

    #[test]
    fn unsound_messages_are_refused() {
        let known: HashSet<i64> = [3].into();
        assert!(check(&bind_ok(4), Some(&known))
            .unwrap_err()
            .contains("never sent"));
        // Lengths that do not add up.
        let mut m = bind_ok(3);
        m[1] += 1;
        assert!(check(&m, Some(&known)).is_err());
        let mut m = bind_ok(3);
        m[4] = 0x09;
        assert!(check(&m, Some(&known)).is_err());
        // Indefinite length inside.
        let m = msg(3, &[0x61, 0x80, 0x00, 0x00]);
        assert!(check(&m, Some(&known)).is_err());
        // Nested deeper than allowed.
        let mut inner = vec![0x04, 0x00];
        for _ in 0..MAX_DEPTH {
            let mut outer = vec![0x30, 0x84];
            outer.extend((inner.len() as u32).to_be_bytes());
            outer.extend(inner);
            inner = outer;
        }
        let m = msg(
            3,
            &[
                &[0x64, 0x84][..],
                &(inner.len() as u32).to_be_bytes(),
                &inner,
            ]
            .concat(),
        );
        assert!(check(&m, Some(&known)).unwrap_err().contains("nested"));
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

    proptest::proptest! {
        #[test]
        fn any_bytes_are_checked_without_panicking(v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let known: HashSet<i64> = [1, 2].into();
            let _ = check(&v, Some(&known));
            let _ = result_code(&v);
        }
    }
}
