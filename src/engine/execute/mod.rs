//! Sending a plan: each operation prepared against the records as they are, its intent made
//! durable before it is sent, and its confirmation made durable before anything that depends on
//! it is sent. Both are written by group commit (`pipeline.rs`): one transaction and one flush per
//! window of operations. Up to `target.max_concurrency` requests are in flight; an operation
//! waits while one about the same object, or about an object it refers to (its group, members,
//! manager), is in flight or not yet durably confirmed (`holds.rs`), and nothing overtakes an
//! operation that waits, so the plan's order holds where it matters.

mod holds;
mod pipeline;

use std::collections::{BTreeMap, VecDeque};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::send::Sent;
use super::{now, EngineError, Summary};
use crate::model::{Desired, Key};
use crate::plan::apply::{confirm, prepare, Confirmation, Request, Skip};
use crate::plan::Operation;
use crate::state::records::{Origin, Snapshot, StateChange};
use crate::state::{ObjectError, Store, Window};
use crate::target::{Target, TargetError};

pub(super) struct Executor<'a, T: Target> {
    pub(super) store: &'a Store,
    pub(super) target: &'a T,
    pub(super) records: Snapshot,
    pub(super) desired: &'a (dyn Desired + Sync),
    pub(super) summary: &'a mut Summary,
    pub(super) run: u64,
    /// When the objects of a change-feed pass changed: their first confirmation gives the
    /// change-to-push latency.
    pub(super) changed_at: BTreeMap<Key, std::time::SystemTime>,
    /// When the change that asked for this pass was notified (AD): the change time of every
    /// object the pass confirms that `changed_at` does not know.
    pub(super) changed_since: Option<std::time::SystemTime>,
    /// Objects whose last operation the target refused and whose retry time has not come.
    pub(super) waiting: BTreeMap<Key, ObjectError>,
    /// Intents left by earlier runs.
    pub(super) interrupted: BTreeMap<Key, crate::state::Intent>,
    /// The open window: intents and confirmations written by the next group commit.
    pub(super) window: Window,
    /// Lines for the journal, taken by the loop (`pipeline.rs`, `JournalLines`).
    pub(super) journal: Vec<crate::state::JournalEntry>,
    /// What the run changed in the records, when a change feed needs it (`None` for the
    /// other passes: a first sync noted every key twice, ~8 MB at 100k users, for nothing).
    pub(super) moved: Option<super::live::Moved>,
    /// The records' counts, kept up to date change by change.
    pub(super) census: crate::status::Census,
}

/// Awaits `work` (recording an intent, a look-up, a probe of the target) while the requests in
/// flight go on being polled: one whose answer arrives meanwhile is read at once and kept in
/// `landed`, instead of waiting unpolled until its own timeout fires and it looks lost.
async fn alongside<W, F>(
    work: W,
    flights: &mut FuturesUnordered<F>,
    landed: &mut VecDeque<F::Output>,
) -> W::Output
where
    W: std::future::Future,
    F: std::future::Future,
{
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            Some(done) = flights.next(), if !flights.is_empty() => landed.push_back(done),
        }
    }
}

/// Passes of at most this many operations log a line per object at info level.
const OBJECT_LINES_AT_INFO: u64 = 100;

/// A digest of an operation, to tell "the same request again" from "the object changed".
// An invariant, not input: a silent default would make every operation look the same.
#[allow(clippy::expect_used)]
fn op_digest(op: &Operation) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(op)
        .expect("an Operation is plain data with string-keyed maps: serializing it cannot fail");
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

