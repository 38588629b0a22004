//! The Simple Paged Results control (RFC 2696), asked for with ldap3's encoder and read back
//! with our own decoder: ldap3's panics on an empty or malformed value, which a directory
//! server (or anyone on a plain connection) could send to stop the gateway.

use ldap3::asn1::Types;
use ldap3::controls::RawControl;

use super::ber::{bytes, children, integer, is_universal, tag_of};

pub(crate) const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";

/// What a server says with a page: its estimate of the total, and the cookie that asks for
/// the next page (empty: this was the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub size_estimate: i64,
    pub cookie: Vec<u8>,
}

/// The control asking for the next `size` entries after `cookie` (empty for the first page).
pub(crate) fn request(size: u32, cookie: &[u8]) -> RawControl {
    ldap3::controls::PagedResults {
        size: i32::try_from(size).unwrap_or(i32::MAX),
        cookie: cookie.to_vec(),
    }
    .into()
}

/// Decodes the value of a paged-results control on a search result:
/// `SEQUENCE { size INTEGER, cookie OCTET STRING }`.
pub(crate) fn decode(val: Option<&[u8]>) -> Result<Page, String> {
    const W: &str = "paged-results control";
    let val = val.ok_or_else(|| format!("malformed {W}: it has no value"))?;
    let mut it = children(tag_of(val, W)?, W)?.into_iter();
    let size = integer(it.next().ok_or(format!("malformed {W}: no size"))?, W)?;
    let cookie_tag = it.next().ok_or(format!("malformed {W}: no cookie"))?;
    if !is_universal(&cookie_tag, Types::OctetString) {
        return Err(format!("malformed {W}: the cookie is not an octet string"));
    }
    let cookie = bytes(cookie_tag, W)?;
    if it.next().is_some() {
        return Err(format!("malformed {W}: more than a size and a cookie"));
    }
    Ok(Page {
        size_estimate: size,
        cookie,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value_of(size: u32, cookie: &[u8]) -> Vec<u8> {
        request(size, cookie).val.unwrap_or_default()
    }

    #[test]
    fn what_ldap3_encodes_decodes() {
        for (size, cookie) in [(500, &b""[..]), (0, b"\x00\x01"), (100_000, b"cookie")] {
            let page = decode(Some(&value_of(size, cookie))).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(page.size_estimate, i64::from(size));
            assert_eq!(page.cookie, cookie);
        }
    }

    #[test]
    fn empty_and_malformed_values_are_errors() {
        assert!(decode(None).unwrap_err().contains("no value"));
        assert!(decode(Some(b"")).is_err());
        assert!(decode(Some(b"\x30\x00")).unwrap_err().contains("no size"));
        assert!(decode(Some(b"\x30\x03\x02\x01\x05"))
            .unwrap_err()
            .contains("no cookie"));
        // A cookie that is an integer, a size that is a string, a primitive instead of a sequence.
        assert!(decode(Some(b"\x30\x06\x02\x01\x05\x02\x01\x01")).is_err());
        assert!(decode(Some(b"\x30\x05\x04\x01\x05\x04\x00")).is_err());
        assert!(decode(Some(b"\x04\x02\x02\x00")).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(val in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Some(&val));
        }

        #[test]
        fn any_page_round_trips(size in 0u32..=i32::MAX as u32, cookie in proptest::collection::vec(any::<u8>(), 0..40)) {
            let page = decode(Some(&value_of(size, &cookie)));
            prop_assert_eq!(page, Ok(Page { size_estimate: i64::from(size), cookie }));
        }
    }
}
