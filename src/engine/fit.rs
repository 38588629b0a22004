//! What the target cannot hold is neither sent nor compared: it is left out of the desired
//! users and of the records before planning (`Target::fit_user`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{fit_shared, DesiredState, Key, User};
use crate::state::records::{Snapshot, UserRecord};
use crate::target::Target;

/// Leaves out of the desired users and of the records what the target cannot hold, so that it
/// is neither sent nor seen as a difference.
pub(crate) fn fit<T: Target>(target: &T, desired: &mut DesiredState, records: &mut Snapshot) {
    if !target.holds_groups() {
        desired.groups.clear();
        records.groups.clear();
    }
    fit_pairs(
        &|u| target.fit_user(u),
        &mut desired.users,
        &mut records.users,
    );
}

/// Fits every desired user and every record. A desired user its record shares (unchanged
/// since pushed, `DesiredBuilder::share_with`) is fitted once, in place, for both: fitting a
/// copy of each to learn whether the fit changes it cost two copies per user and pass.
fn fit_pairs(
    fit: &dyn Fn(&mut User),
    desired: &mut BTreeMap<Key, Arc<User>>,
    records: &mut BTreeMap<Key, UserRecord>,
) {
    let placeholder = Arc::new(User::default());
    let mut wanted = desired.iter_mut().peekable();
    for (k, r) in records.iter_mut() {
        while let Some((_, u)) = wanted.next_if(|(w, _)| *w < k) {
            fit_shared(u, fit);
        }
        match wanted.next_if(|(w, _)| *w == k) {
            Some((_, u)) if Arc::ptr_eq(u, &r.pushed) => {
                // Equal users fit equally: the record takes the desired user once fitted.
                r.pushed = Arc::clone(&placeholder);
                fit_shared(u, fit);
                r.pushed = Arc::clone(u);
            }
            Some((_, u)) => {
                fit_shared(u, fit);
                fit_shared(&mut r.pushed, fit);
            }
            None => fit_shared(&mut r.pushed, fit),
        }
    }
    for (_, u) in wanted {
        fit_shared(u, fit);
    }
}

/// [`fit`]'s half for the records.
pub(super) fn fit_records<T: Target>(target: &T, records: &mut Snapshot) {
    if !target.holds_groups() {
        records.groups.clear();
    }
    for rec in records.users.values_mut() {
        fit_shared(&mut rec.pushed, &|u| target.fit_user(u));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, title: Option<&str>) -> Arc<User> {
        Arc::new(User {
            user_name: name.into(),
            title: title.map(Into::into),
            active: true,
            ..Default::default()
        })
    }

    fn record(u: &Arc<User>) -> UserRecord {
        UserRecord::new(
            "id".into(),
            crate::state::records::Origin::Created,
            Arc::clone(u),
        )
    }

    /// The target keeps no title.
    fn fit(u: &mut User) {
        u.title = None;
    }

    #[test]
    fn a_user_shared_with_its_record_is_fitted_once_for_both_and_the_rest_each_alone() {
        let same = user("same", None);
        let titled = user("titled", Some("Boss"));
        let (mut desired, mut records) = (BTreeMap::new(), BTreeMap::new());
        for (k, u) in [("a", &same), ("b", &titled)] {
            desired.insert(Key::from(k), Arc::clone(u));
            records.insert(Key::from(k), record(u));
        }
        // Not shared: a desired user and its record that are copies, one of each alone.
        desired.insert("c".into(), user("c", Some("x")));
        records.insert("c".into(), record(&user("c", Some("y"))));
        desired.insert("d".into(), user("d", Some("x")));
        records.insert("e".into(), record(&user("e", Some("y"))));
        drop((same, titled));

        let before_a = Arc::clone(&desired["a"]);
        fit_pairs(&fit, &mut desired, &mut records);
        // Unchanged by the fit: still the very same user, shared.
        assert!(Arc::ptr_eq(&desired["a"], &before_a));
        assert!(Arc::ptr_eq(&records["a"].pushed, &before_a));
        // Changed by it: fitted, and still one user for both.
        assert_eq!(desired["b"].title, None);
        assert!(Arc::ptr_eq(&desired["b"], &records["b"].pushed));
        for k in ["c", "d"] {
            assert_eq!(desired[k].title, None);
        }
        for k in ["c", "e"] {
            assert_eq!(records[k].pushed.title, None);
        }
        assert!(!Arc::ptr_eq(&desired["c"], &records["c"].pushed));
        assert_eq!(desired.len(), 4);
        assert_eq!(records.len(), 4);
    }
}