impl<T: Target> Executor<'_, T> {
    /// Resolves an operation into a request and adds its intent to the open window; `None` when there is
    /// nothing to send now (already done, waiting for a reference, or for its retry time). A
    /// create interrupted by a crash (or whose answer was lost) is first looked up by its key,
    /// the externalId it was sent with: found, it comes back as the answer, and nothing is sent.
    async fn dispatch(
        &mut self,
        op: &Operation,
    ) -> Result<Option<(Request, Option<Sent>)>, EngineError> {
        let req = match prepare(&self.records, op) {
            Ok(r) => r,
            Err(Skip::AlreadyDone) => return Ok(None),
            Err(Skip::Unresolved(why)) => {
                self.summary.deferred += 1;
                tracing::debug!(op = op.name(), object = op.label(), reason = %why, "deferred to a later run");
                return Ok(None);
            }
        };
        if let Some(e) = self.waiting.get(req.key()) {
            if e.attempted.as_deref() == Some(op_digest(op).as_str()) {
                self.summary.waiting += 1;
                tracing::debug!(op = op.name(), object = op.label(), retry_after = ?e.retry_after, "refused before; waiting to retry");
                self.store.defer_error(req.key(), self.run).await?;
                // A write interrupted before it waits with it: still to be looked up.
                if self.interrupted.contains_key(req.key()) {
                    self.store.defer_intent(req.key(), self.run)?;
                }
                return Ok(None);
            }
        }
        if let Some(found) = self.look_up_interrupted(op, &req).await? {
            return Ok(Some((req, Some(found))));
        }
        self.window.intents.push((
            req.key().clone(),
            crate::state::Intent {
                operation: op.name().to_string(),
                label: op.label().to_string(),
                run: self.run,
                at: now(),
            },
        ));
        Ok(Some((req, None)))
    }

    /// Drops the intent of an operation that was not carried out (answered with an error, or
    /// never sent). An intent an earlier run left (a crash, a lost answer) stays: that run's
    /// request may have been carried out, so the object is looked up again next time, whatever
    /// this run's request came to; only a confirmation clears it.
    pub(super) fn forget_intent(&self, key: &Key) -> Result<(), crate::state::StateError> {
        if self.interrupted.contains_key(key) {
            return Ok(());
        }
        self.store.clear_intent(key)
    }

    /// For a create that an earlier run started and never saw confirmed: the object, if the
    /// target has one with this key as its externalId (found even if its name changed since).
    async fn look_up_interrupted(
        &self,
        op: &Operation,
        req: &Request,
    ) -> Result<Option<Sent>, EngineError> {
        let interrupted = self
            .interrupted
            .get(req.key())
            .is_some_and(|i| i.operation == op.name());
        if !interrupted {
            return Ok(None);
        }
        let found = match req {
            Request::CreateUser { key, .. } => self
                .target
                .find_user_by_key(key)
                .await
                .map(|u| u.map(Sent::AdoptUser)),
            Request::CreateGroup { key, .. } => self
                .target
                .find_group_by_key(key)
                .await
                .map(|g| g.map(Sent::AdoptGroup)),
            _ => Ok(None),
        };
        match found {
            Ok(f) => Ok(f),
            Err(e) if super::stops_run(self.target, &e).await => Err(EngineError::Target(e)),
            Err(e) => {
                // A target that cannot filter on externalId: the send path still looks the
                // object up by name before creating it.
                tracing::warn!(object = op.label(), error = %e, "look-up by externalId failed; looking up by name instead");
                Ok(None)
            }
        }
    }

    /// Records an answer. Returns the operation to send next, if any (after an adoption, the
    /// update that brings the adopted object in line).
    async fn complete(
        &mut self,
        op: Operation,
        req: Request,
        result: Result<Sent, TargetError>,
    ) -> Result<Option<Operation>, EngineError> {
        let sent = match result {
            Ok(s) => s,
            Err(e) if super::stops_run(self.target, &e).await => {
                return Err(EngineError::Target(e))
            }
            Err(e) => {
                // Answered with an error: not carried out. A lost answer stays an intent.
                if !matches!(e.kind, crate::target::TargetErrorKind::Lost(_)) {
                    self.forget_intent(req.key())?;
                }
                self.summary.errors += 1;
                *self.summary.failed.entry(op.name()).or_default() += 1;
                tracing::warn!(op = op.name(), object = op.label(), error = %e, "operation failed; retried next run");
                self.journal(&op, "failed", Some(e.to_string()), None);
                self.store.note_error(self.object_error(&op, &req, &e))?;
                return Ok(None);
            }
        };
        // Found by name, but it is the object of another entry this gateway manages (renamed
        // away from that name, or leaving, in this same pass): never taken over. The create
        // waits for a later pass, when the name is free or the object gone.
        let owner = self.owned_by_another(&sent, req.key());
        if let Some(owner) = owner.as_ref().filter(|o| self.departed_user(o)) {
            // A user who left (deactivated, gone from the directory) held the name: the
            // newcomer with that name takes the object over, as for a re-hire. The old record
            // goes first, in the same transaction, so the object is never recorded twice.
            tracing::info!(object = op.label(), from = %owner, "taking over the deactivated object of a user who left, found by name");
            let drop = StateChange::RemoveUser(owner.clone());
            self.apply(&drop);
            self.window.changes.push(drop);
        } else if let Some(owner) = owner {
            self.forget_intent(req.key())?;
            self.summary.deferred += 1;
            let why = format!(
                "the object found on the target by name is this gateway's for {owner}: not adopted; created in a later pass"
            );
            tracing::info!(op = op.name(), object = op.label(), reason = %why, "deferred");
            self.journal(&op, "deferred", Some(why), None);
            return Ok(None);
        }
        let mut conf = sent.confirm(&self.records);
        // Found on the target after our own create was interrupted: it is ours.
        if let Confirmation::Created { origin, .. } = &mut conf {
            if *origin == Origin::Adopted
                && self
                    .interrupted
                    .get(req.key())
                    .is_some_and(|i| i.operation == op.name())
            {
                tracing::info!(
                    object = op.label(),
                    "interrupted create found on the target: recorded as created"
                );
                *origin = Origin::Created;
            }
        }
        let changes = confirm(&self.records, &req, conf.clone());
        for c in &changes {
            self.apply(c);
        }
        self.window.changes.extend(changes);
        self.window.resolved.push(req.key().clone());
        self.summary.count(&req, &conf);
        let latency = self
            .changed_at
            .remove(req.key())
            .or(self.changed_since)
            .map(|t| t.elapsed().unwrap_or_default().as_secs_f64());
        if let Some(l) = latency {
            self.summary.latencies.push(l);
        }
        // A line per object while they are few (a change feed's pass); a long pass shows
        // its progress instead, and these lines at debug level.
        if super::progress::sent().1 <= OBJECT_LINES_AT_INFO {
            tracing::info!(op = op.name(), object = op.label(), outcome = ?OutcomeName(&conf), latency, "sent");
        } else {
            tracing::debug!(op = op.name(), object = op.label(), outcome = ?OutcomeName(&conf), latency, "sent");
        }
        self.journal(&op, &format!("{:?}", OutcomeName(&conf)), None, latency);
        // Adopted, or found after an interruption: bring what the target holds in line.
        if let (
            Operation::CreateUser {
                key,
                user_name,
                user,
            },
            Confirmation::Created {
                adopted_user: Some(_),
                ..
            },
        ) = (&op, &conf)
        {
            return Ok(Some(Operation::UpdateUser {
                key: key.clone(),
                user_name: user_name.clone(),
                changes: vec![],
                desired: user.clone(),
            }));
        }
        Ok(None)
    }

    /// Notes the operation in the journal.
    fn journal(
        &mut self,
        op: &Operation,
        outcome: &str,
        detail: Option<String>,
        latency: Option<f64>,
    ) {
        let entry = crate::state::JournalEntry {
            at: now(),
            run: self.run,
            operation: op.name().to_string(),
            object: op.label().to_string(),
            outcome: outcome.to_string(),
            detail,
            latency,
        };
        self.journal.push(entry);
    }

    /// Applies a confirmed change to the records in memory.
    fn apply(&mut self, c: &StateChange) {
        if let Some(moved) = &mut self.moved {
            moved.note(&self.records, c);
        }
        self.census.follow(&self.records, c);
        self.records.apply(c);
    }

    /// A user no longer in the directory whose deactivation the target has confirmed.
    fn departed_user(&self, key: &Key) -> bool {
        self.desired.user(key).is_none()
            && !self.desired.held(key)
            && self
                .records
                .users
                .get(key)
                .is_some_and(|r| !r.pushed.active)
    }

    /// The key of another record whose target object is the one `sent` would adopt; or, for
    /// an object found by name, the other directory entry whose key it carries as externalId
    /// (its own object, renamed in the directory since: after a lost state folder the records
    /// cannot say so).
    fn owned_by_another(&self, sent: &Sent, key: &Key) -> Option<Key> {
        let other = |k: &&Key, id: &str, target_id: &str| *k != key && target_id == id;
        match sent {
            Sent::AdoptUser(r) => self
                .records
                .users
                .iter()
                .find(|(k, u)| other(k, &r.id, &u.target_id))
                .map(|(k, _)| k.clone())
                .or_else(|| {
                    r.external_id
                        .as_ref()
                        .filter(|e| e.as_str() != &**key && self.desired.user(e).is_some())
                        .map(|e| Key::from(e.as_str()))
                }),
            Sent::FoundUser(r) => self
                .records
                .users
                .iter()
                .find(|(k, u)| other(k, &r.id, &u.target_id))
                .map(|(k, _)| k.clone()),
            Sent::AdoptGroup(g) | Sent::FoundGroup(g) => self
                .records
                .groups
                .iter()
                .find(|(k, rec)| other(k, &g.id, &rec.target_id))
                .map(|(k, _)| k.clone()),
            Sent::Confirmed(_) => None,
        }
    }

    fn object_error(&self, op: &Operation, req: &Request, e: &TargetError) -> ObjectError {
        let kind = if op.is_user_op() { "user" } else { "group" };
        let dn = self.desired.dn(req.key());
        let label = match dn {
            Some(dn) => format!("{} ({dn})", op.label()),
            None => op.label().to_string(),
        };
        ObjectError {
            key: req.key().to_string(),
            kind: kind.into(),
            label,
            operation: op.name().into(),
            reason: e.to_string(),
            http_status: e.status(),
            first_seen: now(),
            last_seen: now(),
            attempts: 1,
            run: self.run,
            retry_after: None,
            attempted: Some(op_digest(op)),
        }
    }
}

/// Short name of a confirmation, for logs.
struct OutcomeName<'a>(&'a Confirmation);

impl std::fmt::Debug for OutcomeName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Confirmation::Done => "done",
            Confirmation::Created {
                origin: Origin::Created,
                ..
            } => "created",
            Confirmation::Created { .. } => "adopted",
            Confirmation::Gone => "gone",
        })
    }
}

#[cfg(test)]
mod tests;
