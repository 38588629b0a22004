//! `[ha]`: several `dirbridge run` processes on one directory and one SCIM server, one lease
//! entry in the directory. Each gateway reaches the target through its own proxy, which logs
//! every request: the writes say who pushed. Real slapd (syncprov), real SCIM server, real
//! processes killed with SIGKILL, frozen with SIGSTOP, cut off from the directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::faults::FaultProxy;
use common::proxy::Proxy;
use common::*;
use serde_json::Value;

/// Short, so that a take-over is seconds: renew 500 ms, ttl 3 s, margin 1 s.
const TTL: Duration = Duration::from_secs(3);
const MARGIN: Duration = Duration::from_secs(1);

struct Node {
    id: String,
    dir: PathBuf,
    status: u16,
    target: FaultProxy,
    /// The node's way to the directory (a partition cuts it).
    ldap: Proxy,
    child: Option<Guard>,
}

impl Node {
    fn config(&self) -> PathBuf {
        self.dir.join("dirbridge.toml")
    }

    fn start(&mut self, args: &[&str]) {
        let mut a = vec!["run", "--log-level", "debug"];
        a.extend_from_slice(args);
        let child = spawn_dirbridge(&self.config(), &a, &[], &self.dir);
        self.child = Some(Guard(child));
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().0.id()
    }

    fn status(&self) -> Option<Value> {
        http_get(self.status, "/status").and_then(|(_, b)| serde_json::from_str(&b).ok())
    }

    fn role(&self) -> Option<String> {
        self.status()
            .and_then(|s| s["ha"]["role"].as_str().map(str::to_string))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run.err")).unwrap_or_default()
    }

    fn writes_since(&self, t: Instant) -> Vec<String> {
        self.target
            .writes()
            .into_iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, l)| l)
            .collect()
    }

    fn kill9(&mut self) {
        if let Some(mut g) = self.child.take() {
            g.stop();
        }
    }
}

struct Cluster {
    env: Env,
    nodes: Vec<Node>,
    /// The directory server the tests read the truth from (the test's slapd unless changed).
    truth: String,
}

impl Cluster {
    /// `n` gateways, each with its own state, status port, target proxy and directory proxy.
    fn start(n: usize) -> Cluster {
        Cluster::with_env(Env::start(), n)
    }

    fn with_env(env: Env, n: usize) -> Cluster {
        Cluster::with_feed(env, n, "change_feed = \"syncrepl\"\npoll_interval = \"1h\"")
    }

    /// `n` gateways whose `[daemon]` detects changes as `detection` says.
    fn with_feed(mut env: Env, n: usize, detection: &str) -> Cluster {
        env.ldap_extra = "referenced_groups = \"ignore\"\n".into();
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = env.dir.path().join(format!("gw{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["bind.pw", "scim.token"] {
                std::fs::copy(env.dir.path().join(f), dir.join(f)).unwrap();
            }
            let target = FaultProxy::start(env.scim.port, 0.0, 1);
            let ldap = Proxy::start(env.slapd.port);
            let status = free_port();
            env.ldap_url = format!("ldap://127.0.0.1:{}", ldap.port);
            env.target_url = env.scim.base_via(target.port);
            env.extra = format!(
                "[daemon]\n{detection}\nfull_resync = \"off\"\n\
                 listen = \"127.0.0.1:{status}\"\nheartbeat = \"2s\"\n\
                 [ha]\nlease_dn = \"cn=dirbridge-lease,{BASE_DN}\"\ninstance_id = \"gw{i}\"\n\
                 renew = \"500ms\"\nlease_ttl = \"{}s\"\nmargin = \"{}s\"\n\
                 [sync]\nmax_deletion_percent = 100\n",
                TTL.as_secs(),
                MARGIN.as_secs()
            );
            env.write_config();
            std::fs::copy(env.config_path(), dir.join("dirbridge.toml")).unwrap();
            nodes.push(Node {
                id: format!("gw{i}"),
                dir,
                status,
                target,
                ldap,
                child: None,
            });
        }
        let truth = env.slapd.url();
        Cluster { env, nodes, truth }
    }

