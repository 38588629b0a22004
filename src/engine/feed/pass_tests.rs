//! Feed passes through `run_feed`: what the first pass plans and what the later ones do, with a
//! target that records what it is sent.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::tests::{cfg, group, modify, refreshed, store, user, user_at, U1_MOVED};
use super::*;
use crate::model::{FieldChange, User};
use crate::target::{RemoteGroup, RemoteUser, Target, TargetError};

/// Records each request; `hide_title` plays a target found not to keep titles, and
/// `hide_on_preflight` one whose preflight finds it (a schema read there).
#[derive(Default)]
struct Recording {
    sent: Mutex<Vec<String>>,
    hide_title: AtomicBool,
    hide_on_preflight: AtomicBool,
}

impl Recording {
    fn log(&self, what: String) {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Target for Recording {
    fn describe(&self) -> String {
        "recording".into()
    }
    async fn preflight(&self) -> Result<(), TargetError> {
        if self.hide_on_preflight.load(Ordering::Relaxed) {
            self.hide_title.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
    fn fit_user(&self, user: &mut User) {
        if self.hide_title.load(Ordering::Relaxed) {
            user.title = None;
        }
    }
    fn fit_state(&self) -> u64 {
        u64::from(self.hide_title.load(Ordering::Relaxed))
    }
    async fn find_user(&self, _: &str) -> Result<Option<RemoteUser>, TargetError> {
        Ok(None)
    }
    async fn find_user_by_key(&self, _: &Key) -> Result<Option<RemoteUser>, TargetError> {
        Ok(None)
    }
    async fn find_group_by_key(&self, _: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        Ok(None)
    }
    async fn create_user(
        &self,
        key: &Key,
        _: &User,
        _: Option<&str>,
    ) -> Result<String, TargetError> {
        self.log(format!("create user {key}"));
        Ok(format!("u-{key}"))
    }
    async fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        _: &User,
        _: &User,
        _: Option<&str>,
    ) -> Result<(), TargetError> {
        let fields: Vec<String> = changes.iter().map(|c| format!("{:?}", c.field)).collect();
        self.log(format!("update user {id} {}", fields.join(",")));
        Ok(())
    }
    async fn deactivate_user(&self, id: &str) -> Result<(), TargetError> {
        self.log(format!("deactivate user {id}"));
        Ok(())
    }
    async fn delete_user(&self, id: &str) -> Result<(), TargetError> {
        self.log(format!("delete user {id}"));
        Ok(())
    }
    async fn find_group(&self, _: &str) -> Result<Option<RemoteGroup>, TargetError> {
        Ok(None)
    }
    async fn create_group(&self, key: &Key, _: &str) -> Result<String, TargetError> {
        self.log(format!("create group {key}"));
        Ok(format!("g-{key}"))
    }
    async fn rename_group(&self, id: &str, _: &str) -> Result<(), TargetError> {
        self.log(format!("rename group {id}"));
        Ok(())
    }
    async fn add_members(&self, id: &str, members: &[String]) -> Result<(), TargetError> {
        self.log(format!("add to {id}: {}", members.join(",")));
        Ok(())
    }
    async fn remove_members(&self, id: &str, members: &[String]) -> Result<(), TargetError> {
        self.log(format!("remove from {id}: {}", members.join(",")));
        Ok(())
    }
    async fn delete_group(&self, id: &str) -> Result<(), TargetError> {
        self.log(format!("delete group {id}"));
        Ok(())
    }
    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        Ok(Vec::new())
    }
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        Ok(Vec::new())
    }
}

/// User `n` with a title.
fn titled(n: u8, mail: &str) -> RawEntry {
    let mut e = user(n, mail);
    e.attrs.insert("title", vec![b"Engineer".to_vec()]);
    e
}

fn error(key: &str, run: u64) -> crate::state::ObjectError {
    crate::state::ObjectError {
        key: key.into(),
        kind: "user".into(),
        label: key.into(),
        operation: "update_user".into(),
        reason: "refused".into(),
        http_status: Some(500),
        first_seen: String::new(),
        last_seen: String::new(),
        attempts: 1,
        run,
        retry_after: None,
        attempted: None,
    }
}

fn error_keys(store: &Store) -> BTreeSet<String> {
    store.errors().unwrap().into_iter().map(|e| e.key).collect()
}

#[tokio::test]
async fn later_passes_plan_what_changed_and_settle_only_its_errors_and_a_changed_target_is_compared_anew(
) {
    let (_d, store) = store();
    let cfg = cfg();
    let target = Recording::default();
    let mut f = refreshed(&store);
    modify(&mut f, FeedScope::Users, 1, titled(1, "u1@x.org"));
    modify(&mut f, FeedScope::Users, 2, titled(2, "u2@x.org"));
    // An error of an object neither in the directory nor on the target: the first pass, which
    // plans everything, settles it.
    store.note_error(error("gone", 0)).unwrap();
    crate::engine::run_feed(&cfg, &store, &target, &mut f)
        .await
        .unwrap();
    let first = target.take();
    assert_eq!(
        first
            .iter()
            .filter(|s| s.starts_with("create user"))
            .count(),
        2,
        "{first:?}"
    );
    assert!(error_keys(&store).is_empty());

    // An error of an object this pass does not plan stays; u2's change goes alone.
    store.note_error(error("elsewhere", 0)).unwrap();
    modify(&mut f, FeedScope::Users, 2, titled(2, "new2@x.org"));
    crate::engine::run_feed(&cfg, &store, &target, &mut f)
        .await
        .unwrap();
    let sent = target.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("update user") && sent[0].ends_with(" Email"),
        "{sent:?}"
    );
    assert_eq!(
        error_keys(&store),
        BTreeSet::from(["elsewhere".to_string()])
    );

