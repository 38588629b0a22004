//! The attributes of one entry, packed into one allocation.
//!
//! A change feed holds every in-scope entry for as long as it runs (100k users of ~13 attributes
//! and ~15 values each). As a map of vectors an entry cost ~2 KB, mostly vector headers, tree
//! nodes and one allocation per name and per value; packed, it costs its bytes and a few bytes of
//! lengths. Entries are read far more often than changed, and a change rewrites one entry.

use std::collections::BTreeMap;
use std::fmt;

/// Attribute name -> values, in name order, each name once. Names are stored lower-cased (LDAP
/// names are case-insensitive); look-ups ignore ASCII case.
///
/// Layout of `buf`, per attribute: name length, name, length of the rest of the attribute,
/// value count, then each value's length and bytes; every length and count a LEB128 varint.
/// Built only here, from whole names and values, so a reader never meets a truncated buffer;
/// it stops at one anyway rather than panic.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Attrs {
    buf: Box<[u8]>,
}

/// The values of one attribute, in the order received.
#[derive(Clone)]
pub struct Values<'a> {
    rest: &'a [u8],
    left: usize,
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Reads a varint from the front of `buf`, advancing it.
fn take_varint(buf: &mut &[u8]) -> Option<usize> {
    let mut n: usize = 0;
    for (i, byte) in buf.iter().enumerate().take(10) {
        n |= usize::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(n);
        }
    }
    None
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if buf.len() < len {
        return None;
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Some(head)
}

/// Appends one attribute in the packed layout.
fn put_attr<'v>(out: &mut Vec<u8>, name: &str, values: impl Iterator<Item = &'v [u8]> + Clone) {
    let count = values.clone().count();
    let body = varint_len(count)
        + values
            .clone()
            .map(|v| varint_len(v.len()) + v.len())
            .sum::<usize>();
    put_varint(out, name.len());
    out.extend_from_slice(name.as_bytes());
    put_varint(out, body);
    put_varint(out, count);
    for v in values {
        put_varint(out, v.len());
        out.extend_from_slice(v);
    }
}

/// One attribute as found in the buffer: its name, its values, and where it starts and ends.
struct Slot<'a> {
    /// Written from a `str` (read as one by [`Slot::name`]); compared as bytes.
    name: &'a [u8],
    values: Values<'a>,
    start: usize,
    end: usize,
}

struct Slots<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Slots<'a> {
    type Item = Slot<'a>;

    fn next(&mut self) -> Option<Slot<'a>> {
        let start = self.at;
        let mut rest = self.buf.get(start..)?;
        if rest.is_empty() {
            return None;
        }
        let name_len = take_varint(&mut rest)?;
        let name = take(&mut rest, name_len)?;
        let body_len = take_varint(&mut rest)?;
        let mut body = take(&mut rest, body_len)?;
        let left = take_varint(&mut body)?;
        self.at = self.buf.len() - rest.len();
        Some(Slot {
            name,
            values: Values { rest: body, left },
            start,
            end: self.at,
        })
    }
}

impl<'a> Slot<'a> {
    fn name(&self) -> &'a str {
        std::str::from_utf8(self.name).unwrap_or_default()
    }

    /// Whether this is `wanted` (stored names are lower-case; `wanted` may be in any case).
    fn is(&self, wanted: &str) -> bool {
        self.name.len() == wanted.len() && self.name.eq_ignore_ascii_case(wanted.as_bytes())
    }

    /// Whether this comes after `wanted` in the order of lower-cased names.
    fn after(&self, wanted: &str) -> bool {
        let wanted = wanted.bytes().map(|b| b.to_ascii_lowercase());
        self.name.iter().copied().cmp(wanted).is_gt()
    }
}

