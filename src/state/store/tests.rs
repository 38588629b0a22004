use super::*;
use crate::model::User;
use crate::state::records::{GroupRecord, Origin, Snapshot, StateChange, UserRecord};

fn rec(id: &str) -> UserRecord {
    UserRecord::new(
        id.into(),
        Origin::Created,
        User {
            user_name: format!("user-{id}").into(),
            active: true,
            ..Default::default()
        },
    )
}

fn error(key: &str, run: u64) -> ObjectError {
    ObjectError {
        key: key.into(),
        kind: "user".into(),
        label: key.into(),
        operation: "create_user".into(),
        reason: "HTTP 400".into(),
        http_status: Some(400),
        first_seen: format!("t{run}"),
        last_seen: format!("t{run}"),
        attempts: 1,
        run,
        retry_after: None,
        attempted: Some("digest".into()),
    }
}

#[tokio::test]
async fn a_refused_operation_waits_longer_after_each_attempt_and_a_deferral_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), 1 << 20).unwrap();
    let before = time::OffsetDateTime::now_utc();
    store.record_error(error("k1", 1)).await.unwrap();
    let first = store.errors().unwrap()[0].retry_time().unwrap();
    store.record_error(error("k1", 2)).await.unwrap();
    let second = store.errors().unwrap()[0].retry_time().unwrap();
    assert!(
        first >= before + time::Duration::seconds(9),
        "{first} vs {before}"
    );
    assert!(
        second - before >= time::Duration::seconds(19),
        "{second} vs {before}"
    );
    assert_eq!(store.next_retry().unwrap(), Some(second));
    assert_eq!(retry_delay(1), std::time::Duration::from_secs(10));
    assert_eq!(retry_delay(4), std::time::Duration::from_secs(80));
    assert_eq!(retry_delay(40), std::time::Duration::from_secs(3600));
    // Run 3 put it off: pruning after run 3 must not take it for fixed.
    store.defer_error("k1", 3).await.unwrap();
    store.prune_errors(3).await.unwrap();
    assert_eq!(store.errors().unwrap().len(), 1);
    store.prune_errors(4).await.unwrap();
    assert!(store.errors().unwrap().is_empty());
}

