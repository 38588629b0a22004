//! `dirbridge run`: the gateway as a service. It follows the directory's change feed (RFC 4533
//! syncrepl) where there is one, or syncs on a poll interval; runs the full resync on its
//! schedule; backs off after failures; serves its status; and stops cleanly on SIGTERM or Ctrl-C.

mod feed;
pub(crate) mod fenced;
pub(crate) mod ha;
mod http;
mod notify;
mod status;
mod systemd;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use status::Board;

use crate::config::{ChangeFeed, Config, Profile, ResyncMode};
use crate::engine::feed::{timestamp, Feed, FeedKind};
use crate::engine::{self, RunKind};
use crate::source::ldap::Session;
use crate::state::Store;
use crate::target::Target;
use feed::FeedExit;
use ha::Ha;

/// The longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Waits for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The delay before the next attempt after `failures` failed runs in a row: the poll interval,
/// doubled per failure up to [`MAX_BACKOFF`], with up to a quarter of jitter so that gateways
/// restarted together do not hammer the directory together.
fn delay(poll: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return poll;
    }
    let base = crate::backoff::doubling(Duration::from_secs(2), failures, MAX_BACKOFF);
    crate::backoff::jittered(base).min(poll.max(base))
}

/// Set once a shutdown signal arrives; every wait in the loops also waits on it.
/// How long a stop waits for the pass in progress to end before abandoning it (what it
/// confirmed is saved either way; a finished change-feed pass also saves its cookie).
pub(super) const STOP_GRACE: Duration = Duration::from_secs(10);

pub(crate) struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Resolves once a stop was asked for (at once if it already was).
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    fn on_signal() -> Stop {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            systemd::stopping();
            let _ = tx.send(true);
            // Keep the sender alive so receivers see `true`, not a closed channel.
            std::future::pending::<()>().await;
        });
        Stop(rx)
    }
}

/// Jittered exponential backoff for reconnections: 2 s doubled per failure, at most
/// [`MAX_BACKOFF`], plus up to a quarter of jitter.
pub(crate) fn backoff(failures: u32) -> Duration {
    crate::backoff::jittered(crate::backoff::doubling(
        Duration::from_secs(2),
        failures,
        MAX_BACKOFF,
    ))
}

/// The wait before the next poll: the poll interval (or the failure backoff), shortened to the
/// notification fallback while AD change notification is expected but not available.
fn poll_wait(
    poll: Duration,
    failures: u32,
    notify_available: Option<bool>,
    fallback: Duration,
) -> Duration {
    let wait = delay(poll, failures);
    match notify_available {
        Some(false) if failures == 0 => wait.min(fallback),
        _ => wait,
    }
}

/// Runs until a shutdown signal. Returns once state is flushed.
pub(crate) async fn run<T: Target>(
    cfg: &Config,
    store: Arc<Store>,
    target: &T,
    standby_only: bool,
) -> anyhow::Result<()> {
    let board = Arc::new(Board::new(store.clone(), cfg.daemon.poll_interval));
    if let Some(addr) = cfg.daemon.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("daemon.listen: cannot listen on {addr}: {e}"))?;
        let token = cfg.daemon.status_token.clone();
        if token.is_some() {
            tracing::info!(%addr, "status server listening; /status, /metrics and the dashboard require the bearer token (daemon.status_token), /healthz and /readyz are open");
        } else {
            tracing::info!(%addr, "status server listening (loopback only, no token)");
        }
        tokio::spawn(http::serve(listener, board.clone(), token));
    }
    let mut stop = Stop::on_signal();
    let mut ha = match &cfg.ha {
        Some(h) => {
            tracing::info!(instance = %h.instance, lease = %h.lease_dn, standby_only, "HA: this gateway pushes only while it holds the lease");
            Ha::start(&cfg.ldap, h, Some(board.clone()), standby_only)
        }
        None => Ha::off(),
    };
    // Every write is checked against the lease first (a pass in progress is also abandoned
    // once it is lost).
    let target = &fenced::Fenced::new(target, ha.fence());
    systemd::ready(&board);
    systemd::spawn_notifier(board.clone());
    let follow = match cfg.daemon.change_feed {
        ChangeFeed::Poll => false,
        _ if cfg.ldap.profile == Profile::ActiveDirectory => false,
        ChangeFeed::Syncrepl | ChangeFeed::Timestamp => true,
        ChangeFeed::Notify => false,
        ChangeFeed::Auto => match cfg.ldap.syncrepl_unfit() {
            Some(why) => {
                tracing::info!("reading everything each poll rather than following changes: {why}");
                false
            }
            None => true,
        },
    };
    let stopped = match (follow, cfg.daemon.change_feed) {
        (true, ChangeFeed::Timestamp) => false,
        (true, mode) => {
            let required = mode == ChangeFeed::Syncrepl;
            match feed::run(cfg, &store, target, &board, &mut stop, &mut ha, required).await {
                Ok(FeedExit::Stopped) => true,
                Ok(FeedExit::Unsupported) => false,
                Err(e) => {
                    ha.release().await;
                    return Err(e);
                }
            }
        }
        (false, _) => false,
    };
    if !stopped {
        let timestamps = if follow {
            Some(Feed::load(cfg, &store, FeedKind::Timestamp)?)
        } else {
            None
        };
        poll(cfg, &store, target, &board, &mut stop, &mut ha, timestamps).await;
    }
    // After the loops: nothing is in flight when the lease goes.
    ha.release().await;
    store.flush_now().await?;
    tracing::info!("stopped; state saved");
    Ok(())
}

