//! One pass from its input to its recorded outcome: the desired state (a directory read, or
//! the change feed's live state) and the records beside it, a resync's read of the target, the
//! plan and its deletion guard, the executor, and what is pruned, approved or kept after it.

use super::fit::fit_records;
use super::guards::{counts, guard_empty, guard_empty_read};
use super::{
    dangling_members, execute, fit, guarded, incremental, live, log_read, now, policy, read,
    stops_run, EngineError, Input, Mode, RunKind, RunReport, Summary,
};
use crate::config::Config;
use crate::model::{DesiredState, Key};
use crate::plan::plan;
use crate::state::records::Snapshot;
use crate::state::{ObjectError, RunRecord, StateError, Store};
use crate::target::Target;

pub(super) async fn run_from<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    kind: RunKind,
    mut input: Input<'_>,
    honour_backoff: bool,
    also: Option<&super::Also>,
) -> Result<RunReport, EngineError> {
    let started = now();
    let started_clock = std::time::Instant::now();
    let run = store.next_run().await?;
    let mut summary = Summary::default();
    let mode = Mode {
        kind,
        honour_backoff,
        also,
    };
    // Every line the pass logs carries its run number and kind.
    let span = tracing::info_span!("run", id = run, kind = kind.name());
    let result = tracing::Instrument::instrument(
        guarded(run_inner(
            cfg,
            store,
            target,
            mode,
            &mut input,
            run,
            &mut summary,
        )),
        span,
    )
    .await;
    summary.seconds = started_clock.elapsed().as_secs_f64();
    let (outcome, message) = match &result {
        // Removals held by the guard wait for a person: not "ok".
        Ok(()) if summary.deletions_held > 0 => ("held", None),
        Ok(()) if summary.errors > 0 || summary.rejected > 0 => ("errors", None),
        Ok(()) => ("ok", None),
        Err(e) => ("failed", Some(e.to_string())),
    };
    store.set_quirks(&target.quirks())?;
    let record = RunRecord {
        run,
        kind: kind.name().to_string(),
        started_at: started,
        finished_at: now(),
        outcome: outcome.to_string(),
        summary: serde_json::to_value(&summary)
            .unwrap_or_else(|e| serde_json::json!({ "unserializable": e.to_string() })),
        message,
    };
    store.set_last_run(&record).await?;
    result.map(|()| RunReport { run, summary })
}

