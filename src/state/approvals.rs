//! The accidental-deletion guard's two notes, kept as small files in the state folder rather
//! than in sled: `dirbridge approve-deletes` must be able to read what is held and approve it
//! while the service holds the store open. The folder is owner-only (0700), so only whoever may
//! run the gateway may approve; the files are written whole (temporary file, then rename).

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use super::StateError;
use crate::plan::guard::{Approval, Held};

const HELD: &str = "held-deletions.json";
const APPROVAL: &str = "approve-deletes.json";

fn io(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, StateError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: path.clone(),
                key: name.into(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

/// Makes a rename or an unlink in `dir` durable: without it, a power loss can bring back a
/// spent approval (the directory entry was never written to disk).
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn write<T: Serialize>(dir: &Path, name: &str, value: Option<&T>) -> Result<(), StateError> {
    use std::io::Write;
    let path = dir.join(name);
    let Some(v) = value else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            Err(_) => Ok(()),
            Ok(()) => sync_dir(dir),
        };
    };
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| io(&path, e))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    sync_dir(dir)
}

/// Removals the last run held back, if any.
pub(crate) fn held_deletions(state_dir: &Path) -> Result<Option<Held>, StateError> {
    read(state_dir, HELD)
}

/// Records (or, with `None`, clears) what a run held back.
pub(crate) fn set_held_deletions(state_dir: &Path, held: Option<&Held>) -> Result<(), StateError> {
    write(state_dir, HELD, held)
}

/// The administrator's approval, if any.
pub(crate) fn deletion_approval(state_dir: &Path) -> Result<Option<Approval>, StateError> {
    read(state_dir, APPROVAL)
}

/// Records (or, with `None`, spends) an approval.
pub(crate) fn set_deletion_approval(
    state_dir: &Path,
    a: Option<&Approval>,
) -> Result<(), StateError> {
    write(state_dir, APPROVAL, a)
}
