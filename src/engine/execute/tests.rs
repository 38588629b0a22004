//! The executor's timing cannot be staged with a real server on demand, so a scripted target
//! plays a request whose answer arrives while the executor is busy with another object.
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::model::DesiredState;
use crate::model::{FieldChange, User};
use crate::target::{RemoteGroup, RemoteUser, TargetErrorKind};

/// "a" fails after 5 ms with no answer (a probe of the target follows, and takes 300 ms);
/// "b" answers after 20 ms, and like reqwest, a request not read within 100 ms of being
/// started counts as lost.
#[derive(Default)]
struct Busy {
    creates: Mutex<BTreeMap<String, u32>>,
}

fn err(kind: TargetErrorKind) -> TargetError {
    TargetError {
        request: "POST /Users".into(),
        kind,
    }
}

impl Target for Busy {
    fn describe(&self) -> String {
        "busy".into()
    }
    async fn reachable(&self) -> bool {
        tokio::time::sleep(Duration::from_millis(300)).await;
        true
    }
    async fn find_user_by_key(&self, _: &Key) -> Result<Option<RemoteUser>, TargetError> {
        Ok(None)
    }
    async fn find_group_by_key(&self, _: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        Ok(None)
    }
    async fn preflight(&self) -> Result<(), TargetError> {
        Ok(())
    }
    async fn find_user(&self, _: &str) -> Result<Option<RemoteUser>, TargetError> {
        Ok(None)
    }
    async fn create_user(
        &self,
        key: &Key,
        _: &User,
        _: Option<&str>,
    ) -> Result<String, TargetError> {
        *self
            .creates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default() += 1;
        if &**key == "a" {
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Err(err(TargetErrorKind::Transport("connection reset".into())));
        }
        let started = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() > Duration::from_millis(100) {
            return Err(err(TargetErrorKind::Lost("answer not read in time".into())));
        }
        Ok(format!("id-{key}"))
    }
    async fn update_user(
        &self,
        _: &str,
        _: &[FieldChange],
        _: &User,
        _: &User,
        _: Option<&str>,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    async fn deactivate_user(&self, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn delete_user(&self, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn find_group(&self, _: &str) -> Result<Option<RemoteGroup>, TargetError> {
        Ok(None)
    }
    async fn create_group(&self, _: &Key, _: &str) -> Result<String, TargetError> {
        Ok("g".into())
    }
    async fn rename_group(&self, _: &str, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn add_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
        Ok(())
    }
    async fn remove_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
        Ok(())
    }
    async fn delete_group(&self, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        Ok(Vec::new())
    }
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        Ok(Vec::new())
    }
}

fn create(key: &str) -> Operation {
    Operation::CreateUser {
        key: key.into(),
        user_name: key.into(),
        user: User {
            user_name: key.into(),
            active: true,
            ..Default::default()
        }
        .into(),
    }
}

#[tokio::test]
async fn an_answer_that_arrives_while_another_object_is_handled_is_read_in_time() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.path().join("state"), 1 << 20).unwrap_or_else(|e| panic!("{e}"));
    let target = Busy::default();
    let desired = DesiredState::default();
    let mut summary = Summary::default();
    let mut exec = Executor {
        store: &store,
        target: &target,
        records: Snapshot::default(),
        desired: &desired,
        summary: &mut summary,
        run: 1,
        changed_at: BTreeMap::new(),
        changed_since: None,
        waiting: BTreeMap::new(),
        interrupted: BTreeMap::new(),
        window: Default::default(),
        journal: Vec::new(),
        moved: Some(Default::default()),
        census: Default::default(),
    };
    exec.run_all(vec![create("a"), create("b")], 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        exec.records.users.get("b").map(|r| r.target_id.as_str()),
        Some("id-b")
    );
    let creates = target
        .creates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Read in time: sent once, never taken for lost and sent again.
    assert_eq!(creates.get("b"), Some(&1), "{creates:?}");
    assert_eq!(summary.errors, 1, "a's failure only");
}

/// A target that checks, at every request, that the group commit kept its promises: the
/// request's intent is in the store, and every object it names by id (a manager, a group, its
/// members) has its confirmation in the store. Answers come back after varied delays, so
/// windows close at varied points.
struct Strict {
    store: std::sync::Arc<Store>,
    violations: Mutex<Vec<String>>,
    sent: Mutex<Vec<String>>,
}

