//! Group commit: what a window of the executor's work writes, in one transaction, made durable
//! by one flush. The executor sends nothing a window holds an intent for, and nothing that
//! depends on a confirmation it holds, before that flush has returned; so the crash rules are
//! those of one flush per operation, at the cost of one flush per window.

use super::kv::{Kv, Table};
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

/// Why a window is not durable.
#[derive(Debug)]
pub enum WindowFailed {
    /// Nothing of it was written (one transaction): the window, given back.
    Unwritten(StateError, Box<Window>),
    /// Written, but perhaps not on disk.
    Unsynced(StateError),
}

/// Tests: window writes numbered from 0; those from `from` on, `count` of them, fail (as a
/// full disk makes the store's writes fail).
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
        write_in(&self.kv, w).map_err(|e| self.io(e))
    }

    /// Writes a window in one transaction and makes it durable, both on a thread of their own
    /// (encoding a window's records and writing them was ~7% of the thread that sends a first
    /// sync's requests). Started at once, not when the future is first polled: the window is
    /// written as early as when the caller's thread wrote it, and a pass abandoned meanwhile
    /// (the service stopping) leaves it to finish (the runtime waits at exit for a blocking task
    /// that has started; one not yet started is dropped, as a crash would drop it).
    pub fn write_window_durably(
        &self,
        w: Window,
    ) -> impl std::future::Future<Output = Result<(), WindowFailed>> + '_ {
        let started = self.start_window(w);
        async move {
            let task = started?;
            match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err((e, Some(w)))) => Err(WindowFailed::Unwritten(self.io(e), Box::new(w))),
                Ok(Err((e, None))) => Err(WindowFailed::Unsynced(self.io(e))),
                // A panic: written or not, the window is gone; taken as written and not
                // synced (its requests are not sent, their intents forgotten).
                Err(e) => Err(WindowFailed::Unsynced(
                    self.io(format!("the write stopped: {e}")),
                )),
            }
        }
    }

    /// The thread that writes `w` (if any) and syncs; its error carries the window back when
    /// nothing of it was written.
    fn start_window(&self, w: Window) -> Result<WindowTask, WindowFailed> {
        #[cfg(test)]
        if !w.is_empty() && self.window_faults.next_fails() {
            let e = self.io("no space left on device (a test's fault)");
            return Err(WindowFailed::Unwritten(e, Box::new(w)));
        }
        if !w.changes.is_empty() {
            self.records_written();
        }
        let kv = self.kv.clone();
        Ok(tokio::task::spawn_blocking(move || {
            if !w.is_empty() {
                if let Err(e) = write_in(&kv, &w) {
                    return Err((e, Some(w)));
                }
            }
            kv.sync().map_err(|e| (e, None))
        }))
    }
}

/// A window being written and synced: `Some` window in the error when nothing was written.
type WindowTask = tokio::task::JoinHandle<Result<(), (String, Option<Window>)>>;

/// One window in one transaction. Confirmations go first, new intents last: an intent recorded
/// after an object's earlier operation was confirmed is never cleared by that confirmation.
fn write_in(kv: &Kv, w: &Window) -> Result<(), String> {
    kv.write(|tx| {
        let mut users = tx.table(Table::Users)?;
        let mut groups = tx.table(Table::Groups)?;
        for c in &w.changes {
            match c {
                StateChange::PutUser(k, r) => {
                    users.insert(k.as_bytes(), encode(r).as_slice())?;
                }
                StateChange::RemoveUser(k) => {
                    users.remove(k.as_bytes())?;
                }
                StateChange::PutGroup(k, r) => {
                    groups.insert(k.as_bytes(), encode(r).as_slice())?;
                }
                StateChange::RemoveGroup(k) => {
                    groups.remove(k.as_bytes())?;
                }
            }
        }
        drop((users, groups));
        if !w.changes.is_empty() || !w.intents.is_empty() {
            // Confirmed writes, or writes about to be sent: the target may hold more than the
            // change feed's saved mirror from now on.
            tx.insert(Table::Meta, super::RECORDS_AHEAD, super::RECORDS_AHEAD)?;
        }
        let mut errors = tx.table(Table::Errors)?;
        let mut intents = tx.table(Table::Intents)?;
        for k in &w.resolved {
            errors.remove(k.as_bytes())?;
            intents.remove(k.as_bytes())?;
        }
        for (k, intent) in &w.intents {
            intents.insert(k.as_bytes(), encode(intent).as_slice())?;
        }
        Ok(())
    })
}