async fn run_inner<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    mode: Mode<'_>,
    input: &mut Input<'_>,
    run: u64,
    summary: &mut Summary,
) -> Result<(), EngineError> {
    let Mode {
        kind,
        honour_backoff,
        also,
    } = mode;
    // The records describe one target: refuse to apply them to another (its ids would be
    // meaningless there), unless there are none yet or a resync is about to rebuild them.
    // The service keeps the records of its last pass, as long as nothing else wrote them.
    let kept = match input {
        Input::Feed(feed) => feed.take_kept(store.records_generation()),
        Input::Directory | Input::Notified(_) => None,
    };
    // Records read from the store are fitted to the target below; kept ones were, as
    // `fit_state` says.
    // A directory pass reads the records beside the directory (`read::with_records`); a
    // change feed keeps them between passes, and reads them once its desired state exists.
    let read_records = kept.is_none();
    // A feed's records, read after its desired state and the target's preflight.
    let mut records_later = false;
    let (mut records, mut census, mut fitted_as, follow) = match kept {
        Some(k) => (k.records, Some(k.census), Some(k.fit_state), k.follow),
        None => (Snapshot::default(), None, None, None),
    };
    let configured = target.describe();
    let stored = store.target_identity()?;
    let has_records = if read_records {
        store.has_records()?
    } else {
        !records.users.is_empty() || !records.groups.is_empty()
    };
    if let Some(stored) = &stored {
        if stored != &configured && kind != RunKind::Resync && has_records {
            return Err(EngineError::TargetMismatch {
                stored: stored.clone(),
                configured,
            });
        }
    }
    target.begin_pass().await;
    if stored.as_deref() == Some(configured.as_str()) {
        target.remember_quirks(&store.quirks()?);
    }

    super::progress::set_phase(super::progress::Phase::Reading);
    let mut wanted = if let Input::Feed(feed) = input {
        let wanted = if read_records {
            // The records are read once the desired state exists (and the target's preflight
            // has said what it holds, below), each fitted and, when it holds the very user the
            // directory wants, made to share it as it is decoded: never two copies of the
            // directory at once (~30 MB at 100k users).
            let wanted = live::from_feed(feed, follow, live::Known::Store(store))?;
            match &wanted {
                live::Wanted::Live { .. } => records_later = true,
                live::Wanted::Full(_) => records = store.snapshot()?,
            }
            wanted
        } else {
            live::from_feed(feed, follow, live::Known::Records(&records))?
        };
        let (users, groups) = feed.counts();
        tracing::info!(
            mode = "feed",
            users,
            groups,
            changed = feed.changed_at().len(),
            planned = ?wanted.scope_size(),
            rejected = wanted.rejected().len(),
            "directory changes"
        );
        wanted
    } else if cfg.ldap.incremental {
        let known = store.user_keys()?;
        let read = incremental::read_tracked(cfg, store, &known, kind == RunKind::Resync).await?;
        log_read(&read.stats, &read.desired);
        drop(known);
        records = store.snapshot()?;
        guard_empty_read(&read.desired, &records)?;
        read.save(store).await?;
        live::Wanted::Full(read.desired)
    } else {
        let (desired, stats, read) = read::with_records(cfg, store).await?;
        records = read;
        log_read(&stats, &desired);
        live::Wanted::Full(desired)
    };
    let known = if records_later {
        store.record_counts()?
    } else {
        counts(&records)
    };
    guard_empty(wanted.no_users(), wanted.no_groups(), known)?;

    // After the directory read (and so its bind): a wrong directory password never reaches the
    // target, and a wrong token is found before anything is planned.
    target.preflight().await?;
    if stored.as_deref() != Some(configured.as_str()) {
        store.set_target_identity(&configured).await?;
    }
    if let (true, live::Wanted::Live { desired, .. }) = (records_later, &wanted) {
        // Fitted as the target's preflight left what it holds (a schema read first there).
        fitted_as = Some(target.fit_state());
        let fit = |u: &mut crate::model::User| target.fit_user(u);
        records = store
            .snapshot_with(&|k, r| live::fit_and_share(desired, &fit, k, r), &|k, r| {
                live::share_group(desired, k, r)
            })?;
        if !target.holds_groups() {
            records.groups.clear();
        }
    }
    // What the target holds changed since the kept records were fitted (a quirk learned, its
    // schema read again): they are read again, fitted anew, and every key is planned.
    if fitted_as.is_some_and(|f| f != target.fit_state()) {
        tracing::info!(
            "what the target holds changed: the records are read again and every object compared"
        );
        records = store.snapshot()?;
        (census, fitted_as) = (None, None);
        if let live::Wanted::Live { scope, .. } = &mut wanted {
            *scope = None;
        }
    }

    if kind == RunKind::Resync && !target.can_list() {
        tracing::warn!(
            "the target cannot be read back (no list_users event): this resync cannot see drift made on the target, so it sends what differs from the state store, as a sync does"
        );
    } else if kind == RunKind::Resync {
        let live::Wanted::Full(desired) = &wanted else {
            return Err(EngineError::Defect(
                "a resync planned from a change feed".into(),
            ));
        };
        records = read_target(store, target, desired, &records, summary, also).await?;
    }

    summary.members_unresolved = wanted.unresolved() as u64;
    note_rejected(store, &wanted, run, summary).await?;

    // What the target cannot hold is neither sent nor compared: left out of both sides (after
    // a resync's read of the target, which is what the records now are).
    let policy = policy(cfg);
    let fit_state = target.fit_state();
    let fit_user = |u: &mut crate::model::User| target.fit_user(u);
    // A pass of some keys settles the errors of those keys only; None: of every key.
    let mut prune_scope: Option<live::Scope> = None;
    let ops = match &mut wanted {
        live::Wanted::Full(desired) => {
            fit(target, desired, &mut records);
            plan(desired, &records, &policy)
        }
        live::Wanted::Live { desired, scope } => {
            if fitted_as.is_none() {
                fit_records(target, &mut records);
                live::share_users(&mut records, desired);
                live::share_groups(&mut records, desired);
            }
            let view = live::Fitted {
                desired,
                fit: &fit_user,
            };
            let groups = target.holds_groups();
            match scope.take() {
                Some(mut s) => {
                    prune_scope = Some(s.clone());
                    if !groups {
                        s.groups.clear();
                    }
                    crate::plan::plan_keys(&view, &records, &policy, &s.users, &s.groups)
                }
                None => {
                    let (users, all_groups) = live::every_key(desired, &records);
                    let all_groups = all_groups.filter(|_| groups);
                    crate::plan::plan_keys(&view, &records, &policy, users, all_groups)
                }
            }
        }
    };
    // The keys planned, to find what is still to do once the pass has run (the change feed's
    // only: a first sync's were 10 MB at 100k users, kept to its end for nothing).
    let planned = match input {
        Input::Feed(_) => live::keys_of(&ops),
        Input::Directory | Input::Notified(_) => live::Scope::default(),
    };
    let managed = records.users.len() + records.groups.len();
    let approval = crate::state::approvals::deletion_approval(store.path())?;
    let verdict = guard_removals(ops, managed, cfg, approval.as_ref(), summary);
    let (ops, held) = (verdict.ops, verdict.held);
    tracing::info!(operations = ops.len(), "plan ready");
    let changed_at = match input {
        Input::Feed(feed) => feed.changed_at().clone(),
        Input::Directory | Input::Notified(_) => Default::default(),
    };
    let changed_since = match input {
        Input::Notified(at) => Some(*at),
        Input::Directory | Input::Feed(_) => None,
    };
    let waiting = if honour_backoff {
        waiting_errors(store)?
    } else {
        Default::default()
    };
    let interrupted = interrupted_writes(store)?;
    // A take-over looks each create up just before sending it: the gateway before it may
    // have had the same create on its way, and a listing made now could miss it.
    if also.is_none() {
        list_for_creates(target, &ops).await?;
    }
    let fitted;
    let desired: &(dyn crate::model::Desired + Sync) = match &wanted {
        live::Wanted::Full(d) => d,
        live::Wanted::Live { desired, .. } => {
            fitted = live::Fitted {
                desired,
                fit: &fit_user,
            };
            &fitted
        }
    };
    let mut exec = execute::Executor {
        store,
        target,
        records,
        desired,
        summary,
        run,
        changed_at,
        changed_since,
        waiting,
        interrupted,
        window: Default::default(),
        journal: Vec::new(),
        moved: matches!(input, Input::Feed(_)).then(Default::default),
        census: Default::default(),
    };
    // Counted once from the records, then followed change by change.
    exec.census = census.unwrap_or_else(|| crate::status::Census::of(&exec.records));
    let sent = exec.run_all(ops, cfg.target.max_concurrency).await;
    super::progress::set_phase(super::progress::Phase::Done);
    exec.summary.census = Some(exec.census);
    let census = exec.census;
    let records = std::mem::take(&mut exec.records);
    let moved = exec.moved.take().unwrap_or_default();
    sent?;
    match &prune_scope {
        Some(s) => {
            store
                .prune_errors_of(run, s.users.iter().chain(&s.groups))
                .await?
        }
        None => store.prune_errors(run).await?,
    }
    store.prune_intents(run).await?;
    settle_approval(store, approval.as_ref(), held.as_ref(), verdict.approved)?;
    if let Input::Feed(feed) = input {
        feed.save(store).await?;
        let after = live::AfterPass {
            records,
            moved,
            census,
            fit_state,
            prune_scope,
            planned,
        };
        feed.keep(live::kept_for_feed(
            store, after, wanted, &policy, &fit_user,
        ));
    } else {
        drop_aside((records, wanted));
    }
    Ok(())
}