/// Opens the store at `path` again once this process has closed it (a sled store of an earlier
/// release, to migrate: sled's flusher thread lets go of its lock a moment after it is dropped).
fn reopen(path: &std::path::Path) -> Store {
    let start = std::time::Instant::now();
    loop {
        match Store::open(path, 1 << 20) {
            Ok(s) => return s,
            Err(e) if start.elapsed() < std::time::Duration::from_secs(10) => {
                let text = e.to_string();
                assert!(text.contains("lock") || text.contains("in use"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn committed_changes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    {
        let store = Store::open(&path, 1 << 20).unwrap();
        store
            .commit(
                &[
                    StateChange::PutUser("k1".into(), rec("1")),
                    StateChange::PutUser("k2".into(), rec("2")),
                    StateChange::PutGroup(
                        "g".into(),
                        GroupRecord {
                            target_id: "g1".into(),
                            origin: Origin::Adopted,
                            display_name: "G".into(),
                            members: std::collections::BTreeSet::from([crate::model::Key::from(
                                "k1",
                            )])
                            .into(),
                        },
                    ),
                ],
                None,
            )
            .await
            .unwrap();
        store
            .commit(&[StateChange::RemoveUser("k2".into())], None)
            .await
            .unwrap();
        store.set_target_identity("https://t/scim").await.unwrap();
    }
    assert!(Store::exists(&path));
    let store = reopen(&path);
    let s = store.snapshot().unwrap();
    assert_eq!(s.users.keys().map(|k| &**k).collect::<Vec<_>>(), vec!["k1"]);
    assert_eq!(s.users["k1"], rec("1"));
    assert_eq!(s.groups["g"].members.len(), 1);
    assert_eq!(
        store.target_identity().unwrap().as_deref(),
        Some("https://t/scim")
    );
}

#[tokio::test]
async fn errors_count_attempts_are_cleared_on_success_and_pruned_by_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    store.record_error(error("k1", 1)).await.unwrap();
    store.record_error(error("k1", 2)).await.unwrap();
    store.record_error(error("k2", 2)).await.unwrap();
    store.record_error(error("k3", 1)).await.unwrap();
    let errs = store.errors().unwrap();
    let k1 = errs.iter().find(|e| e.key == "k1").unwrap();
    assert_eq!(k1.attempts, 2);
    assert_eq!(k1.first_seen, "t1");
    store
        .commit(
            &[StateChange::PutUser("k2".into(), rec("2"))],
            Some(&"k2".into()),
        )
        .await
        .unwrap();
    store.prune_errors(2).await.unwrap();
    let keys: Vec<String> = store.errors().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec!["k1"]);
    // A window confirming objects with and without an error clears each one's intent and the
    // errors there are, and no other.
    store.record_error(error("k4", 2)).await.unwrap();
    let mut w = super::Window::default();
    for k in ["k0", "k1", "k9"] {
        w.intents.push((
            k.into(),
            Intent {
                operation: "update_user".into(),
                label: k.into(),
                run: 3,
                at: "t".into(),
            },
        ));
    }
    store.write_window(&w).unwrap();
    let w = super::Window {
        resolved: vec!["k9".into(), "k1".into(), "k0".into()],
        ..Default::default()
    };
    store.write_window(&w).unwrap();
    let keys: Vec<String> = store.errors().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec!["k4"]);
    assert!(store.intents().unwrap().is_empty());
}

#[tokio::test]
async fn replace_all_leaves_exactly_the_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    store
        .commit(
            &[
                StateChange::PutUser("old".into(), rec("1")),
                StateChange::PutUser("kept".into(), rec("2")),
            ],
            None,
        )
        .await
        .unwrap();
    let mut s = Snapshot::default();
    s.users.insert("kept".into(), rec("22"));
    s.users.insert("new".into(), rec("3"));
    store.replace_all(&s).await.unwrap();
    assert_eq!(store.snapshot().unwrap(), s);
}

#[cfg(unix)]
#[tokio::test]
async fn the_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("st");
    let store = Store::open(&path, 1 << 20).unwrap();
    store
        .commit(&[StateChange::PutUser("k".into(), rec("1"))], None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&path).unwrap().flatten() {
        let mode = entry.metadata().unwrap().permissions().mode() & 0o077;
        assert_eq!(mode, 0, "{} is readable by others", entry.path().display());
    }
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), 1 << 20).unwrap();
    // The store file is locked; a second open in the same process is refused the same way.
    let second = Store::open(dir.path(), 1 << 20);
    assert!(second.is_err());
}

#[tokio::test]
async fn an_intent_lives_until_its_confirmation_or_a_later_run_prunes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), 1 << 20).unwrap();
    let intent = |run| Intent {
        operation: "create_user".into(),
        label: "alice".into(),
        run,
        at: "t".into(),
    };
    store.record_intent("k1", &intent(1)).await.unwrap();
    store.record_intent("k2", &intent(1)).await.unwrap();
    assert_eq!(store.intents().unwrap().len(), 2);
    // Confirmed: gone with the commit, in the same transaction.
    store
        .commit(
            &[StateChange::PutUser("k1".into(), rec("id-1"))],
            Some(&"k1".into()),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .intents()
            .unwrap()
            .keys()
            .map(|k| &**k)
            .collect::<Vec<_>>(),
        vec!["k2"]
    );
    // Survives a reopen (a crash), then a later run that did not need it drops it.
    drop(store);
    let store = reopen(&dir.path().join("state"));
    assert_eq!(store.intents().unwrap()["k2"], intent(1));
    // A later run that put its retry off keeps it.
    store.defer_intent("k2", 2).unwrap();
    store.prune_intents(2).await.unwrap();
    assert_eq!(store.intents().unwrap()["k2"].run, 2);
    store.prune_intents(3).await.unwrap();
    assert!(store.intents().unwrap().is_empty());
}

