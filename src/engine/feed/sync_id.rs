//! An entry's sync identity as the feed's index holds it.

use sha2::{Digest, Sha256};

/// The identity inline: RFC 4533's syncUUID (and the timestamp feed's entryUUID or digest) is
/// 16 bytes, and a vector of its own per entry was ~2.6 MB of the index at 100k users. Any other
/// length is reduced to the first 16 bytes of its SHA-256: an identity taken back out of the
/// index (16 bytes) is itself, so removing by it finds the same entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct SyncId([u8; 16]);

impl SyncId {
    pub(super) fn of(uuid: &[u8]) -> SyncId {
        match <[u8; 16]>::try_from(uuid) {
            Ok(inline) => SyncId(inline),
            Err(_) => {
                let mut id = [0; 16];
                id.copy_from_slice(&Sha256::digest(uuid)[..16]);
                SyncId(id)
            }
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::SyncId;

    #[test]
    fn an_identity_is_held_inline_and_finds_itself_again() {
        let uuid = [7u8; 16];
        assert_eq!(SyncId::of(&uuid).bytes(), &uuid);
        // Other lengths (a server that does not keep to RFC 4533) are digested, apart from
        // each other, and the digest is its own identity.
        let odd = SyncId::of(b"not sixteen bytes long");
        assert_ne!(odd, SyncId::of(b"not sixteen bytes lon"));
        assert_ne!(odd, SyncId::of(b""));
        assert_eq!(SyncId::of(odd.bytes()), odd);
    }
}
