use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::Config;
use crate::source::syncrepl::control::uuid_text;
use crate::source::syncrepl::{EntryState, SyncInfo};

const CONFIG: &str = r#"
[ldap]
url = "ldap://127.0.0.1:3890"
base_dn = "dc=example,dc=org"
referenced_groups = "ignore"

[target]
kind = "scim"
url = "http://127.0.0.1:8080/scim/v2"
token = "t"
"#;

pub(super) fn cfg() -> Config {
    Config::parse(CONFIG, Path::new("/tmp/dirbridge.toml")).unwrap()
}

pub(super) fn uuid(n: u8) -> Vec<u8> {
    vec![n; 16]
}

pub(super) fn user(n: u8, mail: &str) -> RawEntry {
    let mut attrs: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        attrs.insert(k.to_string(), vec![v.as_bytes().to_vec()]);
    };
    put("entryuuid", &uuid_text(&uuid(n)));
    put("uid", &format!("u{n}"));
    put("cn", &format!("User {n}"));
    put("sn", "User");
    put("givenname", &format!("U{n}"));
    put("mail", mail);
    put("objectclass", "inetOrgPerson");
    RawEntry {
        dn: format!("uid=u{n},ou=people,dc=example,dc=org"),
        dn_guid: None,
        attrs: attrs.into(),
    }
}

pub(super) fn group(n: u8, members: &[u8]) -> RawEntry {
    let mut attrs: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    attrs.insert("entryuuid".into(), vec![uuid_text(&uuid(n)).into_bytes()]);
    attrs.insert("cn".into(), vec![format!("g{n}").into_bytes()]);
    attrs.insert(
        "member".into(),
        members
            .iter()
            .map(|m| format!("uid=u{m},ou=people,dc=example,dc=org").into_bytes())
            .collect(),
    );
    RawEntry {
        dn: format!("cn=g{n},ou=groups,dc=example,dc=org"),
        dn_guid: None,
        attrs: attrs.into(),
    }
}

fn add(f: &mut Feed, scope: FeedScope, n: u8, e: RawEntry, cookie: &str) {
    let dn = e.dn.clone();
    f.apply_entry(
        scope,
        EntryState::Add,
        &uuid(n),
        &dn,
        Some(e),
        Some(cookie.as_bytes().to_vec()),
    );
}

fn done(f: &mut Feed, scope: FeedScope, cookie: &str) {
    f.apply_info(
        scope,
        SyncInfo::RefreshDelete {
            cookie: Some(cookie.as_bytes().to_vec()),
            done: true,
        },
    );
}

fn user_names(f: &mut Feed) -> Vec<String> {
    f.desired(&Default::default())
        .unwrap()
        .users
        .values()
        .map(|u| u.user_name.to_string())
        .collect()
}

/// A feed loaded from a fresh store, both scopes refreshed from nothing.
pub(super) fn refreshed(store: &Store) -> Feed {
    let mut f = Feed::load(&cfg(), store, FeedKind::Syncrepl).unwrap();
    assert!(f.begin(FeedScope::Users).is_none());
    assert!(f.begin(FeedScope::Groups).is_none());
    add(&mut f, FeedScope::Users, 1, user(1, "u1@x.org"), "c1");
    add(&mut f, FeedScope::Users, 2, user(2, "u2@x.org"), "c2");
    add(&mut f, FeedScope::Groups, 10, group(10, &[1]), "g1");
    assert!(f.refreshing(), "not complete before refreshDone");
    done(&mut f, FeedScope::Users, "c3");
    assert!(f.refreshing(), "the group scope is still refreshing");
    done(&mut f, FeedScope::Groups, "g2");
    assert!(!f.refreshing());
    f
}

pub(super) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("state"), 1 << 20).unwrap();
    (dir, s)
}

#[test]
fn initial_refresh_builds_users_and_memberships_from_member() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    assert_eq!(user_names(&mut f), vec!["u1", "u2"]);
    let d = f.desired(&Default::default()).unwrap();
    let g = d.groups.values().next().unwrap();
    assert_eq!(g.members.len(), 1, "{g:?}");
    assert!(f.dirty());
    // Refresh-phase entries are not changes with a latency.
    assert!(f.changed_at().is_empty());
}

#[test]
fn persist_changes_modify_and_delete_and_carry_their_time() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.apply_entry(
        FeedScope::Users,
        EntryState::Modify,
        &uuid(2),
        "uid=u2,ou=people,dc=example,dc=org",
        Some(user(2, "new@x.org")),
        Some(b"c4".to_vec()),
    );
    let d = f.desired(&Default::default()).unwrap();
    let u2 = d.users.values().find(|u| u.user_name == "u2").unwrap();
    assert_eq!(u2.email.as_deref(), Some("new@x.org"));
    assert_eq!(f.changed_at().len(), 1);
    f.apply_entry(
        FeedScope::Users,
        EntryState::Delete,
        &uuid(1),
        "uid=u1,ou=people,dc=example,dc=org",
        None,
        Some(b"c5".to_vec()),
    );
    assert_eq!(user_names(&mut f), vec!["u2"]);
    assert_eq!(f.changed_at().len(), 2, "the deletion is timed too");
}

