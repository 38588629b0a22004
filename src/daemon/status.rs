//! What the running gateway knows about itself: run counters, operation totals, run durations,
//! readiness. Rendered as Prometheus metrics, JSON and an HTML dashboard.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{EngineError, RunKind, RunReport, Summary};
use crate::state::Store;
use crate::status::{Census, StatusView};

/// Upper bounds (seconds) of the run-duration histogram buckets.
const DURATION_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Upper bounds (seconds) of the change-to-push latency histogram buckets.
/// Fine below 200 ms, where the syncrepl goal (p50 20 ms, p99 100 ms) is judged.
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
];

/// How many recent operations the dashboard shows.
const RECENT_OPERATIONS: usize = 25;

/// A Prometheus histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (b, le) in bounds.iter().enumerate() {
            if v <= *le {
                self.buckets[b] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, bounds: &[f64]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, le) in bounds.iter().enumerate() {
            let n = self.buckets.get(b).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

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
    /// (kind, outcome) -> runs.
    runs: BTreeMap<(&'static str, &'static str), u64>,
    /// operation -> count, summed over runs.
    operations: BTreeMap<&'static str, u64>,
    durations: Histogram,
    latency: Histogram,
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
}

/// Shared between the run loop (writer) and the status server (readers).
pub(crate) struct Board {
    store: Arc<Store>,
    poll: Duration,
    inner: Mutex<Inner>,
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

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        *i.runs.entry((kind.name(), name)).or_default() += 1;
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
            for (op, n) in [
                ("create_user", s.users_created),
                ("adopt_user", s.users_adopted),
                ("update_user", s.users_updated),
                ("deactivate_user", s.users_deactivated),
                ("delete_user", s.users_deleted),
                ("create_group", s.groups_created),
                ("adopt_group", s.groups_adopted),
                ("update_group", s.groups_updated),
                ("delete_group", s.groups_deleted),
                ("add_member", s.members_added),
                ("remove_member", s.members_removed),
                ("failed", s.errors),
            ] {
                *i.operations.entry(op).or_default() += n;
            }
            i.durations.observe(&DURATION_BUCKETS, s.seconds);
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
            for l in &s.latencies {
                i.latency.observe(&LATENCY_BUCKETS, *l);
            }
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
        format!(
            "{}; {}; {} users ({} active), {} groups; {} objects in error",
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
        let (mode, feed, mode_reason, drift) = {
            let i = self.lock();
            (
                i.mode,
                i.feed.as_ref().map(|f| f.name()),
                i.mode_reason.clone(),
                i.drift.clone(),
            )
        };
        let recent = self
            .store
            .recent_operations(RECENT_OPERATIONS)
            .unwrap_or_default();
        let doc = match self.view() {
            Ok(v) => serde_json::json!({ "ready": ready, "reason": reason, "mode": mode,
                "mode_reason": mode_reason, "change_feed": feed, "store": v,
                "recent_operations": recent, "drift": drift }),
            Err(e) => serde_json::json!({ "ready": false, "reason": e }),
        };
        doc.to_string()
    }

    pub(crate) fn metrics(&self) -> String {
        let mut out = String::new();
        let i = self.lock();
        let _ = writeln!(out, "# HELP dirbridge_up The gateway is running.\n# TYPE dirbridge_up gauge\ndirbridge_up 1");
        let _ = writeln!(
            out,
            "# HELP dirbridge_ready The last run succeeded recently.\n# TYPE dirbridge_ready gauge"
        );
        drop(i);
        let _ = writeln!(out, "dirbridge_ready {}", u8::from(self.ready().0));
        let i = self.lock();
        if let Some(d) = &i.drift {
            drift::metrics(d, &mut out);
        }
        let _ = writeln!(out, "# HELP dirbridge_runs_total Runs by kind and outcome.\n# TYPE dirbridge_runs_total counter");
        for ((kind, outcome), n) in &i.runs {
            let _ = writeln!(
                out,
                "dirbridge_runs_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP dirbridge_operations_total Operations confirmed by the target (failed: refused or unanswered).\n# TYPE dirbridge_operations_total counter"
        );
        for (op, n) in &i.operations {
            let _ = writeln!(out, "dirbridge_operations_total{{op=\"{op}\"}} {n}");
        }
        i.durations.render(
            &mut out,
            "dirbridge_run_duration_seconds",
            "Duration of finished runs.",
            &DURATION_BUCKETS,
        );
        i.latency.render(
            &mut out,
            "dirbridge_change_to_push_seconds",
            "From a directory change (its entryCSN) to the target's confirmation, change feeds only.",
            &LATENCY_BUCKETS,
        );
        if i.mode_reason.is_some() {
            let _ = writeln!(out, "# HELP dirbridge_change_feed_fallback The service polls because the server refused the change feed (see /status mode_reason).\n# TYPE dirbridge_change_feed_fallback gauge");
            let _ = writeln!(out, "dirbridge_change_feed_fallback{{from=\"syncrepl\"}} 1");
        }
        if let Some(feed) = &i.feed {
            let _ = writeln!(out, "# HELP dirbridge_change_feed_up The change feed is following the directory.\n# TYPE dirbridge_change_feed_up gauge");
            let _ = writeln!(
                out,
                "dirbridge_change_feed_up {}",
                u8::from(*feed == FeedState::Following)
            );
        }
        let c = i.census;
        let _ = writeln!(out, "# HELP dirbridge_objects Objects under management, by kind and state.\n# TYPE dirbridge_objects gauge");
        let _ = writeln!(
            out,
            "dirbridge_objects{{kind=\"user\",state=\"active\"}} {}",
            c.users_active
        );
        let _ = writeln!(
            out,
            "dirbridge_objects{{kind=\"user\",state=\"inactive\"}} {}",
            c.users.saturating_sub(c.users_active)
        );
        let _ = writeln!(
            out,
            "dirbridge_objects{{kind=\"group\",state=\"active\"}} {}",
            c.groups
        );
        let _ = writeln!(out, "# HELP dirbridge_objects_in_error Objects the last runs could not read or push.\n# TYPE dirbridge_objects_in_error gauge");
        let _ = writeln!(out, "dirbridge_objects_in_error {}", i.in_error);
        let _ = writeln!(out, "# HELP dirbridge_deletions_held Deactivations and deletions held by the accidental-deletion guard, awaiting `dirbridge approve-deletes`.\n# TYPE dirbridge_deletions_held gauge");
        let _ = writeln!(out, "dirbridge_deletions_held {}", i.held);
        if let Some(ts) = i.last_success {
            let _ = writeln!(out, "# HELP dirbridge_last_success_timestamp_seconds When the last run that did not fail ended.\n# TYPE dirbridge_last_success_timestamp_seconds gauge");
            let _ = writeln!(out, "dirbridge_last_success_timestamp_seconds {ts}");
        }
        if let Some(t) = &i.target {
            let _ = writeln!(out, "# HELP dirbridge_target_info The target the records describe.\n# TYPE dirbridge_target_info gauge");
            let _ = writeln!(out, "dirbridge_target_info{{url=\"{}\"}} 1", label(t));
        }
        out
    }
}

mod activity;
mod drift;
mod page;
#[cfg(test)]
mod tests;
