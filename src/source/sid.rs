//! Windows security identifiers (objectSid): binary to the usual `S-1-5-21-...` text.

/// Formats a binary SID (revision, sub-authority count, 48-bit big-endian authority, then
/// little-endian 32-bit sub-authorities). `None` when the bytes are not a SID.
pub(crate) fn to_string(b: &[u8]) -> Option<String> {
    if b.len() < 8 || b[0] != 1 {
        return None;
    }
    let count = b[1] as usize;
    if b.len() != 8 + 4 * count {
        return None;
    }
    let authority = b[2..8]
        .iter()
        .fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
    let mut out = format!("S-1-{authority}");
    for i in 0..count {
        let o = 8 + 4 * i;
        let sub = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        out.push_str(&format!("-{sub}"));
    }
    Some(out)
}

/// The SID of the group with relative id `rid` in the domain of `user_sid` (the user's SID
/// without its last part): how a `primaryGroupID` is resolved.
pub(crate) fn sibling(user_sid: &str, rid: u32) -> Option<String> {
    let (domain, _) = user_sid.rsplit_once('-')?;
    Some(format!("{domain}-{rid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_user_sid_reads_as_text() {
        // S-1-5-21-2247264197-1508916510-277976191-1103, as Samba returned it.
        let b = [
            1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 0xc5, 0x87, 0xf2, 0x85, 0x1e, 0x3d, 0xf0, 0x59,
            0x7f, 0x94, 0x91, 0x10, 0x4f, 0x04, 0, 0,
        ];
        let s = to_string(&b).unwrap();
        assert_eq!(s, "S-1-5-21-2247264197-1508916510-277976191-1103");
        assert_eq!(
            sibling(&s, 513).as_deref(),
            Some("S-1-5-21-2247264197-1508916510-277976191-513")
        );
        assert_eq!(to_string(&b[..10]), None);
        assert_eq!(to_string(&[]), None);
    }
}