fn stamped(mut e: RawEntry, csn: &str) -> RawEntry {
    e.attrs.insert("entryCSN", vec![csn.as_bytes().to_vec()]);
    e.attrs
        .insert("modifyTimestamp", vec![b"20260101000000Z".to_vec()]);
    e
}

#[tokio::test]
async fn change_times_are_not_mirrored_and_a_change_of_them_alone_is_none() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    let csn = "20260101000000.000001Z#000000#000#000000";
    let modify = |f: &mut Feed, e: RawEntry, cookie: &str| {
        f.apply_entry(
            FeedScope::Users,
            EntryState::Modify,
            &uuid(2),
            "uid=u2,ou=people,dc=example,dc=org",
            Some(e),
            Some(cookie.as_bytes().to_vec()),
        )
    };
    modify(&mut f, stamped(user(2, "new@x.org"), csn), "c4");
    assert!(f.dirty(), "a mapped attribute changed");
    assert_eq!(
        f.changed_at().values().next().copied(),
        csn_time(&stamped(user(2, "x"), csn)),
        "timed by its entryCSN"
    );
    let m = f.mirror();
    let held = m
        .users
        .values()
        .find(|e| e.dn.starts_with("uid=u2"))
        .unwrap();
    assert!(held.attrs.get("entryCSN").is_none(), "{held:?}");
    assert!(held.attrs.get("modifyTimestamp").is_none(), "{held:?}");
    f.save(&store).await.unwrap();
    // Another attribute than the mapped ones changed: only its change times move.
    modify(
        &mut f,
        stamped(
            user(2, "new@x.org"),
            "20260101000001.000001Z#000000#000#000000",
        ),
        "c5",
    );
    assert!(!f.dirty(), "no mapped attribute changed");
    assert!(f.changed_at().is_empty());

    // A mapping that reads one of them keeps it.
    let text = CONFIG.to_string() + "[mapping.custom]\nnickName = \"modifyTimestamp\"\n";
    let cfg = Config::parse(&text, Path::new("/tmp/dirbridge.toml")).unwrap();
    let (_d2, store2) = super::tests::store();
    let mut g = Feed::load(&cfg, &store2, FeedKind::Syncrepl).unwrap();
    g.begin(FeedScope::Users);
    add(
        &mut g,
        FeedScope::Users,
        1,
        stamped(user(1, "u1@x.org"), csn),
        "c1",
    );
    let m = g.mirror();
    let held = m.users.values().next().unwrap();
    assert!(held.attrs.get("modifyTimestamp").is_some(), "{held:?}");
    assert!(held.attrs.get("entryCSN").is_none(), "{held:?}");
}

#[tokio::test]
async fn a_saved_feed_resumes_from_its_cookies_and_a_present_phase_drops_the_unmentioned() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    assert!(!f.dirty());

    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert_eq!(user_names(&mut g), vec!["u1", "u2"], "the mirror was saved");
    assert_eq!(g.begin(FeedScope::Users).as_deref(), Some(&b"c3"[..]));
    assert_eq!(g.begin(FeedScope::Groups).as_deref(), Some(&b"g2"[..]));
    // u1 unchanged (present), u3 new, u2 not mentioned: deleted while the gateway was away.
    g.apply_entry(
        FeedScope::Users,
        EntryState::Present,
        &uuid(1),
        "uid=u1,ou=people,dc=example,dc=org",
        None,
        None,
    );
    add(&mut g, FeedScope::Users, 3, user(3, "u3@x.org"), "c6");
    g.apply_info(
        FeedScope::Users,
        SyncInfo::RefreshPresent {
            cookie: Some(b"c7".to_vec()),
            done: true,
        },
    );
    done(&mut g, FeedScope::Groups, "g3");
    assert_eq!(user_names(&mut g), vec!["u1", "u3"]);
    // A delete phase (syncIdSet with refreshDeletes) removes what it lists.
    g.apply_info(
        FeedScope::Users,
        SyncInfo::SyncIdSet {
            cookie: None,
            refresh_deletes: true,
            uuids: vec![uuid(3)],
        },
    );
    assert_eq!(user_names(&mut g), vec!["u1"]);
}

fn intent_window(key: &str) -> crate::state::Window {
    crate::state::Window {
        intents: vec![(
            key.into(),
            crate::state::Intent {
                operation: "create_group".into(),
                label: key.into(),
                run: 1,
                at: String::new(),
            },
        )],
        ..Default::default()
    }
}

