//! What the running gateway knows about itself: run counters, operation totals, run durations,
//! readiness. Rendered as Prometheus metrics, JSON and an HTML dashboard.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{EngineError, RunKind, RunReport, Summary};
use crate::state::Store;
use crate::status::StatusView;

/// Upper bounds (seconds) of the run-duration histogram buckets.
const DURATION_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Default)]
struct Inner {
    /// (kind, outcome) -> runs.
    runs: BTreeMap<(&'static str, &'static str), u64>,
    /// operation -> count, summed over runs.
    operations: BTreeMap<&'static str, u64>,
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_count: u64,
    duration_sum: f64,
    last_finished: Option<Instant>,
    /// The last run did not fail as a whole.
    last_ok: bool,
    last_error: Option<String>,
}

/// Shared between the run loop (writer) and the status server (readers).
pub struct Board {
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

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Board {
    pub fn new(store: Arc<Store>, poll: Duration) -> Board {
        Board {
            store,
            poll,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still worth showing.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, kind: RunKind, outcome: &Result<RunReport, EngineError>) {
        let mut i = self.lock();
        let name = match outcome {
            Ok(r) if r.summary.errors > 0 || r.summary.rejected > 0 => "errors",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        *i.runs.entry((kind.name(), name)).or_default() += 1;
        i.last_finished = Some(Instant::now());
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
            for (b, le) in DURATION_BUCKETS.iter().enumerate() {
                if s.seconds <= *le {
                    i.duration_buckets[b] += 1;
                }
            }
            i.duration_count += 1;
            i.duration_sum += s.seconds;
        }
    }

    /// Ready: the last run reached the directory and the target, and not too long ago.
    pub fn ready(&self) -> (bool, String) {
        let i = self.lock();
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

    pub fn view(&self) -> Result<StatusView, String> {
        StatusView::read(&self.store, self.store.path()).map_err(|e| e.to_string())
    }

    pub fn json(&self) -> String {
        let (ready, reason) = self.ready();
        let doc = match self.view() {
            Ok(v) => serde_json::json!({ "ready": ready, "reason": reason, "store": v }),
            Err(e) => serde_json::json!({ "ready": false, "reason": e }),
        };
        doc.to_string()
    }

    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let view = self.view().ok();
        let i = self.lock();
        let _ = writeln!(out, "# HELP dirbridge_up The gateway is running.\n# TYPE dirbridge_up gauge\ndirbridge_up 1");
        let _ = writeln!(
            out,
            "# HELP dirbridge_ready The last run succeeded recently.\n# TYPE dirbridge_ready gauge"
        );
        drop(i);
        let _ = writeln!(out, "dirbridge_ready {}", u8::from(self.ready().0));
        let i = self.lock();
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
        let _ = writeln!(out, "# HELP dirbridge_run_duration_seconds Duration of finished runs.\n# TYPE dirbridge_run_duration_seconds histogram");
        for (b, le) in DURATION_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "dirbridge_run_duration_seconds_bucket{{le=\"{le}\"}} {}",
                i.duration_buckets[b]
            );
        }
        let _ = writeln!(
            out,
            "dirbridge_run_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            i.duration_count
        );
        let _ = writeln!(out, "dirbridge_run_duration_seconds_sum {}", i.duration_sum);
        let _ = writeln!(
            out,
            "dirbridge_run_duration_seconds_count {}",
            i.duration_count
        );
        drop(i);
        if let Some(v) = view {
            let _ = writeln!(out, "# HELP dirbridge_objects Objects under management, by kind and state.\n# TYPE dirbridge_objects gauge");
            let _ = writeln!(
                out,
                "dirbridge_objects{{kind=\"user\",state=\"active\"}} {}",
                v.users_active
            );
            let _ = writeln!(
                out,
                "dirbridge_objects{{kind=\"user\",state=\"inactive\"}} {}",
                v.users - v.users_active
            );
            let _ = writeln!(
                out,
                "dirbridge_objects{{kind=\"group\",state=\"active\"}} {}",
                v.groups
            );
            let _ = writeln!(out, "# HELP dirbridge_objects_in_error Objects the last runs could not read or push.\n# TYPE dirbridge_objects_in_error gauge");
            let _ = writeln!(out, "dirbridge_objects_in_error {}", v.errors.len());
            if let Some(ts) = v.last_success.as_ref().and_then(|r| {
                time::OffsetDateTime::parse(
                    &r.finished_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            }) {
                let _ = writeln!(out, "# HELP dirbridge_last_success_timestamp_seconds When the last run that did not fail ended.\n# TYPE dirbridge_last_success_timestamp_seconds gauge");
                let _ = writeln!(
                    out,
                    "dirbridge_last_success_timestamp_seconds {}",
                    ts.unix_timestamp()
                );
            }
            if let Some(t) = &v.target {
                let _ = writeln!(out, "# HELP dirbridge_target_info The target the records describe.\n# TYPE dirbridge_target_info gauge");
                let _ = writeln!(out, "dirbridge_target_info{{url=\"{}\"}} 1", label(t));
            }
        }
        out
    }

    /// The sync status dashboard: last sync, counts, objects in error. Every value is escaped.
    pub fn html(&self) -> String {
        let (ready, reason) = self.ready();
        let mut body = String::new();
        match self.view() {
            Ok(v) => {
                let last = v
                    .last_run
                    .as_ref()
                    .map(|r| format!("#{} {} at {}: {}", r.run, r.kind, r.finished_at, r.outcome))
                    .unwrap_or_else(|| "never".into());
                let success = v
                    .last_success
                    .as_ref()
                    .map(|r| r.finished_at.clone())
                    .unwrap_or_else(|| "never".into());
                let _ = write!(
                    body,
                    "<table><tr><th>Status</th><td id=\"ready\" class=\"{cls}\">{state}</td></tr>\
                     <tr><th>Last run</th><td id=\"last-run\">{last}</td></tr>\
                     <tr><th>Last success</th><td id=\"last-success\">{success}</td></tr>\
                     <tr><th>Target</th><td>{target}</td></tr>\
                     <tr><th>Users</th><td id=\"users\">{users} ({active} active, {adopted} adopted)</td></tr>\
                     <tr><th>Groups</th><td id=\"groups\">{groups} ({members} memberships)</td></tr></table>",
                    cls = if ready { "ok" } else { "bad" },
                    state = html_escape(&if ready { "ready".to_string() } else { format!("not ready: {reason}") }),
                    last = html_escape(&last),
                    success = html_escape(&success),
                    target = html_escape(v.target.as_deref().unwrap_or("(none yet)")),
                    users = v.users,
                    active = v.users_active,
                    adopted = v.users_adopted,
                    groups = v.groups,
                    members = v.memberships,
                );
                if let Some(summary) = v.last_run.as_ref().map(|r| &r.summary) {
                    let _ = write!(body, "<h2>Last run</h2><table id=\"last-summary\">");
                    if let Some(map) = summary.as_object() {
                        for (k, val) in map {
                            let _ = write!(
                                body,
                                "<tr><th>{}</th><td>{}</td></tr>",
                                html_escape(k),
                                html_escape(&val.to_string())
                            );
                        }
                    }
                    let _ = write!(body, "</table>");
                }
                let _ = write!(body, "<h2>Objects in error ({})</h2>", v.errors.len());
                if v.errors.is_empty() {
                    let _ = write!(body, "<p id=\"errors\">None.</p>");
                } else {
                    let _ = write!(body, "<table id=\"errors\"><tr><th>Object</th><th>Operation</th><th>Attempts</th><th>Since</th><th>Reason</th></tr>");
                    for e in &v.errors {
                        let _ = write!(
                            body,
                            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            html_escape(&e.label),
                            html_escape(&e.operation),
                            e.attempts,
                            html_escape(&e.first_seen),
                            html_escape(&e.reason)
                        );
                    }
                    let _ = write!(body, "</table>");
                }
            }
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"bad\">Cannot read the state store: {}</p>",
                    html_escape(&e)
                );
            }
        }
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>dirbridge status</title>\
             <meta http-equiv=\"refresh\" content=\"15\">\
             <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}\
             td,th{{padding:.2em .5em;border-bottom:1px solid #ddd}}.ok{{color:#070}}.bad{{color:#b00}}</style>\
             </head><body><h1>dirbridge sync status</h1>{body}\
             <p><a href=\"/metrics\">metrics</a> · <a href=\"/status\">status JSON</a></p></body></html>"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_cannot_break_out_of_the_page_or_a_label() {
        assert_eq!(
            html_escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
