//! What the running gateway knows about itself: run counters, operation totals, run durations,
//! readiness. Rendered as Prometheus metrics, JSON and an HTML dashboard.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{EngineError, RunKind, RunReport, Summary};
use crate::state::Store;
use crate::status::{Census, StatusView};

/// How many recent operations the dashboard shows.
const RECENT_OPERATIONS: usize = 25;

/// Where the change feed is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FeedState {
    Connecting,
    /// Catching up from the cookie.
    Refreshing,
    /// Receiving changes as they happen.
    Following,
    /// Lost; reconnecting. The reason is kept for the page.
    Down(String),
}

impl FeedState {
    fn name(&self) -> &'static str {
        match self {
            FeedState::Connecting => "connecting",
            FeedState::Refreshing => "refreshing",
            FeedState::Following => "following",
            FeedState::Down(_) => "down",
        }
    }
}

#[derive(Default)]
struct Inner {
    /// The last 24 hours, for the dashboard's chart.
    activity: activity::Activity,
    /// The last drift report (report-only full resyncs).
    drift: Option<crate::engine::drift::Drift>,
    /// `poll` or `syncrepl`.
    mode: &'static str,
    /// Why the mode is not the one asked for (a change feed the server refused).
    mode_reason: Option<String>,
    /// The last heartbeat found the target not answering (cleared by the next that does, or
    /// by a pass that reaches it).
    target_down: bool,
    /// The change feed, when one is used.
    feed: Option<FeedState>,
    last_finished: Option<Instant>,
    /// The last run did not fail as a whole.
    last_ok: bool,
    last_error: Option<String>,
    /// Gauges kept from the passes (and read once at start), so that no request decodes the
    /// store: the records' counts, objects in error, deletions held, the last success.
    census: Census,
    in_error: usize,
    held: u64,
    last_success: Option<i64>,
    target: Option<String>,
    /// With `[ha]`: this gateway's id and what it knows of the lease.
    ha: Option<(String, super::ha::Role)>,
}

