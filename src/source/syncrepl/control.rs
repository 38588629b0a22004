//! RFC 4533 response values, decoded without panicking. ldap3 ships decoders for these, but they
//! panic on anything unexpected; a server (or a man in the middle of a plain connection) must not
//! be able to stop the gateway with one malformed message.

use ldap3::asn1::{StructureTag, TagClass, Types};

use crate::source::ber::{boolean, bytes, children, is_universal, tag_of};

pub(crate) const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
pub(crate) const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
pub(crate) const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
pub(crate) const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

/// The state the Sync State control gives an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryState {
    Present,
    Add,
    Modify,
    Delete,
}

/// Sync State control: what happened to the entry it comes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncState {
    pub state: EntryState,
    pub uuid: Vec<u8>,
    pub cookie: Option<Vec<u8>>,
}

/// Sync Done control (on the search result).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SyncDone {
    pub cookie: Option<Vec<u8>>,
    pub refresh_deletes: bool,
}

/// Sync Info intermediate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncInfo {
    NewCookie(Vec<u8>),
    RefreshDelete {
        cookie: Option<Vec<u8>>,
        done: bool,
    },
    RefreshPresent {
        cookie: Option<Vec<u8>>,
        done: bool,
    },
    SyncIdSet {
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
        uuids: Vec<Vec<u8>>,
    },
}

/// Decodes a Sync State control value.
pub(crate) fn decode_state(val: &[u8]) -> Result<SyncState, String> {
    const W: &str = "Sync State control";
    let mut it = children(tag_of(val, W)?, W)?.into_iter();
    let state_tag = it.next().ok_or(format!("malformed {W}: no state"))?;
    if !is_universal(&state_tag, Types::Enumerated) {
        return Err(format!("malformed {W}: the state is not an enumeration"));
    }
    let state = match bytes(state_tag, W)?.as_slice() {
        [0] => EntryState::Present,
        [1] => EntryState::Add,
        [2] => EntryState::Modify,
        [3] => EntryState::Delete,
        other => return Err(format!("malformed {W}: unknown state {other:?}")),
    };
    let uuid_tag = it.next().ok_or(format!("malformed {W}: no entryUUID"))?;
    let uuid = bytes(uuid_tag, W)?;
    if uuid.len() != 16 {
        return Err(format!(
            "malformed {W}: entryUUID has {} bytes, not 16",
            uuid.len()
        ));
    }
    let cookie = match it.next() {
        Some(t) => Some(bytes(t, W)?),
        None => None,
    };
    Ok(SyncState {
        state,
        uuid,
        cookie,
    })
}

/// Decodes a Sync Done control value (absent value: no cookie, no deletes).
pub(crate) fn decode_done(val: Option<&[u8]>) -> Result<SyncDone, String> {
    const W: &str = "Sync Done control";
    let mut done = SyncDone::default();
    let Some(val) = val else { return Ok(done) };
    for t in children(tag_of(val, W)?, W)? {
        if is_universal(&t, Types::OctetString) {
            done.cookie = Some(bytes(t, W)?);
        } else if is_universal(&t, Types::Boolean) {
            done.refresh_deletes = boolean(t, W)?;
        } else {
            return Err(format!("malformed {W}: unexpected element {}", t.id));
        }
    }
    Ok(done)
}

