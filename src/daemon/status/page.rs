//! The dashboard an administrator keeps open: the state in one sentence, what needs a person
//! first (objects in error with what to do, removals held with the command that approves them,
//! drift found), how changes are detected and why, a chart of the last 24 hours, and the recent
//! operations. Times read "2 min ago", the exact time on hover (in the viewer's time zone, by a
//! few lines of inline script; UTC without it). Everything from the directory or the target is
//! escaped. Nothing is loaded from anywhere.

use std::fmt::Write;

use time::OffsetDateTime;

use super::{html_escape, Board, FeedState, RECENT_OPERATIONS};
use crate::state::ObjectError;
use crate::status::StatusView;

/// `<time>` for an RFC 3339 instant: "5 min ago" (or "in 5 min"), the instant on hover.
pub(super) fn when(rfc3339: &str, now: OffsetDateTime) -> String {
    let Ok(t) = OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
    else {
        return html_escape(rfc3339);
    };
    let secs = (now - t).whole_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let span = match n {
        0..=9 => {
            return format!(
                "<time datetime=\"{}\" title=\"{}\">just now</time>",
                machine(t),
                iso(t)
            )
        }
        10..=119 => format!("{n} s"),
        120..=7199 => format!("{} min", n / 60),
        7200..=172_799 => format!("{} h", n / 3600),
        _ => format!("{} days", n / 86_400),
    };
    let text = if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    };
    format!(
        "<time datetime=\"{}\" title=\"{}\">{text}</time>",
        machine(t),
        iso(t)
    )
}

/// As HTML's `datetime` wants it: `2026-11-28T09:39:47Z`.
fn machine(t: OffsetDateTime) -> String {
    iso(t).replacen(' ', "T", 1).replace(" UTC", "Z")
}

/// To the second, in UTC.
fn iso(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What an administrator can do about an object in error, from what the error says.
fn what_to_do(e: &ObjectError) -> &'static str {
    let reason = e.reason.to_ascii_lowercase();
    if e.operation == "read" || reason.contains("used by more than one entry") {
        "mend the entry in the directory (or the mapping); it is read again at the next pass"
    } else if matches!(e.http_status, Some(401 | 403)) {
        "the target refused the credentials for this object: check the token's rights"
    } else if matches!(e.http_status, Some(400 | 409 | 422)) {
        "the target refused the value: compare the object with the target's rules (dirbridge test-mapping shows the request)"
    } else if e.http_status.is_some_and(|s| s >= 500) || reason.contains("no answer") {
        "the target failed: retried at the time shown, nothing to do unless it keeps failing"
    } else {
        "retried at the time shown; `dirbridge test-mapping` shows what is sent"
    }
}

