//! The configuration file: TOML read into raw serde structs, then checked and turned into the
//! typed [`Config`] the rest of the gateway uses. Every error names the file, and the key or the
//! line; no error ever shows a secret's value.

mod raw;
pub(crate) use raw::check_instance_id;
pub(crate) mod rest;
mod secret;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use crate::mapping::FieldSource;
pub(crate) use secret::{Secret, SecretSource};

/// What can be wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: `{key}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub ldap: LdapConfig,
    pub target: TargetConfig,
    pub state: StateConfig,
    pub sync: SyncConfig,
    pub mapping: MappingConfig,
    pub daemon: DaemonConfig,
    /// `[ha]`: several gateways, one pushing at a time.
    pub ha: Option<HaConfig>,
}

/// `[ha]`: the lease in the directory that lets one of several gateways push.
#[derive(Debug, Clone)]
pub(crate) struct HaConfig {
    /// This gateway's name in the lease (the host name unless set).
    pub instance: String,
    /// The lease entry (created if missing).
    pub lease_dn: String,
    /// How often the active gateway renews, and every gateway reads, the lease.
    pub renew: Duration,
    /// How long the lease's value must stay unchanged before a standby takes it over.
    pub lease_ttl: Duration,
    /// How long before the ttl the active gateway stops pushing when it could not renew.
    pub margin: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// `ldap://` without StartTLS: only when explicitly configured.
    Plain,
    /// `ldap://` upgraded with StartTLS.
    StartTls,
    /// `ldaps://`.
    Ldaps,
}

/// The directory flavour: it sets the defaults of `[ldap]` and `[mapping]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub(crate) enum Profile {
    #[default]
    #[serde(rename = "openldap")]
    OpenLdap,
    #[serde(rename = "ad")]
    ActiveDirectory,
}

/// How the stable key's value is turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyFormat {
    /// Text as is; 16 raw bytes as a GUID; other bytes as hex.
    Auto,
    /// Always 16 raw bytes shown as a GUID (objectGUID): bytes that happen to be valid
    /// UTF-8 must not be read as text.
    Guid,
    /// Always lower-case hex of the raw bytes.
    Hex,
}

#[derive(Debug, Clone)]
pub(crate) struct LdapConfig {
    pub profile: Profile,
    /// The server a connection goes to: the first of `servers` in the configuration; the one
    /// answering in a session's own copy (`Session::open` tries each in order).
    pub url: String,
    /// Every server, in the order they are tried.
    pub servers: Vec<String>,
    pub tls: TlsMode,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    pub user_base: String,
    pub group_base: String,
    pub user_filter: String,
    pub group_filter: String,
    pub membership: Membership,
    /// `membership` was set in the file (else it is the default, `memberOf`, which gives way to
    /// `member` on servers whose memberOf includes nested groups: 389-DS).
    pub membership_set: bool,
    pub nested_groups: bool,
    pub referenced_groups: ReferencedGroups,
    /// Read multi-valued member attributes in ranges of this many values (AD range retrieval);
    /// `None` asks for the whole attribute and follows ranges only when the server imposes them.
    pub range_step: Option<u32>,
    /// Add each user to its primary group (AD `primaryGroupID`, not listed in `memberOf`).
    pub include_primary_group: bool,
    /// Read only what changed since the last run (AD `uSNChanged`), keeping a mirror of the
    /// directory in the state store.
    pub incremental: bool,
    pub page_size: u32,
    pub timeout: Duration,
    /// The most entries and references one search may return before it is taken for a server
    /// that never ends its answer.
    pub max_entries: u64,
    /// The longest one search (all its pages) may take.
    pub search_time_limit: Duration,
    /// The largest LDAP message the relay lets through (KiB).
    pub max_message_kib: usize,
    /// The most attribute data (values and DNs) one search may bring (MiB).
    pub max_read_mib: u64,
}

impl LdapConfig {
    /// Why this directory configuration cannot be served by syncrepl, if it cannot.
    pub(crate) fn syncrepl_unfit(&self) -> Option<&'static str> {
        if self.membership == Membership::MemberOf
            && self.referenced_groups == ReferencedGroups::Create
        {
            return Some(
                "syncrepl follows the configured group scope only, so groups outside it that users' memberOf names \
                 would look deleted: set ldap.referenced_groups = \"ignore\" (and widen group_base/group_filter if needed)",
            );
        }
        None
    }
}

/// Where group membership is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub(crate) enum Membership {
    /// The users' `memberOf` values (OpenLDAP's memberof overlay, AD).
    #[serde(rename = "memberOf", alias = "memberof")]
    MemberOf,
    /// The groups' `member` values.
    #[serde(rename = "member")]
    Member,
}

