//! What else a live user is referred to by besides its DN: its GUID (Active Directory) and the
//! DN of its manager, when it has either, in one allocation.

/// `<g|-><m|-><the GUID's length>:<GUID><manager DN>`: one string, where two optional strings
/// held inline were 32 bytes in every user of the live state and two allocations for a user
/// with both (an AD user with a manager); this is 16 bytes and one allocation, none without
/// either.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct OtherNames(Box<str>);

impl OtherNames {
    pub(super) fn new(guid: Option<&str>, manager: Option<&str>) -> Option<OtherNames> {
        if guid.is_none() && manager.is_none() {
            return None;
        }
        let flag = |present: bool, c: char| if present { c } else { '-' };
        let text = format!(
            "{}{}{}:{}{}",
            flag(guid.is_some(), 'g'),
            flag(manager.is_some(), 'm'),
            guid.map_or(0, str::len),
            guid.unwrap_or_default(),
            manager.unwrap_or_default()
        );
        Some(OtherNames(text.into_boxed_str()))
    }

    /// The GUID and the manager DN (None where the text is not one `new` made).
    fn parts(&self) -> Option<(Option<&str>, Option<&str>)> {
        let flags = self.0.get(..2)?;
        let (length, rest) = self.0.get(2..)?.split_once(':')?;
        let (guid, manager) = rest.split_at_checked(length.parse().ok()?)?;
        let present = |at: usize, c: u8| flags.as_bytes().get(at) == Some(&c);
        Some((
            present(0, b'g').then_some(guid),
            present(1, b'm').then_some(manager),
        ))
    }

    pub(super) fn guid(&self) -> Option<&str> {
        self.parts().and_then(|(g, _)| g)
    }

    pub(super) fn manager(&self) -> Option<&str> {
        self.parts().and_then(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_entry_with_neither_holds_nothing() {
        assert_eq!(OtherNames::new(None, None), None);
    }

    proptest! {
        /// Whatever the two hold (colons, digits, empty strings, any text), each comes back
        /// as it went in.
        #[test]
        fn each_name_comes_back_as_given(
            guid in proptest::option::of(".{0,40}"),
            manager in proptest::option::of(".{0,60}"),
        ) {
            let names = OtherNames::new(guid.as_deref(), manager.as_deref());
            match names {
                None => prop_assert!(guid.is_none() && manager.is_none()),
                Some(n) => {
                    prop_assert_eq!(n.guid(), guid.as_deref());
                    prop_assert_eq!(n.manager(), manager.as_deref());
                }
            }
        }
    }
}
