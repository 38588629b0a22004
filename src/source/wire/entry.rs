//! A search entry decoded straight from the message the relay framed and checked: one pass over
//! the bytes, each value copied once, into the packed attributes. ldap3's decoder built a tree
//! with a vector per element, which [`crate::source::entry::decode_entry`] then walked again: at
//! 100k users that was a third of the reading thread, while the directory waited for it.

use super::check::header;
use crate::source::attrs::Attrs;
use crate::source::entry::RawEntry;

/// The element at `*at` in `buf`: its tag and contents; `*at` moves past it.
fn next<'a>(buf: &'a [u8], at: &mut usize, what: &str) -> Result<(u8, &'a [u8]), String> {
    let (len, h) = header(buf, *at).map_err(|e| format!("malformed search entry: {what}: {e}"))?;
    let start = *at + h;
    let body = start
        .checked_add(len)
        .and_then(|end| buf.get(start..end))
        .ok_or_else(|| format!("malformed search entry: {what} is longer than what holds it"))?;
    let tag = buf[*at];
    *at = start + len;
    Ok((tag, body))
}

fn constructed(tag: u8) -> bool {
    tag & 0x20 != 0
}

/// Decodes a SearchResultEntry message (RFC 4511 §4.5.2) with the rules of `decode_entry`: a
/// primitive DN and attribute types (UTF-8), constructed lists, primitive values of any tag;
/// what follows the parts it reads is ignored, as there.
pub(super) fn decode(msg: &[u8]) -> Result<RawEntry, String> {
    let mut at = 0;
    let (tag, body) = next(msg, &mut at, "message")?;
    if tag != 0x30 {
        return Err("malformed search entry: the message is not a sequence".into());
    }
    let mut at = 0;
    let (tag, _) = next(body, &mut at, "message id")?;
    if tag != 0x02 {
        return Err("malformed search entry: no message id".into());
    }
    let (tag, op) = next(body, &mut at, "operation")?;
    if tag != 0x64 {
        return Err(format!(
            "unexpected protocol op {tag:#04x} where a search entry was expected"
        ));
    }
    let mut at = 0;
    if op.is_empty() {
        return Err("malformed search entry: no DN".into());
    }
    let (tag, dn) = next(op, &mut at, "DN")?;
    if constructed(tag) {
        return Err("malformed search entry: DN is not an octet string".into());
    }
    let dn = std::str::from_utf8(dn)
        .map_err(|_| "malformed search entry: DN is not UTF-8".to_string())?;
    let mut pairs: Vec<(String, Vec<&[u8]>)> = Vec::new();
    if at < op.len() {
        let (tag, list) = next(op, &mut at, "attribute list")?;
        if !constructed(tag) {
            return Err("malformed search entry: attribute list is not a sequence".into());
        }
        let mut a = 0;
        while a < list.len() {
            let (tag, attr) = next(list, &mut a, "attribute")?;
            if !constructed(tag) {
                return Err("malformed search entry: attribute is not a sequence".into());
            }
            let mut p = 0;
            if attr.is_empty() {
                return Err(format!("malformed attribute in {dn}: no type"));
            }
            let (tag, name) = next(attr, &mut p, "attribute type")?;
            if constructed(tag) {
                return Err("malformed search entry: attribute type is not an octet string".into());
            }
            let name = std::str::from_utf8(name)
                .map_err(|_| format!("malformed attribute in {dn}: type is not UTF-8"))?;
            let mut values = Vec::new();
            if p < attr.len() {
                let (tag, set) = next(attr, &mut p, "value set")?;
                if !constructed(tag) {
                    return Err("malformed search entry: value set is not a sequence".into());
                }
                let mut v = 0;
                while v < set.len() {
                    let (tag, value) = next(set, &mut v, "attribute value")?;
                    if constructed(tag) {
                        return Err(
                            "malformed search entry: attribute value is not an octet string".into(),
                        );
                    }
                    values.push(value);
                }
            }
            pairs.push((name.to_string(), values));
        }
    }
    let (dn_guid, plain) = crate::source::dn::split_extended(dn);
    Ok(RawEntry {
        dn: plain.to_string(),
        dn_guid,
        attrs: Attrs::from_pairs(pairs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{StructureTag, TagClass, PL};
    use proptest::prelude::*;

    fn tag(class: TagClass, id: u64, payload: PL) -> StructureTag {
        StructureTag { class, id, payload }
    }

    fn octets(v: &[u8]) -> StructureTag {
        tag(TagClass::Universal, 4, PL::P(v.to_vec()))
    }

    fn seq(id: u64, parts: Vec<StructureTag>) -> StructureTag {
        tag(TagClass::Universal, id, PL::C(parts))
    }

    /// The entry as ldap3 hands it over (the operation), and as the wire carries it.
    fn entry(dn: &[u8], attrs: &[(Vec<u8>, Vec<Vec<u8>>)]) -> (StructureTag, Vec<u8>) {
        let list = attrs
            .iter()
            .map(|(n, vs)| {
                seq(
                    16,
                    vec![octets(n), seq(17, vs.iter().map(|v| octets(v)).collect())],
                )
            })
            .collect();
        let op = tag(
            TagClass::Application,
            4,
            PL::C(vec![octets(dn), seq(16, list)]),
        );
        let msg = seq(
            16,
            vec![tag(TagClass::Universal, 2, PL::P(vec![7])), op.clone()],
        );
        let mut buf = bytes::BytesMut::new();
        ldap3::asn1::write::encode_into(&mut buf, msg).unwrap_or_else(|e| panic!("{e}"));
        (op, buf.to_vec())
    }

    fn text() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-zA-Z=,<>;0-9 -]{0,40}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..300),
        ]
    }

    proptest! {
        #[test]
        fn decodes_as_the_tree_decoder_does(
            dn in text(),
            attrs in proptest::collection::vec(
                (prop_oneof![Just(b"cn".to_vec()), Just(b"CN".to_vec()), Just(b"memberOf".to_vec()), text()],
                 proptest::collection::vec(text(), 0..5)),
                0..8),
        ) {
            let (op, wire) = entry(&dn, &attrs);
            let ours = decode(&wire);
            // What ldap3 hands over: its parser's tree of the same bytes.
            let parsed = match ldap3::asn1::parse_tag(&wire) {
                Ok((_, StructureTag { payload: PL::C(mut parts), .. })) if parts.len() == 2 => parts.remove(1),
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(&parsed, &op);
            let theirs = crate::source::entry::decode_entry(parsed);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} / {:?}", ours, theirs);
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            // The same bytes as an entry's contents, inside a well-framed message.
            let n = bytes.len().min(100);
            let mut msg = vec![0x30, (n + 5) as u8, 0x02, 0x01, 0x01, 0x64, n as u8];
            msg.extend(&bytes[..n]);
            let _ = decode(&msg);
        }
    }

    #[test]
    fn extended_dns_and_mixed_case_names_read_as_before() {
        let (op, wire) = entry(
            b"<GUID=0123456789abcdef0123456789abcdef>;CN=A,DC=x",
            &[
                (b"memberOf".to_vec(), vec![b"cn=g1".to_vec()]),
                (b"MEMBEROF".to_vec(), vec![b"cn=g2".to_vec()]),
                (b"objectGUID".to_vec(), vec![vec![0xff, 0x00]]),
            ],
        );
        let e = decode(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            e,
            crate::source::entry::decode_entry(op).unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(e.dn, "CN=A,DC=x");
        assert!(e.dn_guid.is_some());
        assert_eq!(e.texts("memberof").map(|v| v.len()).unwrap_or(0), 2);
    }

    #[test]
    fn broken_entries_are_errors() {
        let (_, wire) = entry(b"cn=a", &[(b"cn".to_vec(), vec![b"a".to_vec()])]);
        for cut in 0..wire.len() {
            // Lengths no longer agree: an error, never a panic.
            let _ = decode(&wire[..cut]);
        }
        assert!(decode(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(decode(&[0x30, 0x05, 0x02, 0x01, 0x01, 0x64, 0x00])
            .unwrap_err()
            .contains("no DN"));
        assert!(decode(&[0x30, 0x05, 0x02, 0x01, 0x01, 0x65, 0x00])
            .unwrap_err()
            .contains("unexpected protocol op"));
    }
}
