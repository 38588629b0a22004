//! A store written by an earlier release (sled) copied into the redb file, once, on open.
//!
//! Under a lock file (two commands started at once never migrate together): the copy is written
//! to a file of its own, synced, and only then renamed into place; sled's files are moved aside
//! into `sled-migrated/` after that. A crash at any point leaves either the old store whole (the
//! copy is made again) or the new one whole (what is left of the old files is moved aside on
//! the next open). The records are a cache a resync can rebuild, but the intents, errors,
//! cookies and mirror are not all recoverable from the target: nothing is dropped. Only the
//! folder's owner migrates it (a first command run as another user, e.g. root, would leave a
//! store the service cannot open). A sled store found beside the copy that ran after the copy
//! was made (an earlier release started on the folder again) is neither used nor moved: the
//! open is refused until the administrator moves one of the two away.

use std::path::Path;

use super::kv::{self, Kv, Table};

/// sled's files in the state folder.
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];
/// Where sled's files are moved once copied.
pub(super) const ASIDE: &str = "sled-migrated";
/// Held while migrating.
const LOCK: &str = ".migrate.lock";

fn is_sled_file(name: &str) -> bool {
    SLED_FILES.contains(&name) || name.starts_with("snap.")
}

/// Whether the folder holds a store of an earlier release.
pub(super) fn has_sled(dir: &Path) -> bool {
    dir.join("conf").is_file() || dir.join("db").is_file()
}

/// Whether the folder holds anything of sled's (a store, or what an interrupted move left).
fn any_sled_file(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| is_sled_file(&e.file_name().to_string_lossy()))
    })
}

/// Copies the sled store in `dir` into the redb file, if there is one to copy and no redb file
/// yet; moves sled's files aside once the redb file exists.
pub(super) fn from_sled(dir: &Path, cache_bytes: u64) -> Result<(), String> {
    let target = kv::file(dir);
    let copy = dir.join(format!("{}.migrating", kv::FILE));
    if !has_sled(dir) && !(target.exists() && (copy.exists() || any_sled_file(dir))) {
        return Ok(());
    }
    // Before anything is created: a file another user made here would shut the owner out.
    check_owner(dir)?;
    let lock_path = dir.join(LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            "it is being migrated by another dirbridge process".to_string()
        }
        std::fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", lock_path.display()),
    })?;
    // Checked again under the lock: another process may have migrated it meanwhile.
    if !target.exists() && has_sled(dir) {
        copy_from_sled(dir, &copy, &target, cache_bytes)?;
    } else if has_sled(dir) {
        refuse_newer_sled(dir, &target, cache_bytes)?;
    }
    if copy.exists() {
        std::fs::remove_file(&copy)
            .map_err(|e| format!("cannot remove {}: {e}", copy.display()))?;
    }
    move_aside(dir)?;
    drop(lock);
    let _ = std::fs::remove_file(&lock_path);
    Ok(())
}

fn copy_from_sled(dir: &Path, copy: &Path, target: &Path, cache_bytes: u64) -> Result<(), String> {
    // A copy an interrupted migration left is made again from the start.
    if copy.exists() {
        std::fs::remove_file(copy).map_err(|e| format!("cannot remove {}: {e}", copy.display()))?;
    }
    let old = sled::Config::new()
        .path(dir)
        .open()
        .map_err(|e| format!("cannot open the store of an earlier release to migrate it: {e}"))?;
    let new = Kv::open(copy, cache_bytes).map_err(|e| match e {
        kv::OpenError::InUse => "the new store file is in use".to_string(),
        kv::OpenError::NeedsRecovery => "the new store file needs recovery".to_string(),
        kv::OpenError::Other(e) => e,
    })?;
    let old_err = |what: &str, e: sled::Error| {
        redb::Error::Io(std::io::Error::other(format!(
            "reading the old store's {what}: {e}"
        )))
    };
    let mut copied = 0usize;
    let run = sled_run(&old)?;
    new.write(|tx| {
        for t in Table::ALL {
            let tree = old.open_tree(t.name()).map_err(|e| old_err(t.name(), e))?;
            let mut table = tx.table(t)?;
            for item in tree.iter() {
                let (k, v) = item.map_err(|e| old_err(t.name(), e))?;
                table.insert(&*k, &*v)?;
                copied += 1;
            }
        }
        // The run the copy was made at (written after meta is copied): a sled store found
        // beside the copy later is a leftover if it has not run since, and an earlier release's
        // store used after the copy if it has.
        tx.insert(Table::Meta, MIGRATED_AT.as_bytes(), &super::encode(&run))?;
        Ok(())
    })?;
    new.sync()?;
    drop(new);
    drop(old);
    std::fs::rename(copy, target)
        .map_err(|e| format!("cannot rename {} into place: {e}", copy.display()))?;
    sync_dir(dir)?;
    tracing::info!(
        store = %dir.display(),
        entries = copied,
        "the store of an earlier release (sled) was copied into {}; its files are kept in {ASIDE}/",
        kv::FILE
    );
    Ok(())
}

