//! Whose listener answers on a port: a port free when picked may be taken by another test's
//! server before ours binds it, and a connection that succeeds then reaches the wrong server
//! (ours exits a moment later, or worse, the test talks to another test's server).

use std::collections::BTreeSet;

/// Whether the process `pid` (or one of its descendants: servers started through a script
/// fork) holds the socket listening on 127.0.0.1 / ::1 `port`. `None` where /proc cannot tell.
pub(crate) fn owned_by(port: u16, pid: u32) -> Option<bool> {
    let inodes = listening_inodes(port)?;
    if inodes.is_empty() {
        return Some(false);
    }
    for p in with_descendants(pid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy().into_owned();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if inodes.contains(&inode) {
                    return Some(true);
                }
            }
        }
    }
    Some(false)
}

/// The inodes of the sockets in state LISTEN on `port` (any address).
fn listening_inodes(port: u16) -> Option<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                if let Ok(i) = inode.parse() {
                    out.insert(i);
                }
            }
        }
    }
    readable.then_some(out)
}

/// `pid` and every process below it.
fn with_descendants(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() && all.len() < 256 {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

#[test]
fn a_listener_is_told_from_another_process_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(owned_by(port, std::process::id()), Some(true));
    let mut other = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let theirs = owned_by(port, other.id());
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(theirs, Some(false));
    drop(listener);
    assert_eq!(owned_by(port, std::process::id()), Some(false));
}
