//! The configuration file as written, before checking. Unknown keys are refused so a typo is an
//! error, not a silently ignored setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// Keys whose values are secrets; used to keep parse errors from echoing them.
const SECRET_KEYS: &[&str] = &["bind_password", "token", "client_secret", "password"];

/// True when a line of the file assigns a secret inline.
pub(super) fn is_secret_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    SECRET_KEYS.iter().any(|k| {
        trimmed
            .strip_prefix(k)
            .map(|rest| rest.trim_start().starts_with('='))
            .unwrap_or(false)
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(default = "default_poll")]
    poll_interval: String,
    #[serde(default = "default_full_resync")]
    full_resync: String,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    change_feed: ChangeFeed,
    #[serde(default = "default_coalesce")]
    coalesce: String,
    #[serde(default = "default_notify_fallback")]
    notify_fallback: String,
    #[serde(default = "default_heartbeat")]
    heartbeat: String,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            poll_interval: default_poll(),
            full_resync: default_full_resync(),
            listen: default_listen(),
            change_feed: ChangeFeed::default(),
            coalesce: default_coalesce(),
            notify_fallback: default_notify_fallback(),
            heartbeat: default_heartbeat(),
        }
    }
}

fn default_poll() -> String {
    "60s".into()
}
fn default_full_resync() -> String {
    "daily 03:00".into()
}
fn default_heartbeat() -> String {
    "30s".into()
}
fn default_notify_fallback() -> String {
    "5s".into()
}
fn default_coalesce() -> String {
    "100ms".into()
}
fn default_listen() -> String {
    "127.0.0.1:8086".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    #[serde(default)]
    profile: Profile,
    url: String,
    #[serde(default)]
    starttls: bool,
    bind_dn: Option<String>,
    bind_password: Option<Secret>,
    bind_password_file: Option<String>,
    bind_password_env: Option<String>,
    ca_file: Option<String>,
    #[serde(default = "yes")]
    tls_verify: bool,
    #[serde(default)]
    allow_plaintext: bool,
    base_dn: String,
    user_base: Option<String>,
    group_base: Option<String>,
    user_filter: Option<String>,
    group_filter: Option<String>,
    #[serde(default = "default_membership")]
    membership: Membership,
    #[serde(default)]
    nested_groups: bool,
    referenced_groups: Option<ReferencedGroups>,
    range_step: Option<u32>,
    #[serde(default)]
    include_primary_group: bool,
    incremental: Option<bool>,
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: TargetKind,
    url: String,
    token: Option<Secret>,
    token_file: Option<String>,
    token_env: Option<String>,
    ca_file: Option<String>,
    #[serde(default = "yes")]
    tls_verify: bool,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_update_method")]
    update_method: UpdateMethod,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default)]
    rate_limit: Option<String>,
    #[serde(default = "default_concurrency")]
    max_concurrency: usize,
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

/// An attribute source: one name, or a list tried in order; `[]` unmaps the field.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Attrs {
    One(String),
    Many(Vec<String>),
}

impl Attrs {
    fn names(&self) -> Vec<String> {
        match self {
            Attrs::One(s) if s.is_empty() => vec![],
            Attrs::One(s) => vec![s.clone()],
            Attrs::Many(v) => v.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawActive {
    attribute: Option<String>,
    #[serde(default)]
    inactive_values: Vec<String>,
    #[serde(default)]
    present_means_inactive: bool,
    user_account_control: Option<bool>,
    account_expires: Option<bool>,
}

/// `[mapping]`: every attribute is optional; what is not set comes from the profile.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawMapping {
    key: Option<String>,
    key_format: Option<KeyFormat>,
    user_name: Option<Attrs>,
    given_name: Option<Attrs>,
    family_name: Option<Attrs>,
    display_name: Option<Attrs>,
    email: Option<Attrs>,
    title: Option<Attrs>,
    department: Option<Attrs>,
    employee_number: Option<Attrs>,
    manager: Option<Attrs>,
    #[serde(default)]
    active: RawActive,
    group_name: Option<Attrs>,
    member_attribute: Option<String>,
    member_of_attribute: Option<String>,
    #[serde(default)]
    custom: std::collections::BTreeMap<String, Attrs>,
    required: Option<Vec<String>>,
}

/// The defaults a directory flavour brings; every one can be overridden in the file.
struct ProfileDefaults {
    user_filter: &'static str,
    group_filter: &'static str,
    referenced_groups: ReferencedGroups,
    key: &'static str,
    key_format: KeyFormat,
    user_name: &'static [&'static str],
    department: &'static [&'static str],
    employee_number: &'static [&'static str],
    user_account_control: bool,
}

