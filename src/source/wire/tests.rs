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
    let (ldap3_end, relay_end) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
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