    // The target turns out not to keep titles: the records are compared anew, fitted the new
    // way on both sides, so u1's change is its email only and nothing clears u2's title.
    target.hide_title.store(true, Ordering::Relaxed);
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1_MOVED));
    let mut moved = titled(1, "new1@x.org");
    moved.dn = U1_MOVED.into();
    modify(&mut f, FeedScope::Users, 1, moved);
    crate::engine::run_feed(&cfg, &store, &target, &mut f)
        .await
        .unwrap();
    let sent = target.take();
    let updates: Vec<&String> = sent
        .iter()
        .filter(|s| s.starts_with("update user"))
        .collect();
    assert_eq!(updates.len(), 1, "{sent:?}");
    assert!(updates[0].ends_with(" Email"), "{sent:?}");
}
/// The mirror key of the entry whose DN starts with `prefix`.
fn key_of(f: &Feed, prefix: &str) -> Key {
    let m = f.mirror();
    m.users
        .iter()
        .chain(m.groups.iter())
        .find(|(_, e)| e.dn.starts_with(prefix))
        .map(|(k, _)| k.clone())
        .unwrap()
}

#[tokio::test]
async fn a_pass_after_the_first_plans_only_what_the_changes_reached() {
    use crate::engine::live::{from_feed, Follow, Known, Pending, Scope, Wanted};
    let (_d, store) = store();
    let mut f = refreshed(&store);
    let records = crate::state::records::Snapshot::default();
    let Wanted::Live {
        desired,
        scope: None,
    } = from_feed(&mut f, None, Known::Records(&records)).unwrap()
    else {
        panic!("the first pass plans everything from the live state");
    };
    f.save(&store).await.unwrap();
    let (k1, k2, g10) = (
        key_of(&f, "uid=u1,"),
        key_of(&f, "uid=u2,"),
        key_of(&f, "cn=g10,"),
    );

    // u2 (in no group) changes its mail: u2 alone (as a user, and as a group key: a group
    // sharing its key would depend on whether it is held).
    modify(&mut f, FeedScope::Users, 2, user(2, "new@x.org"));
    let kept = Some(Follow {
        desired,
        pending: Pending::default(),
        known_changed: Default::default(),
    });
    let Wanted::Live {
        desired,
        scope: Some(s),
    } = from_feed(&mut f, kept, Known::Records(&records)).unwrap()
    else {
        panic!("a later pass plans some keys");
    };
    let only = |keys: &[&Key]| keys.iter().map(|k| (*k).clone()).collect();
    assert_eq!(
        s,
        Scope {
            users: only(&[&k2]),
            groups: only(&[&k2]),
        }
    );
    f.save(&store).await.unwrap();

    // u1 moves: its group names it by its new DN (the group's member value is rewritten: a
    // change of the group too); what u2 left to do is planned again.
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1_MOVED));
    let pending = Pending {
        users: only(&[&k2]),
        groups: Default::default(),
    };
    let Wanted::Live {
        desired,
        scope: Some(s),
    } = from_feed(
        &mut f,
        Some(Follow {
            desired,
            pending,
            known_changed: Default::default(),
        }),
        Known::Records(&records),
    )
    .unwrap()
    else {
        panic!("a later pass plans some keys");
    };
    assert_eq!(
        s,
        Scope {
            users: only(&[&k1, &k2, &g10]),
            groups: only(&[&k1, &g10]),
        }
    );
    use crate::model::Desired;
    assert!(desired.group(&g10).unwrap().members.contains(&k1));
}

