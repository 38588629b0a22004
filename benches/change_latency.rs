//! Change-to-push latency of `dirbridge run`: from an LDAP modify returning in slapd to the SCIM
//! server answering with the new value. Real slapd (syncprov), real scim2-server, the release
//! binary. Figures are printed as milliseconds and as ratios to a baseline measured in the same
//! run: one direct SCIM PATCH of the same attribute (what a push costs at the least).
//!
//! Also the `[ha]` failover: two gateways, the active one killed with SIGKILL, a change made at
//! once; how long until the target shows it (the standby takes the lease over, reconciles,
//! pushes), over BENCH_HA_KILLS kills (10).
//!
//! Run: `cargo bench --bench change_latency` (BENCH_CHANGES=n sets the number of changes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use ldap3::Mod;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Figures {
    p50: f64,
    p99: f64,
    max: f64,
}

fn figures(mut ms: Vec<f64>) -> Figures {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Figures {
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        max: *ms.last().unwrap_or(&f64::NAN),
    }
}

/// Waits (bounded) until the user with SCIM id `id` has `title`, checking every millisecond.
fn arrived(scim: &Scim, id: &str, title: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (s, u) = scim.http("GET", &format!("/Users/{id}"), None);
        if s == 200 && u["title"] == title {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn id_of(env: &Env, user: &str) -> String {
    env.scim.user(user).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Milliseconds of `n` direct PATCH requests to the SCIM server.
fn baseline(env: &Env, n: usize) -> Vec<f64> {
    let id = id_of(env, "bob");
    (0..n)
        .map(|i| {
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "title", "value": format!("direct {i}")}]
            });
            let t = Instant::now();
            let (s, _) = env.scim.http("PATCH", &format!("/Users/{id}"), Some(&body));
            assert!(s == 200 || s == 204, "PATCH answered {s}");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// Milliseconds from each LDAP modify to the target showing it, one change at a time.
fn follow(env: &Env, rt: &tokio::runtime::Runtime, n: usize, tag: &str) -> Vec<f64> {
    let mut ldap = rt.block_on(bind_admin(&env.slapd.url()));
    let id = id_of(env, "bob");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let title = format!("{tag} {i}");
        let t = Instant::now();
        rt.block_on(ldap.modify(
            "uid=bob,ou=people,dc=example,dc=org",
            vec![Mod::Replace(
                "title",
                std::collections::HashSet::from([title.as_str()]),
            )],
        ))
        .unwrap()
        .success()
        .unwrap();
        assert!(
            arrived(&env.scim, &id, &title),
            "change {i} did not arrive: {}",
            env.spawned_log()
        );
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        // Let the next change start a burst of its own.
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

/// Seconds from the first of `n` modifications sent back to back to the last one on the target.
fn burst(env: &Env, rt: &tokio::runtime::Runtime, n: usize) -> f64 {
    let url = env.slapd.url();
    let id = id_of(env, "alice");
    let t = Instant::now();
    rt.block_on(async {
        let mut ldap = bind_admin(&url).await;
        for i in 0..n {
            ldap.modify(
                "uid=alice,ou=people,dc=example,dc=org",
                vec![Mod::Replace(
                    "title",
                    std::collections::HashSet::from([format!("burst {i}").as_str()]),
                )],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        }
    });
    let last = format!("burst {}", n - 1);
    assert!(arrived(&env.scim, &id, &last), "{}", env.spawned_log());
    t.elapsed().as_secs_f64()
}

/// Active Directory (Samba): milliseconds from each `ldapmodify` of a user's title to the target
/// showing it, the service woken by change notification (polling is an hour away).
fn follow_ad(n: usize) -> Vec<f64> {
    use common::samba::{user_ldif, AdEnv, OU};
    let mut env = AdEnv::start();
    env.dc.add(&user_ldif("ann", "Ann", "Archer", 512, ""));
    let port = free_port();
    env.extra = format!(
        "[daemon]\npoll_interval = \"1h\"\nnotify_fallback = \"1h\"\nfull_resync = \"off\"\n\
         listen = \"127.0.0.1:{port}\"\n"
    );
    let mut child = Guard(env.spawn(&["run", "--log-level", "info"]));
    assert!(
        wait_until(60, || env.scim.users().len() == 1
            && http_get(port, "/status")
                .is_some_and(|(_, b)| b.contains("\"mode\":\"notify\""))),
        "{}",
        env.spawned_log()
    );
    // The registration is in place a moment after the mode says so.
    std::thread::sleep(Duration::from_millis(500));
    let id = env.scim.user("ann@corp.example.org").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let title = format!("ad {i}");
        let t = Instant::now();
        env.dc.modify(&format!(
            "dn: CN=Ann Archer,{OU}\nchangetype: modify\nreplace: title\ntitle: {title}\n"
        ));
        assert!(
            arrived(&env.scim, &id, &title),
            "AD change {i} did not arrive: {}",
            env.spawned_log()
        );
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    child.stop();
    out
}

/// The `[ha]` timings of the failover figure (`common::ha_nodes`, as tests/e2e_ha.rs).
const HA_RENEW: &str = "500ms";
const HA_TTL_SECS: u64 = 3;
const HA_MARGIN: &str = "1s";

/// Milliseconds from a SIGKILL of the active gateway (and a change made right after it) to the
/// target showing the change, over `rounds` kills; the killed gateway comes back as a standby.
fn failover(rounds: usize) -> Vec<f64> {
    let mut env = Env::start();
    env.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    let nodes = ha_nodes(
        &mut env,
        &format!("cn=dirbridge-lease,{BASE_DN}"),
        "change_feed = \"syncrepl\"\npoll_interval = \"1h\"",
        2,
    );
    let mut running: Vec<Option<Guard>> = nodes.iter().map(|n| Some(n.spawn())).collect();
    assert!(wait_until(60, || env.scim.users().len() == 3));
    let id = id_of(&env, "bob");
    let mut ms = Vec::new();
    for round in 0..rounds {
        let a = ha_active(&nodes, &[true, true], 30).expect("one active gateway");
        running[a].take().unwrap().stop();
        let killed = Instant::now();
        let title = format!("failover {round}");
        set_attribute(&env.slapd, "bob", "title", &title);
        assert!(arrived(&env.scim, &id, &title), "round {round}: not pushed");
        ms.push(killed.elapsed().as_secs_f64() * 1000.0);
        running[a] = Some(nodes[a].spawn());
    }
    ms
}

fn start(feed: &str, poll: &str) -> (Env, Guard) {
    let mut env = Env::start();
    env.ldap_extra = "referenced_groups = \"ignore\"\n".into();
    env.extra = format!(
        "[daemon]\nchange_feed = \"{feed}\"\npoll_interval = \"{poll}\"\nfull_resync = \"off\"\nlisten = \"off\"\n"
    );
    let child = Guard(env.spawn(&["run", "--log-level", "info"]));
    assert!(
        wait_until(30, || env.scim.users().len() == 3),
        "{}",
        env.spawned_log()
    );
    (env, child)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no argument: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let (env, mut child) = start("syncrepl", "1h");
    let base = figures(baseline(&env, n));
    let feed = figures(follow(&env, &rt, n, "feed"));
    let burst_n = 2000;
    let passes = |env: &Env| env.spawned_log().matches("feed: users").count();
    let before = passes(&env);
    let burst_secs = burst(&env, &rt, burst_n);
    // The last pass may still be logging its line.
    std::thread::sleep(Duration::from_millis(200));
    let burst_passes = passes(&env) - before;
    child.stop();

    let polls = (n / 5).max(10);
    let (env, mut child) = start("poll", "1s");
    let poll = figures(follow(&env, &rt, polls, "poll"));
    child.stop();

    let ad_n = (n / 2).max(10);
    let ad = figures(follow_ad(ad_n));

    let kills: usize = std::env::var("BENCH_HA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let fo = figures(failover(kills));

    println!("change-to-push latency (LDAP modify returned -> SCIM server shows it)");
    println!(
        "  baseline, one direct SCIM PATCH ({n}):  p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms",
        base.p50, base.p99, base.max
    );
    for (name, f, count) in [
        ("syncrepl feed", &feed, n),
        ("polling every 1s", &poll, polls),
        ("AD notification", &ad, ad_n),
    ] {
        println!(
            "  {name:<18} ({count:>3}):  p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms   = {:.1}x / {:.1}x baseline p50 / p99",
            f.p50,
            f.p99,
            f.max,
            f.p50 / base.p50,
            f.p99 / base.p99
        );
    }
    println!(
        "  syncrepl p50 is {:.1}x faster than polling every 1s",
        poll.p50 / feed.p50
    );
    println!(
        "  burst of {burst_n} modifications of one user, back to back: last one on the target after {:.2} s ({:.0} changes/s), in {burst_passes} passes",
        burst_secs,
        burst_n as f64 / burst_secs
    );
    let ttl_ms = HA_TTL_SECS as f64 * 1000.0;
    println!(
        "  [ha] failover: kill -9 of the active gateway ({kills} kills; renew {HA_RENEW}, lease_ttl {HA_TTL_SECS}s, margin {HA_MARGIN}) to a change made at once on the target: p50 {:.0} ms, max {:.0} ms = lease_ttl + {:.0} / + {:.0} ms",
        fo.p50,
        fo.max,
        fo.p50 - ttl_ms,
        fo.max - ttl_ms
    );
}
