//! The configuration file as written, before checking. Unknown keys are refused so a typo is an
//! error, not a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::*;

mod auth;
mod daemon;
mod ha;
mod ldap;
mod mapping;
mod rest;
mod target;

use daemon::RawDaemon;
pub(crate) use ha::check_instance_id;
use ldap::{ProfileDefaults, RawLdap};
use mapping::RawMapping;
use target::RawTarget;

/// Keys whose values are secrets; used to keep parse errors from echoing them.
const SECRET_KEYS: &[&str] = &[
    "bind_password",
    "token",
    "client_secret",
    "password",
    "api_key",
    "value",
    "status_token",
];

/// The files the configuration reads secrets from (`<secret key>_file = "..."`, anywhere in the
/// file), as written: each key with its path relative to the config file's folder.
pub(super) fn secret_files(text: &str) -> Vec<(String, String)> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                toml::Value::String(file)
                    if k.strip_suffix("_file")
                        .is_some_and(|base| SECRET_KEYS.contains(&base)) =>
                {
                    out.push((key, file.clone()));
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        walk("", &table, &mut out);
    }
    out
}

/// True when a line of the file assigns a secret inline: `bind_password = ...`, and the same
/// key quoted (`"bind_password" = ...`), dotted (`ldap.bind_password = ...`) or in an inline
/// table (`auth = { token = ... }`).
pub(super) fn is_secret_line(line: &str) -> bool {
    SECRET_KEYS.iter().any(|k| {
        line.match_indices(k).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let starts = before.is_none_or(|c| c.is_whitespace() || "{,.\"'".contains(c));
            // `value` is also a mapping's constant (`{ value = "..." }`): a secret only as the
            // header credential's key, `value = ...` in [target.auth] or `auth.value = ...`.
            let head = line[..at].trim_start_matches(['"', '\'']).trim();
            let starts = starts && (*k != "value" || head.is_empty() || head.ends_with("auth."));
            let rest = line[at + k.len()..].trim_start_matches(['"', '\'']);
            starts && rest.trim_start().starts_with('=') && !rest.trim_start().starts_with("==")
        })
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    ldap: RawLdap,
    target: RawTarget,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    mapping: RawMapping,
    #[serde(default)]
    daemon: RawDaemon,
    ha: Option<ha::RawHa>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    #[serde(default = "default_state_path")]
    path: String,
    #[serde(default = "default_cache_mib")]
    cache_capacity_mib: u64,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            path: default_state_path(),
            cache_capacity_mib: default_cache_mib(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    #[serde(default = "default_removal")]
    on_disable: RemovalAction,
    #[serde(default = "default_removal")]
    on_remove: RemovalAction,
    #[serde(default = "yes")]
    deletion_guard: bool,
    #[serde(default = "default_max_deletions")]
    max_deletions: usize,
    #[serde(default = "default_max_deletion_percent")]
    max_deletion_percent: u32,
}

impl Default for RawSync {
    fn default() -> Self {
        RawSync {
            on_disable: default_removal(),
            on_remove: default_removal(),
            deletion_guard: true,
            max_deletions: default_max_deletions(),
            max_deletion_percent: default_max_deletion_percent(),
        }
    }
}

fn default_max_deletions() -> usize {
    500
}
fn default_max_deletion_percent() -> u32 {
    20
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    30
}

fn default_state_path() -> String {
    "/var/lib/dirbridge".into()
}

// Measured at 100k users: a pass takes the same time with 4, 16 or 64 MiB (a full pass reads
// every record once, a cache cannot help it), and each MiB is resident at its peak: 4 MiB kept
// a no-change pass at 202 MiB instead of 222. Half of it buffers a window's writes (redb), and
// a first sync's window touches ~1 MiB of pages.
fn default_cache_mib() -> u64 {
    4
}

fn default_removal() -> RemovalAction {
    RemovalAction::Deactivate
}

/// What every section's check needs: the file (for messages) and its folder (for relative paths).
pub(super) struct Cx<'a> {
    pub path: &'a Path,
    pub base: PathBuf,
    pub text: &'a str,
}