impl Attrs {
    fn slots(&self) -> Slots<'_> {
        Slots {
            buf: &self.buf,
            at: 0,
        }
    }

    fn find(&self, name: &str) -> Option<Slot<'_>> {
        self.slots().find(|s| s.is(name))
    }

    /// Packs `(name, values)` pairs; values of a name given twice are joined, in order.
    pub fn from_pairs<V: AsRef<[u8]>>(mut pairs: Vec<(String, Vec<V>)>) -> Attrs {
        for (name, _) in &mut pairs {
            name.make_ascii_lowercase();
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let size: usize = pairs
            .iter()
            .map(|(n, vs)| 12 + n.len() + vs.iter().map(|v| 5 + v.as_ref().len()).sum::<usize>())
            .sum();
        let mut out = Vec::with_capacity(size);
        let mut i = 0;
        while i < pairs.len() {
            let name = &pairs[i].0;
            let same = pairs[i..].iter().take_while(|(n, _)| n == name).count();
            let values = pairs[i..i + same]
                .iter()
                .flat_map(|(_, vs)| vs.iter().map(AsRef::as_ref));
            put_attr(&mut out, name, values);
            i += same;
        }
        Attrs {
            buf: out.into_boxed_slice(),
        }
    }

    /// The values of `name` (ASCII case ignored), if the entry has the attribute.
    pub fn get(&self, name: &str) -> Option<Values<'_>> {
        self.find(name).map(|s| s.values)
    }

    /// Every attribute, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Values<'_>)> {
        self.slots().map(|s| (s.name(), s.values))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.slots().map(|s| s.name())
    }

    /// The packed bytes (to digest an entry).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Sets the values of `name`, replacing any it had.
    pub fn insert(&mut self, name: &str, values: Vec<Vec<u8>>) {
        self.replace(name, |_| values);
    }

    /// Removes `name` and returns its values.
    pub fn remove(&mut self, name: &str) -> Option<Vec<Vec<u8>>> {
        let slot = self.find(name)?;
        let (start, end) = (slot.start, slot.end);
        let values = slot.values.map(<[u8]>::to_vec).collect();
        let mut out = Vec::with_capacity(self.buf.len() - (end - start));
        out.extend_from_slice(&self.buf[..start]);
        out.extend_from_slice(&self.buf[end..]);
        self.buf = out.into_boxed_slice();
        Some(values)
    }

    /// Appends values to `name` (created when missing).
    pub fn extend(&mut self, name: &str, more: Vec<Vec<u8>>) {
        self.replace(name, |old| {
            let mut all = old;
            all.extend(more);
            all
        });
    }

    /// Rewrites the values of `name` (created when missing) with `edit`, which gets the current
    /// ones (none when missing). The buffer is rebuilt around the one attribute.
    pub fn replace(&mut self, name: &str, edit: impl FnOnce(Vec<Vec<u8>>) -> Vec<Vec<u8>>) {
        let (start, end, old, stored) = match self.find(name) {
            Some(s) => (s.start, s.end, s.values.to_vecs(), s.name().to_string()),
            None => {
                let at = self
                    .slots()
                    .find(|s| s.after(name))
                    .map_or(self.buf.len(), |s| s.start);
                (at, at, Vec::new(), name.to_ascii_lowercase())
            }
        };
        let values = edit(old);
        let mut out = Vec::with_capacity(self.buf.len() + 64);
        out.extend_from_slice(&self.buf[..start]);
        put_attr(&mut out, &stored, values.iter().map(Vec::as_slice));
        out.extend_from_slice(&self.buf[end..]);
        self.buf = out.into_boxed_slice();
    }
}

impl FromIterator<(String, Vec<Vec<u8>>)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (String, Vec<Vec<u8>>)>>(iter: I) -> Attrs {
        Attrs::from_pairs(iter.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, Vec<Vec<u8>>); N]> for Attrs {
    fn from(pairs: [(String, Vec<Vec<u8>>); N]) -> Attrs {
        Attrs::from_pairs(pairs.into())
    }
}

impl From<BTreeMap<String, Vec<Vec<u8>>>> for Attrs {
    fn from(map: BTreeMap<String, Vec<Vec<u8>>>) -> Attrs {
        Attrs::from_pairs(map.into_iter().collect())
    }
}