    /// Every gateway's `ldap.url` set to `servers` (the config rewritten; before a start).
    fn set_ldap_servers(&self, servers: &[String]) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(n.config()).unwrap();
            let one = format!("url = \"ldap://127.0.0.1:{}\"", n.ldap.port);
            assert!(text.contains(&one), "{text}");
            let list = servers
                .iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", ");
            std::fs::write(n.config(), text.replace(&one, &format!("url = [{list}]"))).unwrap();
        }
    }

    fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start(&[]);
        }
    }

    /// The one node that says it is active, once exactly one does and every running one
    /// answers.
    fn active(&self, secs: u64) -> usize {
        let mut found = None;
        let ok = wait_until(secs, || {
            let roles: Vec<Option<String>> = self
                .nodes
                .iter()
                .map(|n| n.child.as_ref().and(n.role()))
                .collect();
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            let active: Vec<usize> = (0..roles.len())
                .filter(|i| roles[*i].as_deref() == Some("active"))
                .collect();
            let answered = roles.iter().filter(|r| r.is_some()).count();
            found = active.first().copied();
            active.len() == 1 && answered == running
        });
        assert!(ok, "no single active gateway:\n{}", self.logs());
        found.unwrap()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.id, n.log()))
            .collect()
    }

    /// The directory's users as the target should hold them: uid -> (sn, active).
    fn directory(&self) -> BTreeMap<String, String> {
        let out = std::process::Command::new("ldapsearch")
            .args([
                "-x",
                "-LLL",
                "-H",
                &self.truth,
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PW,
                "-b",
                &format!("ou=people,{BASE_DN}"),
                "(&(objectClass=inetOrgPerson)(!(description=excluded)))",
                "uid",
                "sn",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace("\n ", "");
        let mut users = BTreeMap::new();
        for block in text.split("\n\n") {
            let get = |a: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{a}: ")).map(str::to_string))
            };
            if let (Some(uid), Some(sn)) = (get("uid"), get("sn")) {
                users.insert(uid, sn);
            }
        }
        users
    }

    /// The target's active users: userName -> familyName; panics on a userName held twice.
    fn target(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        let users = self.env.scim.users();
        for u in &users {
            let name = u["userName"].as_str().unwrap_or_default().to_string();
            if !names.insert(name.clone()) {
                let twins: Vec<&Value> = users.iter().filter(|v| v["userName"] == name).collect();
                let mentions: String = self
                    .nodes
                    .iter()
                    .map(|n| {
                        let lines: Vec<String> = n
                            .log()
                            .lines()
                            .filter(|l| l.contains(&name))
                            .map(str::to_owned)
                            .collect();
                        format!(
                            "--- {} ({} writes)\n{}\n",
                            n.id,
                            n.target.writes().len(),
                            lines.join("\n")
                        )
                    })
                    .collect();
                panic!("{name} twice on the target: {twins:?}\n{mentions}");
            }
            if u["active"] == false {
                continue;
            }
            let family = u["name"]["familyName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.insert(name, family);
        }
        out
    }

    fn converged(&self, secs: u64) -> bool {
        if wait_until(secs, || self.target() == self.directory()) {
            return true;
        }
        let (t, d) = (self.target(), self.directory());
        for (k, v) in &d {
            if t.get(k) != Some(v) {
                eprintln!("directory {k}={v}, target {:?}", t.get(k));
            }
        }
        for (k, v) in &t {
            if !d.contains_key(k) {
                eprintln!("target {k}={v}, not in the directory");
            }
        }
        false
    }
}

/// `n` changes for one ldapmodify: family names, and every tenth a new user or the deletion of
/// one the round before added.
fn burst_ldif(round: usize, n: usize) -> String {
    let mut ldif = String::new();
    for i in 0..n {
        match i % 10 {
            3 => ldif.push_str(&format!(
                "dn: uid=r{round}n{i},ou=people,{BASE_DN}\nchangetype: add\nobjectClass: inetOrgPerson\n\
                 uid: r{round}n{i}\ncn: R {i}\nsn: New{round}\ngivenName: R\nmail: r{round}n{i}@example.org\n\n"
            )),
            7 if round > 0 => ldif.push_str(&format!(
                "dn: uid=r{}n{},ou=people,{BASE_DN}\nchangetype: delete\n\n",
                round - 1,
                i - 4
            )),
            _ => ldif.push_str(&format!(
                "dn: uid={},ou=people,{BASE_DN}\nchangetype: modify\nreplace: sn\nsn: S{round}x{i}\n\n",
                ["alice", "bob", "carol"][i % 3]
            )),
        }
    }
    ldif
}

fn burst(env: &Env, round: usize, n: usize) {
    env.slapd.modify(&burst_ldif(round, n));
}

#[test]
fn of_three_gateways_exactly_one_pushes_and_a_killed_one_is_replaced_within_the_ttl() {
    let mut c = Cluster::start(3);
    c.start_all();
    let first = c.active(60);
    assert!(c.converged(60), "{}", c.logs());
    // Standbys say so on /readyz (200: a healthy standby) and /metrics, once each has read the
    // lease since it was taken (a standby that lost the race to take it saw it free last).
    for (i, n) in c.nodes.iter().enumerate() {
        let holder = format!("gw{first} holds the HA lease");
        wait_until(5, || {
            i == first || http_get(n.status, "/readyz").is_some_and(|(_, b)| b.contains(&holder))
        });
        let (code, body) = http_get(n.status, "/readyz").unwrap();
        let metrics = http_get(n.status, "/metrics").unwrap().1;
        if i == first {
            assert!(metrics.contains("dirbridge_ha_active 1"), "{metrics}");
        } else {
            assert_eq!(code, 200, "{body}");
            assert!(body.starts_with("standby (gw"), "{body}");
            assert!(
                body.contains(&format!("gw{first} holds the HA lease")),
                "{body}"
            );
            assert!(metrics.contains("dirbridge_ha_active 0"), "{metrics}");
        }
    }
    let t0 = Instant::now();
    set_attribute(&c.env.slapd, "bob", "sn", "Changed");
    assert!(c.converged(30), "{}", c.logs());
    for (i, n) in c.nodes.iter().enumerate() {
        let w = n.writes_since(Instant::now() - Duration::from_secs(3600));
        if i == first {
            assert!(!n.writes_since(t0).is_empty(), "the active pushed nothing");
        } else {
            assert!(w.is_empty(), "standby {} wrote: {w:?}", n.id);
        }
    }

    // SIGKILL of the active: another takes over within the ttl and a few seconds.
    c.nodes[first].kill9();
    let killed = Instant::now();
    set_attribute(&c.env.slapd, "alice", "sn", "AfterKill");
    assert!(c.converged(30), "{}", c.logs());
    let took = killed.elapsed();
    let second = c.active(10);
    assert_ne!(second, first);
    assert!(
        took <= TTL + Duration::from_secs(6),
        "took {took:?}:\n{}",
        c.logs()
    );
    for (i, n) in c.nodes.iter().enumerate() {
        let w = n.writes_since(killed);
        if i != second {
            assert!(w.is_empty(), "{} wrote after the kill: {w:?}", n.id);
        }
    }
    let status = c.nodes[second].status().unwrap();
    assert_eq!(status["ha"]["generation"], 2, "{status}");
    // `dirbridge status` names the holder.
    let out = run_dirbridge(&c.nodes[second].config(), &["status"], &[]);
    assert!(
        out.all()
            .contains(&format!("gw{second} holds the HA lease")),
        "{out:?}"
    );
}

#[test]
fn a_clean_stop_hands_the_lease_over_at_once_and_standby_only_never_takes_it() {
    let mut c = Cluster::start(2);
    c.nodes[1].start(&["--standby-only"]);
    c.nodes[0].start(&[]);
    let first = c.active(60);
    assert_eq!(first, 0);
    assert!(c.converged(60), "{}", c.logs());
    // The standby-only one never takes it, even when the other stops.
    let mut child = c.nodes[0].child.take().unwrap();
    assert!(terminate(&mut child.0).success());
    std::thread::sleep(TTL * 2);
    assert_eq!(c.nodes[1].role().as_deref(), Some("standby"));
    assert!(c.nodes[1].target.writes().is_empty());
    // Restarted as a normal gateway, it takes the free lease at once (no ttl to wait).
    c.nodes[1].kill9();
    c.nodes[0].start(&[]);
    assert_eq!(c.active(30), 0);
    c.nodes[1].start(&[]);
    std::thread::sleep(Duration::from_secs(2));
    let mut child = c.nodes[0].child.take().unwrap();
    let stopped = Instant::now();
    assert!(terminate(&mut child.0).success());
    assert!(c.nodes[0].log().contains("lease released"), "{}", c.logs());
    assert!(wait_until(10, || c.nodes[1].role().as_deref() == Some("active")));
    assert!(
        stopped.elapsed() < TTL,
        "a released lease was taken after {:?}",
        stopped.elapsed()
    );
    set_attribute(&c.env.slapd, "carol", "sn", "AfterRelease");
    assert!(c.converged(30), "{}", c.logs());
}

#[test]
fn a_frozen_active_finds_it_lost_the_lease_and_sends_nothing_more() {
    let mut c = Cluster::start(2);
    c.start_all();
    let first = c.active(60);
    let other = 1 - first;
    assert!(c.converged(60), "{}", c.logs());
    let pid = c.nodes[first].pid().to_string();
    // Frozen in the middle of work: changes are on their way when it stops.
    burst(&c.env, 0, 50);
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    let frozen = Instant::now();
    assert!(wait_until(20, || c.nodes[other].role().as_deref() == Some("active")));
    assert!(c.converged(30), "{}", c.logs());
    std::thread::sleep(TTL - MARGIN);
    // Thawed: it must find the lease gone and push nothing, though changes keep coming.
    let thawed = Instant::now();
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    set_attribute(&c.env.slapd, "bob", "sn", "WhileThawing");
    burst(&c.env, 1, 30);
    assert!(c.converged(30), "{}", c.logs());
    std::thread::sleep(Duration::from_secs(3));
    let late = c.nodes[first].writes_since(thawed);
    assert!(
        late.is_empty(),
        "the frozen gateway wrote after it thawed: {late:?}\n{}",
        c.logs()
    );
    assert_eq!(c.nodes[first].role().as_deref(), Some("standby"));
    assert!(frozen.elapsed() > TTL);
}

#[test]
fn an_active_cut_off_from_the_directory_steps_down_before_another_takes_over() {
    let mut c = Cluster::start(2);
    c.start_all();
    let first = c.active(60);
    let other = 1 - first;
    assert!(c.converged(60), "{}", c.logs());
    c.nodes[first].ldap.pause();
    let cut = Instant::now();
    assert!(
        wait_until(20, || c.nodes[other].role().as_deref() == Some("active")),
        "{}",
        c.logs()
    );
    let took = cut.elapsed();
    assert!(took >= TTL - MARGIN, "taken over after {took:?}");
    set_attribute(&c.env.slapd, "alice", "sn", "Partitioned");
    assert!(c.converged(30), "{}", c.logs());
    // It stepped down by its own clock, at ttl - margin after its last renewal: nothing from
    // it after that, though its target is reachable.
    let late = c.nodes[first].writes_since(cut + TTL - MARGIN);
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(c.nodes[first].role().as_deref(), Some("standby"));
    // Healed: it stays standby (the lease is the other's), and follows.
    c.nodes[first].ldap.resume();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.nodes[first].role().as_deref(),
        Some("standby"),
        "{}",
        c.logs()
    );
}