/// What to do with a group named in a user's `memberOf` that the group search did not return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReferencedGroups {
    /// Read it by its DN and sync it like any other group (miniOrange's "create groups on the fly").
    Create,
    /// Leave it out.
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TargetKind {
    Scim,
    /// A REST API configured per event (`[target.events.*]`).
    Rest,
    /// miniOrange's admin REST API: the shipped events, any of which the file may override.
    #[serde(rename = "miniorange")]
    MiniOrange,
}

/// How updates are sent to a SCIM target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UpdateMethod {
    /// PATCH, unless the target's /ServiceProviderConfig says it is not supported.
    Auto,
    Patch,
    /// Read the resource, change it, PUT it back.
    Put,
}

#[derive(Debug, Clone)]
pub(crate) struct TargetConfig {
    /// Which client pushes: [`crate::target::AnyTarget`] is built from it.
    pub kind: TargetKind,
    pub url: url::Url,
    pub update_method: UpdateMethod,
    /// How every request is authorized (`target.token` is a bearer token).
    pub auth: rest::AuthConfig,
    /// The events of a REST target (`kind = "rest"` or `"miniorange"`).
    pub rest: Option<rest::RestConfig>,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    pub timeout: Duration,
    /// Further attempts of a request that timed out, lost its connection, or got 429 / 5xx.
    pub retries: u32,
    /// The most requests the gateway sends to the target per period.
    pub rate_limit: Option<RateLimit>,
    /// The most requests in flight at once.
    pub max_concurrency: usize,
    /// Largest answer body read from the target, in bytes.
    pub max_response_bytes: usize,
}

/// A request budget: `requests` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub requests: u32,
    pub period: Duration,
}

/// What the scheduled full resync does with the drift it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ResyncMode {
    /// Repairs it (a resync).
    #[default]
    Repair,
    /// Reports it on /status, /metrics and the dashboard, and sends nothing.
    Report,
}

/// `dirbridge run`: when to sync, when to resync, where to serve status.
#[derive(Debug, Clone)]
pub(crate) struct DaemonConfig {
    /// Time between two delta passes.
    pub poll_interval: Duration,
    /// When the full resync (drift repair) runs.
    pub full_resync: crate::schedule::Schedule,
    /// Whether it repairs or only reports.
    pub full_resync_mode: ResyncMode,
    /// Status server address; `None` serves nothing.
    pub listen: Option<std::net::SocketAddr>,
    /// How `run` learns of changes.
    pub change_feed: ChangeFeed,
    /// How long a change feed waits for more changes before pushing a burst as one pass.
    pub coalesce: Duration,
    /// Poll interval on AD while change notification is unavailable.
    pub notify_fallback: Duration,
    /// How often the syncrepl connection is checked (a root DSE read within `ldap.timeout`).
    pub heartbeat: Duration,
    /// The bearer token the status server requires for everything but `/healthz` and
    /// `/readyz` (required when it listens off loopback).
    pub status_token: Option<Secret>,
}

/// How `dirbridge run` learns of directory changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChangeFeed {
    /// syncrepl where the server offers it and the configuration allows it, else polling.
    #[default]
    Auto,
    /// RFC 4533 refreshAndPersist (OpenLDAP syncprov); fails if the server does not offer it.
    Syncrepl,
    /// Active Directory's change notification as the trigger of incremental reads, polling
    /// every `notify_fallback` where it is not allowed.
    Notify,
    /// A pass every `poll_interval` reading only entries whose `modifyTimestamp` moved, plus a
    /// list of the keys in scope (deletions): for servers without syncprov.
    Timestamp,
    /// A pass every `poll_interval` reading everything (incremental by uSNChanged on AD).
    Poll,
}

#[derive(Debug, Clone)]
pub(crate) struct StateConfig {
    pub path: PathBuf,
    pub cache_capacity_bytes: u64,
}

/// What happens on the target when a user is disabled or leaves the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RemovalAction {
    Deactivate,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncConfig {
    pub on_disable: RemovalAction,
    pub on_remove: RemovalAction,
    /// The accidental-deletion guard.
    pub guard: crate::plan::guard::GuardLimits,
}

/// How a user's `active` flag is read.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActiveRule {
    /// Attribute to look at; `None` means every user is active.
    pub attribute: Option<String>,
    /// Values (case-insensitive) that mean "disabled".
    pub inactive_values: Vec<String>,
    /// The attribute's mere presence means "disabled" (e.g. `pwdAccountLockedTime`).
    pub present_means_inactive: bool,
    /// AD: `userAccountControl` bit 0x2 (ACCOUNTDISABLE) means disabled.
    pub user_account_control: bool,
    /// AD: an `accountExpires` in the past means disabled.
    pub account_expires: bool,
}

