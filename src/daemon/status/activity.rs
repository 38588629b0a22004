//! The last 24 hours of the service's work, for the dashboard's chart: the operations confirmed
//! and failed, and the change-to-push latency, per quarter of an hour, drawn as an SVG on the
//! server (nothing loaded from anywhere).

use std::collections::VecDeque;
use std::fmt::Write;

/// Seconds a bar covers, and how many bars make the day.
const BUCKET: i64 = 900;
const BUCKETS: i64 = 96;

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    start: i64,
    operations: u64,
    failed: u64,
    latency_sum: f64,
    latency_n: u64,
}

/// Quarter-hours with something in them, oldest first, none older than a day. Kept in memory:
/// a service started less than a day ago shows the time since its start.
#[derive(Debug)]
pub(super) struct Activity {
    buckets: VecDeque<Bucket>,
    /// When the service started (Unix seconds).
    started: i64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            buckets: VecDeque::new(),
            started: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

impl Activity {
    /// A pass ended at `now` (Unix seconds) having confirmed `operations`, failed `failed`, and
    /// timed these changes from the directory to the target.
    pub(super) fn record(&mut self, now: i64, operations: u64, failed: u64, latencies: &[f64]) {
        let start = now - now.rem_euclid(BUCKET);
        if self.buckets.back().is_none_or(|b| b.start != start) {
            self.buckets.push_back(Bucket {
                start,
                ..Bucket::default()
            });
        }
        if let Some(b) = self.buckets.back_mut() {
            b.operations += operations;
            b.failed += failed;
            b.latency_sum += latencies.iter().sum::<f64>();
            b.latency_n += latencies.len() as u64;
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start <= now - BUCKET * BUCKETS)
        {
            self.buckets.pop_front();
        }
    }

    /// Operations in the last 24 hours (confirmed, failed).
    pub(super) fn totals(&self) -> (u64, u64) {
        self.buckets
            .iter()
            .fold((0, 0), |(o, f), b| (o + b.operations, f + b.failed))
    }

    /// The chart: a bar per quarter-hour (operations; failures in red on top), and the mean
    /// change-to-push latency as a line, over the day up to `now`.
    pub(super) fn svg(&self, now: i64) -> String {
        const W: f64 = 720.0;
        const H: f64 = 120.0;
        let slot = W / BUCKETS as f64;
        let first = now - now.rem_euclid(BUCKET) - BUCKET * (BUCKETS - 1);
        let max_ops = self
            .buckets
            .iter()
            .map(|b| b.operations + b.failed)
            .max()
            .unwrap_or(0)
            .max(1);
        let max_latency = self
            .buckets
            .iter()
            .filter(|b| b.latency_n > 0)
            .map(|b| b.latency_sum / b.latency_n as f64)
            .fold(0.0f64, f64::max);
        let (ops, failed) = self.totals();
        let span = if now - self.started < BUCKET * BUCKETS {
            format!(
                "Since the service started ({} min ago)",
                (now - self.started).max(0) / 60
            )
        } else {
            "Last 24 hours".to_string()
        };
        let mut svg = format!(
            "<svg id=\"activity\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" \
             viewBox=\"0 0 {W} {}\" role=\"img\"><title>{span}: {ops} operations confirmed, \
             {failed} failed</title><rect width=\"{W}\" height=\"{H}\" fill=\"#fafafa\" stroke=\"#ddd\"/>",
            H + 18.0,
            H + 18.0
        );
        let mut points = Vec::new();
        for b in &self.buckets {
            let i = (b.start - first) / BUCKET;
            if !(0..BUCKETS).contains(&i) {
                continue;
            }
            let x = i as f64 * slot;
            let ok_h = H * b.operations as f64 / max_ops as f64;
            let bad_h = H * b.failed as f64 / max_ops as f64;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{ok_h:.1}\" fill=\"#4a7\"><title>{} confirmed</title></rect>",
                H - ok_h,
                slot - 1.0,
                b.operations
            );
            if b.failed > 0 {
                let _ = write!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bad_h:.1}\" fill=\"#c33\"><title>{} failed</title></rect>",
                    H - ok_h - bad_h,
                    slot - 1.0,
                    b.failed
                );
            }
            if b.latency_n > 0 && max_latency > 0.0 {
                let mean = b.latency_sum / b.latency_n as f64;
                points.push(format!(
                    "{:.1},{:.1}",
                    x + slot / 2.0,
                    H - H * mean / max_latency
                ));
            }
        }
        if points.len() > 1 {
            let _ = write!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"#36c\" stroke-width=\"2\"/>",
                points.join(" ")
            );
        }
        // A dot per quarter-hour, so that a lone one shows too.
        for p in &points {
            if let Some((x, y)) = p.split_once(',') {
                let _ = write!(
                    svg,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"#36c\"/>"
                );
            }
        }
        let _ = write!(
            svg,
            "<text x=\"2\" y=\"{y}\" font-size=\"11\">24 h ago</text>\
             <text x=\"{W}\" y=\"{y}\" font-size=\"11\" text-anchor=\"end\">now</text>\
             <text x=\"4\" y=\"12\" font-size=\"11\" fill=\"#4a7\">{max_ops} operations / 15 min</text>\
             <text x=\"{}\" y=\"12\" font-size=\"11\" fill=\"#36c\" text-anchor=\"end\">{}</text></svg>",
            W - 4.0,
            if max_latency > 0.0 {
                format!("change to push: {:.0} ms at most (mean per 15 min)", max_latency * 1000.0)
            } else {
                "no change-to-push latency yet".to_string()
            },
            y = H + 14.0,
        );
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_quarter_hours_is_kept_and_drawn() {
        let t0 = 1_800_000_000;
        let mut a = Activity {
            buckets: VecDeque::new(),
            started: t0 - BUCKET * BUCKETS,
        };
        a.record(t0, 3, 0, &[0.02, 0.04]);
        a.record(t0 + 10, 2, 1, &[]);
        a.record(t0 + BUCKET, 7, 0, &[0.01]);
        assert_eq!(a.totals(), (12, 1));
        let svg = a.svg(t0 + BUCKET);
        assert!(svg.contains("12 operations confirmed, 1 failed"), "{svg}");
        assert!(svg.contains("<title>5 confirmed</title>"), "{svg}");
        assert!(svg.contains("<title>1 failed</title>"), "{svg}");
        assert!(svg.contains("30 ms at most"), "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
        // A day later, the old quarter-hours are gone.
        a.record(t0 + BUCKET * BUCKETS + 5, 1, 0, &[]);
        assert_eq!(a.totals(), (8, 0));
        assert!(Activity::default()
            .svg(t0)
            .contains("0 operations confirmed"));
        // Started an hour ago: the chart says so.
        let young = Activity {
            buckets: VecDeque::new(),
            started: t0 - 3600,
        };
        assert!(young
            .svg(t0)
            .contains("Since the service started (60 min ago)"));
    }
}
