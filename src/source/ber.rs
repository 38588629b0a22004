//! Small BER readers shared by the decoders of server input (paged results, content sync).
//! Each returns an error naming what it was reading instead of panicking as ldap3's do.

use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};

/// Parses the BER element a value starts with.
pub(crate) fn tag_of(bytes: &[u8], what: &str) -> Result<StructureTag, String> {
    match parse_tag(bytes) {
        Ok((_, t)) => Ok(t),
        Err(_) => Err(format!("malformed {what}: not BER")),
    }
}

pub(crate) fn children(t: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
    match t.payload {
        PL::C(v) => Ok(v),
        PL::P(_) => Err(format!("malformed {what}: expected a sequence")),
    }
}

pub(crate) fn bytes(t: StructureTag, what: &str) -> Result<Vec<u8>, String> {
    match t.payload {
        PL::P(v) => Ok(v),
        PL::C(_) => Err(format!("malformed {what}: expected a primitive value")),
    }
}

pub(crate) fn is_universal(t: &StructureTag, ty: Types) -> bool {
    t.class == TagClass::Universal && t.id == ty as u64
}

pub(crate) fn boolean(t: StructureTag, what: &str) -> Result<bool, String> {
    let v = bytes(t, what)?;
    match v.as_slice() {
        [b] => Ok(*b != 0),
        _ => Err(format!("malformed {what}: a boolean is one byte")),
    }
}

/// A BER INTEGER (two's complement, big-endian) that fits in 64 bits.
pub(crate) fn integer(t: StructureTag, what: &str) -> Result<i64, String> {
    if !is_universal(&t, Types::Integer) {
        return Err(format!("malformed {what}: expected an integer"));
    }
    let v = bytes(t, what)?;
    integer_value(&v).ok_or_else(|| format!("malformed {what}: an integer of {} bytes", v.len()))
}

/// The content of a BER INTEGER (two's complement, big-endian, 1 to 8 bytes).
pub(crate) fn integer_value(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    let mut n: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    for x in b {
        n = (n << 8) | i64::from(*x);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal two's complement, as DER has it (lber's own encoder gets some negatives wrong).
    fn encoded(n: i64) -> StructureTag {
        let b = n.to_be_bytes();
        let mut i = 0;
        while i < 7
            && ((b[i] == 0 && b[i + 1] & 0x80 == 0) || (b[i] == 0xff && b[i + 1] & 0x80 != 0))
        {
            i += 1;
        }
        StructureTag {
            class: TagClass::Universal,
            id: Types::Integer as u64,
            payload: PL::P(b[i..].to_vec()),
        }
    }

    #[test]
    fn integers_round_trip() {
        for n in [
            0,
            1,
            127,
            128,
            255,
            256,
            500,
            -1,
            -128,
            -129,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(integer(encoded(n), "n"), Ok(n), "{n}");
        }
    }

    #[test]
    fn empty_and_oversized_integers_are_refused() {
        let long = StructureTag {
            class: TagClass::Universal,
            id: Types::Integer as u64,
            payload: PL::P(vec![1; 9]),
        };
        assert!(integer(long, "n").is_err());
        let empty = StructureTag {
            class: TagClass::Universal,
            id: Types::Integer as u64,
            payload: PL::P(Vec::new()),
        };
        assert!(integer(empty, "n").is_err());
    }
}