impl Cx<'_> {
    /// An error inside a value (an expression) of `key`: at its line and column in the file
    /// when the value can be found there as written, else at its column within the value.
    pub(super) fn error_at(
        &self,
        key: &str,
        value: &str,
        column: usize,
        message: &str,
    ) -> ConfigError {
        match self.text.find(value) {
            Some(at) if !value.is_empty() => {
                // The error's place inside the value, then in the file (the value may span
                // lines: a multi-line string).
                let inside = value
                    .char_indices()
                    .nth(column.saturating_sub(1))
                    .map(|(i, _)| i)
                    .unwrap_or(value.len());
                let before = &self.text[..at + inside];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
                let col = before[line_start..].chars().count() + 1;
                ConfigError::Parse {
                    path: self.path.to_path_buf(),
                    line,
                    column: col,
                    message: format!("{key}: {message}"),
                }
            }
            _ => self.invalid(key, format!("column {column} of the expression: {message}")),
        }
    }

    pub(super) fn invalid(&self, key: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason,
        }
    }
}

impl RawConfig {
    pub(super) fn validate(self, path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Cx {
            path,
            base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            text,
        };
        let base = &cx.base;
        let invalid = |key: &str, reason: String| cx.invalid(key, reason);
        let defaults = self.ldap.profile.defaults();
        let (ldap, l_incremental_explicit) = self.ldap.check(&cx)?;

        // --- [state]
        if self.state.path.trim().is_empty() {
            return Err(invalid("state.path", "must not be empty".into()));
        }
        if self.state.cache_capacity_mib == 0 || self.state.cache_capacity_mib > 4096 {
            return Err(invalid(
                "state.cache_capacity_mib",
                "must be between 1 and 4096".into(),
            ));
        }
        let state = StateConfig {
            path: base.join(PathBuf::from(&self.state.path)),
            cache_capacity_bytes: self.state.cache_capacity_mib * 1024 * 1024,
        };

        let mapping = self.mapping.check(&cx, &defaults)?;
        let custom: Vec<String> = mapping.custom.iter().map(|(p, _)| p.clone()).collect();
        let target = self.target.check(&cx, &custom)?;
        if let Some(rest) = &target.rest {
            use crate::config::rest::Event;
            let deletes = self.sync.on_remove == RemovalAction::Delete
                || self.sync.on_disable == RemovalAction::Delete;
            if deletes && !rest.events.contains_key(&Event::DeleteUser) {
                return Err(invalid(
                    "target.events.delete_user",
                    "sync.on_remove or sync.on_disable is \"delete\", but the target has no delete_user event".into(),
                ));
            }
            let deactivates = self.sync.on_remove == RemovalAction::Deactivate
                || self.sync.on_disable == RemovalAction::Deactivate;
            if deactivates && !rest.events.contains_key(&Event::DeactivateUser) {
                return Err(invalid(
                    "target.events.deactivate_user",
                    "users who leave or are disabled are deactivated (sync.on_remove / on_disable), \
                     but the target has no deactivate_user event: configure one, or set them to \"delete\""
                        .into(),
                ));
            }
        }

        // Change tracking reports objectGUIDs: incremental reads need them as keys.
        let guid_keys =
            mapping.key.eq_ignore_ascii_case("objectGUID") && mapping.key_format == KeyFormat::Guid;
        let mut ldap = ldap;
        // The mirror holds the configured scope only: groups read on the fly by DN are not in it.
        let scoped = ldap.referenced_groups == ReferencedGroups::Ignore;
        if ldap.incremental && !scoped {
            if l_incremental_explicit {
                return Err(invalid(
                    "ldap.incremental",
                    "incremental reads need referenced_groups = \"ignore\" (the group scope is what is tracked)".into(),
                ));
            }
            ldap.incremental = false;
        }
        if ldap.incremental && !guid_keys {
            if l_incremental_explicit {
                return Err(invalid(
                    "ldap.incremental",
                    "incremental reads need mapping.key = \"objectGUID\" with key_format = \"guid\"".into(),
                ));
            }
            ldap.incremental = false;
        }
        let daemon = self.daemon.check(&cx, &ldap)?;
        let ha = self.ha.map(|h| h.check(&cx)).transpose()?;

        Ok(Config {
            path: path.to_path_buf(),
            daemon,
            ha,
            ldap,
            target,
            state,
            sync: SyncConfig {
                on_disable: self.sync.on_disable,
                on_remove: self.sync.on_remove,
                guard: crate::plan::guard::GuardLimits {
                    enabled: self.sync.deletion_guard,
                    max_count: self.sync.max_deletions,
                    max_percent: self.sync.max_deletion_percent.min(100),
                },
            },
            mapping,
        })
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(is_loopback_host))
        .unwrap_or(false)
}