/// How a take-over's resync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TakeOver {
    Done,
    Failed,
    /// The lease was lost again during it (abandoned).
    Lost,
    Stopped,
}

/// When this gateway has just taken the HA lease over: a resync before any pass (the gateway
/// before it may have left changes half-sent), with the keys its change feed saw change while
/// it was standby (`also`).
pub(super) async fn take_over<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    board: &Board,
    ha: &mut Ha,
    stop: &mut Stop,
    also: &engine::Also,
) -> TakeOver {
    let Some(take) = ha.to_reconcile() else {
        return TakeOver::Done;
    };
    // With the keys an earlier run of this gateway saw as standby (kept in the store).
    let mut also = also.clone();
    match store.seen() {
        Ok((users, groups)) => {
            also.users.extend(users);
            also.groups.extend(groups);
        }
        Err(e) => {
            tracing::warn!(error = %e, "HA: the keys kept from standby cannot be read; the take-over looks up the others")
        }
    }
    let also = &also;
    tracing::info!(
        changed_while_standby = also.users.len() + also.groups.len(),
        "HA: reconciling with the target before pushing (a resync: what the previous gateway left is looked up by externalId)"
    );
    let outcome = {
        let mut resync = std::pin::pin!(engine::run_takeover(cfg, store, target, also));
        tokio::select! {
            r = &mut resync => r,
            _ = ha.lost() => {
                tracing::warn!("HA: the lease was lost during the take-over's resync: abandoned");
                return TakeOver::Lost;
            }
            _ = stop.wait() => return TakeOver::Stopped,
        }
    };
    board.record(RunKind::Resync, &outcome);
    match outcome {
        Ok(report) => {
            tracing::info!(
                run = report.run,
                "{}",
                report.summary.line("take-over resync")
            );
            ha.reconciled(take);
            if let Err(e) = store.clear_seen().await {
                tracing::warn!(error = %e, "HA: cannot forget the keys kept from standby (the next take-over looks them up again)");
            }
            TakeOver::Done
        }
        Err(e) => {
            tracing::error!(error = %e, "HA: the take-over's resync failed; nothing else is pushed until it succeeds");
            TakeOver::Failed
        }
    }
}

/// A scheduled full resync in report mode: what a resync would repair, read and put on the
/// board (/status, /metrics, the dashboard); nothing is sent or written.
pub(super) async fn report_drift<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    board: &Board,
) {
    let records = match store.snapshot() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "drift report: cannot read the records");
            return;
        }
    };
    match engine::drift::drift(cfg, &records, target).await {
        Ok((drift, _)) => {
            tracing::info!(
                objects = drift.objects.len(),
                dangling_members = drift.dangling_members.len(),
                "drift report (daemon.full_resync_mode = \"report\"): nothing was repaired"
            );
            board.set_drift(drift);
        }
        Err(e) => tracing::error!(error = %e, "drift report failed"),
    }
}

