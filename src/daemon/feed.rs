//! Supervises the syncrepl change feed: one LDAP connection with a refreshAndPersist search per
//! scope, each read by its own task into one bounded channel; a pass once a burst of changes is
//! over; reconnection with jittered backoff from the cookies in memory (or, after a restart, in
//! the store) when the connection is lost, the server stops the search, or a heartbeat on the
//! connection goes unanswered.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ha::Ha;
use super::status::{Board, FeedState};
use super::{backoff, Stop, TakeOver};
use crate::config::Config;
use crate::engine::feed::{feed_attributes, feed_mapper, Feed, FeedKind, FeedScope};
use crate::engine::{self, RunKind};
use crate::source::ldap::Session;
use crate::source::syncrepl::{PersistSearch, SyncEnd, SyncEvent};
use crate::source::SourceError;
use crate::state::Store;
use crate::target::Target;

/// Messages in flight between the readers and the loop: past this, a reader waits (and TCP
/// pushes back on the server) until the loop catches up.
const CHANNEL: usize = 256;
/// A burst is pushed at the latest this long after its first change, even if it goes on.
const MAX_COALESCE: Duration = Duration::from_secs(2);
/// When a pass left objects in error without a retry time (deferred ones), try again after this.
const OBJECT_RETRY: Duration = Duration::from_secs(10);
/// While the deletion guard holds removals, how often a pass checks for an approval.
const HELD_RECHECK: Duration = Duration::from_secs(30);

/// How the feed loop ended.
pub(super) enum FeedExit {
    Stopped,
    /// The server does not offer content synchronization (automatic mode: poll instead).
    Unsupported,
}

enum Message {
    Event(SyncEvent),
    End(Result<SyncEnd, SourceError>),
    Lost(SourceError),
}

