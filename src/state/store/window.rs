//! Group commit: what a window of the executor's work writes, in one transaction, made durable
//! by one flush. The executor sends nothing a window holds an intent for, and nothing that
//! depends on a confirmation it holds, before that flush has returned; so the crash rules are
//! those of one flush per operation, at the cost of one flush per window.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

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
    /// True when there is nothing to make durable.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.resolved.is_empty() && self.intents.is_empty()
    }
}

/// Tests: window writes numbered from 0; those from `from` on, `count` of them, fail (as a
/// full disk makes sled's writes fail).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults(std::sync::Mutex<(u64, u64, u64)>);

#[cfg(test)]
impl Faults {
    fn next_fails(&self) -> bool {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, from, count) = *f;
        f.0 += 1;
        seen >= from && seen < from.saturating_add(count)
    }
}

impl Store {
    /// Tests: makes window writes fail, `count` of them from the `from`th on.
    #[cfg(test)]
    pub(crate) fn fail_windows(&self, from: u64, count: u64) {
        *self
            .window_faults
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (0, from, count);
    }

    /// Writes a window in one transaction (not flushed: [`Store::flush_now`] makes it durable).
    /// Confirmations go first, new intents last: an intent recorded after an object's earlier
    /// operation was confirmed is never cleared by that confirmation.
    pub fn write_window(&self, w: &Window) -> Result<(), StateError> {
        if w.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self.window_faults.next_fails() {
            return Err(self.io("no space left on device (a test's fault)"));
        }
        if !w.changes.is_empty() {
            self.records_written();
        }
        // Only the errors there are get removed: a removal in a transaction is a look-up and a
        // write, and most confirmed objects never failed (a first sync spent a sixth of its
        // store time removing errors that did not exist). Every writer of errors runs on the
        // task of the pass that writes this window, and nothing here yields: no error appears
        // between this look-up and the transaction.
        let mut had_error = Vec::new();
        for k in &w.resolved {
            if self
                .errors
                .contains_key(k.as_bytes())
                .map_err(|e| self.io(e))?
            {
                had_error.push(k);
            }
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
                for k in &had_error {
                    e.remove(k.as_bytes())?;
                }
                for k in &w.resolved {
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