/// One polled pass: with a timestamp feed, the entries changed since its watermark and the
/// keys in scope; otherwise a full (or, on AD, uSNChanged) read.
async fn pass<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    kind: RunKind,
    feed: Option<&mut Feed>,
    notified: Option<std::time::SystemTime>,
) -> Result<engine::RunReport, engine::EngineError> {
    match (kind, feed) {
        (RunKind::Sync, Some(feed)) => {
            let read = engine::guarded(async {
                let mut session = Session::open(&cfg.ldap).await?;
                let mut read = timestamp::poll(&mut session, cfg, feed).await;
                if read.is_ok() {
                    if let Err(e) = engine::feed::refetch(&mut session, cfg, feed).await {
                        read = Err(e);
                    }
                }
                session.close().await;
                Ok(read?)
            })
            .await?;
            tracing::debug!(
                changed = read.changed,
                listed = read.listed,
                "modifyTimestamp poll"
            );
            if let Err(e) = feed.write_ahead(store, engine::feed::write_ahead_at()) {
                tracing::warn!(error = %e, "cannot write the mirror ahead of its save; holding it in memory");
            }
            let report = engine::run_feed(cfg, store, target, feed).await;
            if feed.missed_a_change() {
                // Loaded again from what was saved: the next poll reads the change again (a
                // store that cannot be read is tried again after the next failed pass).
                match Feed::load(cfg, store, FeedKind::Timestamp) {
                    Ok(loaded) => *feed = loaded,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load the saved mirror again")
                    }
                }
            }
            report
        }
        (RunKind::Sync, None) => match notified {
            Some(at) => engine::run_notified(cfg, store, target, at).await,
            None => engine::run_scheduled(cfg, store, target, kind).await,
        },
        _ => engine::run_scheduled(cfg, store, target, kind).await,
    }
}

