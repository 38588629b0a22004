//! One sync pass: read the directory, plan against the records (or, on a resync, against what
//! the target really holds), send each operation and record each confirmation before the next.

pub(crate) mod drift;
mod execute;
pub(crate) mod feed;
mod fit;
mod guards;
mod incremental;
pub(crate) mod live;
mod observe;
mod pass;
pub(crate) mod preview;
pub(crate) mod progress;
/// Which attribute carries memberships on this server (`check` says what a sync would use).
pub(crate) use read::membership_for_server;
mod read;
mod send;
pub(crate) mod standby;
pub(crate) mod summary;

use std::collections::BTreeSet;

pub(crate) use observe::{dangling_members, Also};
pub(crate) use read::{check_mapping, read_desired, ReadStats};
pub(crate) use summary::Summary;

pub(crate) use fit::fit;
use guards::guard_empty_read;
pub(crate) use guards::{guarded, panic_text};
use pass::run_from;

use crate::config::Config;
use crate::model::{DesiredState, Key};
use crate::plan::{plan, Operation, Policy};
use crate::source::SourceError;
use crate::state::records::Snapshot;
use crate::state::{StateError, Store};
use crate::target::{Target, TargetError};

/// What stops a run as a whole (exit code 2). Per-object failures are not errors of the run:
/// they are recorded and reported in the [`Summary`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "the state store describes the target {stored}, but the configuration points at {configured}; \
         run `dirbridge resync` to rebuild the records from the configured target, or use another state.path"
    )]
    TargetMismatch { stored: String, configured: String },
    #[error(
        "the directory returned no {what}, but {known} {what} were pushed before; refusing to treat that as \
         {known} removals (check ldap.{what_key}_base, ldap.{what_key}_filter and the bind DN's read rights)"
    )]
    EmptyRead {
        what: &'static str,
        what_key: &'static str,
        known: usize,
    },
    #[error(
        "internal error in this pass ({0}); nothing after it was sent, what was confirmed is saved, \
         and the next pass starts afresh (please report it)"
    )]
    Defect(String),
}

/// Whether a target failure stops the run: a refused credential, or no answer from a target
/// that does not answer a probe either. A transport failure of one request while the target
/// answers belongs to the object it was about: recorded, retried later, and the run goes on.
pub(crate) async fn stops_run<T: Target>(target: &T, e: &TargetError) -> bool {
    if !e.is_fatal() {
        return false;
    }
    if e.is_transport() && target.reachable().await {
        tracing::warn!(error = %e, "no answer to this request while the target answers others: the failure is this object's");
        return false;
    }
    true
}

/// Sync (delta against the records) or resync (against the target's real content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunKind {
    Sync,
    Resync,
    /// A pass over changes a change feed delivered.
    Feed,
}

impl RunKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RunKind::Sync => "sync",
            RunKind::Resync => "resync",
            RunKind::Feed => "feed",
        }
    }
}

/// The result of a finished run.
#[derive(Debug, Clone)]
pub(crate) struct RunReport {
    pub run: u64,
    pub summary: Summary,
}

/// Plans without sending anything: the operations `sync` would send now.
/// The target is not contacted: only the quirks it is known for (`Target::remember_quirks`)
/// shape what would be sent.
pub(crate) async fn dry_run<T: Target>(
    cfg: &Config,
    records: &Snapshot,
    target: &T,
) -> Result<(Vec<Operation>, DesiredState), EngineError> {
    guarded(dry_run_inner(cfg, records, target)).await
}

async fn dry_run_inner<T: Target>(
    cfg: &Config,
    records: &Snapshot,
    target: &T,
) -> Result<(Vec<Operation>, DesiredState), EngineError> {
    let known: BTreeSet<Key> = records.users.keys().cloned().collect();
    let (mut desired, stats) = read_desired(cfg, &known).await?;
    log_read(&stats, &desired);
    guard_empty_read(&desired, records)?;
    let mut records = records.clone();
    fit(target, &mut desired, &mut records);
    let ops = plan(&desired, &records, &policy(cfg));
    Ok((ops, desired))
}

