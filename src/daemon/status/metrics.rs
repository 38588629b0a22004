//! `/metrics` in the OpenMetrics text format, with prometheus-client: the runs and operations
//! counted as they finish (operations by name and outcome, `confirmed` or `failed`), run
//! durations and change-to-push latencies as histograms, the board's gauges read at each
//! scrape, the build's version, and the process's CPU, memory, open files and start time.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::summary::Summary;
use crate::status::Census;

/// Upper bounds (seconds) of the run-duration histogram buckets.
const DURATION_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Upper bounds (seconds) of the change-to-push latency histogram buckets.
/// Fine below 200 ms, where the syncrepl goal (p50 20 ms, p99 100 ms) is judged.
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    op: &'static str,
    outcome: &'static str,
}

/// What is counted as it happens (prometheus-client's metrics share their state when cloned,
/// so each scrape registers clones in a registry of its own beside the gauges of the moment).
#[derive(Debug)]
pub(super) struct Counted {
    runs: Family<RunLabels, Counter>,
    operations: Family<OperationLabels, Counter>,
    durations: Histogram,
    latency: Histogram,
}

impl Default for Counted {
    fn default() -> Self {
        Counted {
            runs: Family::default(),
            operations: Family::default(),
            durations: Histogram::new(DURATION_BUCKETS),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl Counted {
    /// A run ended with `outcome`, and, if it did not fail as a whole, its figures.
    pub(super) fn run(&self, kind: &'static str, outcome: &'static str, s: Option<&Summary>) {
        self.runs.get_or_create(&RunLabels { kind, outcome }).inc();
        let Some(s) = s else {
            return;
        };
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
        ] {
            self.operations
                .get_or_create(&OperationLabels {
                    op,
                    outcome: "confirmed",
                })
                .inc_by(n);
        }
        for (op, n) in &s.failed {
            // Requests, by operation name (membership requests are `add_members` and
            // `remove_members`; their confirmed members `add_member` and `remove_member`).
            let op = *op;
            self.operations
                .get_or_create(&OperationLabels {
                    op,
                    outcome: "failed",
                })
                .inc_by(*n);
        }
        self.durations.observe(s.seconds);
        for l in &s.latencies {
            self.latency.observe(*l);
        }
    }
}

/// The board's state at the moment of a scrape.
#[derive(Debug, Clone, Default)]
pub(super) struct Moment {
    pub ready: bool,
    pub census: Census,
    pub in_error: usize,
    pub held: u64,
    pub last_success: Option<i64>,
    pub target: Option<String>,
    /// The change feed follows (`None`: no change feed).
    pub feed_up: Option<bool>,
    /// The service polls because the server refused the change feed.
    pub fell_back: bool,
    /// Objects the last report-only full resync found to repair.
    pub drift: Option<usize>,
    /// With `[ha]`: this gateway holds the lease, and the lease's generation.
    pub ha: Option<(bool, u64)>,
}

impl prometheus_client::collector::Collector for Moment {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, v: i64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge("dirbridge_up", "The gateway is running.", 1)?;
        gauge(
            "dirbridge_ready",
            "The last run succeeded recently.",
            i64::from(self.ready),
        )?;
        if let Some(up) = self.feed_up {
            gauge(
                "dirbridge_change_feed_up",
                "The change feed is following the directory.",
                i64::from(up),
            )?;
        }
        if let Some((active, generation)) = self.ha {
            gauge(
                "dirbridge_ha_active",
                "This gateway holds the HA lease and pushes (0: standby).",
                i64::from(active),
            )?;
            gauge(
                "dirbridge_ha_lease_generation",
                "The HA lease's generation: counted up by each take-over.",
                i64::try_from(generation).unwrap_or(i64::MAX),
            )?;
        }
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(
            "dirbridge_objects_in_error",
            "Objects the last runs could not read or push.",
            count(self.in_error),
        )?;
        gauge(
            "dirbridge_deletions_held",
            "Deactivations and deletions held by the accidental-deletion guard, awaiting `dirbridge approve-deletes`.",
            i64::try_from(self.held).unwrap_or(i64::MAX),
        )?;
        if let Some(ts) = self.last_success {
            gauge(
                "dirbridge_last_success_timestamp_seconds",
                "When the last run that did not fail ended.",
                ts,
            )?;
        }
        if let Some(n) = self.drift {
            gauge(
                "dirbridge_drift_objects",
                "Objects the last report-only full resync found to repair.",
                count(n),
            )?;
        }
        let c = &self.census;
        let mut objects = encoder.encode_descriptor(
            "dirbridge_objects",
            "Objects under management, by kind and state.",
            None,
            MetricType::Gauge,
        )?;
        for (kind, state, n) in [
            ("user", "active", c.users_active),
            ("user", "inactive", c.users.saturating_sub(c.users_active)),
            ("group", "active", c.groups),
        ] {
            ConstGauge::new(count(n))
                .encode(objects.encode_family(&[("kind", kind), ("state", state)])?)?;
        }
        if self.fell_back {
            let mut fallback = encoder.encode_descriptor(
                "dirbridge_change_feed_fallback",
                "The service polls because the server refused the change feed (see /status mode_reason).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(fallback.encode_family(&[("from", "syncrepl")])?)?;
        }
        if let Some(t) = &self.target {
            let info = Info::new(vec![("url".to_string(), t.clone())]);
            info.encode(encoder.encode_descriptor(
                "dirbridge_target",
                "The target the records describe.",
                None,
                info.metric_type(),
            )?)?;
        }
        process(&mut encoder)
    }
}

/// The usual process metrics, from /proc (Linux).
fn process(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let Some(p) = ProcessFigures::read() else {
        return Ok(());
    };
    let c = ConstCounter::new(p.cpu_seconds);
    c.encode(encoder.encode_descriptor(
        "process_cpu_seconds",
        "User and system CPU time spent, in seconds.",
        None,
        c.metric_type(),
    )?)?;
    for (name, help, v) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        ),
        ("process_open_fds", "Open file descriptors.", p.open_fds),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            p.start_time,
        ),
    ] {
        let g = ConstGauge::new(v);
        g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
    }
    Ok(())
}

struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: i64,
    start_time: i64,
}

impl ProcessFigures {
    #[cfg(target_os = "linux")]
    fn read() -> Option<ProcessFigures> {
        // /proc/self/stat: fields after the command (which may hold spaces) in parentheses.
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14, 15 (utime, stime), 22 (starttime), 23 (vsize), 24 (rss), counted from 1
        // with the pid and the command as 1 and 2: here from 3.
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Some(ProcessFigures {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            start_time: to_i64(boot + (field(22)? as f64 / ticks) as u64),
            virtual_bytes: to_i64(field(23)?),
            resident_bytes: to_i64(field(24)? * page),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .map(|d| to_i64(d.count() as u64))
                .unwrap_or(0),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Option<ProcessFigures> {
        None
    }
}

/// The whole text: what was counted, the moment's gauges, the build.
pub(super) fn render(counted: &Counted, moment: Moment) -> String {
    let mut registry = Registry::default();
    registry.register(
        "dirbridge_runs",
        "Runs by kind and outcome.",
        counted.runs.clone(),
    );
    registry.register(
        "dirbridge_operations",
        "Operations by name and outcome: confirmed by the target (members for add_member and remove_member), or failed: requests refused or unanswered.",
        counted.operations.clone(),
    );
    registry.register(
        "dirbridge_run_duration_seconds",
        "Duration of finished runs.",
        counted.durations.clone(),
    );
    registry.register(
        "dirbridge_change_to_push_seconds",
        "From a directory change to the target's confirmation (change feeds and AD notifications).",
        counted.latency.clone(),
    );
    registry.register(
        "dirbridge_build",
        "The running build.",
        Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
    );
    registry.register_collector(Box::new(moment));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_operations_and_gauges_read_as_openmetrics() {
        let counted = Counted::default();
        let mut s = Summary {
            users_created: 3,
            members_added: 5,
            seconds: 0.3,
            latencies: vec![0.012, 0.04],
            ..Summary::default()
        };
        s.failed.insert("add_members", 1);
        counted.run("sync", "errors", Some(&s));
        counted.run("feed", "failed", None);
        let text = render(
            &counted,
            Moment {
                ready: true,
                census: Census {
                    users: 4,
                    users_active: 3,
                    groups: 2,
                    ..Census::default()
                },
                target: Some("https://idp.example.com/v2".into()),
                feed_up: Some(true),
                fell_back: true,
                drift: Some(2),
                ha: Some((false, 7)),
                ..Moment::default()
            },
        );
        for line in [
            "dirbridge_runs_total{kind=\"sync\",outcome=\"errors\"} 1",
            "dirbridge_runs_total{kind=\"feed\",outcome=\"failed\"} 1",
            "dirbridge_operations_total{op=\"create_user\",outcome=\"confirmed\"} 3",
            "dirbridge_operations_total{op=\"add_members\",outcome=\"failed\"} 1",
            "dirbridge_change_to_push_seconds_count 2",
            "dirbridge_change_to_push_seconds_bucket{le=\"0.02\"} 1",
            "dirbridge_run_duration_seconds_count 1",
            "dirbridge_up 1",
            "dirbridge_ready 1",
            "dirbridge_change_feed_up 1",
            "dirbridge_objects{kind=\"user\",state=\"inactive\"} 1",
            "dirbridge_change_feed_fallback{from=\"syncrepl\"} 1",
            "dirbridge_drift_objects 2",
            "dirbridge_ha_active 0",
            "dirbridge_ha_lease_generation 7",
            "dirbridge_target_info{url=\"https://idp.example.com/v2\"} 1",
            "dirbridge_build_info{version=\"",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} not in:\n{text}");
        }
        // Nothing about a change feed or a fallback when there is none.
        let quiet = render(&Counted::default(), Moment::default());
        assert!(!quiet.contains("dirbridge_change_feed"), "{quiet}");
        assert!(!quiet.contains("dirbridge_drift_objects"), "{quiet}");
        assert!(!quiet.contains("dirbridge_ha_"), "{quiet}");
    }
}