/// Decodes the value of a Sync Info intermediate message.
pub(crate) fn decode_info_value(val: &[u8]) -> Result<SyncInfo, String> {
    const W: &str = "Sync Info message";
    let t = tag_of(val, W)?;
    if t.class != TagClass::Context {
        return Err(format!("malformed {W}: not a context-tagged choice"));
    }
    let id = t.id;
    if id == 0 {
        return Ok(SyncInfo::NewCookie(bytes(t, W)?));
    }
    if id > 3 {
        return Err(format!("malformed {W}: unknown choice [{id}]"));
    }
    let mut cookie = None;
    // refreshDone defaults to TRUE, refreshDeletes to FALSE.
    let mut flag = id != 3;
    let mut uuids = Vec::new();
    for c in children(t, W)? {
        if is_universal(&c, Types::OctetString) {
            cookie = Some(bytes(c, W)?);
        } else if is_universal(&c, Types::Boolean) {
            flag = boolean(c, W)?;
        } else if id == 3 && is_universal(&c, Types::Set) {
            for u in children(c, W)? {
                let u = bytes(u, W)?;
                if u.len() != 16 {
                    return Err(format!("malformed {W}: a syncUUID has {} bytes", u.len()));
                }
                uuids.push(u);
            }
        } else {
            return Err(format!("malformed {W}: unexpected element {}", c.id));
        }
    }
    Ok(match id {
        1 => SyncInfo::RefreshDelete { cookie, done: flag },
        2 => SyncInfo::RefreshPresent { cookie, done: flag },
        _ => SyncInfo::SyncIdSet {
            cookie,
            refresh_deletes: flag,
            uuids,
        },
    })
}