#[tokio::test]
async fn every_write_of_the_records_moves_their_generation_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), 1 << 20).unwrap();
    let g0 = store.records_generation();
    // Intents, errors and the journal are not the records.
    let mut w = super::Window::default();
    w.intents.push((
        "k1".into(),
        Intent {
            operation: "create_user".into(),
            label: "alice".into(),
            run: 1,
            at: "t".into(),
        },
    ));
    store.write_window(&w).unwrap();
    store.note_error(error("k1", 1)).unwrap();
    assert_eq!(store.records_generation(), g0);
    let mut w = super::Window::default();
    w.changes
        .push(StateChange::PutUser("k1".into(), rec("id-1")));
    w.resolved.push("k1".into());
    store.write_window(&w).unwrap();
    let g1 = store.records_generation();
    assert!(g1 > g0);
    store
        .commit(&[StateChange::RemoveUser("k1".into())], None)
        .await
        .unwrap();
    let g2 = store.records_generation();
    assert!(g2 > g1);
    store.replace_all(&Snapshot::default()).await.unwrap();
    assert!(store.records_generation() > g2);
}

#[tokio::test]
async fn a_feed_saved_in_batches_is_all_there_and_its_checkpoint_last() {
    use crate::source::entry::RawEntry;
    use crate::state::Mirror;
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), 1 << 20).unwrap();
    let entry = |i: usize| RawEntry {
        dn: format!("uid=u{i},dc=x"),
        dn_guid: None,
        attrs: [("uid".to_string(), vec![format!("u{i}").into_bytes()])].into(),
    };
    // What an earlier configuration stored: gone at the save, being among the unsaved keys.
    let mut stale = Mirror::default();
    stale.users.insert("stale".into(), entry(0));
    let keys = [BTreeSet::from(["stale".into()]), BTreeSet::new()];
    store
        .save_feed(&writes(&stale, &keys), &"old")
        .await
        .unwrap();

    let mut m = Mirror::default();
    for i in 0..12_000 {
        m.users.insert(format!("k{i:05}").into(), entry(i));
    }
    m.groups.insert("g".into(), entry(99_999));
    let mut unsaved = [
        m.users.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::new(),
    ];
    unsaved[0].insert("stale".into());
    unsaved[1].insert("g".into());
    store
        .save_feed_in_batches(&writes(&m, &unsaved), &"new")
        .await
        .unwrap();
    drop(store);
    let store = reopen(&dir.path().join("s"));
    assert_eq!(store.mirror().unwrap(), m);
    assert_eq!(
        store.feed_checkpoint::<String>().unwrap().as_deref(),
        Some("new")
    );
}

#[tokio::test]
async fn the_mirror_trees_describe_one_reader_at_a_time() {
    use crate::state::{Mirror, Watermark};
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), 1 << 20).unwrap();
    let wm = Watermark {
        dc: "dc1".into(),
        invocation_id: "inv".into(),
        usn: 7,
        fingerprint: "f".into(),
    };
    let none: [BTreeSet<Key>; 2] = Default::default();
    // An AD read's mirror, then a feed's: the watermark no longer describes the trees.
    store
        .save_mirror(&Mirror::default(), None, &wm)
        .await
        .unwrap();
    assert!(store.watermark().unwrap().is_some());
    store
        .save_feed(&writes(&Mirror::default(), &none), &"c")
        .await
        .unwrap();
    assert!(store.watermark().unwrap().is_none());
    assert!(store.feed_checkpoint::<String>().unwrap().is_some());
    // And the other way round; a first feed save in batches forgets it too.
    store
        .save_mirror(&Mirror::default(), None, &wm)
        .await
        .unwrap();
    assert!(store.feed_checkpoint::<String>().unwrap().is_none());
    store
        .save_feed_in_batches(&writes(&Mirror::default(), &none), &"c")
        .await
        .unwrap();
    assert!(store.watermark().unwrap().is_none());
}

