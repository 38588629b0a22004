//! Values put into LDAP search filters, escaped as RFC 4515 says: `*`, `(`, `)`, `\` and NUL
//! (and, so that nothing odd reaches a server, every byte outside printable ASCII) become `\xx`.
//! A value can then never end an assertion, open another, or become a wildcard.

/// The value as it may stand in an assertion, e.g. `(uid=` + escape(v) + `)`.
pub(crate) fn escape(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        match b {
            b'*' | b'(' | b')' | b'\\' => out.push_str(&format!("\\{b:02x}")),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:02x}")),
        }
    }
    out
}

/// Every byte as `\xx` (binary values such as objectGUID).
pub(crate) fn escape_all(value: &[u8]) -> String {
    value.iter().map(|b| format!("\\{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn specials_are_escaped() {
        assert_eq!(escape(b"a*b"), "a\\2ab");
        assert_eq!(escape(b"x)(uid=*"), "x\\29\\28uid=\\2a");
        assert_eq!(escape(b"back\\slash"), "back\\5cslash");
        assert_eq!(escape(b"nul\0cr\r\n"), "nul\\00cr\\0d\\0a");
        assert_eq!(escape("é".as_bytes()), "\\c3\\a9");
        assert_eq!(escape(b"20261123101112Z"), "20261123101112Z");
        assert_eq!(escape_all(&[0x01, 0xff]), "\\01\\ff");
    }

    proptest! {
        // Whatever the value, the escaped form holds no character that could change a filter.
        #[test]
        fn nothing_special_survives(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let e = escape(&v);
            prop_assert!(!e.contains('*') && !e.contains('(') && !e.contains(')'));
            prop_assert!(e.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            // Each backslash starts a two-digit escape.
            let bytes = e.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'\\' {
                    prop_assert!(i + 2 < bytes.len() + 1 && bytes[i+1].is_ascii_hexdigit() && bytes[i+2].is_ascii_hexdigit());
                }
            }
        }
    }
}