/// Decodes an intermediate response (`[APPLICATION 25]`). `Ok(None)`: it is not a Sync Info
/// message (another extension's), and can be ignored.
pub(crate) fn decode_intermediate(t: StructureTag) -> Result<Option<SyncInfo>, String> {
    const W: &str = "intermediate response";
    let mut name = None;
    let mut value = None;
    for c in children(t, W)? {
        match (c.class, c.id) {
            (TagClass::Context, 0) => name = Some(bytes(c, W)?),
            (TagClass::Context, 1) => value = Some(bytes(c, W)?),
            _ => return Err(format!("malformed {W}: unexpected element {}", c.id)),
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID.as_bytes()) {
        return Ok(None);
    }
    let value = value.ok_or(format!("malformed {W}: Sync Info without a value"))?;
    decode_info_value(&value).map(Some)
}

/// An entryUUID as text (`8-4-4-4-12` lower-case hex), as OpenLDAP shows it.
#[cfg(test)]
pub(crate) fn uuid_text(b: &[u8]) -> String {
    let h = hex::encode(b);
    if h.len() != 32 {
        return h;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{
        parse_tag, write, ASNTag, Boolean, Enumerated, OctetString, Sequence, Set, Tag,
    };
    use proptest::prelude::*;

    fn ber(t: Tag) -> Vec<u8> {
        let mut buf = ::bytes::BytesMut::new();
        write::encode_into(&mut buf, t.into_structure()).unwrap();
        buf.to_vec()
    }

    fn octets(v: &[u8]) -> Tag {
        Tag::OctetString(OctetString {
            inner: v.to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn state_with_and_without_cookie() {
        let uuid = [7u8; 16];
        let v = ber(Tag::Sequence(Sequence {
            inner: vec![
                Tag::Enumerated(Enumerated {
                    inner: 2,
                    ..Default::default()
                }),
                octets(&uuid),
                octets(b"rid=001,csn=x"),
            ],
            ..Default::default()
        }));
        let s = decode_state(&v).unwrap();
        assert_eq!(s.state, EntryState::Modify);
        assert_eq!(s.uuid, uuid);
        assert_eq!(s.cookie.as_deref(), Some(&b"rid=001,csn=x"[..]));

        let v = ber(Tag::Sequence(Sequence {
            inner: vec![
                Tag::Enumerated(Enumerated {
                    inner: 3,
                    ..Default::default()
                }),
                octets(&uuid),
            ],
            ..Default::default()
        }));
        let s = decode_state(&v).unwrap();
        assert_eq!((s.state, s.cookie), (EntryState::Delete, None));
    }

    #[test]
    fn bad_states_are_errors() {
        let v = ber(Tag::Sequence(Sequence {
            inner: vec![
                Tag::Enumerated(Enumerated {
                    inner: 9,
                    ..Default::default()
                }),
                octets(&[1; 16]),
            ],
            ..Default::default()
        }));
        assert!(decode_state(&v).unwrap_err().contains("unknown state"));
        let short = ber(Tag::Sequence(Sequence {
            inner: vec![
                Tag::Enumerated(Enumerated {
                    inner: 1,
                    ..Default::default()
                }),
                octets(&[1; 3]),
            ],
            ..Default::default()
        }));
        assert!(decode_state(&short).unwrap_err().contains("3 bytes"));
        assert!(decode_state(&[]).is_err());
    }

    fn info(id: u64, inner: Vec<Tag>) -> Vec<u8> {
        ber(Tag::Sequence(Sequence {
            id,
            class: TagClass::Context,
            inner,
        }))
    }

    #[test]
    fn info_choices_and_their_defaults() {
        let c = ber(Tag::OctetString(OctetString {
            id: 0,
            class: TagClass::Context,
            inner: b"ck".to_vec(),
        }));
        assert_eq!(
            decode_info_value(&c).unwrap(),
            SyncInfo::NewCookie(b"ck".to_vec())
        );
        assert_eq!(
            decode_info_value(&info(1, vec![octets(b"c1")])).unwrap(),
            SyncInfo::RefreshDelete {
                cookie: Some(b"c1".to_vec()),
                done: true
            }
        );
        assert_eq!(
            decode_info_value(&info(
                2,
                vec![Tag::Boolean(Boolean {
                    inner: false,
                    ..Default::default()
                })]
            ))
            .unwrap(),
            SyncInfo::RefreshPresent {
                cookie: None,
                done: false
            }
        );
        let set = Tag::Set(Set {
            inner: vec![octets(&[1; 16]), octets(&[2; 16])],
            ..Default::default()
        });
        assert_eq!(
            decode_info_value(&info(3, vec![octets(b"c3"), set])).unwrap(),
            SyncInfo::SyncIdSet {
                cookie: Some(b"c3".to_vec()),
                refresh_deletes: false,
                uuids: vec![vec![1; 16], vec![2; 16]],
            }
        );
        assert!(decode_info_value(&info(7, vec![])).is_err());
    }

    #[test]
    fn done_control() {
        let v = ber(Tag::Sequence(Sequence {
            inner: vec![
                octets(b"c"),
                Tag::Boolean(Boolean {
                    inner: true,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        }));
        assert_eq!(
            decode_done(Some(&v)).unwrap(),
            SyncDone {
                cookie: Some(b"c".to_vec()),
                refresh_deletes: true
            }
        );
        assert_eq!(decode_done(None).unwrap(), SyncDone::default());
    }

    #[test]
    fn uuid_as_openldap_writes_it() {
        let b = hex::decode("0c4e3b2a1d2e4f5a8b9c0d1e2f3a4b5c").unwrap();
        assert_eq!(uuid_text(&b), "0c4e3b2a-1d2e-4f5a-8b9c-0d1e2f3a4b5c");
    }

    proptest! {
        // Whatever the bytes, decoding returns; it never panics.
        #[test]
        fn decoders_never_panic(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_state(&v);
            let _ = decode_done(Some(&v));
            let _ = decode_info_value(&v);
            if let Ok((_, t)) = parse_tag(&v) {
                let _ = decode_intermediate(t);
            }
        }

        // Well-formed values with random contents decode to what was encoded.
        #[test]
        fn state_round_trip(state in 0i64..4, uuid in proptest::collection::vec(any::<u8>(), 16),
                            cookie in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))) {
            let mut inner = vec![Tag::Enumerated(Enumerated { inner: state, ..Default::default() }), octets(&uuid)];
            if let Some(c) = &cookie { inner.push(octets(c)); }
            let s = decode_state(&ber(Tag::Sequence(Sequence { inner, ..Default::default() }))).unwrap();
            prop_assert_eq!(s.uuid, uuid);
            prop_assert_eq!(s.cookie, cookie);
        }
    }
}
