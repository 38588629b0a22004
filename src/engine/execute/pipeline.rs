//! The executor's loop, with group commit. Operations are prepared into an open window (their
//! intents, and the confirmations of the answers handled meanwhile); a window is written in one
//! transaction and made durable by one flush while the requests already durable go on being
//! sent. Only when that flush returns are the window's requests sent and the objects its
//! confirmations are about released to the operations that wait for them. So each request is
//! sent after its intent is on disk, and each operation that depends on an answer is prepared
//! after that answer is on disk, exactly as with one flush per operation; a flush costs the same
//! for one operation as for hundreds, and requests keep flowing while it runs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::holds::{Holds, Refs};
use super::{alongside, Executor};
use crate::engine::send;
use crate::engine::EngineError;
use crate::plan::apply::Request;
use crate::plan::Operation;
use crate::state::{JournalEntry, Store, WindowFailed, JOURNAL_LENGTH};
use crate::target::Target;

/// The most operations prepared (their intents recorded) and not yet sent. A crash leaves at
/// most this many intents, each looked up before anything is sent again.
const WINDOW: usize = 256;
/// A window closes (is flushed) when fewer requests than this are ready to send.
const LOW_WATER: usize = WINDOW / 2;

/// The journal is a display (the dashboard's recent operations): a pass's lines are written
/// with its windows while they are few, then at most once a second, and at the end (or when
/// the pass is dropped: a stopped service keeps the lines of what it confirmed), the last
/// [`JOURNAL_LENGTH`] only. Written with every window, a first sync spent a twelfth of its
/// executor's time on lines the journal dropped at once.
struct JournalLines<'s> {
    store: &'s Store,
    lines: Vec<JournalEntry>,
    written: Instant,
}

impl<'s> JournalLines<'s> {
    const EVERY: Duration = Duration::from_secs(1);
    /// Up to this many lines are written with each window (a change feed's pass).
    const FEW: usize = 32;

    fn new(store: &'s Store) -> Self {
        JournalLines {
            store,
            lines: Vec::new(),
            written: Instant::now(),
        }
    }

    /// Takes the executor's lines; writes what is buffered if it is little, if a second has
    /// passed, or if `now`.
    fn add(&mut self, lines: &mut Vec<JournalEntry>, now: bool) {
        self.lines.append(lines);
        let keep = JOURNAL_LENGTH as usize;
        if self.lines.len() > 2 * keep {
            self.lines.drain(..self.lines.len() - keep);
        }
        if now || self.lines.len() <= Self::FEW || self.written.elapsed() >= Self::EVERY {
            self.write();
        }
    }

    fn write(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        if let Err(e) = self.store.journal_all(&self.lines) {
            tracing::warn!(error = %e, "cannot write the operations journal");
        }
        self.lines.clear();
        self.written = Instant::now();
    }
}

impl Drop for JournalLines<'_> {
    fn drop(&mut self) {
        self.write();
    }
}

/// What a window's flush makes safe: requests to send, objects to release.
#[derive(Default)]
struct Durable {
    send: Vec<(Operation, Request)>,
    release: Vec<Refs>,
    /// What `release` holds (does the next operation wait for this window?).
    holds: Holds,
}

impl Durable {
    fn is_empty(&self) -> bool {
        self.send.is_empty() && self.release.is_empty()
    }
}

enum Event<A> {
    Landed(A),
    Flushed(Result<(), WindowFailed>),
}

impl Durable {
    /// Releases `refs` once this window is on disk.
    fn release_after(&mut self, refs: Refs) {
        self.holds.hold(&refs);
        self.release.push(refs);
    }
}

/// The operations not yet prepared, in order, and the references of the first, kept while it
/// waits (the loop asks after every answer; a membership change names a hundred users).
struct Queue {
    ops: VecDeque<Operation>,
    front_refs: Option<Refs>,
}

impl Queue {
    fn new(ops: Vec<Operation>) -> Queue {
        Queue {
            ops: ops.into(),
            front_refs: None,
        }
    }

    fn front_refs(&mut self) -> Option<&Refs> {
        let front = self.ops.front()?;
        Some(self.front_refs.get_or_insert_with(|| Refs::of(front)))
    }

    fn pop_front(&mut self) -> Option<(Operation, Refs)> {
        let op = self.ops.pop_front()?;
        let refs = self.front_refs.take().unwrap_or_else(|| Refs::of(&op));
        // Gives back what it no longer needs: a first sync's records grow while its
        // operations are sent, and both at full size would be the peak.
        if self.ops.capacity() > 4 * self.ops.len() + 1024 {
            self.ops.shrink_to_fit();
        }
        Some((op, refs))
    }

