//! Creates without a look-up each. Before a run with many creates, the client lists the
//! target once and keeps the names it holds; every name the gateway then tries to create is
//! added before its request goes out (created or not: a failed or lost create leaves the name
//! in doubt). A name outside the set is surely free as of this pass, so its create is sent
//! without looking it up first; a name inside it is looked up as always. A name someone else
//! takes meanwhile is answered with "already exists", which is looked up afresh and adopted.

use std::collections::HashSet;

/// Fewer creates than this are looked up one by one (a listing costs more than it saves).
pub(crate) const MIN_CREATES: usize = 32;

/// Whether listing `total` objects, `page` at a time, costs fewer requests than looking up
/// `creates` objects one by one. An unknown total lists only for many creates.
pub(crate) fn worth_listing(creates: usize, total: Option<u64>, page: u64) -> bool {
    if creates < MIN_CREATES {
        return false;
    }
    match total {
        Some(t) => t / page.max(1) < creates as u64,
        None => creates >= 1000,
    }
}

/// User names compare as the adoption rule compares them: ASCII letters in any case.
fn user_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The names a listing of this pass found, plus every name tried since.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    users: Option<HashSet<String>>,
    groups: Option<HashSet<String>>,
}

impl Taken {
    pub(crate) fn set_users(&mut self, names: impl IntoIterator<Item = String>) {
        self.users = Some(names.into_iter().map(|n| user_key(&n)).collect());
    }

    pub(crate) fn set_groups(&mut self, names: impl IntoIterator<Item = String>) {
        self.groups = Some(names.into_iter().collect());
    }

    /// True only when this pass listed the users and none has this name.
    pub(crate) fn user_free(&self, name: &str) -> bool {
        self.users
            .as_ref()
            .is_some_and(|s| !s.contains(&user_key(name)))
    }

    pub(crate) fn group_free(&self, name: &str) -> bool {
        self.groups.as_ref().is_some_and(|s| !s.contains(name))
    }

    /// A create of this name is about to be sent.
    pub(crate) fn trying_user(&mut self, name: &str) {
        if let Some(s) = self.users.as_mut() {
            s.insert(user_key(name));
        }
    }

    pub(crate) fn trying_group(&mut self, name: &str) {
        if let Some(s) = self.groups.as_mut() {
            s.insert(name.to_string());
        }
    }
}

/// A `Taken` shared by a client's requests; a poisoned lock reads as "not listed".
#[derive(Debug, Default)]
pub(crate) struct SharedTaken(std::sync::Mutex<Taken>);

impl SharedTaken {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Taken) -> R) -> Option<R> {
        self.0.lock().ok().map(|mut t| f(&mut t))
    }

    /// Forgets the listing (a new pass).
    pub(crate) fn clear(&self) {
        self.with(|t| *t = Taken::default());
    }

    pub(crate) fn user_free(&self, name: &str) -> bool {
        self.with(|t| t.user_free(name)).unwrap_or(false)
    }

    pub(crate) fn group_free(&self, name: &str) -> bool {
        self.with(|t| t.group_free(name)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_pass_says_a_name_is_free() {
        let mut t = Taken::default();
        assert!(!t.user_free("ann"), "not listed: unknown, looked up");
        t.trying_user("ann");
        t.set_users(["Bob".to_string()]);
        assert!(t.user_free("ann"));
        assert!(!t.user_free("BOB"), "names compare in any ASCII case");
        // KELVIN SIGN is not K: a look-alike is another name, as for adoption.
        assert!(t.user_free("\u{212a}ate") && t.user_free("kate"));
        t.trying_user("Ann");
        assert!(
            !t.user_free("ann"),
            "tried in this pass: no longer surely free"
        );
        assert!(!t.group_free("admins"));
        t.set_groups(["admins".to_string()]);
        assert!(!t.group_free("admins") && t.group_free("Admins"));
        t.trying_group("Admins");
        assert!(!t.group_free("Admins"));
    }

    #[test]
    fn a_listing_is_chosen_only_when_it_costs_fewer_requests() {
        assert!(!worth_listing(10, Some(0), 200), "a few creates: looked up");
        assert!(worth_listing(100, Some(0), 200));
        assert!(worth_listing(100, Some(19_999), 200));
        assert!(
            !worth_listing(100, Some(20_000), 200),
            "100 pages for 100 look-ups"
        );
        assert!(!worth_listing(500, None, 200));
        assert!(worth_listing(1000, None, 200));
    }
}