fn group_record_change(key: &str) -> crate::state::records::StateChange {
    use crate::state::records::{GroupRecord, Origin, StateChange};
    StateChange::PutGroup(
        key.into(),
        GroupRecord {
            target_id: format!("t-{key}"),
            origin: Origin::Created,
            display_name: key.into(),
            members: Default::default(),
        },
    )
}

/// A pass that began to send and was cut short before its save (intents or records written,
/// the mirror not): the next start does not resume from the cookie, whose replay may leave out
/// what the target was already sent, but refreshes in full against the saved mirror (what the
/// refresh does not mention is gone); once saved again, the cookie is used. The first save of
/// a feed (in batches) clears the mark as the ordinary one does.
#[tokio::test]
async fn writes_to_the_target_after_the_last_save_make_the_next_start_refresh_in_full() {
    let (_d, store) = store();
    // A one-shot run wrote records before the feed ever saved: its first save clears the mark.
    store
        .commit(&[group_record_change("g9")], None)
        .await
        .unwrap();
    assert!(store.records_ahead_of_feed().unwrap());
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    assert!(!store.records_ahead_of_feed().unwrap(), "the batched save");
    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert_eq!(g.begin(FeedScope::Users).as_deref(), Some(&b"c3"[..]));

    // Killed right after recording an intent (its request may have reached the target).
    store.write_window(&intent_window("g10")).unwrap();
    store.flush_now().await.unwrap();
    assert!(store.records_ahead_of_feed().unwrap());
    let mut h = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert_eq!(
        user_names(&mut h),
        vec!["u1", "u2"],
        "the saved mirror is the base"
    );
    assert!(
        h.begin(FeedScope::Users).is_none(),
        "no resume past the target"
    );
    assert!(h.begin(FeedScope::Groups).is_none());
    // The refresh replaces: u2, not mentioned, is gone; u3 is new; g10 names both.
    add(&mut h, FeedScope::Users, 1, user(1, "u1@x.org"), "c8");
    add(&mut h, FeedScope::Users, 3, user(3, "u3@x.org"), "c9");
    add(&mut h, FeedScope::Groups, 10, group(10, &[1, 3]), "g6");
    done(&mut h, FeedScope::Users, "c10");
    done(&mut h, FeedScope::Groups, "g7");
    assert_eq!(user_names(&mut h), vec!["u1", "u3"]);
    h.save(&store).await.unwrap();
    assert!(
        !store.records_ahead_of_feed().unwrap(),
        "the save clears the mark"
    );

    let mut k = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert_eq!(user_names(&mut k), vec!["u1", "u3"]);
    assert_eq!(k.begin(FeedScope::Users).as_deref(), Some(&b"c10"[..]));
    assert_eq!(k.begin(FeedScope::Groups).as_deref(), Some(&b"g7"[..]));

    // A confirmation alone, and a resync's replacement of every record, mark it as well.
    store
        .commit(&[group_record_change("g10")], None)
        .await
        .unwrap();
    assert!(Feed::load(&cfg(), &store, FeedKind::Syncrepl)
        .unwrap()
        .begin(FeedScope::Users)
        .is_none());
    k.save(&store).await.unwrap();
    store.replace_all(&Default::default()).await.unwrap();
    assert!(Feed::load(&cfg(), &store, FeedKind::Syncrepl)
        .unwrap()
        .begin(FeedScope::Users)
        .is_none());
}

#[tokio::test]
async fn a_refresh_without_cookie_replaces_a_stale_mirror_and_a_delete_refresh_keeps_it() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();

    // The server forgot our cookie: everything again, without u2.
    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    g.forget_cookie(FeedScope::Users);
    assert!(g.begin(FeedScope::Users).is_none());
    g.begin(FeedScope::Groups);
    add(&mut g, FeedScope::Users, 1, user(1, "u1@x.org"), "c8");
    done(&mut g, FeedScope::Users, "c9");
    done(&mut g, FeedScope::Groups, "g4");
    assert_eq!(user_names(&mut g), vec!["u1"]);

    // With a cookie and refreshDeletes, an unmentioned entry is unchanged, not deleted.
    let mut h = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    h.begin(FeedScope::Users);
    h.begin(FeedScope::Groups);
    done(&mut h, FeedScope::Users, "c10");
    done(&mut h, FeedScope::Groups, "g5");
    assert_eq!(user_names(&mut h), vec!["u1", "u2"]);
}

