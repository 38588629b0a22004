//! Group commit: what a window of the executor's work writes, in one transaction, made durable
//! by one flush. The executor sends nothing a window holds an intent for, and nothing that
//! depends on a confirmation it holds, before that flush has returned; so the crash rules are
//! those of one flush per operation, at the cost of one flush per window.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{encode, Intent, StateError, Store};
use crate::model::Key;
use crate::state::records::StateChange;

/// The writes of one window, in the order they were made.
#[derive(Debug, Default)]
pub struct Window {
    /// Confirmed operations' changes to the records.
    pub changes: Vec<StateChange>,
    /// Objects whose operation was confirmed: their error and intent are cleared.
    pub resolved: Vec<Key>,
    /// Writes about to be sent.
    pub intents: Vec<(Key, Intent)>,
}

impl Window {
    /// A window that could not be made durable, to be written again before `next`: its
    /// confirmations first, then `next`'s writes; its intents are dropped (their requests are
    /// never sent).
    pub fn retry_before(mut self, mut next: Window) -> Window {
        self.intents.clear();
        self.changes.append(&mut next.changes);
        self.resolved.append(&mut next.resolved);
        self.intents.append(&mut next.intents);
        self
    }

    /// True when there is nothing to make durable.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.resolved.is_empty() && self.intents.is_empty()
    }
}

/// A window that could not be made durable, given back so that its confirmations can be
/// written again by the last write of the pass.
#[derive(Debug)]
pub struct WindowFailed {
    pub error: StateError,
    pub window: Window,
}

/// What a window is written through, on a thread of its own: the executor goes on preparing
/// and sending while sled works (sled's transactions were a sixth of a first sync's executor
/// thread).
#[derive(Clone)]
pub struct WindowWriter {
    path: std::path::PathBuf,
    db: sled::Db,
    users: sled::Tree,
    groups: sled::Tree,
    errors: sled::Tree,
    intents: sled::Tree,
    generation: Arc<AtomicU64>,
}

impl Store {
    /// A writer of windows into this store, to move to another thread.
    pub fn window_writer(&self) -> WindowWriter {
        WindowWriter {
            path: self.path.clone(),
            db: self.db.clone(),
            users: self.users.clone(),
            groups: self.groups.clone(),
            errors: self.errors.clone(),
            intents: self.intents.clone(),
            generation: self.records_generation.clone(),
        }
    }

    /// Writes a window in one transaction (not flushed: [`Store::flush_now`] makes it durable).
    pub fn write_window(&self, w: &Window) -> Result<(), StateError> {
        self.window_writer().write(w)
    }
}

impl WindowWriter {
    fn io(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Writes a window and waits until it is on disk (blocking: run it on a blocking thread).
    pub fn write_durably(&self, window: Window) -> Result<(), Box<WindowFailed>> {
        let written = self
            .write(&window)
            .and_then(|()| self.db.flush().map(drop).map_err(|e| self.io(e)));
        written.map_err(|error| Box::new(WindowFailed { error, window }))
    }

    /// Writes a window in one transaction. Confirmations go first, new intents last: an intent
    /// recorded after an object's earlier operation was confirmed is never cleared by that
    /// confirmation.
    pub fn write(&self, w: &Window) -> Result<(), StateError> {
        if w.is_empty() {
            return Ok(());
        }
        if !w.changes.is_empty() {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        let res: Result<(), TransactionError<()>> =
            (&self.users, &self.groups, &self.errors, &self.intents).transaction(|(u, g, e, i)| {
                for c in &w.changes {
                    match c {
                        StateChange::PutUser(k, r) => {
                            u.insert(k.as_bytes(), encode(r))?;
                        }
                        StateChange::RemoveUser(k) => {
                            u.remove(k.as_bytes())?;
                        }
                        StateChange::PutGroup(k, r) => {
                            g.insert(k.as_bytes(), encode(r))?;
                        }
                        StateChange::RemoveGroup(k) => {
                            g.remove(k.as_bytes())?;
                        }
                    }
                }
                for k in &w.resolved {
                    e.remove(k.as_bytes())?;
                    i.remove(k.as_bytes())?;
                }
                for (k, intent) in &w.intents {
                    i.insert(k.as_bytes(), encode(intent))?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        res.map_err(|e| self.io(format!("{e:?}")))
    }
}
