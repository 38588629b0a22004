//! Range retrieval of multi-valued attributes (AD's `member;range=0-1499`): a server that will
//! not send every value at once sends a range, and the client asks for the next one until a
//! range ends in `*`.

use super::entry::RawEntry;

/// Folds every `name;range=a-b` attribute of `e` into `name` and returns, per attribute whose
/// range did not end in `*`, where the next range starts.
pub(crate) fn fold(e: &mut RawEntry) -> Vec<(String, u32)> {
    let ranged: Vec<String> = e
        .attrs
        .keys()
        .filter(|k| k.contains(";range="))
        .map(str::to_string)
        .collect();
    let mut pending = Vec::new();
    for name in ranged {
        let Some(values) = e.attrs.remove(&name) else {
            continue;
        };
        let Some((base, range)) = name.split_once(";range=") else {
            continue;
        };
        e.attrs.extend(base, values);
        if let Some(next) = next_start(range) {
            pending.push((base.to_string(), next));
        }
    }
    pending
}

/// `a-b` → Some(b + 1); `a-*` (or anything unreadable) → None.
fn next_start(range: &str) -> Option<u32> {
    let (_, end) = range.split_once('-')?;
    end.parse::<u32>().ok()?.checked_add(1)
}

/// The attribute description asking for values from `start`: `attr;range=start-end`, with at
/// most `step` values, or all the rest.
pub(crate) fn request(attr: &str, start: u32, step: Option<u32>) -> String {
    match step {
        Some(step) => format!(
            "{attr};range={start}-{}",
            start.saturating_add(step.max(1) - 1)
        ),
        None => format!("{attr};range={start}-*"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_fold_into_the_attribute_and_say_what_is_left() {
        let mut e = RawEntry::default();
        e.attrs
            .insert("member;range=0-1", vec![b"a".to_vec(), b"b".to_vec()]);
        e.attrs.insert("cn", vec![b"g".to_vec()]);
        assert_eq!(fold(&mut e), vec![("member".to_string(), 2)]);
        assert_eq!(e.values("member").len(), 2);
        e.attrs.insert("member;range=2-*", vec![b"c".to_vec()]);
        assert!(fold(&mut e).is_empty());
        assert_eq!(e.values("member").len(), 3);
        assert_eq!(
            request("member", 1500, Some(1500)),
            "member;range=1500-2999"
        );
        assert_eq!(request("member", 2, None), "member;range=2-*");
    }
}
