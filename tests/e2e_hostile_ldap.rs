//! A directory server that misbehaves on purpose (tests/common/bad_ldap/): malformed
//! paged-results controls, controls that are not a sequence, truncated PDUs, bytes that are not
//! BER, a referral to itself, references, entries and empty pages without end, silence. After a
//! good first sync, `sync` and `plan` against each end with exit code 2 and an error that says
//! what happened, never a panic; the target and the records are untouched (a later good sync
//! has nothing to do). The service (`run`) survives the ones that made ldap3 panic, and an
//! endless answer, and recovers when the server does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::bad_ldap::{BadLdap, Misbehaviour, BASE, BIND_DN};
use common::*;
use serde_json::Value;

fn gateway(server: &BadLdap) -> Gateway {
    let ldap_fixed = format!(
        "bind_dn = \"{BIND_DN}\"\n\
         base_dn = \"{BASE}\"\n\
         page_size = 2\n\
         timeout_secs = 2\n\
         max_entries = 5000\n\
         max_read_mib = 4\n\
         max_message_kib = 1024\n"
    );
    Gateway::with_scim(
        Scim::start_default(),
        server.url(),
        "bad-ldap-pw",
        ldap_fixed,
        String::new(),
    )
}

/// The target's users and groups, without what the server changes by itself.
fn target(gw: &Gateway) -> (Vec<Value>, Vec<Value>) {
    (gw.scim.users(), gw.scim.groups())
}

/// What each misbehaviour must be reported as.
const CASES: &[(Misbehaviour, &str)] = &[
    (
        Misbehaviour::PagedWithoutValue,
        "malformed paged-results control: it has no value",
    ),
    (
        Misbehaviour::PagedGarbage,
        "malformed paged-results control",
    ),
    (
        Misbehaviour::PagedWrongShape,
        "malformed paged-results control",
    ),
    (
        Misbehaviour::ControlsNotASequence,
        "a message with more than an id, an operation and controls",
    ),
    (
        Misbehaviour::ControlNotASequence,
        "a control that is not a sequence",
    ),
    (
        Misbehaviour::EmptyMessage,
        "the server sent an unsound message: an empty message",
    ),
    (
        Misbehaviour::WrongOperation,
        "an answer of type 0x67 to a request of type 0x63",
    ),
    (
        Misbehaviour::TruncatedPdu,
        "bytes and closed the connection",
    ),
    (
        Misbehaviour::NotBer,
        "the server sent something that is not an LDAP message (first byte 0xff)",
    ),
    (
        Misbehaviour::DeepNesting,
        "the server sent an unsound message: elements nested more than 32 deep",
    ),
    (
        Misbehaviour::HugeLength,
        "a message of 4294967286 bytes, over ldap.max_message_kib (1024 KiB)",
    ),
    (
        Misbehaviour::IndefiniteLength,
        "the server sent a message of indefinite length",
    ),
    (
        Misbehaviour::WrongMessageId,
        "an answer to message 9999, which was never sent",
    ),
    (Misbehaviour::EndlessIntermediate, "ldap.max_entries (5000)"),
    (
        Misbehaviour::ForgedText,
        "LDAP result 1 (operations error): boom?ERROR fake: all fine???[2J",
    ),
    (Misbehaviour::BigValues, "ldap.max_read_mib (4 MiB)"),
    (Misbehaviour::LongFormTag, "a tag in the long form"),
    (
        Misbehaviour::EmptyResultCode,
        "a result that is not a result code, a matched DN and a diagnostic message",
    ),
    (
        Misbehaviour::MatchedDnNotUtf8,
        "a matched DN that is not UTF-8",
    ),
    (
        Misbehaviour::EmptyValues,
        "more than 32768 elements in one message of 200077 bytes (one per 32 bytes of ldap.max_message_kib)",
    ),
    (Misbehaviour::ReferralToItself, "referrals are not followed"),
    (Misbehaviour::EndlessReferences, "ldap.max_entries (5000)"),
    (Misbehaviour::EndlessEntries, "ldap.max_entries (5000)"),
    (Misbehaviour::EndlessEmptyPages, "empty pages in a row"),
    (Misbehaviour::Silent, "no answer within ldap.timeout_secs"),
];