impl<'a> Values<'a> {
    /// No values (an attribute the entry does not have).
    pub fn none() -> Values<'a> {
        Values { rest: &[], left: 0 }
    }

    pub fn first(mut self) -> Option<&'a [u8]> {
        self.next()
    }

    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.clone().map(<[u8]>::to_vec).collect()
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let value = take_varint(&mut self.rest).and_then(|len| take(&mut self.rest, len));
        match value {
            Some(v) => {
                self.left -= 1;
                Some(v)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Values<'_> {}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.clone().map(String::from_utf8_lossy))
            .finish()
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(a: &Attrs) -> BTreeMap<String, Vec<Vec<u8>>> {
        a.iter()
            .map(|(n, vs)| (n.to_string(), vs.map(<[u8]>::to_vec).collect()))
            .collect()
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            usize::MAX >> 1,
            usize::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
            let mut read = out.as_slice();
            assert_eq!(take_varint(&mut read), Some(n));
            assert!(read.is_empty());
        }
        // Truncated or endless: no value, no panic.
        assert_eq!(take_varint(&mut [0x80u8, 0x80].as_slice()), None);
        assert_eq!(take_varint(&mut [0xffu8; 11].as_slice()), None);
    }

    #[test]
    fn a_truncated_buffer_reads_as_fewer_attributes_not_a_panic() {
        let whole = Attrs::from_pairs(vec![
            ("cn".into(), vec![b"Ann".to_vec(), b"Anna".to_vec()]),
            ("sn".into(), vec![b"Lee".to_vec()]),
        ]);
        for cut in 0..whole.buf.len() {
            let a = Attrs {
                buf: whole.buf[..cut].into(),
            };
            for (_, vs) in a.iter() {
                let _ = vs.count();
            }
            let _ = a.get("sn").map(|v| v.to_vecs());
        }
    }

    #[test]
    fn names_are_lower_cased_and_look_ups_ignore_case() {
        let mut a = Attrs::from_pairs(vec![("memberof".into(), vec![b"x".to_vec()])]);
        assert_eq!(
            a.get("memberOf").map(|v| v.to_vecs()),
            Some(vec![b"x".to_vec()])
        );
        a.insert("MEMBEROF", vec![b"y".to_vec()]);
        a.insert("CN", vec![]);
        assert_eq!(a.keys().collect::<Vec<_>>(), ["cn", "memberof"]);
        assert_eq!(
            Attrs::from_pairs(vec![("CN".into(), Vec::<Vec<u8>>::new())]),
            Attrs::from_pairs(vec![("cn".into(), Vec::<Vec<u8>>::new())])
        );
        assert_eq!(
            a.get("memberof").map(|v| v.to_vecs()),
            Some(vec![b"y".to_vec()])
        );
        assert!(a.get("member").is_none());
    }

    fn arb_pairs() -> impl Strategy<Value = Vec<(String, Vec<Vec<u8>>)>> {
        proptest::collection::vec(
            (
                "[a-cA-C@;=-]{0,4}",
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
            ),
            0..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Packing is the map it replaces: the same names, values, order and merging of a
        /// name given twice, and every edit does what the map's would.
        #[test]
        fn packed_attributes_behave_as_the_map_of_vectors(
            pairs in arb_pairs(),
            edits in proptest::collection::vec(
                (0u8..3, "[a-cA-C@;=-]{0,4}", proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..140), 0..3)),
                0..6,
            ),
        ) {
            let mut want: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
            for (n, vs) in &pairs {
                want.entry(n.to_ascii_lowercase()).or_default().extend(vs.iter().cloned());
            }
            let mut a = Attrs::from_pairs(pairs);
            prop_assert_eq!(map(&a), want.clone());
            for (op, name, values) in edits {
                let lower = name.to_ascii_lowercase();
                match op {
                    0 => {
                        want.insert(lower, values.clone());
                        a.insert(&name, values);
                    }
                    1 => {
                        prop_assert_eq!(a.remove(&name), want.remove(&lower));
                    }
                    _ => {
                        want.entry(lower).or_default().extend(values.iter().cloned());
                        a.extend(&name, values);
                    }
                }
                prop_assert_eq!(map(&a), want.clone());
                prop_assert_eq!(a.iter().count(), want.len());
                for (n, vs) in &want {
                    let got = a.get(&n.to_ascii_uppercase()).map(|v| (v.len(), v.to_vecs()));
                    prop_assert_eq!(got, Some((vs.len(), vs.clone())));
                }
                // Equal maps pack to equal buffers (equality and hashing are the map's).
                prop_assert_eq!(&a, &want.clone().into_iter().collect::<Attrs>());
            }
        }
    }
}