impl Board {
    pub(crate) fn html(&self) -> String {
        let now = OffsetDateTime::now_utc();
        let (ready, reason) = self.ready();
        let mut body = String::new();
        match self.view() {
            Ok(v) => self.page_body(&v, ready, &reason, now, &mut body),
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
             <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}th{{text-align:left;padding-right:1em}}\
             td,th{{padding:.2em .5em;border-bottom:1px solid #ddd;vertical-align:top}}.ok{{color:#070}}.bad{{color:#b00}}\
             .sentence{{font-size:1.2em}}td.todo{{min-width:16em}}time{{border-bottom:1px dotted #999}}</style>\
             </head><body><h1>dirbridge sync status</h1>{body}\
             <p><a href=\"/metrics\">metrics</a> · <a href=\"/status\">status JSON</a></p>\
             <script>for(const t of document.querySelectorAll('time[datetime]')){{\
             const d=new Date(t.getAttribute('datetime'));\
             if(!isNaN(d))t.title=d.toLocaleString();}}</script></body></html>"
        )
    }

    fn page_body(
        &self,
        v: &StatusView,
        ready: bool,
        reason: &str,
        now: OffsetDateTime,
        body: &mut String,
    ) {
        // The state in one sentence.
        let last = match &v.last_run {
            Some(r) => format!(
                "the last {} (run {}) {} {}",
                html_escape(&r.kind),
                r.run,
                match r.outcome.as_str() {
                    "ok" => "finished",
                    "errors" => "finished with objects in error",
                    "held" => "held removals back",
                    _ => "failed",
                },
                when(&r.finished_at, now)
            ),
            None => "no run has finished yet".into(),
        };
        let _ = write!(
            body,
            "<p id=\"ready\" class=\"sentence {cls}\"><strong>{state}</strong>: {last}; {users} users ({active} active), \
             {groups} groups on {target}.</p>",
            cls = if ready { "ok" } else { "bad" },
            state = if ready {
                "Ready".to_string()
            } else {
                format!("Not ready ({})", html_escape(reason))
            },
            users = v.users,
            active = v.users_active,
            groups = v.groups,
            target = html_escape(v.target.as_deref().unwrap_or("no target yet")),
        );
        // Who pushes, with [ha].
        if let Some(role) = Board::role_text(&self.lock()) {
            let _ = write!(
                body,
                "<p id=\"ha\" class=\"sentence\">HA: {}</p>",
                html_escape(&role)
            );
        }
        // What needs a person, first.
        self.errors_html(v, now, body);
        if let Some(h) = &v.held_deletions {
            let _ = write!(
                body,
                "<p id=\"held\" class=\"bad\"><strong>{} deactivations/deletions held</strong> by the \
                 accidental-deletion guard; nothing was removed. If they are meant, run \
                 <code>dirbridge approve-deletes</code>. For example: {}</p>",
                h.count,
                html_escape(&h.sample.join(", "))
            );
        }
        if let Some(d) = self.lock().drift.clone() {
            super::drift::html(&d, now, body);
        }
        // How it works now.
        let (mode_reason, activity) = {
            let i = self.lock();
            (i.mode_reason.clone(), i.activity.svg(now.unix_timestamp()))
        };
        let success = v
            .last_success
            .as_ref()
            .map(|r| when(&r.finished_at, now))
            .unwrap_or_else(|| "never".into());
        let _ = write!(
            body,
            "<h2>The service</h2><table>\
             <tr><th>Change detection</th><td id=\"mode\">{mode}{why}</td></tr>\
             <tr><th>Last success</th><td id=\"last-success\">{success}</td></tr>\
             <tr><th>Target</th><td>{target}</td></tr>\
             <tr><th>Users</th><td id=\"users\">{users} ({active} active, {adopted} adopted)</td></tr>\
             <tr><th>Groups</th><td id=\"groups\">{groups} ({members} memberships)</td></tr></table>",
            mode = html_escape(&self.mode_text()),
            why = mode_reason
                .map(|w| format!(", because {}", html_escape(&w)))
                .unwrap_or_default(),
            target = html_escape(v.target.as_deref().unwrap_or("(none yet)")),
            users = v.users,
            active = v.users_active,
            adopted = v.users_adopted,
            groups = v.groups,
            members = v.memberships,
        );
        let _ = write!(body, "<h2>The last 24 hours</h2>{activity}");
        if let Some(r) = &v.last_run {
            let _ = write!(
                body,
                "<h2>Last run</h2><p id=\"last-run\">{} run {} {}: {}</p>",
                html_escape(&r.kind),
                r.run,
                when(&r.finished_at, now),
                html_escape(&summary_words(&r.summary))
            );
        }
        self.recent_html(now, body);
        if !v.target_quirks.is_empty() {
            let _ = write!(
                body,
                "<h2>Target quirks</h2><table id=\"quirks\"><tr><th>Found</th><th>What dirbridge does</th></tr>"
            );
            for q in &v.target_quirks {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    html_escape(&q.found),
                    html_escape(&q.handling)
                );
            }
            let _ = write!(body, "</table>");
        }
    }

    fn errors_html(&self, v: &StatusView, now: OffsetDateTime, body: &mut String) {
        let _ = write!(body, "<h2>Objects in error ({})</h2>", v.errors.len());
        if v.errors.is_empty() {
            let _ = write!(body, "<p id=\"errors\">None.</p>");
            return;
        }
        let _ = write!(
            body,
            "<table id=\"errors\"><tr><th>Object</th><th>Reason</th><th>What to do</th><th>Next retry</th><th>Attempts, since</th></tr>"
        );
        for e in &v.errors {
            let retry = e
                .retry_after
                .as_deref()
                .map(|t| when(t, now))
                .unwrap_or_else(|| "next pass".into());
            let _ = write!(
                body,
                "<tr class=\"bad\"><td>{} <small>({}, {})</small></td><td>{}</td><td class=\"todo\">{}</td><td>{retry}</td><td>{}, {}</td></tr>",
                html_escape(&e.label),
                html_escape(&e.kind),
                html_escape(&e.operation),
                html_escape(&e.reason),
                html_escape(what_to_do(e)),
                e.attempts,
                when(&e.first_seen, now),
            );
        }
        let _ = write!(body, "</table>");
    }

    pub(super) fn mode_text(&self) -> String {
        let i = self.lock();
        match &i.feed {
            None => format!("polling every {:?}", self.poll),
            Some(FeedState::Down(why)) => format!("{}: down ({why})", i.mode),
            Some(f) => format!("{}: {}", i.mode, f.name()),
        }
    }

    fn recent_html(&self, now: OffsetDateTime, body: &mut String) {
        let recent = match self.store.recent_operations(RECENT_OPERATIONS) {
            Ok(r) => r,
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"bad\">Cannot read the journal: {}</p>",
                    html_escape(&e.to_string())
                );
                return;
            }
        };
        let _ = write!(body, "<h2>Recent operations</h2>");
        if recent.is_empty() {
            let _ = write!(body, "<p id=\"recent\">None yet.</p>");
            return;
        }
        // The latency is known for changes followed from the directory only.
        let latency = recent.iter().any(|e| e.latency.is_some());
        let _ = write!(
            body,
            "<table id=\"recent\"><tr><th>When</th><th>Operation</th><th>Object</th><th>Outcome</th>{}</tr>",
            if latency { "<th>Change to push</th>" } else { "" }
        );
        for e in &recent {
            let outcome = match &e.detail {
                Some(d) => format!("{}: {d}", e.outcome),
                None => e.outcome.clone(),
            };
            let latency_cell = if latency {
                format!(
                    "<td>{}</td>",
                    e.latency
                        .map(|l| format!("{:.0} ms", l * 1000.0))
                        .unwrap_or_default()
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr class=\"{cls}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{latency_cell}</tr>",
                when(&e.at, now),
                html_escape(&e.operation),
                html_escape(&e.object),
                html_escape(&outcome),
                cls = if e.outcome == "failed" { "bad" } else { "ok" },
            );
        }
        let _ = write!(body, "</table>");
    }
}

/// A run's figures in words, those that are not zero: "3 users created, 1 error, 0.4 s".
fn summary_words(summary: &serde_json::Value) -> String {
    let Some(map) = summary.as_object() else {
        return String::new();
    };
    let mut parts: Vec<String> = map
        .iter()
        .filter(|(k, _)| *k != "seconds")
        .filter_map(|(k, v)| match v {
            serde_json::Value::Number(n) if n.as_f64().is_some_and(|x| x != 0.0) => {
                Some(format!("{} {n}", k.replace('_', " ")))
            }
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        parts.push("nothing to do".into());
    }
    if let Some(secs) = map.get("seconds").and_then(serde_json::Value::as_f64) {
        parts.push(format!("{secs:.1} s"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_read_as_how_long_ago_with_the_instant_on_hover() {
        let now = datetime!(2026-11-28 10:00:00 UTC);
        let w = |t: &str| when(t, now);
        assert!(w("2026-11-28T09:58:00Z").contains(">2 min ago<"));
        assert!(w("2026-11-28T09:59:58Z").contains(">just now<"));
        assert!(w("2026-11-28T07:00:00Z").contains(">3 h ago<"));
        assert!(w("2026-11-25T10:00:00Z").contains(">3 days ago<"));
        assert!(w("2026-11-28T10:05:00Z").contains(">in 5 min<"));
        let exact = w("2026-11-28T09:58:00.123456789Z");
        assert!(
            exact.contains("datetime=\"2026-11-28T09:58:00Z\""),
            "{exact}"
        );
        assert!(
            exact.contains("title=\"2026-11-28 09:58:00 UTC\""),
            "{exact}"
        );
        assert_eq!(w("<b>not a time</b>"), "&lt;b&gt;not a time&lt;/b&gt;");
        assert_eq!(
            summary_words(&serde_json::json!({"users_created": 3, "errors": 0, "seconds": 0.42})),
            "users created 3, 0.4 s"
        );
    }
}