/// Which directory attributes feed which canonical fields. Each source is a list of attribute
/// names tried in order; an empty list means the field is not mapped.
#[derive(Debug, Clone)]
pub(crate) struct MappingConfig {
    pub key: String,
    pub key_format: KeyFormat,
    pub user_name: FieldSource,
    pub given_name: FieldSource,
    pub family_name: FieldSource,
    pub display_name: FieldSource,
    pub email: FieldSource,
    pub title: FieldSource,
    pub department: FieldSource,
    pub employee_number: FieldSource,
    /// Attributes holding the manager's DN.
    pub manager: Vec<String>,
    pub active: ActiveRule,
    pub group_name: FieldSource,
    pub member_attribute: String,
    pub member_of_attribute: String,
    /// SCIM path -> where its value comes from.
    pub custom: Vec<(String, FieldSource)>,
    /// (key, attribute) for every directory attribute the file itself names in `[mapping]`
    /// (not the profile's defaults): checked against the directory's schema at the first read.
    pub written: Vec<(String, String)>,
    /// Canonical fields a user must have to be pushed (SCIM names: `userName`, `name.givenName`,
    /// `name.familyName`, `emails.work`, `displayName`).
    pub required: Vec<RequiredField>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequiredField {
    GivenName,
    FamilyName,
    Email,
    DisplayName,
}

impl RequiredField {
    pub(crate) fn scim_name(self) -> &'static str {
        match self {
            RequiredField::GivenName => "name.givenName",
            RequiredField::FamilyName => "name.familyName",
            RequiredField::Email => "emails[type eq \"work\"].value",
            RequiredField::DisplayName => "displayName",
        }
    }
}

impl Config {
    /// `file:line:column` of `word` on the line of the configuration that sets `key` (its last
    /// segment), for messages about a value found wrong only later (against the directory);
    /// the file alone when it cannot be found.
    pub(crate) fn locate(&self, key: &str, word: &str) -> String {
        let file = self.path.display().to_string();
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return file;
        };
        let last = key
            .rsplit_once('.')
            .map(|(_, l)| l)
            .unwrap_or(key)
            .trim_matches('"');
        let last = key
            .split_once(".custom.")
            .map(|(_, p)| p.trim_matches('"'))
            .unwrap_or(last);
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        for (n, line) in text.lines().enumerate() {
            if !line.contains(last) {
                continue;
            }
            let mut from = 0;
            while let Some(i) = line[from..].find(word) {
                let at = from + i;
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                if !before.is_some_and(is_word) && !after.is_some_and(is_word) && at > 0 {
                    return format!("{file}:{}:{}", n + 1, line[..at].chars().count() + 1);
                }
                from = at + word.len();
            }
        }
        file
    }

    /// Reads and checks a configuration file.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::parse(&text, path)?;
        for w in file_warnings(path, &text) {
            tracing::warn!(file = %path.display(), "{}", w.problem);
        }
        Ok(config)
    }

    /// Parses configuration text; `path` names it in errors and anchors relative paths.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
        raw.validate(path, text)
    }
}

/// Turns a TOML error into one that names the line and column, without quoting the source line
/// (which may hold a secret) and without the message when the line sets a secret.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            (line, column)
        }
        None => (0, 0),
    };
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let message = if raw::is_secret_line(line_text) {
        "invalid value for a secret (the value is not shown); expected a quoted string".to_string()
    } else {
        e.message().trim().to_string()
    };
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Something about the configuration's files an administrator should mend, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileWarning {
    pub problem: String,
    pub fix: String,
}

/// Secrets other local users can read: the config file holding one inline, or a secret file
/// (`*_file`) readable by its group or by everyone. `text` is the config file's content.
pub(crate) fn file_warnings(path: &Path, text: &str) -> Vec<FileWarning> {
    let mut out = Vec::new();
    let inline = text.lines().any(raw::is_secret_line);
    if let Some(mode) = mode_of(path).filter(|m| inline && m & 0o044 != 0) {
        out.push(FileWarning {
            problem: format!(
                "the config file holds a secret and is readable by other local users (mode {:o})",
                mode & 0o777
            ),
            fix: format!(
                "chmod 600 {}, or move the secret to a *_file or *_env key",
                path.display()
            ),
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    for (key, file) in raw::secret_files(text) {
        let file = base.join(file);
        if let Some(mode) = mode_of(&file).filter(|m| m & 0o044 != 0) {
            out.push(FileWarning {
                problem: format!(
                    "secret file {} (`{key}`) is readable by other local users (mode {:o})",
                    file.display(),
                    mode & 0o777
                ),
                fix: format!(
                    "chmod 600 {} (owned by the user the gateway runs as)",
                    file.display()
                ),
            });
        }
    }
    out
}

/// A file's permission bits (with its type bits), following links; `None` where unknown.
#[cfg(unix)]
pub(crate) fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
pub(crate) fn mode_of(_path: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod rest_tests;
#[cfg(test)]
mod tests;