/// A pass with nothing kept (a restarted service's first) reads the records after building its
/// desired state, each fitted and made to share the user the directory wants as it is decoded:
/// one copy of each unchanged user, and of each key. A target that keeps no titles (known before the pass, or
/// found by its preflight) records the fitted copy and the desired state keeps the whole user.
/// Nothing is sent either way.
#[tokio::test]
async fn a_pass_with_nothing_kept_reads_the_records_sharing_the_users_the_directory_wants() {
    use crate::model::Desired;
    use std::sync::Arc;
    let (_d, store) = store();
    let cfg = cfg();
    let target = Recording::default();
    let mut f = refreshed(&store);
    modify(&mut f, FeedScope::Users, 1, titled(1, "u1@x.org"));
    crate::engine::run_feed(&cfg, &store, &target, &mut f)
        .await
        .unwrap();
    let first = target.take();
    let created = first.iter().filter(|s| s.starts_with("create user"));
    assert_eq!(created.count(), 2, "{first:?}");

    for (hide_title, on_preflight) in [(false, false), (true, false), (true, true)] {
        target
            .hide_title
            .store(hide_title && !on_preflight, Ordering::Relaxed);
        target
            .hide_on_preflight
            .store(on_preflight, Ordering::Relaxed);
        // Nothing kept: as after a restart.
        assert!(f.take_kept(store.records_generation()).is_some());
        f.retry_later();
        crate::engine::run_feed(&cfg, &store, &target, &mut f)
            .await
            .unwrap();
        assert!(target.take().is_empty(), "hide_title {hide_title}");
        let kept = f.take_kept(store.records_generation()).unwrap();
        let desired = kept.follow.as_ref().unwrap().desired.as_ref();
        assert_eq!(kept.records.users.len(), 2);
        for (k, r) in &kept.records.users {
            assert!(
                Arc::ptr_eq(k, desired.own_key(k).unwrap()),
                "{k}: the record's key is the desired state's"
            );
            let wanted = desired.user(k).unwrap();
            let titled = wanted.title.is_some();
            let shared = Arc::ptr_eq(wanted, &r.pushed);
            assert_eq!(
                shared,
                !(hide_title && titled),
                "{k} hide_title {hide_title}"
            );
            if hide_title && titled {
                assert_eq!(r.pushed.title, None, "the record is fitted");
            }
        }
        // A group's record holds the very member set its desired group holds.
        assert!(kept.records.groups.values().any(|r| !r.members.is_empty()));
        for (k, r) in &kept.records.groups {
            let wanted = desired.group(k).unwrap();
            assert!(
                Arc::ptr_eq(&wanted.members, &r.members),
                "{k}: shared members"
            );
        }
        assert_eq!(kept.fit_state, u64::from(hide_title));
        f.keep(kept);
    }
}