impl Profile {
    fn defaults(self) -> ProfileDefaults {
        match self {
            Profile::OpenLdap => ProfileDefaults {
                user_filter: "(objectClass=inetOrgPerson)",
                group_filter: "(objectClass=groupOfNames)",
                referenced_groups: ReferencedGroups::Create,
                key: "entryUUID",
                key_format: KeyFormat::Auto,
                user_name: &["uid"],
                department: &["departmentNumber"],
                employee_number: &["employeeNumber"],
                user_account_control: false,
            },
            // Built-in accounts and groups (Administrator, krbtgt, Domain Admins, ...) are
            // critical system objects: not people to provision.
            Profile::ActiveDirectory => ProfileDefaults {
                user_filter:
                    "(&(objectCategory=person)(objectClass=user)(!(isCriticalSystemObject=TRUE)))",
                group_filter: "(&(objectClass=group)(!(isCriticalSystemObject=TRUE)))",
                referenced_groups: ReferencedGroups::Ignore,
                key: "objectGUID",
                key_format: KeyFormat::Guid,
                user_name: &["userPrincipalName"],
                department: &["department"],
                employee_number: &["employeeID"],
                user_account_control: true,
            },
        }
    }
}

fn attrs(list: &[&str]) -> Attrs {
    Attrs::Many(list.iter().map(|s| s.to_string()).collect())
}

fn yes() -> bool {
    true
}
fn default_membership() -> Membership {
    Membership::MemberOf
}
fn default_concurrency() -> usize {
    4
}
fn default_retries() -> u32 {
    4
}

/// `600/min`, `1000/hour`, `10/s`: requests per period.
fn parse_rate(text: &str) -> Result<super::RateLimit, String> {
    let bad = || format!("`{text}` is not a rate like 600/min, 1000/hour or 10/s");
    let (n, per) = text.trim().split_once('/').ok_or_else(bad)?;
    let requests: u32 = n.trim().parse().map_err(|_| bad())?;
    let period = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        _ => return Err(bad()),
    };
    if requests == 0 {
        return Err(format!("`{text}`: at least one request per period"));
    }
    Ok(super::RateLimit { requests, period })
}

fn default_update_method() -> UpdateMethod {
    UpdateMethod::Auto
}
fn default_page_size() -> u32 {
    500
}
fn default_timeout() -> u64 {
    30
}
fn default_state_path() -> String {
    "/var/lib/dirbridge".into()
}
fn default_cache_mib() -> u64 {
    64
}
fn default_removal() -> RemovalAction {
    RemovalAction::Deactivate
}

/// Core SCIM User attributes a custom mapping may not take over: the gateway already owns them.
const OWNED_PATHS: &[&str] = &[
    "id",
    "externalId",
    "userName",
    "name",
    "displayName",
    "emails",
    "active",
    "title",
    "meta",
    "schemas",
    "groups",
];

