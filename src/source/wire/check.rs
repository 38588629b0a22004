//! The checks a message from the directory must pass before ldap3 decodes it (see the parent
//! module): BER structure, size, depth, element count, shape, and what it answers.

use std::collections::HashMap;

use crate::source::ber::integer_value as integer;

/// Nesting levels a message may have. LDAP's deepest answers (an entry's values, a control's
/// parts) stay under ten.
pub(super) const MAX_DEPTH: usize = 32;

/// Elements one message may hold, for a size limit of `max` bytes: one per 32 bytes of the
/// limit, at least 1,024. ldap3 spends some 80 bytes on each element it decodes, so whatever
/// the message, its decoded form stays within about 2.5 times the configured limit (a 64 MiB
/// message of two-byte empty values would otherwise take 3 GB).
pub(super) fn max_elements(max: usize) -> usize {
    (max / 32).max(1024)
}

/// The answers each kind of request may get (LDAP application tags, RFC 4511 §4).
fn answers(request: u8) -> &'static [u8] {
    match request {
        0x60 => &[0x61],                   // bind
        0x63 => &[0x64, 0x65, 0x73, 0x79], // search: entry, done, reference, intermediate
        0x66 => &[0x67],                   // modify
        0x68 => &[0x69],                   // add
        0x4a => &[0x6b],                   // delete
        0x6c => &[0x6d],                   // modify DN
        0x6e => &[0x6f],                   // compare
        0x77 => &[0x78, 0x79],             // extended
        _ => &[],
    }
}

/// Each control in the `[0]` element at `at` is `SEQUENCE { OCTET STRING, [BOOLEAN],
/// [OCTET STRING] }` with primitive parts (ldap3 panics on anything else there).
fn check_controls(msg: &[u8], at: usize) -> Result<(), String> {
    let (len, h) = header(msg, at)?;
    let end = at + h + len;
    let mut c = at + h;
    while c < end {
        let (clen, ch) = header(msg, c)?;
        if msg[c] != 0x30 {
            return Err("a control that is not a sequence".into());
        }
        let cend = c + ch + clen;
        let mut p = c + ch;
        let mut parts = Vec::new();
        while p < cend {
            let (plen, ph) = header(msg, p)?;
            parts.push((msg[p], plen));
            p += ph + plen;
        }
        let fine = matches!(
            parts.as_slice(),
            [(0x04, _)]
                | [(0x04, _), (0x04, _)]
                | [(0x04, _), (0x01, 1)]
                | [(0x04, _), (0x01, 1), (0x04, _)]
        );
        if !fine {
            return Err("a control that is not a type, a criticality and a value".into());
        }
        utf8(msg, c + ch, "a control type")?;
        c = cend;
    }
    Ok(())
}

/// The parts of the element at `at`: (tag, where the part starts, its content length).
fn parts(msg: &[u8], at: usize) -> Result<Vec<(u8, usize, usize)>, String> {
    let (len, h) = header(msg, at)?;
    let end = at + h + len;
    let mut out = Vec::new();
    let mut p = at + h;
    while p < end {
        let (l, ph) = header(msg, p)?;
        out.push((msg[p], p, l));
        p += ph + l;
    }
    Ok(out)
}

/// A part's content.
fn content(msg: &[u8], at: usize) -> Result<&[u8], String> {
    let (len, h) = header(msg, at)?;
    msg.get(at + h..at + h + len)
        .ok_or_else(|| "a truncated element".to_string())
}

fn utf8(msg: &[u8], at: usize, what: &str) -> Result<(), String> {
    std::str::from_utf8(content(msg, at)?)
        .map(|_| ())
        .map_err(|_| format!("{what} that is not UTF-8"))
}

