//! Persistence (redb, `store/kv.rs`). Every confirmed operation is written in one transaction and
//! made durable before anything that depends on it is sent, so a crash loses no confirmed change
//! and repeats none.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use kv::{Kv, Table};

use super::records::{Snapshot, StateChange};
use crate::model::Key;

/// Layout version of the store, so a later release can migrate or refuse an old one.
const SCHEMA_VERSION: &str = "1";
/// Meta key (and value) set with every write of the records or of intents (before any request
/// is sent) and removed by the change feed's save: present, the target may hold more than the
/// feed's saved mirror.
pub(super) const RECORDS_AHEAD: &[u8] = b"records_ahead";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("state store {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    #[error("state store {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("state store {}: record {key} is unreadable: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// Why a store cannot be opened while another process has it open.
const IN_USE: &str = "it is in use by another dirbridge process";
/// Why a store cannot be read as it is.
const NEEDS_RECOVERY: &str =
    "it was left mid-write (a process stopped); the next sync or run repairs it";

impl StateError {
    /// The store is open in another process (the service, another sync).
    pub fn is_in_use(&self) -> bool {
        matches!(self, StateError::Open { reason, .. } if reason == IN_USE)
    }

    /// The store needs the repair its next writer makes.
    pub fn needs_recovery(&self) -> bool {
        matches!(self, StateError::Open { reason, .. } if reason == NEEDS_RECOVERY)
    }
}

/// An object the last runs could not read or push, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectError {
    /// The object's key, or `dn:<DN>` when the entry had no readable key.
    pub key: String,
    /// `user` or `group`.
    pub kind: String,
    /// userName, group name or DN: what an administrator recognises.
    pub label: String,
    /// `read` (the entry could not be mapped) or the operation that failed.
    pub operation: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub first_seen: String,
    pub last_seen: String,
    pub attempts: u32,
    /// The run that last saw it; errors not seen again by a complete run are dropped.
    pub run: u64,
    /// The service does not send the same operation again before this time (RFC 3339); it grows
    /// with the attempts. A one-shot `sync` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// A digest of the operation that failed: a different operation for the object (it changed
    /// in the directory) is sent at once, whatever `retry_after` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted: Option<String>,
}

impl ObjectError {
    /// `retry_after` as a time.
    pub fn retry_time(&self) -> Option<time::OffsetDateTime> {
        let t = self.retry_after.as_deref()?;
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    }
}

/// First delay before an operation the target refused is sent again by the service.
pub(super) const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest such delay.
pub(super) const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// The delay after `attempts` failed attempts: 10 s doubled per attempt, at most an hour.
pub fn retry_delay(attempts: u32) -> std::time::Duration {
    crate::backoff::doubling(RETRY_FIRST, attempts, RETRY_MAX)
}

/// The outcome of one run, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: u64,
    pub kind: String,
    pub started_at: String,
    pub finished_at: String,
    /// `ok`, `errors` (finished, some objects failed) or `failed` (aborted).
    pub outcome: String,
    pub summary: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub struct Store {
    pub(super) path: PathBuf,
    pub(super) kv: Kv,
    /// Counts the writes to the records, so a copy of them kept in memory between the passes
    /// of the service can tell whether it is still what the store holds.
    pub(super) records_generation: std::sync::atomic::AtomicU64,
    /// Tests: which window writes fail.
    #[cfg(test)]
    pub(super) window_faults: window::Faults,
}

/// A write about to be sent: recorded (and flushed) before the request, removed with the
/// confirmation. One still there at the start of a run was interrupted by a crash or lost its
/// answer, and the object is looked up on the target before anything is sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub operation: String,
    /// userName or group name.
    pub label: String,
    pub run: u64,
    pub at: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// A stored key as a [`Key`] (keys are written from strings; a damaged one reads lossily).
pub(super) fn key_of(bytes: &[u8]) -> Key {
    String::from_utf8_lossy(bytes).into()
}

pub(super) fn decode<'a, T: serde::Deserialize<'a>>(
    path: &Path,
    key: &[u8],
    bytes: &'a [u8],
) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

// An invariant, not input: a silent default here would store (and compare) empty records.
#[allow(clippy::expect_used)]
pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect(
        "the store's records are plain data with string-keyed maps: serializing them cannot fail",
    )
}

impl Store {
    /// True when a store was created at `path` (so a dry run can avoid creating one).
    pub fn exists(path: &Path) -> bool {
        kv::file(path).is_file() || migrate::has_sled(path)
    }

    /// Only a store of an earlier release (sled) is there: the next writer migrates it.
    pub fn awaits_migration(path: &Path) -> bool {
        !kv::file(path).is_file() && migrate::has_sled(path)
    }

    /// Opens (or creates) the store. The folder is created owner-only (0700).
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Store, StateError> {
        let open_err = |reason: String| StateError::Open {
            path: path.to_path_buf(),
            reason,
        };
        create_private_dir(path).map_err(|e| open_err(format!("cannot create the folder: {e}")))?;
        migrate::from_sled(path, cache_capacity).map_err(open_err)?;
        let kv = Kv::open(&kv::file(path), cache_capacity).map_err(|e| match e {
            kv::OpenError::InUse => open_err(IN_USE.into()),
            kv::OpenError::NeedsRecovery => open_err(NEEDS_RECOVERY.into()),
            kv::OpenError::Other(e) => open_err(format!("{}: {e}", kv::file(path).display())),
        })?;
        restrict_files(path);
        let store = Store {
            kv,
            records_generation: Default::default(),
            #[cfg(test)]
            window_faults: Default::default(),
            path: path.to_path_buf(),
        };
        match store.meta_get::<String>("schema_version")? {
            None => store.meta_put("schema_version", &SCHEMA_VERSION.to_string())?,
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(open_err(format!(
                    "layout version {v} is not supported by this release"
                )))
            }
        }
        Ok(store)
    }

    /// Opens an existing store to read it only (`check`): no folder or file is created,
    /// migrated, repaired, re-permissioned or written.
    pub fn open_read_only(path: &Path, cache_capacity: u64) -> Result<Store, StateError> {
        let open_err = |reason: String| StateError::Open {
            path: path.to_path_buf(),
            reason,
        };
        let kv = Kv::open_read_only(&kv::file(path), cache_capacity).map_err(|e| match e {
            kv::OpenError::InUse => open_err(IN_USE.into()),
            kv::OpenError::NeedsRecovery => open_err(NEEDS_RECOVERY.into()),
            kv::OpenError::Other(e) => open_err(format!("{}: {e}", kv::file(path).display())),
        })?;
        Ok(Store {
            kv,
            records_generation: Default::default(),
            #[cfg(test)]
            window_faults: Default::default(),
            path: path.to_path_buf(),
        })
    }

    pub(super) fn io(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// A consistent view of what is committed, for reading.
    pub(super) fn reader(&self) -> Result<kv::Reader, StateError> {
        self.kv.read().map_err(|e| self.io(e))
    }

    /// Runs `f` in one write transaction (durable with the next flush).
    pub(super) fn write<R>(
        &self,
        f: impl FnOnce(&kv::Tx<'_>) -> Result<R, redb::Error>,
    ) -> Result<R, StateError> {
        self.kv.write(f).map_err(|e| self.io(e))
    }

    /// Every key and value of a table, decoded, in key order.
    pub(super) fn all<T: DeserializeOwned>(&self, t: Table) -> Result<Vec<(Key, T)>, StateError> {
        let mut out = Vec::new();
        self.reader()?
            .each(t, false, |k, v| {
                out.push((key_of(k), decode(&self.path, k, v)?));
                Ok::<_, StateError>(true)
            })
            .map_err(|e| self.io(e))??;
        Ok(out)
    }

    /// Every key of a table, in key order.
    pub(super) fn keys_of(&self, t: Table) -> Result<Vec<Key>, StateError> {
        let mut out = Vec::new();
        self.reader()?
            .each(t, false, |k, _| {
                out.push(key_of(k));
                Ok::<_, StateError>(true)
            })
            .map_err(|e| self.io(e))??;
        Ok(out)
    }

    pub(super) fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        match self
            .reader()?
            .get(Table::Meta, key.as_bytes())
            .map_err(|e| self.io(e))?
        {
            Some(v) => decode(&self.path, key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn meta_put<T: Serialize>(&self, key: &str, v: &T) -> Result<(), StateError> {
        let value = encode(v);
        self.write(|tx| tx.insert(Table::Meta, key.as_bytes(), &value))
    }

    /// Whether any user or group record exists.
    pub fn has_records(&self) -> Result<bool, StateError> {
        Ok(self.record_counts()? != (0, 0))
    }

    /// How many user and group records there are.
    pub fn record_counts(&self) -> Result<(usize, usize), StateError> {
        let r = self.reader()?;
        let count = |t| r.len(t).map_err(|e| self.io(e));
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok((size(count(Table::Users)?), size(count(Table::Groups)?)))
    }

    /// Whether a user record exists under `key`.
    pub fn has_user(&self, key: &str) -> Result<bool, StateError> {
        self.reader()?
            .contains(Table::Users, key.as_bytes())
            .map_err(|e| self.io(e))
    }

    /// The keys of the user records (what a directory read needs before the records).
    pub fn user_keys(&self) -> Result<std::collections::BTreeSet<Key>, StateError> {
        // Listed in key order: a bulk build.
        Ok(self.keys_of(Table::Users)?.into_iter().collect())
    }

    /// Records the changes of one confirmed operation and clears the error of `resolved`, in one
    /// transaction, and waits until it is on disk.
    pub async fn commit(
        &self,
        changes: &[StateChange],
        resolved: Option<&Key>,
    ) -> Result<(), StateError> {
        self.write_window(&Window {
            changes: changes.to_vec(),
            resolved: resolved.into_iter().cloned().collect(),
            ..Window::default()
        })?;
        self.flush().await
    }

    /// Replaces every record at once (a resync rebuilds the records from the target).
    pub async fn replace_all(&self, s: &Snapshot) -> Result<(), StateError> {
        self.records_written();
        self.write(|tx| {
            for k in tx.keys(Table::Users)? {
                if !s.users.contains_key(String::from_utf8_lossy(&k).as_ref()) {
                    tx.remove(Table::Users, &k)?;
                }
            }
            for k in tx.keys(Table::Groups)? {
                if !s.groups.contains_key(String::from_utf8_lossy(&k).as_ref()) {
                    tx.remove(Table::Groups, &k)?;
                }
            }
            let mut users = tx.table(Table::Users)?;
            for (k, r) in &s.users {
                users.insert(k.as_bytes(), encode(r).as_slice())?;
            }
            drop(users);
            let mut groups = tx.table(Table::Groups)?;
            for (k, r) in &s.groups {
                groups.insert(k.as_bytes(), encode(r).as_slice())?;
            }
            drop(groups);
            tx.insert(Table::Meta, RECORDS_AHEAD, RECORDS_AHEAD)
        })?;
        self.flush().await
    }

    /// True when the records or intents were written after the change feed's mirror was last
    /// saved (a feed pass cut short after its first intent, or a one-shot run since): the
    /// target may hold what the saved mirror does not; or mirror entries were written ahead of
    /// the feed's checkpoint (`write_mirror_ahead`).
    pub fn records_ahead_of_feed(&self) -> Result<bool, StateError> {
        Ok(self
            .reader()?
            .get(Table::Meta, RECORDS_AHEAD)
            .map_err(|e| self.io(e))?
            .is_some())
    }

    /// How many times the records were written since the store was opened.
    pub fn records_generation(&self) -> u64 {
        self.records_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn records_written(&self) {
        self.records_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The store's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until everything written is on disk (before exiting).
    pub async fn flush_now(&self) -> Result<(), StateError> {
        self.flush().await
    }

    pub(super) async fn flush(&self) -> Result<(), StateError> {
        // A sync waits for the disk: on a thread of its own, while the caller's thread goes on.
        let kv = self.kv.clone();
        match tokio::task::spawn_blocking(move || kv.sync()).await {
            Ok(r) => r.map_err(|e| self.io(e)),
            Err(e) => Err(self.io(format!("the sync stopped: {e}"))),
        }
    }

    /// Records (or updates) an object's error, and waits until it is on disk.
    pub async fn record_error(&self, err: ObjectError) -> Result<(), StateError> {
        self.note_error(err)?;
        self.flush().await
    }

    /// Records (or updates) an object's error; the next flush makes it durable.
    pub fn note_error(&self, mut err: ObjectError) -> Result<(), StateError> {
        self.write(|tx| {
            if let Some(prev) = tx.get(Table::Errors, err.key.as_bytes())? {
                if let Ok(prev) = serde_json::from_slice::<ObjectError>(&prev) {
                    err.first_seen = prev.first_seen;
                    err.attempts = prev.attempts.saturating_add(1);
                }
            }
            if err.attempted.is_some() {
                let at = time::OffsetDateTime::now_utc() + retry_delay(err.attempts);
                err.retry_after = at
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok();
            }
            tx.insert(Table::Errors, err.key.as_bytes(), &encode(&err))
        })
    }

    pub fn errors(&self) -> Result<Vec<ObjectError>, StateError> {
        Ok(self
            .all(Table::Errors)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// How many objects are in error (counts keys; decodes nothing).
    pub fn error_count(&self) -> Result<usize, StateError> {
        let n = self.reader()?.len(Table::Errors).map_err(|e| self.io(e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The earliest retry time of the objects in error, if any waits.
    pub fn next_retry(&self) -> Result<Option<time::OffsetDateTime>, StateError> {
        Ok(self
            .errors()?
            .iter()
            .filter_map(ObjectError::retry_time)
            .min())
    }

    /// Records a write about to be sent, durably, before it is sent.
    pub async fn record_intent(&self, key: &str, intent: &Intent) -> Result<(), StateError> {
        let value = encode(intent);
        self.write(|tx| tx.insert(Table::Intents, key.as_bytes(), &value))?;
        self.flush().await
    }

    /// Forgets an intent whose request was answered (with an error: nothing was carried out).
    pub fn clear_intent(&self, key: &str) -> Result<(), StateError> {
        self.write(|tx| tx.remove(Table::Intents, key.as_bytes()))
    }

    /// Intents left by earlier runs, by key.
    pub fn intents(&self) -> Result<std::collections::BTreeMap<Key, Intent>, StateError> {
        Ok(self.all(Table::Intents)?.into_iter().collect())
    }

    /// Drops the intents of runs before `run` that this run did not need (their objects were
    /// settled by the plan, or no longer need anything).
    pub async fn prune_intents(&self, run: u64) -> Result<(), StateError> {
        let stale: Vec<Key> = self
            .intents()?
            .into_iter()
            .filter(|(_, i)| i.run < run)
            .map(|(k, _)| k)
            .collect();
        self.remove_all(Table::Intents, &stale)?;
        self.flush().await
    }

    /// Keeps an error whose retry was put off by run `run` (so pruning does not take it for
    /// fixed).
    pub async fn defer_error(&self, key: &str, run: u64) -> Result<(), StateError> {
        self.update_stored(Table::Errors, key, |e: &mut ObjectError| e.run = run)
    }

    /// Keeps the intent of a write whose retry was put off by run `run` (so pruning does not
    /// take it for settled: its object is still to be looked up before anything is sent).
    pub fn defer_intent(&self, key: &str, run: u64) -> Result<(), StateError> {
        self.update_stored(Table::Intents, key, |i: &mut Intent| i.run = run)
    }

    /// Changes the value stored under `key` in `tree`, if there is one.
    fn update_stored<T: Serialize + DeserializeOwned>(
        &self,
        t: Table,
        key: &str,
        change: impl FnOnce(&mut T),
    ) -> Result<(), StateError> {
        // Read and written in one transaction: nothing changes it in between.
        let mut decoded = Ok(());
        self.write(|tx| {
            let Some(v) = tx.get(t, key.as_bytes())? else {
                return Ok(());
            };
            match decode::<T>(&self.path, key.as_bytes(), &v) {
                Ok(mut value) => {
                    change(&mut value);
                    tx.insert(t, key.as_bytes(), &encode(&value))
                }
                Err(e) => {
                    decoded = Err(e);
                    Ok(())
                }
            }
        })?;
        decoded
    }

    /// Removes `keys` from a table, in one transaction.
    fn remove_all<K: AsRef<str>>(&self, t: Table, keys: &[K]) -> Result<(), StateError> {
        self.write(|tx| {
            let mut table = tx.table(t)?;
            for k in keys {
                table.remove(k.as_ref().as_bytes())?;
            }
            Ok(())
        })
    }

    /// Drops errors that a complete run `run` did not see again.
    pub async fn prune_errors(&self, run: u64) -> Result<(), StateError> {
        let stale: Vec<Key> = self
            .all::<ObjectError>(Table::Errors)?
            .into_iter()
            .filter(|(_, e)| e.run < run)
            .map(|(k, _)| k)
            .collect();
        self.remove_all(Table::Errors, &stale)?;
        self.flush().await
    }

    /// [`Store::prune_errors`] for the errors of `keys` only: a pass that planned some keys
    /// says nothing of the others' errors.
    pub async fn prune_errors_of<'k>(
        &self,
        run: u64,
        keys: impl IntoIterator<Item = &'k Key>,
    ) -> Result<(), StateError> {
        let r = self.reader()?;
        let mut stale = Vec::new();
        for key in keys {
            let Some(v) = r
                .get(Table::Errors, key.as_bytes())
                .map_err(|e| self.io(e))?
            else {
                continue;
            };
            let e: ObjectError = decode(&self.path, key.as_bytes(), &v)?;
            if e.run < run {
                stale.push(key);
            }
        }
        drop(r);
        if !stale.is_empty() {
            self.remove_all(Table::Errors, &stale)?;
            self.flush().await?;
        }
        Ok(())
    }

    /// Starts a run: returns its number.
    pub async fn next_run(&self) -> Result<u64, StateError> {
        let n = self.meta_get::<u64>("run_counter")?.unwrap_or(0) + 1;
        self.meta_put("run_counter", &n)?;
        self.flush().await?;
        Ok(n)
    }

    pub async fn set_last_run(&self, r: &RunRecord) -> Result<(), StateError> {
        self.meta_put("last_run", r)?;
        if r.outcome != "failed" {
            self.meta_put("last_success", r)?;
        }
        self.flush().await
    }

    pub fn last_run(&self) -> Result<Option<RunRecord>, StateError> {
        self.meta_get("last_run")
    }

    pub fn last_success(&self) -> Result<Option<RunRecord>, StateError> {
        self.meta_get("last_success")
    }

    /// The target URL the records describe. Records for one target are meaningless for another.
    pub fn target_identity(&self) -> Result<Option<String>, StateError> {
        self.meta_get("target")
    }

    pub async fn set_target_identity(&self, url: &str) -> Result<(), StateError> {
        self.meta_put("target", &url.to_string())?;
        self.flush().await
    }

    /// The target's quirks as the last run found them (shown by `status`).
    pub fn quirks(&self) -> Result<Vec<crate::target::quirks::Quirk>, StateError> {
        Ok(self.meta_get("quirks")?.unwrap_or_default())
    }

    /// Saved with the run record, in its flush.
    pub fn set_quirks(&self, quirks: &[crate::target::quirks::Quirk]) -> Result<(), StateError> {
        self.meta_put("quirks", &quirks.to_vec())
    }
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
    }
    let mut perms = std::fs::metadata(path)?.permissions();
    if perms.mode() & 0o077 != 0 {
        perms.set_mode(0o700);
        std::fs::set_permissions(path, perms)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)
}

/// Makes the store's files owner-only; they are created with the process umask.
#[cfg(unix)]
fn restrict_files(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // What the entry is, not what it points to: a symbolic link in the folder must not
            // get a chmod (and a walk) of whatever it names, outside the folder.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let p = entry.path();
            if kind.is_dir() {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
                stack.push(p);
            } else if kind.is_file() {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

#[cfg(not(unix))]
fn restrict_files(_path: &Path) {}

mod ha_seen;
pub(super) mod kv;
mod migrate;
mod snapshot;
#[cfg(test)]
mod tests;
mod window;

pub use window::{Window, WindowFailed};