#[tokio::test]
async fn a_store_of_an_earlier_release_is_copied_once_and_its_files_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let intent = Intent {
        operation: "create_user".into(),
        label: "user-2".into(),
        run: 7,
        at: "t".into(),
    };
    {
        let old = sled::open(&path).unwrap();
        let tree = |name: &str| old.open_tree(name).unwrap();
        tree("users").insert("k1", encode(&rec("1"))).unwrap();
        tree("meta")
            .insert("schema_version", encode(&SCHEMA_VERSION.to_string()))
            .unwrap();
        tree("meta")
            .insert("target", encode(&"https://t/scim".to_string()))
            .unwrap();
        tree("intents").insert("k2", encode(&intent)).unwrap();
        tree("errors")
            .insert("k3", encode(&error("k3", 1)))
            .unwrap();
        old.flush().unwrap();
    }
    // An earlier attempt interrupted midway left a partial copy: it is made again.
    std::fs::write(path.join(format!("{}.migrating", kv::FILE)), b"partial").unwrap();
    assert!(Store::exists(&path));
    let check = |store: &Store, target: &str| {
        let s = store.snapshot().unwrap();
        assert_eq!(s.users.keys().map(|k| &**k).collect::<Vec<_>>(), vec!["k1"]);
        assert_eq!(s.users["k1"], rec("1"));
        assert_eq!(store.intents().unwrap().get("k2"), Some(&intent));
        assert_eq!(store.errors().unwrap(), vec![error("k3", 1)]);
        assert_eq!(store.target_identity().unwrap().as_deref(), Some(target));
    };
    {
        let store = reopen(&path);
        check(&store, "https://t/scim");
        store.set_target_identity("https://t2/scim").await.unwrap();
    }
    let aside = path.join(migrate::ASIDE);
    assert!(!path.join("db").exists() && !path.join("conf").exists());
    assert!(aside.join("db").exists() || aside.join("conf").exists());
    assert!(!path.join(format!("{}.migrating", kv::FILE)).exists());
    // Not copied again: what was written since stays.
    check(&reopen(&path), "https://t2/scim");
    // Interrupted after the copy was in place but before the old files were moved: they are
    // moved on the next open, and the copy stays as it is.
    for entry in std::fs::read_dir(&aside).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), path.join(entry.file_name())).unwrap();
    }
    check(&reopen(&path), "https://t2/scim");
    assert!(!path.join("db").exists() && !path.join("conf").exists());
    // Interrupted midway through the move (only `blobs` and a snapshot left) with a stale
    // copy beside: the rest is moved, never over what is already aside, and the copy removed.
    std::fs::create_dir(path.join("blobs")).unwrap();
    std::fs::write(path.join("blobs/7"), b"blob").unwrap();
    std::fs::write(path.join("snap.0001"), b"snap").unwrap();
    std::fs::write(path.join(format!("{}.migrating", kv::FILE)), b"partial").unwrap();
    assert!(aside.join("blobs").exists());
    check(&reopen(&path), "https://t2/scim");
    assert!(!path.join("blobs").exists() && !path.join("snap.0001").exists());
    assert!(!path.join(format!("{}.migrating", kv::FILE)).exists());
    assert_eq!(std::fs::read(aside.join("blobs.2/7")).unwrap(), b"blob");
    assert!(aside.join("snap.0001").exists() || aside.join("snap.0001.2").exists());
}

/// A folder of an earlier release owned by another user is not migrated by this one: the new
/// file would be this user's, and the service could not open it.
#[cfg(target_os = "linux")]
#[test]
fn a_store_of_an_earlier_release_is_migrated_only_by_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    sled_store_with_one_user(&path);
    // Another owner: possible to arrange only as root (the CI machine runs as root). As
    // another user, the folder is this user's and the migration must go through.
    let me = rustix::process::geteuid();
    if me.is_root() {
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        let e = reopen_err(&path);
        assert!(e.contains("uid 4242"), "{e}");
        assert!(!kv::file(&path).exists() && path.join("db").exists());
        // Nothing created that would shut the owner out.
        assert!(!path.join(".migrate.lock").exists());
        std::os::unix::fs::chown(&path, Some(me.as_raw()), None).unwrap();
    }
    let store = reopen(&path);
    assert_eq!(store.snapshot().unwrap().users.len(), 1);
}

/// Two commands started at once on a folder of an earlier release: one migrates, the other is
/// refused until it is done (never two copies renamed over each other).
#[test]
fn a_store_being_migrated_is_refused_to_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    sled_store_with_one_user(&path);
    // The lock another process holds while it migrates.
    let other = std::fs::File::create(path.join(".migrate.lock")).unwrap();
    other.lock().unwrap();
    let e = reopen_err(&path);
    assert!(
        e.contains("being migrated by another dirbridge process"),
        "{e}"
    );
    assert!(!kv::file(&path).exists() && path.join("db").exists());
    drop(other);
    assert_eq!(reopen(&path).snapshot().unwrap().users.len(), 1);
    assert!(!path.join(".migrate.lock").exists());
}

