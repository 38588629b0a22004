//! The last drift report of a scheduled full resync in report mode (`daemon.full_resync_mode =
//! "report"`) on the dashboard, as a table (/status has it as JSON, /metrics as a gauge).

use std::fmt::Write;

use super::html_escape;
use crate::engine::drift::Drift;

/// The report's section of the dashboard.
pub(super) fn html(drift: &Drift, body: &mut String) {
    let _ = write!(
        body,
        "<h2>Drift found on the target ({} objects, read {})</h2>",
        drift.objects.len() + drift.dangling_members.len(),
        html_escape(&drift.at)
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
        "<p>Nothing was repaired (report mode). <code>dirbridge resync</code> repairs it.</p>\
         <table id=\"drift\"><tr><th>Object</th><th>Would be</th><th>Finding</th></tr>"
    );
    for o in &drift.objects {
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
    for (group, n) in &drift.dangling_members {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>remove_members</td><td>{n} member reference(s) to objects the target no longer holds</td></tr>",
            html_escape(group)
        );
    }
    let _ = write!(body, "</table>");
}