#[tokio::test]
async fn a_checkpoint_for_another_configuration_is_not_used() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    let other = Config::parse(
        &CONFIG.replace(
            "base_dn = \"dc=example,dc=org\"",
            "base_dn = \"ou=people,dc=example,dc=org\"",
        ),
        Path::new("/tmp/dirbridge.toml"),
    )
    .unwrap();
    let mut g = Feed::load(&other, &store, FeedKind::Syncrepl).unwrap();
    assert!(
        g.begin(FeedScope::Users).is_none(),
        "no cookie for another scope"
    );
    assert!(g.mirror().users.is_empty());
}

#[test]
fn membership_changes_arrive_as_group_changes() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.apply_entry(
        FeedScope::Groups,
        EntryState::Modify,
        &uuid(10),
        "cn=g10,ou=groups,dc=example,dc=org",
        Some(group(10, &[1, 2])),
        Some(b"g9".to_vec()),
    );
    let d = f.desired(&Default::default()).unwrap();
    assert_eq!(d.groups.values().next().unwrap().members.len(), 2);
}

#[test]
fn entry_csn_gives_the_change_time() {
    let mut e = user(1, "a@b.c");
    e.attrs.insert(
        "entrycsn",
        vec![b"20261123101112.123456Z#000000#000#000000".to_vec()],
    );
    let t = csn_time(&e).unwrap();
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((secs - 1_795_428_672.123_456).abs() < 1e-3, "{secs}");
}

#[test]
fn a_delete_in_one_search_does_not_touch_the_other() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    // The groups search says user 1 is not (or no longer) among its results.
    f.apply_info(
        FeedScope::Groups,
        SyncInfo::SyncIdSet {
            cookie: None,
            refresh_deletes: true,
            uuids: vec![uuid(1)],
        },
    );
    f.apply_entry(
        FeedScope::Groups,
        EntryState::Delete,
        &uuid(2),
        "uid=u2,ou=people,dc=example,dc=org",
        None,
        None,
    );
    assert_eq!(user_names(&mut f), vec!["u1", "u2"]);
}

/// User `n` at another DN (renamed or moved).
pub(super) fn user_at(n: u8, dn: &str) -> RawEntry {
    let mut e = user(n, &format!("u{n}@x.org"));
    e.dn = dn.to_string();
    e
}

/// Group `n` whose member values are these DNs.
fn group_of(n: u8, members: &[&str]) -> RawEntry {
    let mut e = group(n, &[]);
    e.attrs.insert(
        "member",
        members.iter().map(|m| m.as_bytes().to_vec()).collect(),
    );
    e
}

pub(super) fn modify(f: &mut Feed, scope: FeedScope, n: u8, e: RawEntry) {
    let dn = e.dn.clone();
    f.apply_entry(scope, EntryState::Modify, &uuid(n), &dn, Some(e), None);
}

/// The userNames of group `n`'s members in the desired state.
fn members_of(f: &mut Feed, n: u8) -> Vec<String> {
    let d = f.desired(&Default::default()).unwrap();
    let key = f
        .mirror()
        .groups
        .iter()
        .find(|(_, e)| e.dn.starts_with(&format!("cn=g{n},")))
        .map(|(k, _)| k.clone())
        .unwrap();
    let mut names: Vec<String> = d.groups[&key]
        .members
        .iter()
        .map(|k| d.users[k].user_name.to_string())
        .collect();
    names.sort();
    names
}

fn member_values(f: &Feed, n: u8) -> Vec<String> {
    let m = f.mirror();
    let e = m
        .groups
        .values()
        .find(|e| e.dn.starts_with(&format!("cn=g{n},")))
        .unwrap();
    e.texts("member").unwrap()
}

const U1: &str = "uid=u1,ou=people,dc=example,dc=org";
pub(super) const U1_MOVED: &str = "uid=one,ou=staff,dc=example,dc=org";

#[test]
fn a_renamed_member_stays_in_its_groups() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    assert_eq!(members_of(&mut f, 10), vec!["u1"]);
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1_MOVED));
    assert_eq!(members_of(&mut f, 10), vec!["u1"]);
    assert_eq!(member_values(&f, 10), vec![U1_MOVED]);
    // Renamed again, and back: the member follows every step.
    modify(
        &mut f,
        FeedScope::Users,
        1,
        user_at(1, "uid=two,ou=staff,dc=example,dc=org"),
    );
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1));
    assert_eq!(members_of(&mut f, 10), vec!["u1"]);
    assert_eq!(member_values(&f, 10), vec![U1]);
    // Several renames before one sweep: followed in order.
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1_MOVED));
    modify(
        &mut f,
        FeedScope::Users,
        1,
        user_at(1, "uid=two,ou=staff,dc=example,dc=org"),
    );
    assert_eq!(
        member_values(&f, 10),
        vec![U1],
        "not applied before it is needed"
    );
    assert_eq!(members_of(&mut f, 10), vec!["u1"]);
    assert_eq!(
        member_values(&f, 10),
        vec!["uid=two,ou=staff,dc=example,dc=org"]
    );
}

