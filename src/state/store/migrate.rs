//! A store written by an earlier release (sled) copied into the redb file, once, on open.
//!
//! The copy is written to a file of its own, synced, and only then renamed into place; sled's
//! files are moved aside into `sled-migrated/` after that. A crash at any point leaves either
//! the old store whole (the copy is made again) or the new one whole (the old files are moved
//! aside on the next open). The records are a cache a resync can rebuild, but the intents,
//! errors, cookies and mirror are not all recoverable from the target: nothing is dropped.

use std::path::Path;

use super::kv::{self, Kv, Table};

/// sled's files in the state folder.
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];
/// Where sled's files are moved once copied.
pub(super) const ASIDE: &str = "sled-migrated";

/// Whether the folder holds a store of an earlier release.
pub(super) fn has_sled(dir: &Path) -> bool {
    dir.join("conf").is_file() || dir.join("db").is_file()
}

/// Copies the sled store in `dir` into the redb file, if there is one to copy and no redb file
/// yet; moves sled's files aside when the redb file exists.
pub(super) fn from_sled(dir: &Path, cache_bytes: u64) -> Result<(), String> {
    if !has_sled(dir) {
        return Ok(());
    }
    let target = kv::file(dir);
    if !target.exists() {
        let copy = dir.join(format!("{}.migrating", kv::FILE));
        // A copy an interrupted migration left is made again from the start.
        if copy.exists() {
            std::fs::remove_file(&copy)
                .map_err(|e| format!("cannot remove {}: {e}", copy.display()))?;
        }
        let old = sled::Config::new().path(dir).open().map_err(|e| {
            format!("cannot open the store of an earlier release to migrate it: {e}")
        })?;
        let new = Kv::open(&copy, cache_bytes).map_err(|e| match e {
            kv::OpenError::InUse => "the new store file is in use".to_string(),
            kv::OpenError::Other(e) => e,
        })?;
        let mut copied = 0usize;
        new.write(|tx| {
            for t in Table::ALL {
                let Ok(tree) = old.open_tree(t.name()) else {
                    continue;
                };
                let mut table = tx.table(t)?;
                for item in tree.iter() {
                    let (k, v) = item.map_err(|e| {
                        redb::Error::Io(std::io::Error::other(format!(
                            "reading the old store's {}: {e}",
                            t.name()
                        )))
                    })?;
                    table.insert(&*k, &*v)?;
                    copied += 1;
                }
            }
            Ok(())
        })?;
        new.sync()?;
        drop(new);
        drop(old);
        std::fs::rename(&copy, &target)
            .map_err(|e| format!("cannot rename {} into place: {e}", copy.display()))?;
        sync_dir(dir)?;
        tracing::info!(
            store = %dir.display(),
            entries = copied,
            "the store of an earlier release (sled) was copied into {}; its files are kept in {ASIDE}/",
            kv::FILE
        );
    }
    let aside = dir.join(ASIDE);
    std::fs::create_dir_all(&aside)
        .map_err(|e| format!("cannot create {}: {e}", aside.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if SLED_FILES.contains(&name.as_ref()) || name.starts_with("snap.") {
            std::fs::rename(entry.path(), aside.join(&*name))
                .map_err(|e| format!("cannot move {} aside: {e}", entry.path().display()))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}