/// Shared between the run loop (writer) and the status server (readers).
pub(crate) struct Board {
    store: Arc<Store>,
    poll: Duration,
    inner: Mutex<Inner>,
    /// Runs, operations and latencies, counted for /metrics.
    counted: metrics::Counted,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn unix_time(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl Board {
    /// The board, with the gauges read from the store once (the only full read it makes).
    pub(crate) fn new(store: Arc<Store>, poll: Duration) -> Board {
        let mut inner = Inner::default();
        match StatusView::read(&store, store.path()) {
            Ok(v) => {
                inner.census = Census {
                    users: v.users,
                    users_active: v.users_active,
                    users_adopted: v.users_adopted,
                    groups: v.groups,
                    memberships: v.memberships,
                };
                inner.in_error = v.errors.len();
                inner.held = v.held_deletions.as_ref().map_or(0, |h| h.count as u64);
                inner.last_success = v
                    .last_success
                    .as_ref()
                    .and_then(|r| unix_time(&r.finished_at));
                inner.target = v.target;
            }
            Err(e) => tracing::warn!(error = %e, "status: cannot read the state store's counts"),
        }
        Board {
            store,
            poll,
            inner: Mutex::new(inner),
            counted: metrics::Counted::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still worth showing.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(&self, kind: RunKind, outcome: &Result<RunReport, EngineError>) {
        let mut i = self.lock();
        let name = match outcome {
            Ok(r) if r.summary.deletions_held > 0 => "held",
            Ok(r) if r.summary.errors > 0 || r.summary.rejected > 0 => "errors",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        self.counted
            .run(kind.name(), name, outcome.as_ref().ok().map(|r| &r.summary));
        i.last_finished = Some(Instant::now());
        if let Ok(r) = outcome {
            i.target_down = false;
            i.held = r.summary.deletions_held;
            i.last_success = Some(time::OffsetDateTime::now_utc().unix_timestamp());
        }
        let census = match outcome {
            Ok(r) => r.summary.census,
            Err(_) => None,
        };
        if let Some(c) = census {
            i.census = c;
        }
        // Small reads (a key, a count of keys), once per pass rather than per request.
        i.in_error = self.store.error_count().unwrap_or(i.in_error);
        if let Ok(Some(t)) = self.store.target_identity() {
            i.target = Some(t);
        }
        i.last_ok = outcome.is_ok();
        i.last_error = outcome.as_ref().err().map(|e| e.to_string());
        if let Ok(r) = outcome {
            let s: &Summary = &r.summary;
            let confirmed = s.users_created
                + s.users_adopted
                + s.users_updated
                + s.users_deactivated
                + s.users_deleted
                + s.groups_created
                + s.groups_adopted
                + s.groups_updated
                + s.groups_deleted
                + s.members_added
                + s.members_removed;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            i.activity.record(now, confirmed, s.errors, &s.latencies);
        }
    }

    /// The report of a full resync that only reports.
    pub(crate) fn set_drift(&self, drift: crate::engine::drift::Drift) {
        self.lock().drift = Some(drift);
    }

    /// How changes are detected (`poll`, `syncrepl`), for the page and the metrics.
    pub(crate) fn set_mode(&self, mode: &'static str) {
        let mut i = self.lock();
        i.mode = mode;
        // Only syncrepl keeps a feed state; a fallback to polling (timestamp, notify or full
        // reads) is judged by its passes, not by the attempt it replaced.
        if mode != "syncrepl" {
            i.feed = None;
        }
    }

    /// What the lease task found of the lease (`[ha]`).
    pub(crate) fn set_role(&self, instance: &str, role: &super::ha::Role) {
        self.lock().ha = Some((instance.to_string(), role.clone()));
    }

    /// One phrase for the role: who pushes.
    fn role_text(i: &Inner) -> Option<String> {
        let (me, role) = i.ha.as_ref()?;
        Some(if role.active {
            format!(
                "active: {me} holds the HA lease (generation {})",
                role.generation
            )
        } else {
            match (&role.holder, &role.problem) {
                (_, Some(why)) => {
                    format!("standby ({me}): the HA lease cannot be read or written: {why}")
                }
                (holder, None) if role.expired => format!(
                    "standby ({me}): the HA lease{} has not been renewed for longer than ha.lease_ttl and this gateway does not take it: nobody pushes",
                    holder.as_ref().map(|h| format!(" of {h}")).unwrap_or_default()
                ),
                (Some(h), None) => format!(
                    "standby ({me}): {h} holds the HA lease (generation {})",
                    role.generation
                ),
                (None, None) => format!("standby ({me}): nobody holds the HA lease yet"),
            }
        })
    }

    /// What the heartbeat found of the target.
    pub(crate) fn set_target_up(&self, up: bool) {
        self.lock().target_down = !up;
    }

    /// Why the service runs in another mode than it would (shown by `/status` and `/metrics`).
    pub(crate) fn set_mode_reason(&self, why: Option<String>) {
        self.lock().mode_reason = why;
    }

    pub(crate) fn set_feed(&self, state: FeedState) {
        self.lock().feed = Some(state);
    }

    /// One line for systemd's status (`systemctl status`): readiness, the change detection,
    /// the records' counts, objects in error.
    pub(crate) fn status_line(&self) -> String {
        let (ready, why) = self.ready();
        let i = self.lock();
        let c = &i.census;
        let role = Board::role_text(&i)
            .map(|r| format!("{r}; "))
            .unwrap_or_default();
        format!(
            "{role}{}; {}; {} users ({} active), {} groups; {} objects in error",
            if ready {
                "ready".to_string()
            } else {
                format!("not ready: {why}")
            },
            if i.mode.is_empty() {
                "change detection starting"
            } else {
                i.mode
            },
            c.users,
            c.users_active,
            c.groups,
            i.in_error
        )
    }

    /// Ready: the last run reached the directory and the target, and not too long ago.
    /// With a change feed, also: the feed is following the directory (passes happen only when
    /// something changes, so an old last run means nothing).
    pub(crate) fn ready(&self) -> (bool, String) {
        let i = self.lock();
        // A standby is ready when it can read the lease and follows the directory: it pushes
        // nothing, so its last run says nothing. Its body starts with "standby".
        if let Some((_, role)) = i.ha.as_ref().filter(|(_, r)| !r.active) {
            let text = Board::role_text(&i).unwrap_or_default();
            if role.problem.is_some() || role.expired {
                return (false, text);
            }
            return match &i.feed {
                Some(FeedState::Down(why)) => {
                    (false, format!("{text}; the change feed is down: {why}"))
                }
                Some(f @ (FeedState::Connecting | FeedState::Refreshing)) => {
                    (false, format!("{text}; the change feed is {}", f.name()))
                }
                _ => (true, text),
            };
        }
        if i.target_down {
            return (
                false,
                "the target does not answer (checked on the heartbeat)".into(),
            );
        }
        if let Some(feed) = &i.feed {
            match feed {
                FeedState::Down(why) => return (false, format!("the change feed is down: {why}")),
                FeedState::Connecting | FeedState::Refreshing => {
                    return (false, format!("the change feed is {}", feed.name()))
                }
                FeedState::Following => {}
            }
            return match i.last_finished {
                None => (false, "no pass has finished yet".into()),
                Some(_) if !i.last_ok => (
                    false,
                    format!(
                        "the last run failed: {}",
                        i.last_error.clone().unwrap_or_default()
                    ),
                ),
                Some(_) => (true, "ok".into()),
            };
        }
        match i.last_finished {
            None => (false, "no run has finished yet".into()),
            Some(_) if !i.last_ok => (
                false,
                format!(
                    "the last run failed: {}",
                    i.last_error.clone().unwrap_or_default()
                ),
            ),
            Some(t) if t.elapsed() > self.poll * 3 + Duration::from_secs(60) => {
                (false, "no run has finished for three poll intervals".into())
            }
            Some(_) => (true, "ok".into()),
        }
    }

    /// The status view, with the counts kept from the passes (no full read of the store).
    pub(crate) fn view(&self) -> Result<StatusView, String> {
        let census = self.lock().census;
        StatusView::with_census(&self.store, self.store.path(), census).map_err(|e| e.to_string())
    }

    pub(crate) fn json(&self) -> String {
        let (ready, reason) = self.ready();
        let (mode, feed, mode_reason, drift, ha) = {
            let i = self.lock();
            let ha = i.ha.as_ref().map(|(me, r)| {
                serde_json::json!({ "instance": me, "role": if r.active { "active" } else { "standby" },
                    "holder": r.holder, "generation": r.generation, "problem": r.problem,
                    "text": Board::role_text(&i) })
            });
            (
                i.mode,
                i.feed.as_ref().map(|f| f.name()),
                i.mode_reason.clone(),
                i.drift.clone(),
                ha,
            )
        };
        let recent = self
            .store
            .recent_operations(RECENT_OPERATIONS)
            .unwrap_or_default();
        let doc = match self.view() {
            Ok(v) => serde_json::json!({ "ready": ready, "reason": reason, "mode": mode,
                "mode_reason": mode_reason, "change_feed": feed, "store": v,
                "recent_operations": recent, "drift": drift, "ha": ha }),
            Err(e) => serde_json::json!({ "ready": false, "reason": e }),
        };
        doc.to_string()
    }

    pub(crate) fn metrics(&self) -> String {
        let ready = self.ready().0;
        let moment = {
            let i = self.lock();
            metrics::Moment {
                ready,
                census: i.census,
                in_error: i.in_error,
                held: i.held,
                last_success: i.last_success,
                target: i.target.clone(),
                feed_up: i.feed.as_ref().map(|f| *f == FeedState::Following),
                fell_back: i.mode_reason.is_some(),
                drift: i
                    .drift
                    .as_ref()
                    .map(|d| d.objects.len() + d.dangling_members.len()),
                ha: i.ha.as_ref().map(|(_, r)| (r.active, r.generation)),
            }
        };
        metrics::render(&self.counted, moment)
    }
}

mod activity;
mod drift;
mod metrics;
mod page;
#[cfg(test)]
mod tests;