/// The groups a pass looked at or wrote share their members with the desired state again: a
/// record confirmed by the pass holds a new set, and so does a group whose entry changed but
/// not its members.
#[tokio::test]
async fn a_pass_shares_again_the_members_of_the_groups_it_looked_at() {
    use crate::model::Desired;
    use std::sync::Arc;
    let (_d, store) = store();
    let cfg = cfg();
    let target = Recording::default();
    let mut f = refreshed(&store);
    crate::engine::run_feed(&cfg, &store, &target, &mut f)
        .await
        .unwrap();
    target.take();
    let shared = |f: &mut Feed| {
        let kept = f.take_kept(store.records_generation()).unwrap();
        let desired = kept.follow.as_ref().unwrap().desired.as_ref();
        let (k, r) = kept.records.groups.iter().next().unwrap();
        let out = (
            r.members.len(),
            Arc::ptr_eq(&desired.group(k).unwrap().members, &r.members),
        );
        f.keep(kept);
        out
    };
    // A member added: the record is confirmed with a set of its own, then shared.
    modify(&mut f, FeedScope::Groups, 10, group(10, &[1, 2]));
    crate::engine::run_feed(&cfg, &store, &target, &mut f)
        .await
        .unwrap();
    assert!(
        target.take().iter().any(|s| s.starts_with("add to ")),
        "the member is added"
    );
    assert_eq!(shared(&mut f), (2, true));
    // The entry changed, not its members: nothing is sent, and the set is shared again.
    let mut e = group(10, &[1, 2]);
    e.attrs
        .insert("description", vec![b"now described".to_vec()]);
    modify(&mut f, FeedScope::Groups, 10, e);
    crate::engine::run_feed(&cfg, &store, &target, &mut f)
        .await
        .unwrap();
    assert!(target.take().is_empty());
    assert_eq!(shared(&mut f), (2, true));
}

/// u2 takes u1's userName: the first pass asks the store which of the two the target already
/// holds (that one keeps the name; the other is held), both ways round.
#[tokio::test]
async fn a_first_pass_asks_the_store_which_user_sharing_a_name_it_already_holds() {
    use crate::engine::live::{from_feed, Known, Wanted};
    use crate::model::Desired;
    use crate::state::records::{Origin, StateChange, UserRecord};
    for holder in [1u8, 2] {
        let (_d, store) = store();
        let mut f = refreshed(&store);
        let (k1, k2) = (key_of(&f, "uid=u1,"), key_of(&f, "uid=u2,"));
        let mut taker = user(2, "u2@x.org");
        taker.attrs.insert("uid", vec![b"u1".to_vec()]);
        modify(&mut f, FeedScope::Users, 2, taker);
        let (held, other) = if holder == 1 { (&k1, &k2) } else { (&k2, &k1) };
        let record = UserRecord::new("t".into(), Origin::Created, User::default());
        store
            .commit(&[StateChange::PutUser(held.clone(), record)], None)
            .await
            .unwrap();
        let Wanted::Live { desired, .. } = from_feed(&mut f, None, Known::Store(&store)).unwrap()
        else {
            panic!("the live state follows this mapping");
        };
        assert_eq!(
            desired.user(held).map(|u| u.user_name.to_string()),
            Some("u1".to_string()),
            "the user the store holds keeps the name"
        );
        assert!(desired.user(other).is_none(), "the other one waits");
        assert!(desired.held(other));
    }
}