/// A rename of an entry whose former DN the store cannot give back (its stored entry gone
/// behind the feed's back) is not guessed at: every pass and save fails from then on, so the
/// saved cookie still precedes the rename and a restart replays it.
#[tokio::test]
async fn a_rename_whose_former_dn_cannot_be_read_back_fails_every_pass_and_save() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    let key = f.mirror().users.keys().next().unwrap().clone();
    store
        .write_mirror_ahead(crate::state::MirrorSide::Users, &[(key, None)], true)
        .unwrap();
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1_MOVED));
    let failed = |r: Result<(), StateError>| r.unwrap_err().to_string();
    assert!(
        failed(f.changes().map(|_| ())).contains("missing"),
        "the pass fails"
    );
    assert!(f.desired(&Default::default()).is_err());
    assert!(f.save(&store).await.is_err(), "nothing saved");
    assert!(
        failed(f.changes().map(|_| ())).contains("missing"),
        "and every pass after it"
    );
    assert!(f.missed_a_change(), "the service loads the feed again");
    let g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert!(!g.missed_a_change());
}

/// Group entries live in the store as the users' do: once saved none is held in memory, a
/// rename rewrites a group read back from the store (held again until written), and a group
/// written ahead is read back, by this feed and by one started before the save.
#[tokio::test]
async fn group_entries_live_in_the_store_and_follow_renames_from_it() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    assert_eq!(f.groups.pending_bytes(), 0, "saved entries are not held");
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1_MOVED));
    assert_eq!(members_of(&mut f, 10), vec!["u1"]);
    assert!(
        f.groups.pending_bytes() > 0,
        "the rewritten group is held until written"
    );
    f.write_ahead(&store, 1).unwrap();
    assert_eq!(f.groups.pending_bytes(), 0, "written ahead");
    assert_eq!(member_values(&f, 10), vec![U1_MOVED], "read back");
    assert_eq!(members_of(&mut f, 10), vec!["u1"]);
    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert!(
        g.begin(FeedScope::Groups).is_none(),
        "written ahead of the save: refreshed in full"
    );
    assert_eq!(member_values(&g, 10), vec![U1_MOVED]);
    assert_eq!(members_of(&mut g, 10), vec!["u1"]);
}

#[test]
fn a_group_received_after_the_rename_is_taken_as_sent() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    modify(&mut f, FeedScope::Users, 1, user_at(1, U1_MOVED));
    // A newcomer takes the old DN and is put in the group, which arrives after the rename:
    // its `member: U1` names the newcomer, not the renamed user.
    add(&mut f, FeedScope::Users, 3, user_at(3, U1), "c20");
    modify(&mut f, FeedScope::Groups, 10, group_of(10, &[U1, U1_MOVED]));
    assert_eq!(members_of(&mut f, 10), vec!["u1", "u3"]);
    assert_eq!(member_values(&f, 10), vec![U1, U1_MOVED]);
}

#[tokio::test]
async fn a_rename_in_a_resumed_refresh_rewrites_only_groups_the_refresh_did_not_send() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    add(&mut f, FeedScope::Groups, 11, group(11, &[1, 2]), "g6");
    f.save(&store).await.unwrap();

    // While the gateway was away: u1 moved, a newcomer took its DN and joined g11 (so g11 is
    // sent again, as the server has it now); g10 was only rewritten by refint (not sent).
    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    g.begin(FeedScope::Users);
    g.begin(FeedScope::Groups);
    modify(
        &mut g,
        FeedScope::Groups,
        11,
        group_of(11, &[U1, U1_MOVED, "uid=u2,ou=people,dc=example,dc=org"]),
    );
    modify(&mut g, FeedScope::Users, 1, user_at(1, U1_MOVED));
    add(&mut g, FeedScope::Users, 3, user_at(3, U1), "c21");
    done(&mut g, FeedScope::Users, "c22");
    done(&mut g, FeedScope::Groups, "g7");
    assert_eq!(members_of(&mut g, 10), vec!["u1"]);
    assert_eq!(members_of(&mut g, 11), vec!["u1", "u2", "u3"]);
    // Saved rewritten: a restart does not lose it.
    g.save(&store).await.unwrap();
    let mut h = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert_eq!(member_values(&h, 10), vec![U1_MOVED]);
    assert_eq!(members_of(&mut h, 10), vec!["u1"]);
}