/// An answer's fields, as ldap3 will read them (it panics on anything else): an LDAPResult is
/// a result code (ENUMERATED of 1 to 4 bytes: an empty one would read as success), a matched DN
/// and a diagnostic message (UTF-8 strings), then an optional referral of UTF-8 URIs, and
/// only what the operation adds (a bind's SASL credentials; an extended answer's name and
/// value). A search reference is UTF-8 URIs. Entries and intermediate messages are decoded by
/// our own code, which takes anything.
fn check_operation(msg: &[u8], at: usize, op: u8) -> Result<(), String> {
    let is_result = matches!(op, 0x61 | 0x65 | 0x67 | 0x69 | 0x6b | 0x6d | 0x6f | 0x78);
    if op == 0x73 {
        for (tag, part, _) in parts(msg, at)? {
            if tag != 0x04 {
                return Err("a search reference that is not a list of URIs".into());
            }
            utf8(msg, part, "a search reference")?;
        }
        return Ok(());
    }
    if !is_result {
        return Ok(());
    }
    let p = parts(msg, at)?;
    match p.as_slice() {
        [(0x0a, _, 1..=4), (0x04, ..), (0x04, ..), ..] => {}
        _ => {
            return Err(
                "a result that is not a result code, a matched DN and a diagnostic message".into(),
            )
        }
    }
    utf8(msg, p[1].1, "a matched DN")?;
    utf8(msg, p[2].1, "a diagnostic message")?;
    for &(tag, part, _) in &p[3..] {
        match (op, tag) {
            (_, 0xa3) => {
                for (t, uri, _) in parts(msg, part)? {
                    if t != 0x04 {
                        return Err("a referral that is not a list of URIs".into());
                    }
                    utf8(msg, uri, "a referral")?;
                }
            }
            (0x61, 0x87) | (0x78, 0x8b) => {}
            (0x78, 0x8a) => utf8(msg, part, "an extended answer's name")?,
            _ => return Err(format!("a result with an unexpected part {tag:#04x}")),
        }
    }
    Ok(())
}

/// The message id an abandon request names (its operation is that INTEGER, primitive).
pub(super) fn abandoned(msg: &[u8]) -> Option<i64> {
    let (_, seq) = header(msg, 0).ok()?;
    let (id_len, id_hdr) = header(msg, seq).ok()?;
    let op_at = seq + id_hdr + id_len;
    if msg.get(op_at) != Some(&0x50) {
        return None;
    }
    let (len, hdr) = header(msg, op_at).ok()?;
    integer(msg.get(op_at + hdr..op_at + hdr + len)?)
}

/// The result code of an answer (the first element of its operation).
pub(super) fn result_code(msg: &[u8]) -> Option<i64> {
    let (_, seq) = header(msg, 0).ok()?;
    let (id_len, id_hdr) = header(msg, seq).ok()?;
    let op_at = seq + id_hdr + id_len;
    let (_, op_hdr) = header(msg, op_at).ok()?;
    let rc_at = op_at + op_hdr;
    let (rc_len, rc_hdr) = header(msg, rc_at).ok()?;
    let bytes = msg.get(rc_at + rc_hdr..rc_at + rc_hdr + rc_len)?;
    integer(bytes)
}

