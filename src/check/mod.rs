//! `dirbridge check`: everything a first sync needs, tried without changing anything, one line
//! per check with what to fix (the models: `vector validate`, `promtool check config`). The
//! configuration's files, the state folder, the directory (connection, TLS, scope, the group
//! attribute) and the target (reachable, what it declares, credentials, required attributes).
//! Each part goes on when another failed, so one run shows everything that is wrong.

mod directory;
mod ha;
mod state;
mod target;

use serde::Serialize;

use crate::config::Config;
use crate::target::AnyTarget;

/// How a check came out. The order is the severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub(crate) level: Level,
    /// What was checked: `config`, `state`, `directory`, `tls`, `users`, ...
    pub(crate) check: &'static str,
    pub(crate) detail: String,
    /// What to do about it (warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

impl Finding {
    pub(crate) fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            check,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn warn(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Warn,
            check,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn fail(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Fail,
            check,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// All the lines, in the order they were checked.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) checks: Vec<Finding>,
}

impl Report {
    /// The worst level found (OK for an empty report).
    pub(crate) fn worst(&self) -> Level {
        self.checks
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// 0 everything OK, 1 warnings only, 2 a failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.worst() {
            Level::Ok => 0,
            Level::Warn => 1,
            Level::Fail => 2,
        }
    }

    fn count(&self, level: Level) -> usize {
        self.checks.iter().filter(|f| f.level == level).count()
    }

    /// A line per check, the fix indented under it, and a summary.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.checks {
            out.push_str(&format!(
                "{:<5} {:<11} {}\n",
                f.level.word(),
                f.check,
                f.detail
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("{:18}fix: {fix}\n", ""));
            }
        }
        let (ok, warn, fail) = (
            self.count(Level::Ok),
            self.count(Level::Warn),
            self.count(Level::Fail),
        );
        out.push_str(&format!(
            "\n{ok} OK, {warn} WARN, {fail} FAIL: {}\n",
            match self.worst() {
                Level::Ok => "ready for a first sync",
                Level::Warn => "a sync can run; the warnings above say what to look at",
                Level::Fail => "mend the failures above before a sync",
            }
        ));
        out
    }

    /// The report as JSON (`--json`), with the exit code it gives.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "checks": self.checks,
            "ok": self.count(Level::Ok),
            "warn": self.count(Level::Warn),
            "fail": self.count(Level::Fail),
            "exit_code": self.exit_code(),
        })
    }
}

/// Runs every check of a configuration that loaded.
pub(crate) async fn run(cfg: &Config) -> Report {
    let mut report = Report::default();
    report.checks.push(Finding::ok(
        "config",
        format!("{} read and valid", cfg.path.display()),
    ));
    if let Ok(text) = std::fs::read_to_string(&cfg.path) {
        for w in crate::config::file_warnings(&cfg.path, &text) {
            report
                .checks
                .push(Finding::warn("config", w.problem, w.fix));
        }
    }
    report.checks.extend(state::check(cfg));
    report.checks.extend(directory::check(cfg).await);
    report.checks.extend(ha::check(cfg).await);
    // One attempt per request: a check says at once what fails, where a sync would retry.
    let mut once = cfg.clone();
    once.target.retries = 0;
    match AnyTarget::from_config(&once) {
        Ok(t) => report.checks.extend(target::check(cfg, &t).await),
        Err(e) => report.checks.push(Finding::fail(
            "target",
            format!("cannot set up the client: {e}"),
            "mend [target] in the config file",
        )),
    }
    report
}

/// The report of a configuration that did not load: that one failure.
pub(crate) fn unloadable(error: &crate::config::ConfigError) -> Report {
    use crate::config::ConfigError;
    let fix = match error {
        ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "write one with `dirbridge init` (or name another with --config or DIRBRIDGE_CONFIG)"
        }
        ConfigError::Read { .. } => "let the user the gateway runs as read it",
        _ => "mend the file at the line or key named; `dirbridge.example.toml` describes every key",
    };
    Report {
        checks: vec![Finding::fail("config", error.to_string(), fix)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_is_the_worst_level_and_fixes_are_indented_under_their_line() {
        let mut r = Report::default();
        assert_eq!(r.exit_code(), 0);
        r.checks.push(Finding::ok("users", "12 in scope"));
        assert_eq!(r.exit_code(), 0);
        r.checks
            .push(Finding::warn("groups", "none in scope", "widen it"));
        assert_eq!(r.exit_code(), 1);
        r.checks
            .push(Finding::fail("target", "refused", "new token"));
        r.checks.push(Finding::ok("state", "fine"));
        assert_eq!(r.exit_code(), 2);
        let text = r.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "OK    users       12 in scope");
        assert_eq!(lines[1], "WARN  groups      none in scope");
        assert_eq!(lines[2], "                  fix: widen it");
        assert_eq!(lines[3], "FAIL  target      refused");
        assert!(text.contains("2 OK, 1 WARN, 1 FAIL"), "{text}");
        let json = r.json();
        assert_eq!(json["exit_code"], 2);
        assert_eq!(json["checks"][1]["level"], "WARN");
        assert_eq!(json["checks"][0].get("fix"), None);
    }
}