#[test]
fn a_renamed_group_stays_in_its_parent_group() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    let child = "cn=g10,ou=groups,dc=example,dc=org";
    add(
        &mut f,
        FeedScope::Groups,
        12,
        group_of(12, &[child, U1]),
        "g8",
    );
    let mut renamed = group(10, &[1]);
    renamed.dn = "cn=g10,ou=teams,dc=example,dc=org".into();
    modify(&mut f, FeedScope::Groups, 10, renamed);
    f.desired(&Default::default()).unwrap();
    assert_eq!(
        member_values(&f, 12),
        vec!["cn=g10,ou=teams,dc=example,dc=org", U1]
    );
}

#[test]
fn an_old_and_a_new_name_of_one_member_are_one_value() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    modify(
        &mut f,
        FeedScope::Groups,
        10,
        group_of(10, &[U1, "uid=u2,ou=people,dc=example,dc=org"]),
    );
    // Renamed onto a spelling the group already has (another case): one member, not two.
    modify(
        &mut f,
        FeedScope::Users,
        2,
        user_at(2, "UID=U1,ou=people,dc=example,dc=org"),
    );
    f.desired(&Default::default()).unwrap();
    assert_eq!(
        member_values(&f, 10).len(),
        1,
        "{:?}",
        member_values(&f, 10)
    );
}

/// 389-DS: the sync UUID is the nsUniqueId, not the entryUUID (the key). After a restart the
/// index still finds the entry by the identity the server sends.
#[tokio::test]
async fn the_sync_identity_is_kept_apart_from_the_key() {
    let (_d, store) = store();
    let mut f = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    f.begin(FeedScope::Users);
    f.begin(FeedScope::Groups);
    // Sync identity 7, entryUUID that of 1.
    f.apply_entry(
        FeedScope::Users,
        EntryState::Add,
        &uuid(7),
        U1,
        Some(user(1, "u1@x.org")),
        None,
    );
    done(&mut f, FeedScope::Users, "c1");
    done(&mut f, FeedScope::Groups, "g1");
    f.save(&store).await.unwrap();
    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    g.begin(FeedScope::Users);
    g.apply_entry(
        FeedScope::Users,
        EntryState::Delete,
        &uuid(7),
        U1,
        None,
        None,
    );
    assert!(g.mirror().users.is_empty(), "deleted by its sync identity");
}

#[test]
fn an_entry_without_its_key_never_replaces_what_is_known() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    let mut keyless = user(1, "changed@x.org");
    keyless.attrs.remove("entryuuid");
    modify(&mut f, FeedScope::Users, 1, keyless.clone());
    assert!(f.awaiting_refetch());
    assert_eq!(user_names(&mut f), vec!["u1", "u2"], "kept, not replaced");
    let d = f.desired(&Default::default()).unwrap();
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(
        f.refetches(),
        vec![(FeedScope::Users, uuid(1), U1.to_string())]
    );

    // Read again and still without the key: what was known stays.
    assert_eq!(
        f.apply_refetched(FeedScope::Users, &uuid(1), U1, Some(keyless.clone())),
        Refetched::Unkeyed
    );
    assert!(!f.awaiting_refetch());
    let d = f.desired(&Default::default()).unwrap();
    let u1 = d.users.values().find(|u| u.user_name == "u1").unwrap();
    assert_eq!(u1.email.as_deref(), Some("u1@x.org"));

    // Gone since: nothing changes (its deletion comes through the feed).
    modify(&mut f, FeedScope::Users, 1, keyless);
    assert_eq!(
        f.apply_refetched(FeedScope::Users, &uuid(1), U1, None),
        Refetched::Missing
    );
    assert_eq!(user_names(&mut f), vec!["u1", "u2"]);

    // Read again with its key: the change is applied.
    let mut keyless = user(1, "changed@x.org");
    keyless.attrs.remove("entryuuid");
    modify(&mut f, FeedScope::Users, 1, keyless);
    assert_eq!(
        f.apply_refetched(
            FeedScope::Users,
            &uuid(1),
            U1,
            Some(user(1, "changed@x.org"))
        ),
        Refetched::Keyed
    );
    let d = f.desired(&Default::default()).unwrap();
    let u1 = d.users.values().find(|u| u.user_name == "u1").unwrap();
    assert_eq!(u1.email.as_deref(), Some("changed@x.org"));

    // A search started again from the cookie supersedes what waited.
    let mut keyless = user(2, "x@x.org");
    keyless.attrs.remove("entryuuid");
    modify(&mut f, FeedScope::Users, 2, keyless);
    f.begin(FeedScope::Users);
    assert!(!f.awaiting_refetch());
}

