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

fn write<T: Serialize>(dir: &Path, name: &str, value: Option<&T>) -> Result<(), StateError> {
    let path = dir.join(name);
    let Some(v) = value else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        };
    };
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| io(&path, e))?;
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
}

/// Removals the last run held back, if any.
pub fn held_deletions(state_dir: &Path) -> Result<Option<Held>, StateError> {
    read(state_dir, HELD)
}

/// Records (or, with `None`, clears) what a run held back.
pub fn set_held_deletions(state_dir: &Path, held: Option<&Held>) -> Result<(), StateError> {
    write(state_dir, HELD, held)
}

/// The administrator's approval, if any.
pub fn deletion_approval(state_dir: &Path) -> Result<Option<Approval>, StateError> {
    read(state_dir, APPROVAL)
}

/// Records (or, with `None`, spends) an approval.
pub fn set_deletion_approval(state_dir: &Path, a: Option<&Approval>) -> Result<(), StateError> {
    write(state_dir, APPROVAL, a)
}