/// The accidental-deletion guard over a plan: removals past its limits are held back (and
/// logged) unless approved.
fn guard_removals(
    ops: Vec<crate::plan::Operation>,
    managed: usize,
    cfg: &Config,
    approval: Option<&crate::plan::guard::Approval>,
    summary: &mut Summary,
) -> crate::plan::guard::Verdict {
    let verdict = crate::plan::guard::hold(ops, managed, &cfg.sync.guard, approval);
    if let Some(h) = &verdict.held {
        summary.deletions_held = h.count as u64;
        tracing::error!(
            held = h.count,
            managed = h.managed,
            max_deletions = cfg.sync.guard.max_count,
            max_percent = cfg.sync.guard.max_percent,
            sample = ?h.sample,
            "accidental-deletion guard: {} deactivations/deletions held back, nothing removed; check the directory read, then run `dirbridge approve-deletes` to let them through",
            h.count
        );
    }
    verdict
}

/// The objects whose last operation the target refused and whose retry time has not come.
fn waiting_errors(
    store: &Store,
) -> Result<std::collections::BTreeMap<Key, ObjectError>, StateError> {
    let now = time::OffsetDateTime::now_utc();
    Ok(store
        .errors()?
        .into_iter()
        .filter(|e| e.retry_time().is_some_and(|t| t > now))
        .map(|e| (Key::from(e.key.as_str()), e))
        .collect())
}

/// Writes interrupted by a crash, or whose answer was lost: the creates among them are looked
/// up (and taken over, as ours) before anything is sent again; the rest are re-planned from the
/// records like any other difference.
fn interrupted_writes(
    store: &Store,
) -> Result<std::collections::BTreeMap<Key, crate::state::Intent>, StateError> {
    let interrupted = store.intents()?;
    if !interrupted.is_empty() {
        tracing::warn!(
            count = interrupted.len(),
            "writes interrupted by a crash or a lost answer: their objects are looked up on the target before anything is sent again"
        );
    }
    Ok(interrupted)
}