/// Two users swapped their DNs while the gateway was away (alice -> tmp, carol -> alice,
/// tmp -> carol). The refresh reports each entry at its new DN, in no particular order: the
/// renames are simultaneous and must not chain into each other.
#[tokio::test]
async fn a_swap_of_dns_reported_by_one_refresh_is_a_swap() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    let u2 = "uid=u2,ou=people,dc=example,dc=org";
    // g10 has u1 only; g11 has u2 only.
    add(&mut f, FeedScope::Groups, 11, group(11, &[2]), "g6");
    f.save(&store).await.unwrap();

    for order in [[2u8, 1], [1, 2]] {
        let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
        g.begin(FeedScope::Users);
        g.begin(FeedScope::Groups);
        for n in order {
            let dn = if n == 1 { u2 } else { U1 };
            modify(&mut g, FeedScope::Users, n, user_at(n, dn));
        }
        done(&mut g, FeedScope::Users, "c30");
        done(&mut g, FeedScope::Groups, "g30");
        assert_eq!(members_of(&mut g, 10), vec!["u1"], "order {order:?}");
        assert_eq!(members_of(&mut g, 11), vec!["u2"], "order {order:?}");
        assert_eq!(member_values(&g, 10), vec![u2]);
        assert_eq!(member_values(&g, 11), vec![U1]);
    }
}

/// A refresh resumed from a cookie is checked against a listing of the scope before any pass:
/// what the listing does not name left the scope.
#[tokio::test]
async fn a_resumed_refresh_waits_for_its_check_and_the_check_drops_the_unlisted() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    assert!(
        !f.awaiting_check(),
        "a refresh from nothing lists everything itself"
    );
    f.save(&store).await.unwrap();
    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    g.begin(FeedScope::Users);
    g.begin(FeedScope::Groups);
    assert!(g.awaiting_check());
    assert!(
        g.unchecked_scopes().is_empty(),
        "not before the refresh is over"
    );
    done(&mut g, FeedScope::Users, "c40");
    done(&mut g, FeedScope::Groups, "g40");
    assert_eq!(
        g.unchecked_scopes(),
        vec![FeedScope::Users, FeedScope::Groups]
    );
    let u1 = g.mirror().users.keys().next().unwrap().clone();
    let listed: BTreeSet<Key> = [u1].into_iter().collect();
    assert_eq!(g.keep_listed(FeedScope::Users, &listed), 1);
    let groups: BTreeSet<Key> = g.mirror().groups.keys().cloned().collect();
    assert_eq!(g.keep_listed(FeedScope::Groups, &groups), 0);
    assert!(!g.awaiting_check());
    assert_eq!(user_names(&mut g), vec!["u1"]);
}

/// The same swap reported by 389-DS: the entries come without their key and are read again by
/// DN, one at a time, possibly after the refresh is over. Their renames still belong together.
#[tokio::test]
async fn a_swap_read_again_entry_by_entry_is_still_a_swap() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    let u2 = "uid=u2,ou=people,dc=example,dc=org";
    add(&mut f, FeedScope::Groups, 11, group(11, &[2]), "g6");
    f.save(&store).await.unwrap();

    for order in [[2u8, 1], [1, 2]] {
        let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
        g.begin(FeedScope::Users);
        g.begin(FeedScope::Groups);
        let at = |n: u8| if n == 1 { u2 } else { U1 };
        for n in [1u8, 2] {
            let mut keyless = user_at(n, at(n));
            keyless.attrs.remove("entryuuid");
            modify(&mut g, FeedScope::Users, n, keyless);
        }
        done(&mut g, FeedScope::Users, "c50");
        done(&mut g, FeedScope::Groups, "g50");
        for n in order {
            // Read again after other events (no pass in between: passes wait for the reads).
            g.apply_entry(
                FeedScope::Groups,
                EntryState::Present,
                &uuid(10),
                "",
                None,
                None,
            );
            assert_eq!(
                g.apply_refetched(FeedScope::Users, &uuid(n), at(n), Some(user_at(n, at(n)))),
                Refetched::Keyed
            );
        }
        assert_eq!(members_of(&mut g, 10), vec!["u1"], "order {order:?}");
        assert_eq!(members_of(&mut g, 11), vec!["u2"], "order {order:?}");
    }
}

#[test]
fn the_records_a_pass_kept_are_used_only_while_the_store_has_not_written_any() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), 1 << 20).unwrap();
    let mut feed = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    let mut records = crate::state::records::Snapshot::default();
    records.groups.insert(
        "g".into(),
        crate::state::records::GroupRecord {
            target_id: "id-g".into(),
            display_name: "g".into(),
            members: Default::default(),
            origin: crate::state::records::Origin::Created,
        },
    );
    let kept = |generation| crate::engine::live::Kept {
        generation,
        records: records.clone(),
        fit_state: 0,
        census: Default::default(),
        follow: None,
    };
    feed.keep(kept(7));
    assert!(feed.take_kept(8).is_none(), "written since: read again");
    assert!(feed.take_kept(7).is_none(), "taken once");
    feed.keep(kept(7));
    assert_eq!(feed.take_kept(7).map(|k| k.records), Some(records));
}