impl Strict {
    fn violation(&self, v: String) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }

    fn check_intent(&self, key: &str, what: &str) {
        let intents = self.store.intents().unwrap_or_default();
        if !intents.contains_key(key) {
            self.violation(format!("{what} sent before its intent was written"));
        }
    }

    fn check_user_ids(&self, ids: &[String], what: &str) {
        let records = self.store.snapshot().unwrap_or_default();
        for id in ids {
            if !records.users.values().any(|r| &r.target_id == id) {
                self.violation(format!(
                    "{what} names user {id} before its create is recorded"
                ));
            }
        }
    }

    async fn answer(&self, what: String) {
        // 0 to 3 ms, varied by request.
        let n = what
            .bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
        tokio::time::sleep(Duration::from_micros(n % 3000)).await;
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

impl Target for Strict {
    fn describe(&self) -> String {
        "strict".into()
    }
    async fn find_user_by_key(&self, _: &Key) -> Result<Option<RemoteUser>, TargetError> {
        Ok(None)
    }
    async fn find_group_by_key(&self, _: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        Ok(None)
    }
    async fn preflight(&self) -> Result<(), TargetError> {
        Ok(())
    }
    async fn find_user(&self, _: &str) -> Result<Option<RemoteUser>, TargetError> {
        Ok(None)
    }
    async fn create_user(
        &self,
        key: &Key,
        _: &User,
        manager_id: Option<&str>,
    ) -> Result<String, TargetError> {
        let what = format!("create user {key}");
        self.check_intent(key, &what);
        if let Some(m) = manager_id {
            self.check_user_ids(&[m.to_string()], &what);
        }
        self.answer(what).await;
        Ok(format!("u-{key}"))
    }
    async fn update_user(
        &self,
        id: &str,
        _: &[FieldChange],
        _: &User,
        _: &User,
        manager_id: Option<&str>,
    ) -> Result<(), TargetError> {
        let what = format!("update user {id}");
        let mut ids = vec![id.to_string()];
        ids.extend(manager_id.map(str::to_string));
        self.check_user_ids(&ids, &what);
        self.answer(what).await;
        Ok(())
    }
    async fn deactivate_user(&self, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn delete_user(&self, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn find_group(&self, _: &str) -> Result<Option<RemoteGroup>, TargetError> {
        Ok(None)
    }
    async fn create_group(&self, key: &Key, _: &str) -> Result<String, TargetError> {
        let what = format!("create group {key}");
        self.check_intent(key, &what);
        self.answer(what).await;
        Ok(format!("g-{key}"))
    }
    async fn rename_group(&self, _: &str, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn add_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        let what = format!("add members to {id}");
        let records = self.store.snapshot().unwrap_or_default();
        if !records.groups.values().any(|g| g.target_id == id) {
            self.violation(format!("{what} before the group's create is recorded"));
        }
        self.check_user_ids(member_ids, &what);
        self.answer(what).await;
        Ok(())
    }
    async fn remove_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
        Ok(())
    }
    async fn delete_group(&self, _: &str) -> Result<(), TargetError> {
        Ok(())
    }
    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        Ok(Vec::new())
    }
    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        Ok(Vec::new())
    }
}

/// 700 users (managers in chains: each a report of the one before it every fifth user), four
/// groups of 350, and the plan of their first sync.
fn first_sync() -> (DesiredState, Vec<Operation>, crate::plan::Policy) {
    use crate::model::Group;
    let mut desired = DesiredState::default();
    for i in 0..700 {
        let manager = (i % 5 != 0).then(|| format!("k{:04}", i - 1));
        desired.users.insert(
            format!("k{i:04}").into(),
            User {
                user_name: format!("user{i}").into(),
                active: true,
                manager: manager.map(Into::into),
                ..Default::default()
            }
            .into(),
        );
    }
    for g in 0..4 {
        desired.groups.insert(
            format!("g{g}").into(),
            Group {
                display_name: format!("group {g}"),
                members: (0..700)
                    .filter(|i| i % 4 == g || i % 4 == (g + 1) % 4)
                    .map(|i| format!("k{i:04}").into())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into(),
            },
        );
    }
    let policy = crate::plan::Policy {
        on_disable: crate::config::RemovalAction::Deactivate,
        on_remove: crate::config::RemovalAction::Deactivate,
    };
    let ops = crate::plan::plan(&desired, &Snapshot::default(), &policy);
    (desired, ops, policy)
}

fn executor<'a>(
    store: &'a Store,
    target: &'a Strict,
    desired: &'a DesiredState,
    summary: &'a mut Summary,
) -> Executor<'a, Strict> {
    Executor {
        store,
        target,
        records: Snapshot::default(),
        desired,
        summary,
        run: 1,
        changed_at: BTreeMap::new(),
        changed_since: None,
        waiting: BTreeMap::new(),
        interrupted: BTreeMap::new(),
        window: Default::default(),
        journal: Vec::new(),
        moved: Some(Default::default()),
        census: Default::default(),
    }
}

fn strict_target(store: &std::sync::Arc<Store>) -> Strict {
    Strict {
        store: store.clone(),
        violations: Mutex::new(Vec::new()),
        sent: Mutex::new(Vec::new()),
    }
}