impl RawConfig {
    pub(super) fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };

        // --- [ldap]
        let l = self.ldap;
        let defaults = l.profile.defaults();
        let l_incremental_explicit = l.incremental == Some(true);
        let tls = if l.url.starts_with("ldaps://") {
            if l.starttls {
                return Err(invalid(
                    "ldap.starttls",
                    "StartTLS cannot be combined with an ldaps:// URL; use one or the other".into(),
                ));
            }
            TlsMode::Ldaps
        } else if l.url.starts_with("ldap://") {
            if l.starttls {
                TlsMode::StartTls
            } else {
                TlsMode::Plain
            }
        } else {
            return Err(invalid(
                "ldap.url",
                format!("`{}` must start with ldap:// or ldaps://", l.url),
            ));
        };
        if url::Url::parse(&l.url)
            .map(|u| u.host().is_none())
            .unwrap_or(true)
        {
            return Err(invalid(
                "ldap.url",
                format!("`{}` is not a valid LDAP URL with a host", l.url),
            ));
        }
        let bind_password = SecretSource {
            inline: l.bind_password,
            file: l.bind_password_file,
            env: l.bind_password_env,
        }
        .resolve(path, "ldap.bind_password", &base)?;
        if l.bind_dn.is_some() && bind_password.is_none() {
            return Err(invalid(
                "ldap.bind_password",
                "bind_dn is set but no password: set bind_password, bind_password_file or bind_password_env".into(),
            ));
        }
        // Plain LDAP with a password is an explicit choice; on AD, even on loopback (a simple
        // bind in clear text to a DC is what "LDAP signing" audits flag).
        let loopback_ok = is_loopback_url(&l.url) && l.profile != Profile::ActiveDirectory;
        if tls == TlsMode::Plain && bind_password.is_some() && !l.allow_plaintext && !loopback_ok {
            return Err(invalid(
                "ldap.url",
                "a password would be sent in clear text: use ldaps://, set starttls = true, \
                 or set allow_plaintext = true to accept the risk"
                    .into(),
            ));
        }
        if !l.tls_verify {
            tracing::warn!("ldap.tls_verify = false: the directory's certificate is NOT checked");
        }
        let ca_file = l.ca_file.map(|f| base.join(f));
        if let Some(ca) = &ca_file {
            if !ca.is_file() {
                return Err(invalid(
                    "ldap.ca_file",
                    format!("{} does not exist", ca.display()),
                ));
            }
        }
        let user_filter = l
            .user_filter
            .unwrap_or_else(|| defaults.user_filter.to_string());
        let group_filter = l
            .group_filter
            .unwrap_or_else(|| defaults.group_filter.to_string());
        check_filter(&user_filter).map_err(|r| invalid("ldap.user_filter", r))?;
        check_filter(&group_filter).map_err(|r| invalid("ldap.group_filter", r))?;
        if l.incremental == Some(true) && l.profile != Profile::ActiveDirectory {
            return Err(invalid(
                "ldap.incremental",
                "incremental reads follow AD's uSNChanged; they need profile = \"ad\"".into(),
            ));
        }
        if l.range_step == Some(0) {
            return Err(invalid("ldap.range_step", "must be at least 1".into()));
        }
        if l.page_size == 0 || l.page_size > 100_000 {
            return Err(invalid(
                "ldap.page_size",
                "must be between 1 and 100000".into(),
            ));
        }
        if l.timeout_secs == 0 {
            return Err(invalid("ldap.timeout_secs", "must be at least 1".into()));
        }
        if l.base_dn.trim().is_empty() {
            return Err(invalid("ldap.base_dn", "must not be empty".into()));
        }
        let ldap = LdapConfig {
            url: l.url,
            tls,
            bind_dn: l.bind_dn,
            bind_password,
            ca_file,
            tls_verify: l.tls_verify,
            base_dn: l.base_dn.clone(),
            user_base: l.user_base.unwrap_or_else(|| l.base_dn.clone()),
            group_base: l.group_base.unwrap_or_else(|| l.base_dn.clone()),
            profile: l.profile,
            user_filter,
            group_filter,
            membership: l.membership,
            nested_groups: l.nested_groups,
            referenced_groups: l.referenced_groups.unwrap_or(defaults.referenced_groups),
            range_step: l.range_step,
            include_primary_group: l.include_primary_group,
            incremental: l
                .incremental
                .unwrap_or(l.profile == Profile::ActiveDirectory),
            page_size: l.page_size,
            timeout: Duration::from_secs(l.timeout_secs),
        };

        // --- [target]
        let t = self.target;
        let url = url::Url::parse(&t.url)
            .map_err(|e| invalid("target.url", format!("`{}` is not a valid URL: {e}", t.url)))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(invalid(
                "target.url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "target.url",
                "must not carry credentials; use token, token_file or token_env".into(),
            ));
        }
        let token = SecretSource {
            inline: t.token,
            file: t.token_file,
            env: t.token_env,
        }
        .resolve(path, "target.token", &base)?;
        if token.is_none() {
            return Err(invalid(
                "target.token",
                "a bearer token is required: set token, token_file or token_env".into(),
            ));
        }
        if url.scheme() == "http" && !url.host_str().map(is_loopback_host).unwrap_or(false) {
            tracing::warn!("target.url uses plain http: the bearer token travels unencrypted");
        }
        if !t.tls_verify {
            tracing::warn!("target.tls_verify = false: the target's certificate is NOT checked");
        }
        let target_ca = t.ca_file.map(|f| base.join(f));
        if let Some(ca) = &target_ca {
            if !ca.is_file() {
                return Err(invalid(
                    "target.ca_file",
                    format!("{} does not exist", ca.display()),
                ));
            }
        }
        if t.timeout_secs == 0 {
            return Err(invalid("target.timeout_secs", "must be at least 1".into()));
        }
        if t.max_concurrency == 0 || t.max_concurrency > 64 {
            return Err(invalid("target.max_concurrency", "between 1 and 64".into()));
        }
        if t.retries > 20 {
            return Err(invalid("target.retries", "at most 20".into()));
        }
        let rate_limit = match &t.rate_limit {
            Some(r) => Some(parse_rate(r).map_err(|e| invalid("target.rate_limit", e))?),
            None => None,
        };
        let target = TargetConfig {
            kind: t.kind,
            url,
            update_method: t.update_method,
            token,
            ca_file: target_ca,
            tls_verify: t.tls_verify,
            timeout: Duration::from_secs(t.timeout_secs),
            retries: t.retries,
            rate_limit,
            max_concurrency: t.max_concurrency,
        };

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

        // --- [mapping]
        let m = self.mapping;
        let names =
            |v: Option<Attrs>, default: &[&str]| v.unwrap_or_else(|| attrs(default)).names();
        let key = m.key.unwrap_or_else(|| defaults.key.to_string());
        if key.trim().is_empty() {
            return Err(invalid(
                "mapping.key",
                "must name the attribute holding a stable id".into(),
            ));
        }
        if key.eq_ignore_ascii_case("dn") || key.eq_ignore_ascii_case("distinguishedName") {
            return Err(invalid(
                "mapping.key",
                "the DN changes on rename and move; use entryUUID, objectGUID or nsUniqueId".into(),
            ));
        }
        let user_name = names(m.user_name, defaults.user_name);
        if user_name.is_empty() {
            return Err(invalid(
                "mapping.user_name",
                "userName must be mapped".into(),
            ));
        }
        let group_name = names(m.group_name, &["cn"]);
        if group_name.is_empty() {
            return Err(invalid(
                "mapping.group_name",
                "the group name must be mapped".into(),
            ));
        }
        let mut custom = Vec::new();
        for (scim_path, attrs) in m.custom {
            let key = format!("mapping.custom.\"{scim_path}\"");
            check_custom_path(&scim_path).map_err(|r| invalid(&key, r))?;
            let names = attrs.names();
            if names.is_empty() {
                return Err(invalid(&key, "names no directory attribute".into()));
            }
            custom.push((scim_path, names));
        }
        let required_names = m.required.unwrap_or_else(|| {
            [
                "name.givenName",
                "name.familyName",
                "emails.work",
                "displayName",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        });
        let mut required = Vec::new();
        for name in &required_names {
            let field = match name.as_str() {
                "userName" => continue,
                "name.givenName" => RequiredField::GivenName,
                "name.familyName" => RequiredField::FamilyName,
                "emails.work" | "emails[type eq \"work\"].value" | "email" => RequiredField::Email,
                "displayName" => RequiredField::DisplayName,
                other => {
                    return Err(invalid(
                        "mapping.required",
                        format!(
                        "unknown field `{other}`; use userName, name.givenName, name.familyName, \
                             emails.work or displayName"
                    ),
                    ))
                }
            };
            required.push(field);
        }
        let mapping = MappingConfig {
            key,
            key_format: m.key_format.unwrap_or(defaults.key_format),
            user_name,
            given_name: names(m.given_name, &["givenName"]),
            family_name: names(m.family_name, &["sn"]),
            display_name: names(m.display_name, &["displayName", "cn"]),
            email: names(m.email, &["mail"]),
            title: names(m.title, &["title"]),
            department: names(m.department, defaults.department),
            employee_number: names(m.employee_number, defaults.employee_number),
            manager: names(m.manager, &["manager"]),
            active: ActiveRule {
                attribute: m.active.attribute.filter(|a| !a.is_empty()),
                inactive_values: m.active.inactive_values,
                present_means_inactive: m.active.present_means_inactive,
                user_account_control: m
                    .active
                    .user_account_control
                    .unwrap_or(defaults.user_account_control),
                account_expires: m
                    .active
                    .account_expires
                    .unwrap_or(defaults.user_account_control),
            },
            group_name,
            member_attribute: m.member_attribute.unwrap_or_else(|| "member".into()),
            member_of_attribute: m.member_of_attribute.unwrap_or_else(|| "memberOf".into()),
            custom,
            required,
        };

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
        // --- [daemon]
        let d = self.daemon;
        let poll_interval = crate::daemon::parse_duration(&d.poll_interval)
            .map_err(|r| invalid("daemon.poll_interval", r))?;
        let full_resync = crate::daemon::Schedule::parse(&d.full_resync)
            .map_err(|r| invalid("daemon.full_resync", r))?;
        let listen = match d.listen.trim() {
            "" | "off" => None,
            addr => {
                let a: std::net::SocketAddr = addr.parse().map_err(|_| {
                    invalid(
                        "daemon.listen",
                        format!("`{addr}` is not an address like 127.0.0.1:8086"),
                    )
                })?;
                if !a.ip().is_loopback() {
                    tracing::warn!(
                        listen = %a,
                        "the status server is reachable from the network: it shows user names and errors"
                    );
                }
                Some(a)
            }
        };
        let coalesce = crate::daemon::parse_duration(&d.coalesce)
            .map_err(|r| invalid("daemon.coalesce", r))?;
        if coalesce > std::time::Duration::from_secs(10) {
            return Err(invalid(
                "daemon.coalesce",
                "at most 10s: it delays every change by up to that much".into(),
            ));
        }
        let notify_fallback = crate::daemon::parse_duration(&d.notify_fallback)
            .map_err(|r| invalid("daemon.notify_fallback", r))?;
        if d.change_feed == ChangeFeed::Notify && ldap.profile != Profile::ActiveDirectory {
            return Err(invalid(
                "daemon.change_feed",
                "notify is Active Directory's change notification: set ldap.profile = \"ad\", or use syncrepl / timestamp / poll".into(),
            ));
        }
        if matches!(d.change_feed, ChangeFeed::Syncrepl | ChangeFeed::Timestamp) {
            if ldap.profile == Profile::ActiveDirectory {
                return Err(invalid(
                    "daemon.change_feed",
                    "syncrepl and timestamp are for OpenLDAP and other LDAP servers; Active Directory changes are read by uSNChanged (use \"auto\" or \"poll\")".into(),
                ));
            }
            if let Some(why) = crate::daemon::syncrepl_unfit(&ldap) {
                return Err(invalid("daemon.change_feed", why.into()));
            }
        }
        let daemon = DaemonConfig {
            poll_interval,
            full_resync,
            listen,
            change_feed: d.change_feed,
            coalesce,
            notify_fallback,
            heartbeat: crate::daemon::parse_duration(&d.heartbeat)
                .map_err(|r| invalid("daemon.heartbeat", r))?,
        };

        Ok(Config {
            path: path.to_path_buf(),
            daemon,
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

/// A light check that catches the common mistakes (unbalanced parentheses, no parentheses)
/// before the server answers with a bare "filter error".
fn check_filter(filter: &str) -> Result<(), String> {
    ldap3::parse_filter(filter)
        .map(|_| ())
        .map_err(|_| format!("`{filter}` is not a valid LDAP filter (RFC 4515)"))
}

fn check_custom_path(path: &str) -> Result<(), String> {
    let attr = if let Some(rest) = path.strip_prefix("urn:") {
        match rest.rsplit_once(':') {
            Some((schema, attr)) if !schema.is_empty() => attr,
            _ => return Err("an extension path must look like urn:...:Schema:attribute".into()),
        }
    } else {
        if OWNED_PATHS.iter().any(|p| p.eq_ignore_ascii_case(path)) {
            return Err(format!(
                "`{path}` is mapped by a dedicated key, not under custom"
            ));
        }
        path
    };
    let mut chars = attr.chars();
    let ok = chars
        .next()
        .map(|c| c.is_ascii_alphabetic())
        .unwrap_or(false)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{attr}` is not a valid SCIM attribute name"))
    }
}
