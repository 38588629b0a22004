//! The last drift report of a scheduled full resync in report mode (`daemon.full_resync_mode =
//! "report"`) on the dashboard, as a table (/status has it as JSON, /metrics as a gauge).

use std::fmt::Write;

use super::html_escape;
use crate::engine::drift::Drift;

/// Rows shown; the rest is counted (`dirbridge resync --dry-run` lists them all).
const ROWS: usize = 100;

/// The report's section of the dashboard.
pub(super) fn html(drift: &Drift, now: time::OffsetDateTime, body: &mut String) {
    let _ = write!(
        body,
        "<h2>Drift found on the target ({} objects, read {})</h2>",
        drift.object_count(),
        super::page::when(&drift.at, now)
    );
    if drift.is_empty() {
        let _ = write!(
            body,
            "<p id=\"drift\">None: the target holds what the directory says.</p>"
        );
        return;
    }
    let _ = write!(
        body,
        "<p>Nothing was repaired (<code>daemon.full_resync_mode = \"report\"</code>). To repair          it, set the mode to <code>\"repair\"</code> (the next scheduled resync does), or stop          the service and run <code>dirbridge resync</code>.{}</p>\
         <table id=\"drift\"><tr><th>Object</th><th>Would be</th><th>Finding</th></tr>",
        if drift.held_by_guard > 0 {
            format!(
                " {} removal(s) would be held by the accidental-deletion guard until approved.",
                drift.held_by_guard
            )
        } else {
            String::new()
        }
    );
    for o in drift.objects.iter().take(ROWS) {
        let mut finding = html_escape(&o.finding);
        for a in &o.attributes {
            let shown = |v: &Option<String>| v.as_deref().map_or("(not set)".into(), html_escape);
            let _ = write!(
                finding,
                "<br>{}: target {}, directory {}",
                html_escape(&a.attribute),
                shown(&a.target),
                shown(&a.directory)
            );
        }
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{finding}</td></tr>",
            html_escape(&o.object),
            html_escape(o.repair)
        );
    }
    let room = ROWS.saturating_sub(drift.objects.len());
    for (group, n) in drift.dangling_members.iter().take(room) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>remove_members</td><td>{n} member reference(s) to objects the target no longer holds</td></tr>",
            html_escape(group)
        );
    }
    let _ = write!(body, "</table>");
    let rows = drift.objects.len() + drift.dangling_members.len();
    if rows > ROWS {
        let _ = write!(
            body,
            "<p>And {} more: <code>dirbridge resync --dry-run</code> lists them all.</p>",
            rows - ROWS
        );
    }
}
