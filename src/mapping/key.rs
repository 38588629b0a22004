//! Reading the stable key of an entry, whether the directory stores it as text (entryUUID,
//! nsUniqueId) or as bytes (objectGUID).

use crate::config::KeyFormat;
use crate::source::entry::RawEntry;

/// The entry's stable key, per `format`. `Auto`: text as is; 16 raw bytes as a GUID in
/// Microsoft's layout (the first three fields little-endian); other bytes as lower-case hex.
pub(crate) fn stable_key(e: &RawEntry, attr: &str, format: KeyFormat) -> Option<String> {
    let value = e.values(attr).first()?;
    match format {
        KeyFormat::Guid => return <&[u8; 16]>::try_from(value).ok().map(guid_string),
        KeyFormat::Hex => return (!value.is_empty()).then(|| hex(value)),
        KeyFormat::Auto => {}
    }
    if let Ok(text) = std::str::from_utf8(value) {
        let t = text.trim();
        if !t.is_empty() && t.chars().all(|c| !c.is_control()) {
            return Some(t.to_ascii_lowercase());
        }
    }
    if let Ok(guid) = <&[u8; 16]>::try_from(value) {
        return Some(guid_string(guid));
    }
    if value.is_empty() {
        return None;
    }
    Some(hex(value))
}

fn hex(value: &[u8]) -> String {
    value.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 16 bytes of a GUID written by [`guid_string`], for an `(objectGUID=\\xx...)` filter.
pub(crate) fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    uuid::Uuid::try_parse(text).ok().map(|u| u.to_bytes_le())
}

/// Formats 16 bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` the way Windows shows an objectGUID:
/// its first three fields little-endian (an array: a value of another length from the server
/// cannot reach here).
pub(crate) fn guid_string(b: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes_le(*b).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_turns_back_into_its_bytes() {
        let b: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(guid_bytes(&guid_string(&b)), Some(b));
        assert_eq!(guid_bytes("nope"), None);
    }

    #[test]
    fn guid_uses_the_mixed_endian_layout() {
        // objectGUID bytes of {12345678-9abc-def0-1234-56789abcdef0}
        let b = [
            0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
            0xde, 0xf0,
        ];
        assert_eq!(guid_string(&b), "12345678-9abc-def0-1234-56789abcdef0");
    }

    #[test]
    fn text_keys_are_lower_cased_and_binary_keys_formatted() {
        let mut e = RawEntry::default();
        e.attrs.insert(
            "entryuuid",
            vec![b"5A1B2C3D-0000-1111-2222-333344445555".to_vec()],
        );
        assert_eq!(
            stable_key(&e, "entryUUID", KeyFormat::Auto).as_deref(),
            Some("5a1b2c3d-0000-1111-2222-333344445555")
        );
        e.attrs.insert("objectguid", vec![vec![0xff; 16]]);
        assert_eq!(
            stable_key(&e, "objectGUID", KeyFormat::Auto).as_deref(),
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff")
        );
        e.attrs.insert("odd", vec![vec![0xff, 0x01]]);
        assert_eq!(
            stable_key(&e, "odd", KeyFormat::Auto).as_deref(),
            Some("ff01")
        );
        assert_eq!(stable_key(&e, "missing", KeyFormat::Auto), None);
    }

    #[test]
    fn a_guid_whose_bytes_look_like_text_is_still_a_guid() {
        let mut e = RawEntry::default();
        e.attrs
            .insert("objectguid", vec![b"ABCDEFGHIJKLMNOP".to_vec()]);
        assert_eq!(
            stable_key(&e, "objectGUID", KeyFormat::Guid).as_deref(),
            Some("44434241-4645-4847-494a-4b4c4d4e4f50")
        );
        e.attrs.insert("short", vec![b"abc".to_vec()]);
        assert_eq!(stable_key(&e, "short", KeyFormat::Guid), None);
        assert_eq!(
            stable_key(&e, "short", KeyFormat::Hex).as_deref(),
            Some("616263")
        );
    }
}