    fn push_front(&mut self, op: Operation) {
        self.front_refs = None;
        self.ops.push_front(op);
    }
}

impl<'a, T: Target> Executor<'a, T> {
    /// Sends the operations in order, up to `max` at a time (see the module's comment).
    /// Returns an error only for a failure that stops the run, once what is in flight is done
    /// and everything confirmed is on disk.
    pub(in crate::engine) async fn run_all(
        &mut self,
        ops: Vec<Operation>,
        max: usize,
    ) -> Result<(), EngineError> {
        let target = self.target;
        let store: &'a crate::state::Store = self.store;
        let max = max.max(1);
        crate::engine::progress::sending(ops.len());
        let mut queue = Queue::new(ops);
        let mut flights = FuturesUnordered::new();
        // Answers that arrived while the executor was busy with something else (`alongside`).
        let mut landed = VecDeque::new();
        // Objects an operation is about or refers to, while it is prepared, in flight, or its
        // confirmation is not yet on disk: operations about them wait.
        let mut busy = Holds::default();
        // Intents on disk: may be sent.
        let mut ready: VecDeque<(Operation, Request)> = VecDeque::new();
        // What the open window (in `self.window`) and the window being flushed make safe.
        let mut open = Durable::default();
        let mut flushing: Option<(Durable, BoxFuture<'a, Result<(), WindowFailed>>)> = None;
        let mut stop: Option<EngineError> = None;
        let mut journal = JournalLines::new(store);
        loop {
            // Prepare operations into the open window.
            loop {
                let staged = ready.len()
                    + open.send.len()
                    + flushing.as_ref().map_or(0, |(d, _)| d.send.len());
                if stop.is_some() || staged >= WINDOW {
                    break;
                }
                match queue.front_refs() {
                    Some(refs) if !busy.blocks(refs) => {}
                    _ => break,
                }
                let Some((op, refs)) = queue.pop_front() else {
                    break;
                };
                match alongside(self.dispatch(&op), &mut flights, &mut landed).await {
                    Ok(Some((req, Some(found)))) => {
                        crate::engine::progress::operation_done();
                        // Settled by a look-up, nothing to send.
                        busy.hold(&refs);
                        open.release_after(refs);
                        match alongside(
                            self.complete(op, req, Ok(found)),
                            &mut flights,
                            &mut landed,
                        )
                        .await
                        {
                            Ok(Some(follow_up)) => queue.push_front(follow_up),
                            Ok(None) => {}
                            Err(e) => stop = Some(e),
                        }
                    }
                    Ok(Some((req, None))) => {
                        // Held until its answer is on disk (released when it lands).
                        busy.hold(&refs);
                        open.send.push((op, req));
                    }
                    Ok(None) => crate::engine::progress::operation_done(),
                    Err(e) => stop = Some(e),
                }
            }
            // One flush at a time; what is written while it runs waits for the next one. A
            // window closes when the requests ready to send run low, when nothing else can go
            // on, or when the next operation waits for one of its confirmations: so a flush
            // covers many operations while requests keep flowing, and a lone change is not
            // kept waiting.
            let pending = !(open.is_empty() && self.window.is_empty());
            let starved = ready.len() < LOW_WATER || (flights.is_empty() && landed.is_empty());
            let mut waited_for = || queue.front_refs().is_some_and(|r| open.holds.blocks(r));
            // Once the pass stops, only the last write (after the loop) writes: a store that
            // failed keeps failing, and the loop ends when what is in flight has landed.
            if flushing.is_none() && stop.is_none() && pending && (starved || waited_for()) {
                journal.add(&mut self.journal, false);
                let window = std::mem::take(&mut self.window);
                let durably = store.write_window_durably(window);
                flushing = Some((std::mem::take(&mut open), Box::pin(durably)));
            }
            // Send what is on disk.
            while stop.is_none() && flights.len() + landed.len() < max {
                let Some((op, req)) = ready.pop_front() else {
                    break;
                };
                flights.push(async move {
                    let result = send::send(target, &req).await;
                    (op, req, result)
                });
            }
            if landed.is_empty() {
                if flights.is_empty() && flushing.is_none() {
                    break;
                }
                let event = tokio::select! {
                    biased;
                    r = async {
                        match flushing.as_mut() {
                            Some((_, f)) => f.as_mut().await,
                            None => std::future::pending().await,
                        }
                    } => Event::Flushed(r),
                    Some(done) = flights.next(), if !flights.is_empty() => Event::Landed(done),
                };
                match event {
                    Event::Landed(done) => landed.push_back(done),
                    Event::Flushed(r) => {
                        let Some((durable, _)) = flushing.take() else {
                            continue;
                        };
                        match r {
                            Ok(()) => {
                                ready.extend(durable.send);
                                for refs in &durable.release {
                                    busy.release(refs);
                                }
                            }
                            Err(WindowFailed::Unwritten(e, window)) => {
                                // Nothing of this window was written (one transaction) and
                                // nothing of it is sent; its confirmations are tried again by
                                // the last write, before those made since.
                                stop.get_or_insert(e.into());
                                let mut window = *window;
                                let newer = std::mem::take(&mut self.window);
                                window.changes.extend(newer.changes);
                                window.resolved.extend(newer.resolved);
                                window.intents.extend(newer.intents);
                                self.window = window;
                            }
                            Err(WindowFailed::Unsynced(e)) => {
                                // Written, maybe not on disk: never sent, so not kept.
                                stop.get_or_insert(e.into());
                                for (_, req) in &durable.send {
                                    let _ = self.forget_intent(req.key());
                                }
                            }
                        }
                    }
                }
            }
            while let Some((op, req, result)) = landed.pop_front() {
                crate::engine::progress::operation_done();
                open.release_after(Refs::of(&op));
                match alongside(self.complete(op, req, result), &mut flights, &mut landed).await {
                    Ok(Some(follow_up)) => queue.push_front(follow_up),
                    Ok(None) => {}
                    Err(e) => {
                        stop.get_or_insert(e);
                    }
                }
            }
        }
        // Stopped: what was prepared but never sent leaves no intent behind (but one an
        // earlier run left: see `forget_intent`).
        for (_, req) in ready.drain(..) {
            let _ = self.forget_intent(req.key());
        }
        // The open window's intents are those of operations never sent (the intents an
        // earlier run left are on disk already).
        let mut window = std::mem::take(&mut self.window);
        window.intents.clear();
        journal.add(&mut self.journal, true);
        let written = store.write_window(&window);
        let flushed = store.flush_now().await.and(written);
        match (stop, flushed) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(())) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Key;

    fn entries(n: usize) -> Vec<JournalEntry> {
        (0..n)
            .map(|i| JournalEntry {
                at: "t".into(),
                run: i as u64,
                operation: "create_user".into(),
                object: format!("u{i}"),
                outcome: "created".into(),
                detail: None,
                latency: None,
            })
            .collect()
    }

    #[test]
    fn the_queue_s_front_references_follow_what_is_pushed_in_front() {
        let group = |k: &str| Operation::CreateGroup {
            key: Key::from(k),
            display_name: k.into(),
        };
        let mut q = Queue::new(vec![group("g:1"), group("g:2")]);
        assert_eq!(
            q.front_refs().map(|r| r.own().to_string()).as_deref(),
            Some("g:1")
        );
        // A follow-up goes first: the references kept for the old front are not its.
        q.push_front(group("g:0"));
        assert_eq!(
            q.front_refs().map(|r| r.own().to_string()).as_deref(),
            Some("g:0")
        );
        let popped = q
            .pop_front()
            .map(|(op, r)| (op.key().to_string(), r.own().to_string()));
        assert_eq!(popped, Some(("g:0".into(), "g:0".into())));
        // Popped without being asked about first: its own references still.
        let popped = q
            .pop_front()
            .map(|(op, r)| (op.key().to_string(), r.own().to_string()));
        assert_eq!(popped, Some(("g:1".into(), "g:1".into())));
        assert_eq!(
            q.front_refs().map(|r| r.own().to_string()).as_deref(),
            Some("g:2")
        );
        assert!(q.pop_front().is_some());
        assert!(q.front_refs().is_none() && q.pop_front().is_none());
    }

    #[test]
    fn journal_lines_are_written_while_few_batched_when_many_and_kept_when_dropped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&dir.path().join("s"), 1 << 20).unwrap_or_else(|e| panic!("{e}"));
        let recent = || {
            store
                .recent_operations(usize::MAX)
                .unwrap_or_default()
                .len()
        };
        let mut lines = JournalLines::new(&store);
        // A change feed's pass: written with its window.
        lines.add(&mut entries(3), false);
        assert_eq!(recent(), 3);
        // A large pass: held until a second has passed...
        lines.add(&mut entries(JournalLines::FEW + 1), false);
        assert_eq!(recent(), 3);
        // ...or until the pass ends or is dropped (a service stopped mid-pass).
        drop(lines);
        assert_eq!(recent(), 3 + JournalLines::FEW + 1);
        let mut lines = JournalLines::new(&store);
        lines.add(&mut entries(3 * JOURNAL_LENGTH as usize), false);
        lines.add(&mut entries(1), true);
        assert_eq!(recent(), JOURNAL_LENGTH as usize);
    }
}
