//! BER for the misbehaving server: messages, results, entries, controls, and the directory it
//! serves when it behaves (three users in one group).

use ldap3::asn1::{StructureTag, TagClass, PL};

use super::BASE;

pub(super) fn prim(class: TagClass, id: u64, v: &[u8]) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::P(v.to_vec()),
    }
}

pub(super) fn cons(class: TagClass, id: u64, v: Vec<StructureTag>) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::C(v),
    }
}

pub(super) fn octets(v: &[u8]) -> StructureTag {
    prim(TagClass::Universal, 4, v)
}

pub(super) fn seq(v: Vec<StructureTag>) -> StructureTag {
    cons(TagClass::Universal, 16, v)
}

pub(super) fn int_bytes(n: i64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let mut i = 0;
    while i < 7 && ((b[i] == 0 && b[i + 1] & 0x80 == 0) || (b[i] == 0xff && b[i + 1] & 0x80 != 0)) {
        i += 1;
    }
    b[i..].to_vec()
}

pub(super) fn integer(n: i64) -> StructureTag {
    prim(TagClass::Universal, 2, &int_bytes(n))
}

pub(super) fn enumerated(n: i64) -> StructureTag {
    prim(TagClass::Universal, 10, &int_bytes(n))
}

pub(super) fn encode(t: StructureTag) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    ldap3::asn1::write::encode_into(&mut buf, t).unwrap();
    buf.to_vec()
}

/// An LDAPMessage: id, operation, and controls (`None`: no controls element; `Some(raw)`: the
/// `[0]` element as given, well-formed or not).
pub(super) fn message(id: i64, op: StructureTag, controls: Option<StructureTag>) -> Vec<u8> {
    let mut parts = vec![integer(id), op];
    parts.extend(controls);
    encode(seq(parts))
}

pub(super) fn controls(list: Vec<StructureTag>) -> StructureTag {
    cons(TagClass::Context, 0, list)
}

pub(super) fn control(oid: &str, value: Option<&[u8]>) -> StructureTag {
    let mut parts = vec![octets(oid.as_bytes())];
    parts.extend(value.map(octets));
    seq(parts)
}

pub(super) fn paged_value(size: i64, cookie: &[u8]) -> Vec<u8> {
    encode(seq(vec![integer(size), octets(cookie)]))
}

pub(super) fn result(app: u64, rc: i64, text: &str, referral: Option<&str>) -> StructureTag {
    let mut parts = vec![enumerated(rc), octets(b""), octets(text.as_bytes())];
    if let Some(url) = referral {
        parts.push(cons(TagClass::Context, 3, vec![octets(url.as_bytes())]));
    }
    cons(TagClass::Application, app, parts)
}

pub(super) fn entry(dn: &str, attrs: &[(&str, Vec<String>)]) -> StructureTag {
    let attrs = attrs
        .iter()
        .map(|(name, values)| {
            seq(vec![
                octets(name.as_bytes()),
                cons(
                    TagClass::Universal,
                    17,
                    values.iter().map(|v| octets(v.as_bytes())).collect(),
                ),
            ])
        })
        .collect();
    cons(
        TagClass::Application,
        4,
        vec![octets(dn.as_bytes()), seq(attrs)],
    )
}

pub(super) fn user(n: usize) -> StructureTag {
    let uid = format!("user{n}");
    entry(
        &format!("uid={uid},ou=people,{BASE}"),
        &[
            ("objectClass", vec!["inetOrgPerson".into()]),
            ("uid", vec![uid.clone()]),
            ("cn", vec![format!("User {n}")]),
            ("sn", vec![format!("Number{n}")]),
            ("givenName", vec!["User".into()]),
            ("mail", vec![format!("{uid}@bad.test")]),
            (
                "entryUUID",
                vec![format!("00000000-0000-4000-8000-{n:012}")],
            ),
            ("memberOf", vec![format!("cn=staff,ou=groups,{BASE}")]),
        ],
    )
}

pub(super) fn group() -> StructureTag {
    entry(
        &format!("cn=staff,ou=groups,{BASE}"),
        &[
            ("objectClass", vec!["groupOfNames".into()]),
            ("cn", vec!["staff".into()]),
            (
                "entryUUID",
                vec!["00000000-0000-4000-9000-000000000001".into()],
            ),
            (
                "member",
                (1..=3)
                    .map(|n| format!("uid=user{n},ou=people,{BASE}"))
                    .collect(),
            ),
        ],
    )
}

/// A search entry built by hand around `attributes`, with four-byte lengths: for contents that
/// lber's encoder would recurse on, or that are not well-formed on purpose.
pub(super) fn raw_entry(id: i64, dn: &[u8], attributes: Vec<u8>) -> Vec<u8> {
    let long = |tag: u8, content: Vec<u8>| {
        let mut out = vec![tag, 0x84];
        out.extend((content.len() as u32).to_be_bytes());
        out.extend(content);
        out
    };
    let op = long(0x64, [encode(octets(dn)), attributes].concat());
    long(0x30, [encode(integer(id)), op].concat())
}
