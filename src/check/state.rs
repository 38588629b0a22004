//! The state folder: there or creatable, private, writable, not in use, and holding the records
//! of this target (a sync refuses records of another).

use std::path::Path;

use super::Finding;
use crate::config::Config;
use crate::state::Store;
use crate::target::{AnyTarget, Target};

pub(super) fn check(cfg: &Config) -> Vec<Finding> {
    let path = cfg.state.path.as_path();
    let shown = path.display();
    if std::fs::symlink_metadata(path).is_err() {
        // The first sync creates it, and its missing parents: the nearest that exists must be
        // a folder this user may write in.
        let ancestor = path
            .ancestors()
            .skip(1)
            .find(|a| a.as_os_str().is_empty() || std::fs::metadata(a).is_ok());
        let ancestor = match ancestor {
            Some(a) if a.as_os_str().is_empty() => Path::new("."),
            Some(a) => a,
            None => Path::new("/"),
        };
        return vec![if !ancestor.is_dir() {
            Finding::fail(
                "state",
                format!(
                    "{shown} cannot be created: {} is not a folder",
                    ancestor.display()
                ),
                "set state.path to a folder (the gateway creates it if missing)",
            )
        } else if !writable(ancestor) {
            Finding::fail(
                "state",
                format!(
                    "{shown} does not exist and {} is not writable by this user",
                    ancestor.display()
                ),
                format!("create {shown} owned by the user the gateway runs as (mode 700), or set state.path"),
            )
        } else {
            Finding::ok(
                "state",
                format!("{shown} does not exist yet: the first sync creates it (owner only)"),
            )
        }];
    }
    if !path.is_dir() {
        return vec![Finding::fail(
            "state",
            format!("{shown} is not a folder"),
            "set state.path to a folder (the gateway creates it if missing)",
        )];
    }
    let mut out = Vec::new();
    if let Some(mode) = crate::config::mode_of(path).filter(|m| m & 0o077 != 0) {
        out.push(Finding::warn(
            "state",
            format!(
                "{shown} can be read by other local users (mode {:o}): its records name every user",
                mode & 0o777
            ),
            format!("chmod 700 {shown}"),
        ));
    }
    if !writable(path) {
        out.push(Finding::fail(
            "state",
            format!("{shown} is not writable by this user"),
            format!(
                "run the gateway as the owner of {shown} (chown it to that user) and let the owner write in it (chmod 700)"
            ),
        ));
        return out;
    }
    if !Store::exists(path) {
        out.push(Finding::ok(
            "state",
            format!("{shown} is empty: the first sync fills it"),
        ));
        return out;
    }
    if Store::awaits_migration(path) {
        out.push(Finding::ok(
            "state",
            format!(
                "{shown} holds the store of an earlier release: the next command that opens it migrates it (`dirbridge plan` sends nothing)"
            ),
        ));
        return out;
    }
    // Read only: a check creates, repairs, migrates and re-permissions nothing.
    let store = match Store::open_read_only(path, cfg.state.cache_capacity_bytes) {
        Ok(s) => s,
        Err(e) if e.is_in_use() => {
            out.push(Finding::warn(
                "state",
                format!("{shown} is in use by a running dirbridge (the service?)"),
                "a one-shot command refuses to run beside it: stop the service first; its /status shows its state meanwhile",
            ));
            return out;
        }
        Err(e) if e.needs_recovery() => {
            out.push(Finding::warn(
                "state",
                e.to_string(),
                "nothing to do: the next sync or run repairs it before anything else",
            ));
            return out;
        }
        Err(e) => {
            out.push(Finding::fail(
                "state",
                e.to_string(),
                format!(
                    "move {shown} aside: the state is a cache, and `dirbridge resync` rebuilds it from the directory and the target"
                ),
            ));
            return out;
        }
    };
    out.extend(records(cfg, &store));
    out
}

/// Whose records the store holds, how many, and how the last run went.
fn records(cfg: &Config, store: &Store) -> Vec<Finding> {
    let shown = cfg.state.path.display();
    let mut out = Vec::new();
    let configured = AnyTarget::from_config(cfg).map(|t| t.describe()).ok();
    let stored = store.target_identity().ok().flatten();
    let (users, groups) = store.record_counts().unwrap_or((0, 0));
    match (stored, configured) {
        (Some(stored), Some(configured)) if stored != configured && users + groups > 0 => {
            out.push(Finding::fail(
                "state",
                format!("{shown} holds the records of another target ({stored}): a sync refuses them"),
                format!(
                    "run `dirbridge resync` to rebuild them for {configured}, or set state.path to a new folder"
                ),
            ));
            return out;
        }
        _ => out.push(Finding::ok(
            "state",
            format!("{shown}: records of {users} users and {groups} groups for this target"),
        )),
    }
    if let Ok(Some(last)) = store.last_run() {
        let when = format!("{} run {} at {}", last.kind, last.run, last.finished_at);
        match last.outcome.as_str() {
            "failed" => out.push(Finding::warn(
                "last run",
                format!(
                    "{when} failed: {}",
                    last.message.as_deref().unwrap_or("no reason recorded")
                ),
                "the checks of the directory and the target below say whether it is mended",
            )),
            "ok" => out.push(Finding::ok("last run", format!("{when}: ok"))),
            other => out.push(Finding::warn(
                "last run",
                format!("{when}: {other}"),
                "`dirbridge status` lists the objects in error and the deletions held",
            )),
        }
    }
    out
}

/// Whether this process may create files in `path` (access(2), which knows about root, ACLs
/// and read-only mounts).
#[cfg(target_os = "linux")]
fn writable(path: &Path) -> bool {
    use rustix::fs::{access, Access};
    access(path, Access::WRITE_OK | Access::EXEC_OK).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn writable(path: &Path) -> bool {
    !std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly())
}