/// User entries written ahead of the save are let go from memory and read back from the store;
/// a start after a stop before the save finds the older checkpoint with the mirror ahead of
/// it, and plans every key from that mirror.
#[tokio::test]
async fn user_entries_written_ahead_are_read_back_and_survive_a_stop_before_the_save() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    assert_eq!(f.users.pending_bytes(), 0, "saved entries are not held");
    let persist = |f: &mut Feed, n: u8, e: Option<RawEntry>, cookie: &str| {
        let dn = format!("uid=u{n},ou=people,dc=example,dc=org");
        let state = if e.is_some() {
            EntryState::Modify
        } else {
            EntryState::Delete
        };
        f.apply_entry(
            FeedScope::Users,
            state,
            &uuid(n),
            &dn,
            e,
            Some(cookie.as_bytes().to_vec()),
        );
    };
    persist(&mut f, 2, Some(user(2, "new@x.org")), "c4");
    persist(&mut f, 3, Some(user(3, "u3@x.org")), "c5");
    persist(&mut f, 1, None, "c6");
    let held = f.users.pending_bytes();
    assert!(held > 100, "two entries: {held} bytes");
    f.write_ahead(&store, held + 1).unwrap();
    assert_eq!(f.users.pending_bytes(), held, "fewer than asked for: held");
    f.write_ahead(&store, held).unwrap();
    assert_eq!(f.users.pending_bytes(), 0, "written ahead");
    let d = f.desired(&Default::default()).unwrap();
    let mails: Vec<Option<String>> = d
        .users
        .values()
        .map(|u| u.email.as_deref().map(str::to_string))
        .collect();
    assert_eq!(
        mails,
        vec![Some("new@x.org".to_string()), Some("u3@x.org".to_string())],
        "read back from the store: {d:?}"
    );
    // The same entry again, though only its digest is held, is no change.
    f.save(&store).await.unwrap();
    persist(&mut f, 3, Some(user(3, "u3@x.org")), "c7");
    assert!(!f.dirty());

    // Written ahead, then stopped before the save: the next start does not resume from the
    // saved cookie (a replay would not send again what the entries written ahead imply, such
    // as the groups a rename rewrote) but refreshes in full against the mirror as written.
    persist(&mut f, 2, Some(user(2, "newer@x.org")), "c8");
    persist(&mut f, 3, None, "c9");
    f.write_ahead(&store, 1).unwrap();
    drop(f);
    let mut g = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert!(g.begin(FeedScope::Users).is_none(), "refreshed in full");
    assert!(g.begin(FeedScope::Groups).is_none(), "refreshed in full");
    assert_eq!(
        user_names(&mut g),
        vec!["u2"],
        "the mirror as written ahead"
    );
    let m = g.mirror();
    assert_eq!(m.users.len(), 1);
    assert_eq!(
        m.users.values().next().unwrap().texts("mail").unwrap(),
        vec!["newer@x.org"]
    );
    // Its first pass plans every key from that mirror (nothing is kept across a start).
    assert!(g.dirty());
    assert!(g.take_kept(0).is_none());
    // Saved, the mark is gone: the start after resumes from the cookie.
    add(&mut g, FeedScope::Users, 2, user(2, "newer@x.org"), "c10");
    done(&mut g, FeedScope::Users, "c11");
    done(&mut g, FeedScope::Groups, "g11");
    g.save(&store).await.unwrap();
    let mut h = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert_eq!(h.begin(FeedScope::Users).as_deref(), Some(&b"c11"[..]));
}

/// A feed whose stored checkpoint was made for another configuration writes its refresh
/// ahead over that configuration's mirror: the old checkpoint goes in the same write, so a
/// start with the old configuration never resumes over entries it does not describe.
#[tokio::test]
async fn writing_ahead_over_another_configurations_mirror_drops_its_checkpoint() {
    let (_d, store) = store();
    let mut f = refreshed(&store);
    f.save(&store).await.unwrap();
    let other = Config::parse(
        &CONFIG.replace("127.0.0.1:3890", "127.0.0.2:3890"),
        Path::new("/tmp/dirbridge.toml"),
    )
    .unwrap();
    let mut b = Feed::load(&other, &store, FeedKind::Syncrepl).unwrap();
    assert!(b.begin(FeedScope::Users).is_none(), "not its checkpoint");
    add(&mut b, FeedScope::Users, 3, user(3, "u3@x.org"), "b1");
    b.write_ahead(&store, 1).unwrap();
    drop(b);
    let mut a = Feed::load(&cfg(), &store, FeedKind::Syncrepl).unwrap();
    assert!(
        a.begin(FeedScope::Users).is_none(),
        "the old checkpoint is gone: a refresh from nothing"
    );
    assert!(a.mirror().users.is_empty(), "nothing stored is trusted");
}
