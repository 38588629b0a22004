//! Sending a plan: each operation prepared against the records as they are, sent, and its
//! confirmation recorded before anything that depends on it is sent. Up to
//! `target.max_concurrency` requests are in flight; an operation waits while one about the same
//! object, or an object it refers to (its group, members, manager), is still in flight, and
//! nothing overtakes an operation that waits, so the plan's order holds where it matters.

use std::collections::{BTreeMap, VecDeque};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::send::{self, Sent};
use super::{now, EngineError, Summary};
use crate::model::{DesiredState, Key};
use crate::plan::apply::{confirm, prepare, Confirmation, Request, Skip};
use crate::plan::Operation;
use crate::state::records::{Origin, Snapshot, StateChange};
use crate::state::{ObjectError, Store};
use crate::target::{Target, TargetError};

pub(super) struct Executor<'a, T: Target> {
    pub(super) store: &'a Store,
    pub(super) target: &'a T,
    pub(super) records: Snapshot,
    pub(super) desired: &'a DesiredState,
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
    /// Sends the operations in order, up to `max` at a time (see the module's comment).
    /// Returns an error only for a failure that stops the run, once what is in flight is done.
    pub(super) async fn run_all(
        &mut self,
        ops: &[Operation],
        max: usize,
    ) -> Result<(), EngineError> {
        let target = self.target;
        let mut queue: VecDeque<Operation> = ops.iter().cloned().collect();
        let mut flights = FuturesUnordered::new();
        // Requests that ended while the executor was busy with something else (see `alongside`).
        let mut landed = VecDeque::new();
        let mut busy: BTreeMap<Key, usize> = BTreeMap::new();
        let mut stop: Option<EngineError> = None;
        loop {
            while stop.is_none() && flights.len() + landed.len() < max.max(1) {
                let Some(front) = queue.front() else { break };
                if refs(front).iter().any(|k| busy.contains_key(k)) {
                    break;
                }
                let Some(op) = queue.pop_front() else { break };
                match alongside(self.dispatch(&op), &mut flights, &mut landed).await {
                    Ok(Some((req, Some(found)))) => {
                        // Settled by a look-up, nothing to send.
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
                        for k in refs(&op) {
                            *busy.entry(k).or_default() += 1;
                        }
                        flights.push(async move {
                            let result = send::send(target, &req).await;
                            (op, req, result)
                        });
                    }
                    Ok(None) => {}
                    Err(e) => stop = Some(e),
                }
            }
            let next = match landed.pop_front() {
                Some(done) => Some(done),
                None => flights.next().await,
            };
            let Some((op, req, result)) = next else {
                break;
            };
            for k in refs(&op) {
                if let Some(n) = busy.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        busy.remove(&k);
                    }
                }
            }
            match alongside(self.complete(op, req, result), &mut flights, &mut landed).await {
                Ok(Some(follow_up)) => queue.push_front(follow_up),
                Ok(None) => {}
                Err(e) => {
                    stop.get_or_insert(e);
                }
            }
        }
        match stop {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Resolves an operation into a request and records the intent; `None` when there is
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
                return Ok(None);
            }
        }
        if let Some(found) = self.look_up_interrupted(op, &req).await? {
            return Ok(Some((req, Some(found))));
        }
        self.store
            .record_intent(
                req.key(),
                &crate::state::Intent {
                    operation: op.name().to_string(),
                    label: op.label().to_string(),
                    run: self.run,
                    at: now(),
                },
            )
            .await?;
        Ok(Some((req, None)))
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
                    self.store.clear_intent(req.key())?;
                }
                self.summary.errors += 1;
                tracing::warn!(op = op.name(), object = op.label(), error = %e, "operation failed; retried next run");
                self.journal(&op, "failed", Some(e.to_string()), None);
                self.store
                    .record_error(self.object_error(&op, &req, &e))
                    .await?;
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
            // goes first, in its own transaction, so the object is never recorded twice.
            tracing::info!(object = op.label(), from = %owner, "taking over the deactivated object of a user who left, found by name");
            let drop = [StateChange::RemoveUser(owner.clone())];
            self.store.commit(&drop, None).await?;
            self.records.apply(&drop[0]);
        } else if let Some(owner) = owner {
            self.store.clear_intent(req.key())?;
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
        self.store.commit(&changes, Some(req.key())).await?;
        for c in &changes {
            self.records.apply(c);
        }
        self.summary.count(&req, &conf);
        let latency = self
            .changed_at
            .remove(req.key())
            .or(self.changed_since)
            .map(|t| t.elapsed().unwrap_or_default().as_secs_f64());
        if let Some(l) = latency {
            self.summary.latencies.push(l);
        }
        tracing::info!(op = op.name(), object = op.label(), outcome = ?OutcomeName(&conf), latency, "sent");
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

    /// Notes the operation in the journal; a journal that cannot be written is not worth
    /// stopping the run for.
    fn journal(&self, op: &Operation, outcome: &str, detail: Option<String>, latency: Option<f64>) {
        let entry = crate::state::JournalEntry {
            at: now(),
            run: self.run,
            operation: op.name().to_string(),
            object: op.label().to_string(),
            outcome: outcome.to_string(),
            detail,
            latency,
        };
        if let Err(e) = self.store.journal(&entry) {
            tracing::warn!(error = %e, "cannot write the operations journal");
        }
    }

    /// A user no longer in the directory whose deactivation the target has confirmed.
    fn departed_user(&self, key: &Key) -> bool {
        !self.desired.users.contains_key(key)
            && !self.desired.held.contains(key)
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
                        .filter(|e| *e != key && self.desired.users.contains_key(*e))
                        .cloned()
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
        let dn = self.desired.dns.get(req.key());
        let label = match dn {
            Some(dn) => format!("{} ({dn})", op.label()),
            None => op.label().to_string(),
        };
        ObjectError {
            key: req.key().clone(),
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

/// The objects an operation is about or refers to: it waits while any of them is in flight.
fn refs(op: &Operation) -> Vec<Key> {
    let mut out = vec![op.key().clone()];
    match op {
        Operation::CreateUser { user, .. } => out.extend(user.manager.iter().cloned()),
        Operation::UpdateUser { desired, .. } => out.extend(desired.manager.iter().cloned()),
        Operation::AddMembers { members, .. } | Operation::RemoveMembers { members, .. } => {
            out.extend(members.iter().cloned())
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    //! The executor's timing cannot be staged with a real server on demand, so a scripted target
    //! plays a request whose answer arrives while the executor is busy with another object.
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::model::{FieldChange, User};
    use crate::target::{RemoteGroup, RemoteUser, TargetErrorKind};

    /// "a" fails after 5 ms with no answer (a probe of the target follows, and takes 300 ms);
    /// "b" answers after 20 ms, and like reqwest, a request not read within 100 ms of being
    /// started counts as lost.
    #[derive(Default)]
    struct Busy {
        creates: Mutex<BTreeMap<String, u32>>,
    }

    fn err(kind: TargetErrorKind) -> TargetError {
        TargetError {
            request: "POST /Users".into(),
            kind,
        }
    }

    impl Target for Busy {
        fn describe(&self) -> String {
            "busy".into()
        }
        async fn reachable(&self) -> bool {
            tokio::time::sleep(Duration::from_millis(300)).await;
            true
        }
        async fn find_user_by_key(&self, _: &Key) -> Result<Option<RemoteUser>, TargetError> {
            Ok(None)
        }
        async fn find_group_by_key(&self, _: &Key) -> Result<Option<RemoteGroup>, TargetError> {
            Ok(None)
        }
        async fn preflight(&self) -> Result<(), TargetError> {
            Ok(())
        }
        async fn find_user(&self, _: &str) -> Result<Option<RemoteUser>, TargetError> {
            Ok(None)
        }
        async fn create_user(
            &self,
            key: &Key,
            _: &User,
            _: Option<&str>,
        ) -> Result<String, TargetError> {
            *self
                .creates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.to_string())
                .or_default() += 1;
            if key.as_str() == "a" {
                tokio::time::sleep(Duration::from_millis(5)).await;
                return Err(err(TargetErrorKind::Transport("connection reset".into())));
            }
            let started = tokio::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(20)).await;
            if started.elapsed() > Duration::from_millis(100) {
                return Err(err(TargetErrorKind::Lost("answer not read in time".into())));
            }
            Ok(format!("id-{key}"))
        }
        async fn update_user(
            &self,
            _: &str,
            _: &[FieldChange],
            _: &User,
            _: &User,
            _: Option<&str>,
        ) -> Result<(), TargetError> {
            Ok(())
        }
        async fn deactivate_user(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn delete_user(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn find_group(&self, _: &str) -> Result<Option<RemoteGroup>, TargetError> {
            Ok(None)
        }
        async fn create_group(&self, _: &Key, _: &str) -> Result<String, TargetError> {
            Ok("g".into())
        }
        async fn rename_group(&self, _: &str, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn add_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
            Ok(())
        }
        async fn remove_members(&self, _: &str, _: &[String]) -> Result<(), TargetError> {
            Ok(())
        }
        async fn delete_group(&self, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
            Ok(Vec::new())
        }
        async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
            Ok(Vec::new())
        }
    }

    fn create(key: &str) -> Operation {
        Operation::CreateUser {
            key: key.into(),
            user_name: key.into(),
            user: User {
                user_name: key.into(),
                active: true,
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn an_answer_that_arrives_while_another_object_is_handled_is_read_in_time() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            Store::open(&dir.path().join("state"), 1 << 20).unwrap_or_else(|e| panic!("{e}"));
        let target = Busy::default();
        let desired = DesiredState::default();
        let mut summary = Summary::default();
        let mut exec = Executor {
            store: &store,
            target: &target,
            records: Snapshot::default(),
            desired: &desired,
            summary: &mut summary,
            run: 1,
            changed_at: BTreeMap::new(),
            changed_since: None,
            waiting: BTreeMap::new(),
            interrupted: BTreeMap::new(),
        };
        exec.run_all(&[create("a"), create("b")], 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            exec.records.users.get("b").map(|r| r.target_id.as_str()),
            Some("id-b")
        );
        let creates = target
            .creates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Read in time: sent once, never taken for lost and sent again.
        assert_eq!(creates.get("b"), Some(&1), "{creates:?}");
        assert_eq!(summary.errors, 1, "a's failure only");
    }
}