#[tokio::test]
async fn group_commit_sends_nothing_before_what_it_depends_on_is_recorded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = std::sync::Arc::new(
        Store::open(&dir.path().join("state"), 1 << 20).unwrap_or_else(|e| panic!("{e}")),
    );
    let (desired, ops, policy) = first_sync();
    let target = strict_target(&store);
    let mut summary = Summary::default();
    let mut exec = executor(&store, &target, &desired, &mut summary);
    exec.run_all(ops.clone(), 4)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let violations = target.violations.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        violations.is_empty(),
        "{:#?}",
        &violations[..violations.len().min(5)]
    );
    // Everything was sent once and is on disk; nothing is left to do, nothing in flight.
    let on_disk = store.snapshot().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(on_disk.users.len(), 700);
    assert_eq!(on_disk.groups.len(), 4);
    assert!(on_disk.groups.values().all(|g| g.members.len() == 350));
    assert!(store.intents().unwrap_or_default().is_empty());
    assert_eq!(crate::plan::plan(&desired, &on_disk, &policy), vec![]);
    let sent = target.sent.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(sent.len(), ops.len(), "each operation sent once");
    assert_eq!(summary.errors + summary.deferred, 0);
    // The journal, written at most once a second, holds every operation once the run is over.
    let journal = store
        .recent_operations(usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        journal.len(),
        ops.len().min(crate::state::JOURNAL_LENGTH as usize)
    );
    assert!(journal.iter().all(|j| j.run == 1));
}

#[tokio::test]
async fn an_intent_an_earlier_run_left_survives_an_error_answer_and_a_new_one_does_not() {
    for earlier in [false, true] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            Store::open(&dir.path().join("state"), 1 << 20).unwrap_or_else(|e| panic!("{e}"));
        let target = Busy::default();
        let desired = DesiredState::default();
        let mut summary = Summary::default();
        let mut interrupted = BTreeMap::new();
        if earlier {
            // A crash after "a"'s create was sent: it may have been carried out.
            interrupted.insert(
                "a".into(),
                crate::state::Intent {
                    operation: "create_user".into(),
                    label: "a".into(),
                    run: 1,
                    at: "t".into(),
                },
            );
        }
        let mut exec = Executor {
            store: &store,
            target: &target,
            records: Snapshot::default(),
            desired: &desired,
            summary: &mut summary,
            run: 2,
            changed_at: BTreeMap::new(),
            changed_since: None,
            waiting: BTreeMap::new(),
            interrupted,
            window: Default::default(),
            journal: Vec::new(),
            moved: Some(Default::default()),
            census: Default::default(),
        };
        // "a" is answered with an error (no answer, the target reachable): not carried out.
        exec.run_all(vec![create("a")], 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let intents = store.intents().unwrap_or_default();
        assert_eq!(
            intents.contains_key("a"),
            earlier,
            "earlier: {earlier}: {intents:?}"
        );
    }
}

/// A store that stops taking writes mid-pass (a full disk): the pass ends with the store's
/// error, having sent nothing whose intent is not on disk; when the failure passes, every
/// answer the pass received is recorded by its last write, the failed window's included.
#[tokio::test]
async fn a_window_that_cannot_be_written_stops_the_pass_and_loses_no_confirmation() {
    for sticky in [true, false] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = std::sync::Arc::new(
            Store::open(&dir.path().join("state"), 1 << 20).unwrap_or_else(|e| panic!("{e}")),
        );
        store.fail_windows(3, if sticky { u64::MAX } else { 1 });
        let (desired, ops, _) = first_sync();
        let target = strict_target(&store);
        let mut summary = Summary::default();
        let mut exec = executor(&store, &target, &desired, &mut summary);
        let ended = tokio::time::timeout(Duration::from_secs(30), exec.run_all(ops.clone(), 4))
            .await
            .unwrap_or_else(|_| panic!("sticky {sticky}: the pass did not end"));
        let e = ended
            .err()
            .unwrap_or_else(|| panic!("sticky {sticky}: no error"));
        assert!(e.to_string().contains("no space left"), "{e}");
        let violations = target.violations.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            violations.is_empty(),
            "{:#?}",
            &violations[..violations.len().min(5)]
        );
        let sent = target
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert!(!sent.is_empty() && sent.len() < ops.len(), "{}", sent.len());
        if sticky {
            continue;
        }
        let on_disk = store.snapshot().unwrap_or_else(|e| panic!("{e}"));
        for what in &sent {
            if let Some(key) = what.strip_prefix("create user ") {
                assert!(on_disk.users.contains_key(key), "{what}: not recorded");
            }
        }
        assert!(store.intents().unwrap_or_default().is_empty());
    }
}