/// One BER header at `at`: (content length, header length). Definite lengths only (RFC 4511
/// §5.1), tags of one byte.
pub(super) fn header(buf: &[u8], at: usize) -> Result<(usize, usize), String> {
    let tag = *buf.get(at).ok_or("a truncated element")?;
    let mut i = at + 1;
    if tag & 0x1f == 0x1f {
        // No LDAP tag needs the long form, and lber would read it as tag 31 and a length.
        return Err("a tag in the long form".into());
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

/// Checks a whole message: every length fits in its parent, nothing nests deeper than
/// [`MAX_DEPTH`], at most [`max_elements`] elements, and it is an INTEGER message id, one
/// operation and optional `[0]` controls. With `known` (the requests made, by id), the id must
/// be one of them and the operation an answer to that kind of request; id 0 may only be an
/// unsolicited notice (an extended response). Returns (message id, operation tag).
pub(super) fn check(
    msg: &[u8],
    known: Option<&HashMap<i64, u8>>,
    most: usize,
) -> Result<(i64, u8), String> {
    let (len, hdr) = header(msg, 0)?;
    if hdr + len != msg.len() {
        return Err("a message whose length does not match its content".into());
    }
    let mut elements = 0usize;
    // Ends of the constructed elements we are inside, innermost last.
    let mut open: Vec<usize> = vec![msg.len()];
    // The message's own elements: (tag, start).
    let mut top: Vec<(u8, usize)> = Vec::new();
    let mut at = hdr;
    while at < msg.len() {
        while open.last() == Some(&at) {
            open.pop();
        }
        let (len, h) = header(msg, at)?;
        elements += 1;
        if elements > most {
            return Err(format!(
                "more than {most} elements in one message of {} bytes (one per 32 bytes of ldap.max_message_kib)",
                msg.len()
            ));
        }
        if open.len() == 1 {
            top.push((msg[at], at));
        }
        let end = at
            .checked_add(h)
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
            at += h;
        } else {
            at = end;
        }
    }
    let (id_tag, id_at) = *top.first().ok_or("an empty message")?;
    if id_tag != 0x02 {
        return Err("a message without a message id".into());
    }
    let (id_len, id_hdr) = header(msg, id_at)?;
    let id = msg
        .get(id_at + id_hdr..id_at + id_hdr + id_len)
        .and_then(integer)
        .ok_or("a message id that is not a number")?;
    let op = top
        .get(1)
        .map(|t| t.0)
        .ok_or("a message without an operation")?;
    match top.get(2) {
        None => {}
        Some(&(0xa0, at)) if top.len() == 3 => check_controls(msg, at)?,
        Some(_) => return Err("a message with more than an id, an operation and controls".into()),
    }
    let (_, op_at) = top[1];
    check_operation(msg, op_at, op)?;
    if let Some(known) = known {
        match (id, known.get(&id)) {
            (0, _) if op == 0x78 => {}
            (0, _) => return Err(format!("an unsolicited message of type {op:#04x}")),
            (_, None) => return Err(format!("an answer to message {id}, which was never sent")),
            (_, Some(request)) if !answers(*request).contains(&op) => {
                return Err(format!(
                    "an answer of type {op:#04x} to a request of type {request:#04x}"
                ))
            }
            _ => {}
        }
    }
    Ok((id, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chk(m: &[u8], known: Option<&HashMap<i64, u8>>) -> Result<(i64, u8), String> {
        check(m, known, max_elements(1 << 20))
    }

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
        let known: HashMap<i64, u8> = [(3, 0x60)].into();
        assert_eq!(chk(&bind_ok(3), Some(&known)), Ok((3, 0x61)));
        assert_eq!(result_code(&bind_ok(3)), Some(0));
        // An abandon request names the message it abandons; nothing else does.
        assert_eq!(abandoned(&msg(7, &[0x50, 0x01, 0x05])), Some(5));
        assert_eq!(abandoned(&msg(7, &[0x50, 0x02, 0x01, 0x00])), Some(256));
        assert_eq!(abandoned(&bind_ok(3)), None);
        // An unsolicited notice (id 0, an extended response) is let through; with controls too.
        let notice = msg(0, &[0x78, 0x07, 0x0a, 0x01, 0x34, 0x04, 0x00, 0x04, 0x00]);
        assert!(chk(&notice, Some(&known)).is_ok());
        let with_controls = msg(
            3,
            &[
                0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0xa0, 0x00,
            ],
        );
        assert!(chk(&with_controls, Some(&known)).is_ok());
    }

    #[test]
    fn unsound_messages_are_refused() {
        let known: HashMap<i64, u8> = [(3, 0x60), (5, 0x63)].into();
        assert!(chk(&bind_ok(4), Some(&known))
            .unwrap_err()
            .contains("never sent"));
        // The wrong kind of answer, an id-0 message that is not a notice, a bare controls element.
        assert!(chk(&bind_ok(5), Some(&known))
            .unwrap_err()
            .contains("to a request of type"));
        assert!(chk(&bind_ok(0), Some(&known))
            .unwrap_err()
            .contains("unsolicited"));
        assert!(chk(&msg(3, &[0xa0, 0x00]), Some(&known)).is_err());
        assert!(chk(&msg(3, &[0x61, 0x00, 0x04, 0x00]), Some(&known))
            .unwrap_err()
            .contains("more than an id"));
        // Controls that are not sequences of primitive parts (ldap3 panics on them).
        let done = [0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];
        let known_search: HashMap<i64, u8> = [(5, 0x63)].into();
        for controls in [
            &[0xa0, 0x02, 0x04, 0x00][..],
            &[0xa0, 0x04, 0x30, 0x02, 0x01, 0x00],
            &[0xa0, 0x06, 0x30, 0x04, 0x04, 0x00, 0x01, 0x00],
            &[0xa0, 0x06, 0x30, 0x04, 0x04, 0x00, 0x30, 0x00],
        ] {
            let m = msg(5, &[&done[..], controls].concat());
            assert!(chk(&m, Some(&known_search)).is_err(), "{controls:02x?}");
        }
        let sound = [
            0xa0, 0x0b, 0x30, 0x09, 0x04, 0x01, b'1', 0x01, 0x01, 0xff, 0x04, 0x01, 0x00,
        ];
        assert!(chk(
            &msg(5, &[&done[..], &sound[..]].concat()),
            Some(&known_search)
        )
        .is_ok());
        // A long-form tag (lber would read it as tag 31 and a length).
        assert!(chk(&msg(3, &[0x61, 0x03, 0x1f, 0x81, 0x00]), Some(&known))
            .unwrap_err()
            .contains("long form"));
        // Empty values in their millions: refused before ldap3 makes 80 bytes of each.
        let values = [0x04, 0x00].repeat(100_000);
        let mut set = vec![0x31, 0x84];
        set.extend((values.len() as u32).to_be_bytes());
        set.extend(values);
        let m = msg(
            5,
            &[&[0x64, 0x84][..], &(set.len() as u32).to_be_bytes(), &set].concat(),
        );
        assert!(chk(&m, Some(&known)).unwrap_err().contains("elements"));
        // Lengths that do not add up.
        let mut m = bind_ok(3);
        m[1] += 1;
        assert!(chk(&m, Some(&known)).is_err());
        let mut m = bind_ok(3);
        m[4] = 0x09;
        assert!(chk(&m, Some(&known)).is_err());
        // Indefinite length inside.
        let m = msg(3, &[0x61, 0x80, 0x00, 0x00]);
        assert!(chk(&m, Some(&known)).is_err());
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
        assert!(chk(&m, Some(&known)).unwrap_err().contains("nested"));
    }

    #[test]
    fn results_are_what_ldap3_can_read() {
        let known: HashMap<i64, u8> = [(3, 0x63)].into();
        let done = |fields: &[u8]| {
            let mut op = vec![0x65, fields.len() as u8];
            op.extend_from_slice(fields);
            msg(3, &op)
        };
        // Sound: code, matched DN, message; with a referral of URIs.
        assert!(chk(
            &done(&[0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00]),
            Some(&known)
        )
        .is_ok());
        assert!(chk(
            &done(&[0x0a, 0x01, 0x0a, 0x04, 0x00, 0x04, 0x00, 0xa3, 0x03, 0x04, 0x01, b'x']),
            Some(&known)
        )
        .is_ok());
        for (fields, says) in [
            (
                &[0x0a, 0x00, 0x04, 0x00, 0x04, 0x00][..],
                "not a result code",
            ),
            (
                &[0x02, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00],
                "not a result code",
            ),
            (&[0x0a, 0x01, 0x00], "not a result code"),
            (
                &[0x0a, 0x01, 0x00, 0x04, 0x02, 0xff, 0xfe, 0x04, 0x00],
                "matched DN that is not UTF-8",
            ),
            (
                &[0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x01, 0xff],
                "diagnostic message that is not UTF-8",
            ),
            (
                &[0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0x83, 0x01, b'x'],
                "unexpected part",
            ),
            (
                &[
                    0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0xa3, 0x02, 0x30, 0x00,
                ],
                "not a list of URIs",
            ),
            (
                &[
                    0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0xa3, 0x03, 0x04, 0x01, 0xff,
                ],
                "referral that is not UTF-8",
            ),
            (
                &[0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0xa7, 0x00],
                "unexpected part",
            ),
        ] {
            let r = chk(&done(fields), Some(&known));
            assert!(
                r.as_ref().is_err_and(|e| e.contains(says)),
                "{fields:02x?}: {r:?}"
            );
        }
        // A control type that is not UTF-8; a search reference that holds a sequence.
        let ok_done = [0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];
        let bad_type = [0xa0, 0x06, 0x30, 0x04, 0x04, 0x02, 0xff, 0xfe];
        assert!(chk(
            &msg(3, &[&ok_done[..], &bad_type[..]].concat()),
            Some(&known)
        )
        .unwrap_err()
        .contains("control type"));
        assert!(chk(&msg(3, &[0x73, 0x02, 0x30, 0x00]), Some(&known))
            .unwrap_err()
            .contains("search reference"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_checked_without_panicking(v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let known: HashMap<i64, u8> = [(1, 0x60), (2, 0x63)].into();
            let _ = chk(&v, Some(&known));
            let _ = result_code(&v);
        }
    }
}