/// The live connection: the session (for heartbeats) and the readers of its searches.
struct Link {
    session: Session,
    rx: mpsc::Receiver<(FeedScope, Message)>,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

async fn read_loop(
    scope: FeedScope,
    mut search: PersistSearch,
    tx: mpsc::Sender<(FeedScope, Message)>,
) {
    loop {
        let msg = match search.next().await {
            Ok(Some(ev)) => Message::Event(ev),
            Ok(None) => {
                let end = search.end().await;
                let _ = tx.send((scope, Message::End(end))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send((scope, Message::Lost(e))).await;
                return;
            }
        };
        if tx.send((scope, msg)).await.is_err() {
            return;
        }
    }
}

/// Connects and starts both searches; `Ok(None)` when the server has no syncprov.
async fn connect(cfg: &Config, feed: &mut Feed) -> Result<Option<Link>, SourceError> {
    let mut session = Session::open(&cfg.ldap).await?;
    crate::engine::check_mapping(&mut session, cfg).await?;
    if !session.supports_syncrepl().await? {
        session.close().await;
        return Ok(None);
    }
    let mapper = feed_mapper(cfg);
    let (user_attrs, group_attrs) = feed_attributes(cfg, &mapper);
    let (tx, rx) = mpsc::channel(CHANNEL);
    let mut readers = Vec::new();
    for scope in FeedScope::ALL {
        let (base, filter, attrs) = match scope {
            FeedScope::Users => (&cfg.ldap.user_base, &cfg.ldap.user_filter, &user_attrs),
            FeedScope::Groups => (&cfg.ldap.group_base, &cfg.ldap.group_filter, &group_attrs),
        };
        let cookie = feed.begin(scope);
        tracing::info!(scope = scope.name(), base = %base, server = session.server(), resume = cookie.is_some(), "starting content synchronization");
        let search = session
            .persist(base, filter, attrs, cookie.as_deref())
            .await?;
        readers.push(tokio::spawn(read_loop(scope, search, tx.clone())));
    }
    Ok(Some(Link {
        session,
        rx,
        readers,
    }))
}

async fn recv(link: &mut Option<Link>) -> Option<(FeedScope, Message)> {
    match link.as_mut() {
        Some(l) => l.rx.recv().await,
        None => std::future::pending().await,
    }
}

fn instant_of(t: time::OffsetDateTime) -> Instant {
    let now = time::OffsetDateTime::now_utc();
    let ahead = (t - now).max(time::Duration::ZERO);
    Instant::now() + Duration::try_from(ahead).unwrap_or(Duration::ZERO)
}

/// Follows the directory until stopped.
pub(super) async fn run<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    board: &Board,
    stop: &mut Stop,
    ha: &mut Ha,
    required: bool,
) -> anyhow::Result<FeedExit> {
    let mut feed = Feed::load(cfg, store, FeedKind::Syncrepl)?;
    let mut link: Option<Link> = None;
    let mut ldap_failures = 0u32;
    let mut pass_failures = 0u32;
    let mut reconnect_at = Instant::now();
    // After a failed pass: no pass before this (the target is likely down).
    let mut backoff_until: Option<Instant> = None;
    // Objects in error: a pass at this time even if nothing changes.
    let mut retry_at: Option<Instant> = None;
    let mut last_event = Instant::now();
    let mut burst_start: Option<Instant> = None;
    // A change that finds nothing pending and no push in flight is pushed at once (leading
    // edge); what arrives while a push is in flight is coalesced as before (quiet for
    // `daemon.coalesce`, or MAX_COALESCE), so a burst goes in one or two passes.
    let mut leading = false;
    // Messages were already queued when the last pass ended: they arrived during it.
    let mut arrived_during_push = false;
    let mut heartbeat_at = Instant::now() + cfg.daemon.heartbeat;
    // While standby: the keys seen leave, already kept in the store (see `keep_seen`).
    let mut kept_seen = crate::engine::Also::default();
    let mut next_resync = cfg
        .daemon
        .full_resync
        .next_after(time::OffsetDateTime::now_utc());
    board.set_mode("syncrepl");
    loop {
        if link.is_none() && Instant::now() >= reconnect_at {
            board.set_feed(FeedState::Connecting);
            match connect(cfg, &mut feed).await {
                Ok(Some(l)) => {
                    // Failures are forgotten once the feed follows, not on connect: a search
                    // that fails right after a good connect must still back off.
                    link = Some(l);
                    heartbeat_at = Instant::now() + cfg.daemon.heartbeat;
                    board.set_feed(FeedState::Refreshing);
                }
                Ok(None) if required => anyhow::bail!(
                    "daemon.change_feed = \"syncrepl\", but {} does not offer content synchronization \
                     (load slapd's syncprov overlay on the database, or enable 389-DS's Retro Changelog \
                     and Content Synchronization plugins; or use \"auto\" / \"poll\")",
                    cfg.ldap.url
                ),
                Ok(None) => {
                    tracing::info!(url = %cfg.ldap.url, "the server does not offer content synchronization (slapd's syncprov, 389-DS's Content Synchronization plugin): polling instead");
                    return Ok(FeedExit::Unsupported);
                }
                Err(e) => {
                    ldap_failures = ldap_failures.saturating_add(1);
                    let wait = backoff(ldap_failures);
                    reconnect_at = Instant::now() + wait;
                    tracing::error!(error = %e, retry_in = ?wait, "change feed: cannot connect");
                    board.set_feed(FeedState::Down(e.to_string()));
                }
            }
        }

        // Entries that came without their key are read again, and a refresh resumed from a
        // cookie is checked against a listing of the scope, before anything is pushed.
        if feed.awaiting_refetch() || !feed.unchecked_scopes().is_empty() {
            if let Some(l) = link.as_mut() {
                let checked = match engine::feed::refetch(&mut l.session, cfg, &mut feed).await {
                    Ok(()) => engine::feed::check_listed(&mut l.session, cfg, &mut feed).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = checked {
                    tracing::warn!(error = %e, "change feed: reading entries again failed; reconnecting");
                    board.set_feed(FeedState::Down(e.to_string()));
                    link = None;
                    reconnect_at = Instant::now();
                    continue;
                }
            }
        }

        // A gateway that just took the HA lease over reconciles with the target before its
        // first pass, once the feed has caught up with the directory (the keys it saw change
        // while standby are looked up too).
        let active = ha.active();
        if active
            && ha.to_reconcile().is_some()
            && !feed.refreshing()
            && !feed.awaiting_refetch()
            && !feed.awaiting_check()
            && backoff_until.is_none_or(|t| Instant::now() >= t)
        {
            let none = Default::default();
            let also = match feed.changes() {
                Ok(c) => crate::engine::Also {
                    users: gone(&c.changed[0], &c.users, &none).into_iter().collect(),
                    groups: gone(&c.changed[1], &c.groups, &none).into_iter().collect(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "HA: the keys changed while standby cannot be read; the take-over resync looks up the records' and the directory's");
                    crate::engine::Also::default()
                }
            };
            match super::take_over(cfg, store, target, board, ha, stop, &also).await {
                TakeOver::Done => {
                    kept_seen = crate::engine::Also::default();
                    pass_failures = 0;
                    backoff_until = None;
                    // What changed meanwhile is pushed by a feed pass.
                    if feed.dirty() {
                        leading = true;
                    }
                }
                TakeOver::Lost => {}
                TakeOver::Stopped => return Ok(FeedExit::Stopped),
                TakeOver::Failed => {
                    pass_failures = pass_failures.saturating_add(1);
                    backoff_until = Some(Instant::now() + backoff(pass_failures));
                }
            }
            continue;
        }

        let now = Instant::now();
        if retry_at.is_some_and(|t| now >= t) {
            retry_at = None;
            feed.retry_later();
        }
        let quiet = now.duration_since(last_event) >= cfg.daemon.coalesce;
        let long = burst_start.is_some_and(|b| now.duration_since(b) >= MAX_COALESCE);
        let may_pass =
            backoff_until.is_none_or(|t| now >= t) && active && ha.to_reconcile().is_none();
        if feed.dirty()
            && !feed.refreshing()
            && !feed.awaiting_refetch()
            && !feed.awaiting_check()
            && may_pass
            && (quiet || long || leading)
        {
            leading = false;
            let outcome = {
                let mut pass = std::pin::pin!(engine::run_feed(cfg, store, target, &mut feed));
                tokio::select! {
                    r = &mut pass => r,
                    _ = ha.lost() => {
                        tracing::warn!("HA: the lease was lost: the pass in progress was abandoned (what it confirmed is saved; the changes stay pending for when this gateway holds the lease again)");
                        continue;
                    }
                    _ = stop.wait() => {
                        // A pass about to end is let end (its cookie saved: the next start
                        // resumes from it); one that does not within the grace is abandoned.
                        match tokio::time::timeout(super::STOP_GRACE, &mut pass).await {
                            Ok(_) => tracing::info!("stopping: the pass in progress was let finish"),
                            Err(_) => tracing::info!("stopping: the pass in progress was abandoned; confirmed changes are saved; if anything was sent, the next start reads the directory again in full rather than resume from the saved cookie"),
                        }
                        return Ok(FeedExit::Stopped);
                    }
                }
            };
            arrived_during_push = link.as_ref().is_some_and(|l| !l.rx.is_empty());
            match &outcome {
                Ok(report) => {
                    pass_failures = 0;
                    backoff_until = None;
                    burst_start = None;
                    tracing::info!(run = report.run, "{}", report.summary.line("feed"));
                    let s = &report.summary;
                    if s.errors > 0 || s.deferred > 0 || s.waiting > 0 {
                        // Objects the target refused: another pass when the first of them is
                        // due (each waits longer after each refusal).
                        let due = store.next_retry().ok().flatten().map(instant_of);
                        let at = due.unwrap_or_else(|| Instant::now() + OBJECT_RETRY);
                        let at = at.max(Instant::now() + Duration::from_secs(1));
                        retry_at = Some(at);
                        tracing::info!(retry_in = ?at.saturating_duration_since(Instant::now()), "objects in error will be retried");
                    } else {
                        retry_at = None;
                    }
                    if s.deletions_held > 0 {
                        // Look again now and then: `approve-deletes` may have been run.
                        let again = Instant::now() + HELD_RECHECK;
                        retry_at = Some(retry_at.map_or(again, |r| r.min(again)));
                    }
                }
                Err(e) => {
                    pass_failures = pass_failures.saturating_add(1);
                    let wait = backoff(pass_failures);
                    backoff_until = Some(Instant::now() + wait);
                    tracing::error!(error = %e, retry_in = ?wait, "change feed pass failed; the changes stay pending");
                }
            }
            board.record(RunKind::Feed, &outcome);
            if feed.missed_a_change() {
                // Its mirror missed a change (see `Feed::old_dn`): the feed starts again from
                // what was saved, on a new connection, and the server sends the change again.
                // No pass before that connection's refresh; a store that cannot be read is
                // tried again after the next failed pass.
                match Feed::load(cfg, store, FeedKind::Syncrepl) {
                    Ok(loaded) => {
                        tracing::warn!(
                            "change feed: its saved mirror was loaded again; reconnecting"
                        );
                        feed = loaded;
                        link = None;
                        reconnect_at = Instant::now() + backoff(pass_failures);
                        backoff_until = backoff_until.map(|b| b.max(reconnect_at));
                        board.set_feed(FeedState::Down(
                            "reloading the saved mirror after a change it missed".into(),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "change feed: cannot load its saved mirror again")
                    }
                }
            }
            continue;
        }

        if next_resync.is_some_and(|t| time::OffsetDateTime::now_utc() >= t) && !active {
            // A standby's schedule moves on: the gateway holding the lease runs it.
            next_resync = cfg
                .daemon
                .full_resync
                .next_after(time::OffsetDateTime::now_utc());
            continue;
        }
        if next_resync.is_some_and(|t| time::OffsetDateTime::now_utc() >= t)
            && cfg.daemon.full_resync_mode == crate::config::ResyncMode::Report
        {
            tokio::select! {
                _ = super::report_drift(cfg, store, target, board) => {}
                _ = stop.wait() => return Ok(FeedExit::Stopped),
            }
            next_resync = cfg
                .daemon
                .full_resync
                .next_after(time::OffsetDateTime::now_utc());
            continue;
        }
        if next_resync.is_some_and(|t| time::OffsetDateTime::now_utc() >= t) {
            let outcome = tokio::select! {
                r = engine::run(cfg, store, target, RunKind::Resync) => r,
                _ = ha.lost() => continue,
                _ = stop.wait() => return Ok(FeedExit::Stopped),
            };
            match &outcome {
                Ok(report) => tracing::info!(run = report.run, "{}", report.summary.line("resync")),
                Err(e) => tracing::error!(error = %e, "scheduled resync failed"),
            }
            board.record(RunKind::Resync, &outcome);
            next_resync = cfg
                .daemon
                .full_resync
                .next_after(time::OffsetDateTime::now_utc());
            continue;
        }

        // Sleep until the next thing to do, or a message.
        let mut wake = now + Duration::from_secs(3600);
        if link.is_none() {
            wake = wake.min(reconnect_at);
        } else {
            wake = wake.min(heartbeat_at);
        }
        // A standby pushes nothing: pending changes wake nobody until it holds the lease.
        if feed.dirty() && !feed.refreshing() && ha.active() && ha.to_reconcile().is_none() {
            let mut due = if leading {
                Instant::now()
            } else {
                last_event + cfg.daemon.coalesce
            };
            if let Some(b) = burst_start {
                due = due.min(b + MAX_COALESCE);
            }
            if let Some(b) = backoff_until {
                due = due.max(b);
            }
            wake = wake.min(due);
        }
        if let Some(r) = retry_at {
            wake = wake.min(r);
        }
        if let Some(t) = next_resync {
            wake = wake.min(instant_of(t));
        }
        tokio::select! {
            msg = recv(&mut link) => {
                let mut next = msg;
                // Take what is already queued too, without waiting.
                loop {
                    match next {
                        Some((scope, Message::Event(ev))) => {
                            let was_refreshing = feed.refreshing();
                            let nothing_pending = !feed.dirty();
                            apply(&mut feed, scope, ev);
                            if nothing_pending
                                && !arrived_during_push
                                && !was_refreshing
                                && feed.dirty()
                            {
                                leading = true;
                            }
                            last_event = Instant::now();
                            if !feed.refreshing() {
                                if was_refreshing {
                                    ldap_failures = 0;
                                    board.set_feed(FeedState::Following);
                                } else if feed.dirty() && burst_start.is_none() {
                                    burst_start = Some(last_event);
                                }
                            }
                        }
                        Some((scope, Message::End(Ok(SyncEnd::RefreshRequired)))) => {
                            tracing::warn!(scope = scope.name(), "the server no longer knows the cookie (e-syncRefreshRequired): reading everything again");
                            feed.forget_cookie(scope);
                            link = None;
                            reconnect_at = Instant::now();
                            break;
                        }
                        Some((scope, Message::End(Ok(SyncEnd::Refused(why))))) => {
                            let why = format!(
                                "{} refused content synchronization on {}: {why} (the sync control is on offer, \
                                 but not for this database: put the syncprov overlay on it, or 389-DS's \
                                 Content Synchronization and Retro Changelog plugins)",
                                cfg.ldap.url,
                                scope.name()
                            );
                            if required {
                                anyhow::bail!("daemon.change_feed = \"syncrepl\", but {why}");
                            }
                            tracing::warn!("{why}; polling instead");
                            board.set_mode_reason(Some(why));
                            return Ok(FeedExit::Unsupported);
                        }
                        Some((scope, Message::End(Ok(SyncEnd::Done(_))))) => {
                            tracing::warn!(scope = scope.name(), "the server ended content synchronization; reconnecting");
                            link = None;
                            ldap_failures = ldap_failures.saturating_add(1);
                            reconnect_at = Instant::now() + backoff(ldap_failures);
                            break;
                        }
                        Some((scope, Message::End(Err(e)) | Message::Lost(e))) => {
                            ldap_failures = ldap_failures.saturating_add(1);
                            let wait = backoff(ldap_failures);
                            tracing::error!(scope = scope.name(), error = %e, retry_in = ?wait, "change feed lost; reconnecting");
                            board.set_feed(FeedState::Down(e.to_string()));
                            link = None;
                            reconnect_at = Instant::now() + wait;
                            break;
                        }
                        None => {
                            link = None;
                            reconnect_at = Instant::now();
                            break;
                        }
                    }
                    next = match link.as_mut().map(|l| l.rx.try_recv()) {
                        Some(Ok(m)) => Some(m),
                        _ => break,
                    };
                }
                arrived_during_push = false;
                // A refresh of a whole directory is written to the store as it comes, not
                // held in memory until the first pass has pushed it.
                if let Err(e) = feed.write_ahead(store, engine::feed::write_ahead_at()) {
                    tracing::warn!(error = %e, "change feed: cannot write the mirror ahead of its save; holding it in memory");
                }
                // Written at once, durably: only keys that left are (a refresh of the whole
                // directory writes nothing), and a restart may come any moment.
                if !ha.active() {
                    keep_seen(store, &mut feed, &mut kept_seen).await;
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = ha.changed() => {}
            _ = stop.wait() => return Ok(FeedExit::Stopped),
        }

        if let Some(l) = link.as_mut() {
            if Instant::now() >= heartbeat_at {
                heartbeat_at = Instant::now() + cfg.daemon.heartbeat;
                // The target too, cheaply (one GET of its configuration): an idle service
                // shows an outage on /readyz before a pass has to fail on it.
                let up = target.reachable().await;
                if !up {
                    tracing::warn!("the target does not answer (checked on the heartbeat)");
                }
                board.set_target_up(up);
                if let Err(e) = l.session.read_entry("", &["1.1".to_string()]).await {
                    ldap_failures = ldap_failures.saturating_add(1);
                    tracing::error!(error = %e, "change feed: the connection does not answer; reconnecting");
                    board.set_feed(FeedState::Down(e.to_string()));
                    link = None;
                    reconnect_at = Instant::now() + backoff(ldap_failures);
                }
            }
        }
    }
}

/// While standby: the keys the feed saw leave since its last save (what a take-over looks up)
/// kept in the store as they come, so that a restart before the take-over does not forget them
/// (the feed's own record of them is in memory until a pass saves it).
async fn keep_seen(store: &Store, feed: &mut Feed, kept: &mut crate::engine::Also) {
    let (users, groups) = match feed.changes() {
        Ok(c) => (
            gone(&c.changed[0], &c.users, &kept.users),
            gone(&c.changed[1], &c.groups, &kept.groups),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "standby: the changed keys cannot be read");
            return;
        }
    };
    if users.is_empty() && groups.is_empty() {
        return;
    }
    match store.note_seen(&users, &groups).await {
        Ok(()) => {
            kept.users.extend(users);
            kept.groups.extend(groups);
        }
        Err(e) => tracing::warn!(error = %e, "standby: cannot keep the changed keys in the store"),
    }
}

/// The changed keys the mirror no longer holds (deleted, or out of scope), not kept yet: those
/// a take-over must look up (the others are in the directory, so in its desired state).
fn gone(
    changed: &std::collections::BTreeSet<crate::model::Key>,
    mirror: &crate::engine::feed::Entries<'_>,
    kept: &std::collections::BTreeSet<crate::model::Key>,
) -> Vec<crate::model::Key> {
    changed
        .iter()
        .filter(|k| !mirror.holds(k) && !kept.contains(*k))
        .cloned()
        .collect()
}

fn apply(feed: &mut Feed, scope: FeedScope, ev: SyncEvent) {
    match ev {
        SyncEvent::Entry {
            state,
            uuid,
            dn,
            entry,
            cookie,
        } => feed.apply_entry(scope, state, &uuid, &dn, entry, cookie),
        SyncEvent::Info(info) => feed.apply_info(scope, info),
    }
}