fn log_read(stats: &ReadStats, desired: &DesiredState) {
    tracing::info!(
        mode = stats.mode,
        changed = stats.changed,
        users = stats.user_entries,
        groups = stats.group_entries,
        referenced_groups = stats.referenced_groups,
        range_reads = stats.range_reads,
        references_skipped = stats.references_skipped + desired.unresolved_members as u64,
        members_unresolved = desired.unresolved_members,
        rejected = desired.rejected.len(),
        "directory read"
    );
}

fn policy(cfg: &Config) -> Policy {
    Policy {
        on_disable: cfg.sync.on_disable,
        on_remove: cfg.sync.on_remove,
    }
}

/// What a mirror was read from and with (server, scope, mapping), for a kind of tracking: a
/// different value means the mirror and its watermark or cookies describe something else.
fn fingerprint(cfg: &Config, tracking: &str) -> String {
    use sha2::{Digest, Sha256};
    let l = &cfg.ldap;
    let text = format!(
        "{tracking}|{}|{}|{}|{}|{}|{:?}|{}|{}|{:?}|{}|{:?}",
        l.servers.join(" "),
        l.user_base,
        l.group_base,
        l.user_filter,
        l.group_filter,
        l.membership,
        l.nested_groups,
        l.include_primary_group,
        l.referenced_groups,
        l.bind_dn.as_deref().unwrap_or(""),
        cfg.mapping
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What kind of run, and whether refused operations wait for their retry time.
#[derive(Debug, Clone, Copy)]
struct Mode<'a> {
    kind: RunKind,
    honour_backoff: bool,
    /// A resync's keys besides the records' and the directory's (see [`Also`]).
    also: Option<&'a Also>,
}

/// Where a run's desired state comes from.
enum Input<'a> {
    /// A read of the directory (full, or incremental where configured).
    Directory,
    /// A read of the directory that a change notification asked for (AD), at this time: the
    /// change time of whatever the pass pushes, for the change-to-push latency (AD has no
    /// entryCSN).
    Notified(std::time::SystemTime),
    /// The change feed's mirror; saved with its cookies once the run has pushed it.
    Feed(&'a mut feed::Feed),
}

/// Runs one sync or resync and records its outcome.
pub(crate) async fn run<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    kind: RunKind,
) -> Result<RunReport, EngineError> {
    run_from(cfg, store, target, kind, Input::Directory, false, None).await
}

/// The resync a gateway runs when it takes the HA lease over, before anything else: what the
/// target holds is read, the keys in `also` (changed while it was standby) matched by
/// externalId besides its records' own, and only then is anything sent.
pub(crate) async fn run_takeover<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    also: &Also,
) -> Result<RunReport, EngineError> {
    run_from(
        cfg,
        store,
        target,
        RunKind::Resync,
        Input::Directory,
        false,
        Some(also),
    )
    .await
}

/// [`run`] as the service runs it: a sync leaves alone the operations the target refused until
/// their retry time (a resync, like any one-shot command, tries everything).
pub(crate) async fn run_scheduled<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    kind: RunKind,
) -> Result<RunReport, EngineError> {
    let honour = kind != RunKind::Resync;
    run_from(cfg, store, target, kind, Input::Directory, honour, None).await
}

/// [`run_scheduled`] for a sync that a change notification asked for at `notified_at`.
pub(crate) async fn run_notified<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    notified_at: std::time::SystemTime,
) -> Result<RunReport, EngineError> {
    run_from(
        cfg,
        store,
        target,
        RunKind::Sync,
        Input::Notified(notified_at),
        true,
        None,
    )
    .await
}

/// Pushes what the change feed's mirror says and, when nothing stopped the pass, saves the
/// mirror and cookies. A failure leaves both where they were: the changes stay pending.
pub(crate) async fn run_feed<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    feed: &mut feed::Feed,
) -> Result<RunReport, EngineError> {
    run_from(
        cfg,
        store,
        target,
        RunKind::Feed,
        Input::Feed(feed),
        true,
        None,
    )
    .await
}