#[test]
fn each_misbehaviour_ends_sync_and_plan_with_a_clear_error_and_changes_nothing() {
    let server = BadLdap::start(Misbehaviour::Well);
    let gw = gateway(&server);
    let first = gw.sync();
    assert_eq!(gw.scim.users().len(), 3, "{first:?}");
    assert_eq!(gw.scim.member_names("staff").len(), 3, "{first:?}");
    let before = target(&gw);

    for &(m, says) in CASES {
        server.set(m);
        for command in ["sync", "plan"] {
            let r = gw.run(&[command]);
            let all = r.all();
            assert_eq!(r.code, 2, "{m:?} {command}: {r:?}");
            assert!(
                all.contains(says),
                "{m:?} {command}: expected `{says}`: {r:?}"
            );
            assert!(!all.contains("panicked"), "{m:?} {command}: {r:?}");
            // One line per message: a server's text cannot forge a log line or drive the terminal.
            assert!(
                !all.contains("\nERROR fake") && !all.contains('\x1b'),
                "{m:?} {command}: {r:?}"
            );
            // Bounded output: whatever the server keeps sending after the pass gave up.
            assert!(
                all.len() < 20_000,
                "{m:?} {command}: {} bytes of output",
                all.len()
            );
        }
        assert_eq!(target(&gw), before, "{m:?} changed the target");
    }

    // The records are whole: with the server well again, there is nothing to do.
    server.set(Misbehaviour::Well);
    let r = gw.run(&["plan", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let plan: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["operations"], serde_json::json!([]), "{r:?}");
    gw.sync();
    assert_eq!(target(&gw), before);
}

#[test]
fn the_service_survives_every_misbehaviour_and_recovers() {
    let server = BadLdap::start(Misbehaviour::Well);
    let mut gw = gateway(&server);
    gw.sync();
    let before = target(&gw);
    let port = free_port();
    gw.extra = format!(
        "[daemon]\nchange_feed = \"poll\"\npoll_interval = \"1s\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let mut child = Guard(gw.spawn(&["run"]));
    assert!(wait_until(20, || http_get(port, "/healthz").is_some()));

    let status = || -> Value {
        http_get(port, "/status")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .unwrap_or_default()
    };
    let last_error = || status()["reason"].as_str().unwrap_or("").to_string();
    // The panicking decoders (ldap3's paged control in this process, its message decoder in the
    // connection task) and an endless answer; each failure doubles the wait before the next pass,
    // so not all the cases.
    for &(m, says) in CASES.iter().filter(|(m, _)| {
        matches!(
            m,
            Misbehaviour::PagedWithoutValue
                | Misbehaviour::WrongOperation
                | Misbehaviour::DeepNesting
        )
    }) {
        server.set(m);
        let seen = server.searches();
        assert!(
            wait_until(60, || server.searches() > seen
                && last_error().contains(says)),
            "{m:?}: the service did not report `{says}`; status: {:?}\n{}",
            http_get(port, "/status"),
            gw.spawned_log()
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "{m:?} stopped the service:\n{}",
            gw.spawned_log()
        );
        assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200), "{m:?}");
    }
    assert_eq!(target(&gw), before);

    server.set(Misbehaviour::Well);
    assert!(
        wait_until(60, || status()["ready"] == true),
        "no good pass after the server recovered:\n{}",
        gw.spawned_log()
    );
    assert!(child.0.try_wait().unwrap().is_none());
    let log = gw.spawned_log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("bad-ldap-pw"), "{log}");
    assert_eq!(terminate(&mut child.0).code(), Some(0));
    assert_eq!(target(&gw), before);
}

#[test]
fn a_read_of_one_entry_answered_without_end_is_cut_off() {
    let server = BadLdap::start(Misbehaviour::EndlessRootDse);
    let mut gw = gateway(&server);
    // On AD, a pass starts by reading the root DSE (highestCommittedUSN).
    gw.ldap_extra = "profile = \"ad\"\nallow_plaintext = true\n".into();
    let r = gw.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("the server answered a read of one entry with several"),
        "{r:?}"
    );
    assert!(gw.scim.users().is_empty(), "{r:?}");
}

#[test]
fn starttls_never_answered_a_read_that_drips_and_endless_ranges_are_bounded() {
    let server = BadLdap::start(Misbehaviour::SilentStartTls);
    let mut gw = gateway(&server);
    gw.ldap_extra = "starttls = true\n".into();
    let r = gw.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("StartTLS: no answer within ldap.timeout_secs"),
        "{r:?}"
    );

    // A read of one entry that sends a reference now and then, each within the per-answer
    // timeout: the search deadline ends it.
    server.set(Misbehaviour::DrippingRootDse);
    gw.ldap_extra = "profile = \"ad\"\nallow_plaintext = true\nsearch_time_limit_secs = 3\n".into();
    let started = std::time::Instant::now();
    let r = gw.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("did not end within ldap.search_time_limit_secs (3s)"),
        "{r:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(gw.scim.users().is_empty(), "{r:?}");

    // Ranges handed out one value at a time, each read answered at once: the search's budget
    // ends the range retrieval that completes its entries.
    server.set(Misbehaviour::EndlessRanges);
    gw.ldap_extra = "search_time_limit_secs = 3\n".into();
    let started = std::time::Instant::now();
    let r = gw.run(&["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(
            "the range retrieval of description did not end within ldap.search_time_limit_secs (3s) of its search"
        ),
        "{r:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(gw.scim.users().is_empty(), "{r:?}");
}

/// A change feed search that fails right after a good connect counts as a failure: the waits
/// before the next attempts grow (they stayed at about 2 s when a good connect reset the count).
#[test]
fn a_feed_search_refused_right_after_connecting_backs_off() {
    let server = BadLdap::start(Misbehaviour::SyncBusy);
    let mut gw = gateway(&server);
    gw.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    gw.extra =
        "[daemon]\nchange_feed = \"syncrepl\"\npoll_interval = \"1h\"\nlisten = \"off\"\n".into();
    let mut child = Guard(gw.spawn(&["run"]));
    let waits = || -> Vec<f64> {
        gw.spawned_log()
            .lines()
            .filter(|l| l.contains("change feed lost"))
            .filter_map(|l| l.split("retry_in=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.strip_suffix('s')?.parse().ok())
            .collect()
    };
    assert!(
        wait_until(20, || waits().len() >= 3),
        "{}",
        gw.spawned_log()
    );
    let w = waits();
    assert!(
        w[1] > w[0] * 1.5 && w[2] > w[1] * 1.5,
        "{w:?}\n{}",
        gw.spawned_log()
    );
    assert!(gw.spawned_log().contains("busy"), "{}", gw.spawned_log());
    assert!(gw.scim.users().is_empty());
    assert_eq!(terminate(&mut child.0).code(), Some(0));
}