/// An earlier release started on the folder after the upgrade wrote a sled store of its own:
/// neither store is dropped silently; the administrator chooses.
#[test]
fn a_sled_store_that_ran_after_the_copy_is_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    sled_store_with_one_user(&path);
    drop(reopen(&path));
    // The earlier release finds no store, starts one and runs twice.
    {
        let old = sled::open(&path).unwrap();
        let meta = old.open_tree("meta").unwrap();
        meta.insert("run_counter", encode(&2u64)).unwrap();
        old.open_tree("users")
            .unwrap()
            .insert("k9", encode(&rec("9")))
            .unwrap();
        old.flush().unwrap();
    }
    let e = reopen_err(&path);
    assert!(e.contains("ran after it was copied"), "{e}");
    assert!(path.join("db").exists() && kv::file(&path).exists());
    // Going on from the earlier release's store: the copy is moved away, and made again.
    std::fs::rename(kv::file(&path), dir.path().join("kept.redb")).unwrap();
    let store = reopen(&path);
    let users = store.snapshot().unwrap().users;
    assert_eq!(users.keys().map(|k| &**k).collect::<Vec<_>>(), vec!["k9"]);
}

/// The same with a store this release made on an empty folder (not copied from sled).
#[test]
fn a_sled_store_that_ran_beside_a_store_never_copied_from_it_is_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    drop(Store::open(&path, 1 << 20).unwrap());
    {
        let old = sled::open(&path).unwrap();
        let meta = old.open_tree("meta").unwrap();
        meta.insert("run_counter", encode(&1u64)).unwrap();
        old.flush().unwrap();
    }
    let e = reopen_err(&path);
    assert!(e.contains("never copied into it"), "{e}");
    assert!(path.join("db").exists() && kv::file(&path).exists());
}

/// Writes a store as an earlier release did (sled), holding one user record.
fn sled_store_with_one_user(path: &std::path::Path) {
    let old = sled::open(path).unwrap();
    old.open_tree("users")
        .unwrap()
        .insert("k1", encode(&rec("1")))
        .unwrap();
    old.flush().unwrap();
}

/// The error of opening the store at `path` (waiting for sled's lock as [`reopen`] does).
fn reopen_err(path: &std::path::Path) -> String {
    let start = std::time::Instant::now();
    loop {
        match Store::open(path, 1 << 20) {
            Ok(_) => panic!("opened"),
            Err(e) if e.to_string().contains("lock") && start.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// What a save writes for the keys in `unsaved` of mirror `m`.
fn writes<'a>(
    m: &'a crate::state::Mirror,
    unsaved: &[std::collections::BTreeSet<Key>; 2],
) -> crate::state::MirrorWrites<'a> {
    use crate::source::entry::RawEntry;
    use std::collections::{BTreeMap, BTreeSet};
    let of = |keys: &BTreeSet<Key>, map: &'a BTreeMap<Key, RawEntry>| {
        keys.iter().map(|k| (k.clone(), map.get(k))).collect()
    };
    [of(&unsaved[0], &m.users), of(&unsaved[1], &m.groups)]
}

/// The service's first pass reads the records in chunks, a `sync` all at once: the same
/// records either way, across several chunks, each passed to the callbacks once.
#[tokio::test]
async fn the_records_read_in_chunks_are_the_records_read_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let mut s = Snapshot::default();
    for i in 0..9_000 {
        s.users
            .insert(format!("u{i:05}").into(), rec(&i.to_string()));
    }
    s.groups.insert(
        "g".into(),
        GroupRecord {
            target_id: "gid".into(),
            origin: Origin::Created,
            display_name: "g".into(),
            members: std::sync::Arc::new(["u00001".into()].into()),
        },
    );
    store.replace_all(&s).await.unwrap();
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let groups = std::sync::atomic::AtomicUsize::new(0);
    let chunked = store
        .snapshot_with(
            &|_, _| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
            &|_, _| {
                groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        )
        .unwrap();
    let at_once = store.snapshot().unwrap();
    assert_eq!(chunked, s);
    assert_eq!(chunked, at_once);
    assert_eq!(seen.into_inner(), 9_000);
    assert_eq!(groups.into_inner(), 1);
    // Either way, a member is its user record's own key.
    for read in [&chunked, &at_once] {
        let member = read.groups["g"].members.iter().next().unwrap();
        let (key, _) = read.users.get_key_value("u00001").unwrap();
        assert!(std::sync::Arc::ptr_eq(member, key), "{member}: shared");
    }
}