/// Many creates: the target is listed once, so that creates of free names go without a look-up
/// each. A listing that fails costs only the look-ups, unless the target is down.
async fn list_for_creates<T: Target>(
    target: &T,
    ops: &[crate::plan::Operation],
) -> Result<(), EngineError> {
    let creates = |user: bool| {
        ops.iter()
            .filter(|op| match op {
                crate::plan::Operation::CreateUser { .. } => user,
                crate::plan::Operation::CreateGroup { .. } => !user,
                _ => false,
            })
            .count()
    };
    if let Err(e) = target.expect_creates(creates(true), creates(false)).await {
        if stops_run(target, &e).await {
            return Err(EngineError::Target(e));
        }
        tracing::warn!(error = %e, "listing the target for this run's creates failed: each create is looked up first");
    }
    Ok(())
}

/// A resync's read of the target: the records rebuilt from what it holds (exact matches only)
/// and saved, and the member references it holds to objects that no longer exist removed.
async fn read_target<T: Target>(
    store: &Store,
    target: &T,
    desired: &DesiredState,
    records: &Snapshot,
    summary: &mut Summary,
    also: Option<&super::Also>,
) -> Result<Snapshot, EngineError> {
    super::progress::set_phase(super::progress::Phase::ReadingTarget);
    let users = target.list_users().await?;
    let groups = target.list_groups().await?;
    let none = super::Also::default();
    let seen =
        super::observe::observed_with(desired, records, &users, &groups, also.unwrap_or(&none));
    tracing::info!(
        target_users = users.len(),
        target_groups = groups.len(),
        matched_users = seen.users.len(),
        matched_groups = seen.groups.len(),
        "target read for resync"
    );
    store.replace_all(&seen).await?;
    for (key, group_id, ids) in dangling_members(&seen, &users, &groups) {
        for chunk in ids.chunks(crate::plan::MEMBER_BATCH) {
            match target.remove_members(&group_id, chunk).await {
                Ok(()) => summary.members_removed += chunk.len() as u64,
                Err(e) if stops_run(target, &e).await => return Err(e.into()),
                Err(e) => {
                    summary.errors += 1;
                    tracing::warn!(group = %key, error = %e, "could not remove dangling member references");
                }
            }
        }
    }
    Ok(seen)
}

/// Notes the entries not synced among those planned (counted for all: an entry still not
/// synced keeps the outcome at "errors"), durably when there are any.
async fn note_rejected(
    store: &Store,
    wanted: &live::Wanted,
    run: u64,
    summary: &mut Summary,
) -> Result<(), EngineError> {
    let rejected = wanted.rejected();
    summary.rejected = wanted.rejected_total() as u64;
    for r in &rejected {
        tracing::warn!(dn = %r.dn, reason = %r.reason, "entry not synced");
        let key = match &r.key {
            Some(k) => k.to_string(),
            None => format!("dn:{}", r.dn),
        };
        store.note_error(ObjectError {
            key,
            kind: "entry".into(),
            label: r.dn.clone(),
            operation: "read".into(),
            reason: r.reason.clone(),
            http_status: None,
            first_seen: now(),
            last_seen: now(),
            attempts: 1,
            run,
            retry_after: None,
            attempted: None,
        })?;
    }
    if !rejected.is_empty() {
        store.flush_now().await?;
    }
    Ok(())
}

/// What a pass that ran leaves of the deletion guard's state: the removals it held, for a
/// person to approve; the approval it used or made stale, and a next-run approval used or
/// not, dropped.
fn settle_approval(
    store: &Store,
    approval: Option<&crate::plan::guard::Approval>,
    held: Option<&crate::plan::guard::Held>,
    approved: bool,
) -> Result<(), StateError> {
    // An approval serves the run that uses it; a set approved but no longer planned (or
    // replaced by another held set) is dropped too.
    crate::state::approvals::set_held_deletions(store.path(), held)?;
    let stale = matches!(approval, Some(crate::plan::guard::Approval::Set(_))) && held.is_some();
    // `sync --approve-deletes` is for that run only, used or not.
    let one_run = matches!(approval, Some(crate::plan::guard::Approval::NextRun));
    if approved || stale || one_run {
        crate::state::approvals::set_deletion_approval(store.path(), None)?;
    }
    Ok(())
}

/// Frees a pass's large maps on a thread of their own: a one-shot command exits meanwhile (a
/// tenth of a no-change pass at 100k users went to freeing them), and the service's next pass
/// need not wait. If no thread can be started, the closure is dropped, and `big` freed, here.
fn drop_aside<T: Send + 'static>(big: T) {
    let _ = std::thread::Builder::new()
        .name("dirbridge-free".into())
        .spawn(move || drop(big));
}