/// Percentile of sorted durations.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn kill_9_of_the_active_during_bursts_of_500_changes_loses_and_duplicates_nothing() {
    let rounds: usize = std::env::var("DIRBRIDGE_HA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // Two slapd in multi-provider replication, the gateways given both: the one they use is
    // stopped in round 3 (a server switch), the other restarted in round 6, the first brought
    // back in round 8.
    let (first, mut second) = Slapd::start_pair();
    let mut c = Cluster::with_env(Env::with_slapd(first), 2);
    c.set_ldap_servers(&[c.env.slapd.url(), second.url()]);
    let mut write_to = c.env.slapd.url();
    c.start_all();
    c.active(60);
    assert!(c.converged(60), "{}", c.logs());
    // Random moments, from a seed printed for a rerun.
    let seed = std::env::var("DIRBRIDGE_HA_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!("DIRBRIDGE_HA_SEED={seed}");
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Round 0: the users the first round deletes.
    burst(&c.env, 0, 500);
    assert!(c.converged(60), "{}", c.logs());
    let caught_up = |c: &mut Cluster, to: String| {
        let expected = c.directory();
        c.truth = to;
        assert!(wait_until(30, || c.directory() == expected), "replication");
    };
    let mut failovers = Vec::new();
    for round in 1..=rounds {
        let a = c.active(30);
        let b = 1 - a;
        let url = write_to.clone();
        let burster = std::thread::spawn(move || {
            let ldif = burst_ldif(round, 500);
            let out = run_with_input(
                {
                    let mut cmd = std::process::Command::new("ldapmodify");
                    cmd.args(["-x", "-H", &url, "-D", ADMIN_DN, "-w", ADMIN_PW]);
                    cmd
                },
                &ldif,
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
        std::thread::sleep(Duration::from_millis(next() % 1500));
        c.nodes[a].kill9();
        let killed = Instant::now();
        assert!(
            wait_until(30, || c.nodes[b].role().as_deref() == Some("active")),
            "round {round}: no take-over\n{}",
            c.logs()
        );
        failovers.push(killed.elapsed());
        burster.join().unwrap();
        match round {
            3 => {
                // The server in use stops: everything goes on on the other.
                caught_up(&mut c, second.url());
                c.env.slapd.kill();
                write_to = second.url();
            }
            // The server in use restarts.
            6 => second.restart(),
            // The first comes back (and catches up from the second).
            8 => c.env.slapd.restart(),
            _ => {}
        }
        assert!(
            c.converged(60),
            "round {round}: the target differs from the directory\n{}",
            c.logs()
        );
        let late = c.nodes[a].writes_since(killed);
        assert!(late.is_empty(), "{late:?}");
        // Restarted, as systemd would: it comes back as a standby.
        c.nodes[a].start(&[]);
    }
    failovers.sort();
    eprintln!(
        "failover after kill -9 over {rounds} rounds (ttl {TTL:?}): p50 {:?}, max {:?}",
        pct(&failovers, 0.5),
        pct(&failovers, 1.0)
    );
    assert!(
        *failovers.last().unwrap() <= TTL + Duration::from_secs(5),
        "{failovers:?}"
    );
}

#[test]
fn with_several_servers_in_ldap_url_the_gateway_goes_to_the_next_when_the_first_stops() {
    // Two ways to the directory, the first of which goes away (connections refused, the open
    // ones cut): the lease and the change feed go on through the second.
    let mut c = Cluster::start(1);
    let second = Proxy::start(c.env.slapd.port);
    c.set_ldap_servers(&[
        format!("ldap://127.0.0.1:{}", c.nodes[0].ldap.port),
        format!("ldap://127.0.0.1:{}", second.port),
    ]);
    c.nodes[0].start(&[]);
    c.active(60);
    assert!(c.converged(60), "{}", c.logs());
    c.nodes[0].ldap.pause();
    set_attribute(&c.env.slapd, "bob", "sn", "ViaTheSecond");
    assert!(c.converged(60), "{}", c.logs());
    assert_eq!(c.nodes[0].role().as_deref(), Some("active"), "{}", c.logs());
    let log = c.nodes[0].log();
    assert!(
        log.contains(&format!("server=ldap://127.0.0.1:{}", second.port)),
        "{log}"
    );
    // And back to the first once it answers again and the second goes.
    c.nodes[0].ldap.resume();
    drop(second);
    set_attribute(&c.env.slapd, "alice", "sn", "BackToTheFirst");
    assert!(c.converged(60), "{}", c.logs());
}

#[test]
fn two_replicating_providers_the_one_in_use_stopped_the_lease_and_the_feed_go_on_on_the_other() {
    let (a, b) = Slapd::start_pair();
    let mut c = Cluster::with_env(Env::with_slapd(a), 2);
    c.set_ldap_servers(&[c.env.slapd.url(), b.url()]);
    c.start_all();
    let first = c.active(60);
    assert!(c.converged(60), "{}", c.logs());
    // The provider in use dies; what is written to the other reaches the target, and the
    // same gateway keeps the lease (it renews on the second server within its margin).
    // Once the second has all of it (replication takes a moment).
    let on_first = c.directory();
    c.truth = b.url();
    assert!(wait_until(30, || c.directory() == on_first));
    c.env.slapd.kill();
    let killed = Instant::now();
    b.modify(&format!(
        "dn: uid=bob,ou=people,{BASE_DN}\nchangetype: modify\nreplace: sn\nsn: OnTheSecond\n"
    ));
    assert!(c.converged(60), "{}", c.logs());
    assert_eq!(c.active(10), first, "{}", c.logs());
    for (i, n) in c.nodes.iter().enumerate() {
        if i != first {
            assert!(n.writes_since(killed).is_empty(), "{}", c.logs());
        }
    }
    assert!(
        c.nodes[first]
            .log()
            .contains(&format!("server={}", b.url())),
        "{}",
        c.logs()
    );
    // Back: the first provider catches up from the second, and a change made there arrives.
    c.env.slapd.restart();
    c.truth = c.env.slapd.url();
    assert!(wait_until(30, || c
        .directory()
        .get("bob")
        .map(String::as_str)
        == Some("OnTheSecond")));
    set_attribute(&c.env.slapd, "alice", "sn", "BackOnTheFirst");
    assert!(c.converged(60), "{}", c.logs());
}

#[test]
fn a_polling_standby_lists_the_keys_so_a_deletion_the_killed_one_never_pushed_is_carried_out() {
    let mut c = Cluster::with_feed(
        Env::start(),
        2,
        "change_feed = \"poll\"\npoll_interval = \"1s\"",
    );
    c.start_all();
    let first = c.active(60);
    assert!(c.converged(60), "{}", c.logs());
    c.env.slapd.add(&format!(
        "dn: uid=brief,ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: brief\ncn: Brief\n\
         sn: Stay\ngivenName: B\nmail: brief@example.org\n"
    ));
    assert!(c.converged(30), "{}", c.logs());
    // The standby has listed the newcomer (it lists every poll); the active dies, and the
    // newcomer leaves before anyone pushes that.
    std::thread::sleep(Duration::from_secs(2));
    c.nodes[first].kill9();
    c.env
        .slapd
        .delete(&format!("uid=brief,ou=people,{BASE_DN}"));
    assert!(wait_until(20, || c.nodes[1 - first].role().as_deref()
        == Some("active")));
    assert!(c.converged(30), "{}", c.logs());
    let brief = c.env.scim.user("brief").unwrap();
    assert_eq!(brief["active"], false, "{brief}");
}

#[test]
fn a_one_shot_sync_holds_the_lease_for_its_run_and_never_pushes_beside_a_live_gateway() {
    let mut c = Cluster::start(2);
    // No gateway runs: a one-shot sync takes the lease, pushes (as a resync), and frees it.
    let r = run_dirbridge(&c.nodes[1].config(), &["sync"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.all().contains("runs as a resync"), "{r:?}");
    assert!(c.converged(5), "{r:?}");
    let s = run_dirbridge(&c.nodes[1].config(), &["status"], &[]);
    assert!(s.stdout.contains("HA: the lease is free"), "{s:?}");
    // A gateway runs and renews: a one-shot sync elsewhere refuses, sending nothing.
    c.nodes[0].start(&[]);
    assert!(wait_until(30, || c.nodes[0].role().as_deref() == Some("active")));
    let before = c.nodes[1].target.writes().len();
    set_attribute(&c.env.slapd, "bob", "sn", "ByTheService");
    let started = Instant::now();
    let r = run_dirbridge(&c.nodes[1].config(), &["sync"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.all().contains("the gateway gw0 holds the lease")
            && r.all().contains("keeps renewing it"),
        "{r:?}"
    );
    assert!(started.elapsed() < TTL * 4, "{:?}", started.elapsed());
    assert_eq!(c.nodes[1].target.writes().len(), before, "{r:?}");
    assert!(c.converged(30), "{}", c.logs());
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn lease_value(c: &Cluster) -> String {
    let out = std::process::Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &c.truth,
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PW,
            "-b",
            &format!("cn=dirbridge-lease,{BASE_DN}"),
            "-s",
            "base",
            "description",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("description: "))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn a_standby_restarted_before_it_takes_over_still_carries_out_a_deletion_it_saw() {
    let mut c = Cluster::start(2);
    c.start_all();
    let first = c.active(60);
    let other = 1 - first;
    assert!(c.converged(60), "{}", c.logs());
    let pid = c.nodes[first].pid();
    signal(pid, "-STOP");
    c.env
        .slapd
        .delete(&format!("uid=carol,ou=people,{BASE_DN}"));
    std::thread::sleep(Duration::from_millis(700));
    // Restarted (an upgrade, a reboot) before the ttl runs out: what it saw is in its store.
    c.nodes[other].kill9();
    c.nodes[other].start(&[]);
    assert!(
        wait_until(30, || c.nodes[other].role().as_deref() == Some("active")),
        "{}",
        c.logs()
    );
    let converged = c.converged(30);
    signal(pid, "-CONT");
    assert!(converged, "{}", c.logs());
    assert_eq!(c.env.scim.user("carol").unwrap()["active"], false);
}

#[test]
fn a_first_server_that_takes_connections_and_never_answers_is_passed_over() {
    let c = Cluster::start(1);
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    // Accepts, holds, answers nothing (bounded: the test's life).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().flatten() {
            held.push(s);
        }
    });
    c.set_ldap_servers(&[
        format!("ldap://127.0.0.1:{hang_port}"),
        format!("ldap://127.0.0.1:{}", c.nodes[0].ldap.port),
    ]);
    let text = std::fs::read_to_string(c.nodes[0].config()).unwrap();
    let text = text.replace("[ldap]\n", "[ldap]\ntimeout_secs = 3\n");
    std::fs::write(c.nodes[0].config(), text).unwrap();
    let mut c = c;
    c.nodes[0].start(&[]);
    assert!(
        wait_until(60, || c.nodes[0].role().as_deref() == Some("active")),
        "{}",
        c.logs()
    );
    assert!(c.converged(60), "{}", c.logs());
    assert!(
        c.nodes[0].log().contains("did not answer the bind"),
        "{}",
        c.logs()
    );
}

#[test]
fn a_lease_written_by_hand_never_makes_two_push_nor_stops_the_lease_task() {
    let mut c = Cluster::start(2);
    c.start_all();
    let first = c.active(60);
    assert!(c.converged(60), "{}", c.logs());
    let lease = format!("cn=dirbridge-lease,{BASE_DN}");
    // A value at the top of the counters: junk, swept after the ttl (no overflow, no panic).
    c.env.slapd.modify(&format!(
        "dn: {lease}\nchangetype: modify\nreplace: description\ndescription: holder=gw9;gen=18446744073709551615;beat=0\n"
    ));
    assert!(
        wait_until(20, || {
            let v = lease_value(&c);
            v.starts_with("holder=gw0;gen=1;") || v.starts_with("holder=gw1;gen=1;")
        }),
        "{}\n{}",
        lease_value(&c),
        c.logs()
    );
    c.active(30);
    assert!(!c.logs().contains("internal error"), "{}", c.logs());
    // Emptied by hand: made free with generation 0, which nobody takes before the ttl (its
    // holder may still be renewing): no take-over within a renewal.
    c.env.slapd.modify(&format!(
        "dn: {lease}\nchangetype: modify\ndelete: description\n"
    ));
    let emptied = Instant::now();
    let mut took = None;
    wait_until(20, || {
        let v = lease_value(&c);
        let taken = v.starts_with("holder=gw") && !v.contains("holder=;");
        if taken && took.is_none() {
            took = Some(emptied.elapsed());
        }
        taken
            && c.nodes
                .iter()
                .filter(|n| n.role().as_deref() == Some("active"))
                .count()
                == 1
    });
    let took = took.expect("nobody took the emptied lease");
    assert!(
        took >= TTL - Duration::from_millis(600),
        "taken after {took:?}"
    );
    // Every take is reconciled, whatever generation the lease says.
    let now = c.active(30);
    assert!(
        c.nodes[now]
            .log()
            .matches("HA: reconciling with the target")
            .count()
            >= 1,
        "{}",
        c.logs()
    );
    set_attribute(&c.env.slapd, "bob", "sn", "AfterTheEdits");
    assert!(c.converged(30), "{}", c.logs());
    let _ = first;
}

#[test]
fn a_standby_only_gateway_says_so_when_nobody_renews_the_lease() {
    let mut c = Cluster::start(2);
    c.nodes[0].start(&[]);
    assert!(wait_until(30, || c.nodes[0].role().as_deref() == Some("active")));
    c.nodes[1].start(&["--standby-only"]);
    assert!(wait_until(30, || {
        http_get(c.nodes[1].status, "/readyz").is_some_and(|(code, _)| code == 200)
    }));
    c.nodes[0].kill9();
    assert!(
        wait_until(TTL.as_secs() * 4, || {
            http_get(c.nodes[1].status, "/readyz").is_some_and(|(code, body)| {
                code == 503
                    && body.contains("has not been renewed")
                    && body.contains("nobody pushes")
            })
        }),
        "{:?}",
        http_get(c.nodes[1].status, "/readyz")
    );
}

#[test]
fn a_slow_directory_does_not_make_the_gateways_disown_their_own_writes() {
    // Every LDAP answer to either gateway 600 ms late: a read and a write of the lease take
    // longer than half the time a holder may push, and still one of them pushes.
    let mut c = Cluster::start(2);
    for n in &c.nodes {
        n.ldap.set_delay(600);
    }
    c.start_all();
    let first = c.active(60);
    assert!(c.converged(90), "{}", c.logs());
    set_attribute(&c.env.slapd, "bob", "sn", "SlowButSure");
    assert!(c.converged(60), "{}", c.logs());
    // It kept the lease all along: one take, no other gateway wrote.
    assert_eq!(c.active(5), first, "{}", c.logs());
    let other = &c.nodes[1 - first];
    assert!(other.target.writes().is_empty(), "{}", c.logs());
    assert!(
        !c.nodes[first].log().contains("taken by another gateway"),
        "{}",
        c.logs()
    );
}

#[test]
fn two_gateways_given_one_instance_id_are_told_apart_and_status_reads_the_running_service() {
    let mut c = Cluster::start(2);
    let text = std::fs::read_to_string(c.nodes[1].config()).unwrap();
    std::fs::write(
        c.nodes[1].config(),
        text.replace("instance_id = \"gw1\"", "instance_id = \"gw0\""),
    )
    .unwrap();
    c.nodes[0].start(&[]);
    assert!(wait_until(30, || c.nodes[0].role().as_deref() == Some("active")));
    c.nodes[1].start(&[]);
    assert!(
        wait_until(20, || {
            http_get(c.nodes[1].status, "/readyz").is_some_and(|(code, body)| {
                code == 503 && body.contains("renews the lease under this gateway's id (gw0)")
            })
        }),
        "{:?}\n{}",
        http_get(c.nodes[1].status, "/readyz"),
        c.logs()
    );
    // `status` on a host whose service runs: the service's own answer, exit 0, JSON included.
    let r = run_dirbridge(&c.nodes[0].config(), &["status"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("The service runs"), "{r:?}");
    assert!(r.stdout.contains("gw0 holds the HA lease"), "{r:?}");
    let r = run_dirbridge(&c.nodes[0].config(), &["status", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["ha"]["role"], "active", "{doc}");
    assert_eq!(doc["lease"]["holder"], "gw0", "{doc}");
}
