//! A map built from entries that arrive in key order (a directory the feed mirrors, as it maps
//! or reads it back), a chunk at a time.
//!
//! `BTreeMap::from_iter` collects every entry into a vector, then sorts it with a scratch
//! buffer as large again, before it builds the tree: for the live state's 100k users ~15 MB
//! held beside the map while it is built, the top of `run`'s first pass. Appending sorted
//! chunks keeps the bulk build's full nodes (an insert one by one in key order leaves them
//! half empty) with a few chunks' worth held beside the map at once (the chunk, its copy, the
//! sort's scratch, its tree): `append` moves the map into a tree built afresh, freeing the old
//! nodes as it goes. A chunk grows with the map (an eighth of it), so each entry is moved about
//! nine times: ~0.2 s for 100k entries where `from_iter` takes ~0.03 s. Used where that is not
//! paid by every pass (the live users and the records a feed pass with nothing kept builds,
//! the feed's index at a start or after a full refresh); the records a `sync` reads are still
//! built by `from_iter`.

use std::collections::BTreeMap;

/// The least number of entries appended at once.
const CHUNK: usize = 4096;

pub(crate) struct SortedBuilder<K, V> {
    map: BTreeMap<K, V>,
    chunk: Vec<(K, V)>,
    /// The least chunk appended (`CHUNK`; smaller in tests, to reach the growing chunks).
    least: usize,
}

impl<K: Ord, V> SortedBuilder<K, V> {
    pub(crate) fn new() -> Self {
        Self::with_least(CHUNK)
    }

    fn with_least(least: usize) -> Self {
        SortedBuilder {
            map: BTreeMap::new(),
            chunk: Vec::new(),
            least: least.max(1),
        }
    }

    /// Adds an entry; a later one under the same key replaces it (as in `from_iter`). Entries
    /// out of order are placed right, only more slowly.
    pub(crate) fn push(&mut self, key: K, value: V) {
        self.chunk.push((key, value));
        if self.chunk.len() >= self.least.max(self.map.len() / 8) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut part: BTreeMap<K, V> = self.chunk.drain(..).collect();
        self.map.append(&mut part);
    }

    pub(crate) fn finish(mut self) -> BTreeMap<K, V> {
        self.flush();
        self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The same map as `from_iter`, whatever the order and the repeated keys, across
        /// chunk boundaries, fixed and growing with the map.
        #[test]
        fn builds_what_from_iter_builds(
            entries in proptest::collection::vec((0u32..30_000, any::<u16>()), 0..20_000),
            sorted in any::<bool>(),
            least in prop_oneof![Just(CHUNK), 1usize..64],
        ) {
            let mut entries = entries;
            if sorted {
                entries.sort_by_key(|e| e.0);
            }
            let mut b = SortedBuilder::with_least(least);
            for (k, v) in entries.iter().copied() {
                b.push(k, v);
            }
            let built = b.finish();
            let want: BTreeMap<u32, u16> = entries.into_iter().collect();
            prop_assert_eq!(built, want);
        }
    }
}