/// The meta key of the run counter the sled store had when it was copied.
const MIGRATED_AT: &str = "migrated_from_sled_at_run";

/// The run counter of a sled store (0 when it never ran).
fn sled_run(old: &sled::Db) -> Result<u64, String> {
    let meta = old
        .open_tree("meta")
        .map_err(|e| format!("reading the old store's meta: {e}"))?;
    let value = meta
        .get("run_counter")
        .map_err(|e| format!("reading the old store's meta: {e}"))?;
    Ok(value
        .and_then(|v| serde_json::from_slice::<u64>(&v).ok())
        .unwrap_or(0))
}

/// A sled store beside the redb file is moved aside only if it has not run since it was copied:
/// one that did (an earlier release started on the folder after the upgrade) holds changes the
/// copy lacks, and which store to keep is the administrator's choice.
fn refuse_newer_sled(dir: &Path, target: &Path, cache_bytes: u64) -> Result<(), String> {
    let old = sled::Config::new().path(dir).open().map_err(|e| {
        format!(
            "cannot open the store of an earlier release beside {}: {e}",
            kv::FILE
        )
    })?;
    let run = sled_run(&old)?;
    drop(old);
    let new = Kv::open(target, cache_bytes).map_err(|e| match e {
        kv::OpenError::InUse => "it is in use by another dirbridge process".to_string(),
        kv::OpenError::NeedsRecovery => format!("{} needs recovery", target.display()),
        kv::OpenError::Other(e) => format!("{}: {e}", target.display()),
    })?;
    let at = new
        .read()?
        .get(Table::Meta, MIGRATED_AT.as_bytes())?
        .and_then(|v| serde_json::from_slice::<u64>(&v).ok());
    drop(new);
    match at {
        // A redb file not copied from sled (made by this release on an empty folder): any sled
        // store that ran beside it was started later.
        None if run > 0 => Err(format!(
            "it holds both {file} and a store of an earlier release (sled) that ran (its run {run}) but was never copied into it: an earlier release was started on it. Keep one: move {file} away to go on from the earlier release's store (it is copied), or move sled's files (conf, db, blobs, snap.*) away to keep {file}",
            file = kv::FILE
        )),
        Some(at) if run > at => Err(format!(
            "it holds both {file} and a store of an earlier release (sled) that ran after it was copied (its run {run}, copied at run {at}): an earlier release was started on it. Keep one: move {file} away to go on from the earlier release's store (it is copied again), or move sled's files (conf, db, blobs, snap.*) away to keep the copy",
            file = kv::FILE
        )),
        _ => {
            tracing::warn!(store = %dir.display(), "files of an earlier release's store (sled) were found beside {}; they are moved into {ASIDE}/", kv::FILE);
            Ok(())
        }
    }
}

/// Refuses to migrate a folder this process's user does not own: the new file would be theirs.
#[cfg(target_os = "linux")]
fn check_owner(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let folder =
        std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if folder.uid() != me {
        return Err(format!(
            "it was written by an earlier release and must be migrated once by its owner (uid {}): run dirbridge as that user first",
            folder.uid()
        ));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn check_owner(_dir: &Path) -> Result<(), String> {
    Ok(())
}

/// Moves what is left of sled's files into [`ASIDE`], never over a file already there (a name
/// taken gets a number).
fn move_aside(dir: &Path) -> Result<(), String> {
    if !any_sled_file(dir) {
        return Ok(());
    }
    let aside = dir.join(ASIDE);
    std::fs::create_dir_all(&aside)
        .map_err(|e| format!("cannot create {}: {e}", aside.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_sled_file(&name) {
            continue;
        }
        let mut to = aside.join(&name);
        let mut n = 1;
        while to.exists() {
            n += 1;
            to = aside.join(format!("{name}.{n}"));
        }
        std::fs::rename(entry.path(), &to)
            .map_err(|e| format!("cannot move {} aside: {e}", entry.path().display()))?;
    }
    sync_dir(&aside)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}