/// Polls: a pass every `poll_interval` (incremental where configured), the resync on its
/// schedule, backoff after failures.
async fn poll<T: Target>(
    cfg: &Config,
    store: &Store,
    target: &T,
    board: &Board,
    stop: &mut Stop,
    ha: &mut Ha,
    mut timestamps: Option<Feed>,
) {
    // On AD, change notifications wake the loop up for an incremental read.
    let notifier = (cfg.ldap.profile == Profile::ActiveDirectory
        && cfg.daemon.change_feed != ChangeFeed::Poll)
        .then(|| notify::spawn(cfg.ldap.clone()));
    board.set_mode(match (&timestamps, &notifier) {
        (Some(_), _) => "timestamp",
        (None, Some(_)) => "notify",
        (None, None) => "poll",
    });
    let mut failures = 0u32;
    let mut next_resync = cfg
        .daemon
        .full_resync
        .next_after(time::OffsetDateTime::now_utc());
    tracing::info!(
        poll = ?cfg.daemon.poll_interval,
        next_resync = ?next_resync.map(|t| t.to_string()),
        "dirbridge running"
    );
    // When the last change notification arrived (AD): the change time of the pass it asks for.
    let mut notified_at: Option<std::time::SystemTime> = None;
    // While standby: the keys seen leave the scope (what a take-over looks up), the last
    // listing of the scope they are told by, when it was made and when the next is due.
    let mut seen = engine::Also::default();
    let mut last_listing: Option<engine::Also> = None;
    let mut listed = tokio::time::Instant::now();
    let mut next_list = listed;
    loop {
        // A standby lists the keys in scope every poll (after a change notification, within
        // daemon.notify_fallback) and waits for the lease; a gateway that just took it
        // reconciles first.
        if !ha.active() {
            if tokio::time::Instant::now() >= next_list {
                let mut listed_now = engine::Also::default();
                let result = tokio::select! {
                    r = engine::standby::list_keys(cfg, &mut listed_now) => r,
                    _ = stop.wait() => return,
                };
                match result {
                    Ok(()) => {
                        // What left since the last listing, kept in the store too (a restart
                        // before the take-over); what is listed is in the directory, so in a
                        // take-over's desired state anyway.
                        if let Some(before) = last_listing.take() {
                            let gone = engine::standby::left(&before, &listed_now);
                            if let Err(e) = store.note_seen(&gone.users, &gone.groups).await {
                                tracing::warn!(error = %e, "standby: cannot keep the keys seen in the store");
                            }
                            seen.users.extend(gone.users);
                            seen.groups.extend(gone.groups);
                        }
                        last_listing = Some(listed_now);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "standby: cannot list the keys in scope (a take-over looks up those seen leaving before)")
                    }
                }
                listed = tokio::time::Instant::now();
                next_list = listed + cfg.daemon.poll_interval;
            }
            let changed = async {
                match &notifier {
                    Some(n) => n.changed.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ha.changed() => {}
                _ = tokio::time::sleep_until(next_list) => {}
                _ = changed => next_list = next_list.min(listed + cfg.daemon.notify_fallback),
                _ = stop.wait() => return,
            }
            continue;
        }
        match take_over(cfg, store, target, board, ha, stop, &seen).await {
            TakeOver::Done => {
                seen = engine::Also::default();
                last_listing = None;
            }
            TakeOver::Lost => continue,
            TakeOver::Stopped => return,
            TakeOver::Failed => {
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures)) => {}
                    _ = stop.wait() => return,
                }
                continue;
            }
        }
        let now = time::OffsetDateTime::now_utc();
        let mut kind = match next_resync {
            Some(t) if now >= t => RunKind::Resync,
            _ => RunKind::Sync,
        };
        if kind == RunKind::Resync && cfg.daemon.full_resync_mode == ResyncMode::Report {
            tokio::select! {
                _ = report_drift(cfg, store, target, board) => {}
                _ = stop.wait() => return,
            }
            next_resync = cfg
                .daemon
                .full_resync
                .next_after(time::OffsetDateTime::now_utc());
            kind = RunKind::Sync;
        }
        let notified = notified_at.take().filter(|_| kind == RunKind::Sync);
        let outcome = tokio::select! {
            r = pass(cfg, store, target, kind, timestamps.as_mut(), notified) => Some(r),
            _ = ha.lost() => {
                tracing::warn!("HA: the lease was lost: the pass in progress was abandoned; confirmed changes are saved");
                if timestamps.is_some() {
                    // Its watermark may have moved past what was pushed: this gateway resumes
                    // from what was saved when it holds the lease again.
                    match Feed::load(cfg, store, FeedKind::Timestamp) {
                        Ok(loaded) => timestamps = Some(loaded),
                        Err(e) => tracing::error!(error = %e, "cannot load the saved mirror again"),
                    }
                }
                continue;
            }
            _ = stop.wait() => None,
        };
        let Some(outcome) = outcome else {
            tracing::info!(
                "stopping: the run in progress was abandoned; confirmed changes are saved"
            );
            return;
        };
        match &outcome {
            Ok(report) => {
                failures = 0;
                tracing::info!(run = report.run, "{}", report.summary.line(kind.name()));
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::error!(error = %e, failures, "{} failed", kind.name());
            }
        }
        board.record(kind, &outcome);
        if kind == RunKind::Resync {
            next_resync = cfg
                .daemon
                .full_resync
                .next_after(time::OffsetDateTime::now_utc());
        }
        let wait = poll_wait(
            cfg.daemon.poll_interval,
            failures,
            notifier.as_ref().map(|n| *n.available.borrow()),
            cfg.daemon.notify_fallback,
        );
        // The scheduled resync is not kept waiting for the next poll (a daily 03:00 with an
        // hourly poll ran up to an hour late); after failures, the backoff still counts.
        let wait = match next_resync {
            Some(t) if failures == 0 => wait.min(
                std::time::Duration::try_from(t - time::OffsetDateTime::now_utc())
                    .unwrap_or(std::time::Duration::ZERO),
            ),
            _ => wait,
        };
        let changed = async {
            match &notifier {
                Some(n) => n.changed.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changed, if failures == 0 => {
                notified_at = Some(std::time::SystemTime::now());
                // A burst of changes gives a burst of notifications: let it settle.
                tokio::time::sleep(cfg.daemon.coalesce).await;
                tracing::debug!("change notification");
            }
            _ = ha.lost() => {}
            _ = stop.wait() => {
                tracing::info!("stopping");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_notifications_ad_is_polled_on_the_fallback_interval() {
        let (poll, fallback) = (Duration::from_secs(3600), Duration::from_secs(5));
        assert_eq!(poll_wait(poll, 0, Some(false), fallback), fallback);
        assert_eq!(poll_wait(poll, 0, Some(true), fallback), poll);
        assert_eq!(poll_wait(poll, 0, None, fallback), poll);
        // After failures the backoff rules, not the fallback.
        assert!(poll_wait(poll, 3, Some(false), fallback) >= Duration::from_secs(8));
        let b = backoff(1);
        assert!(
            b >= Duration::from_secs(2) && b <= Duration::from_millis(2500),
            "{b:?}"
        );
        assert!(backoff(40) <= MAX_BACKOFF + MAX_BACKOFF / 4);
    }

    #[test]
    fn backoff_grows_is_capped_and_never_passes_the_poll_interval_needlessly() {
        let poll = Duration::from_secs(60);
        assert_eq!(delay(poll, 0), poll);
        let d1 = delay(poll, 1);
        assert!(
            d1 >= Duration::from_secs(2) && d1 <= Duration::from_millis(2500),
            "{d1:?}"
        );
        let d5 = delay(poll, 5);
        assert!(
            d5 >= Duration::from_secs(32) && d5 <= Duration::from_secs(40),
            "{d5:?}"
        );
        assert!(delay(poll, 30) <= MAX_BACKOFF + MAX_BACKOFF / 4);
        assert!(delay(Duration::from_secs(1), 3) >= Duration::from_secs(8));
    }
}
