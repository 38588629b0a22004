//! `[ldap]`: where the directory is, how to reach it, what to read.

use std::time::Duration;

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLdap {
    #[serde(default)]
    pub(super) profile: Profile,
    url: Urls,
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
    membership: Option<Membership>,
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
    #[serde(default = "default_max_entries")]
    max_entries: u64,
    #[serde(default = "default_search_time_limit")]
    search_time_limit_secs: u64,
    #[serde(default = "default_max_message_kib")]
    max_message_kib: usize,
    #[serde(default = "default_max_read_mib")]
    max_read_mib: u64,
}

/// `ldap.url`: one server, or several tried in order (domain controllers, OpenLDAP providers).
#[derive(Deserialize)]
#[serde(untagged)]
enum Urls {
    One(String),
    Several(Vec<String>),
}

/// The defaults a directory flavour brings; every one can be overridden in the file.
pub(super) struct ProfileDefaults {
    pub(super) user_filter: &'static str,
    pub(super) group_filter: &'static str,
    pub(super) referenced_groups: ReferencedGroups,
    pub(super) key: &'static str,
    pub(super) key_format: KeyFormat,
    pub(super) user_name: &'static [&'static str],
    pub(super) department: &'static [&'static str],
    pub(super) employee_number: &'static [&'static str],
    pub(super) user_account_control: bool,
}

impl Profile {
    pub(super) fn defaults(self) -> ProfileDefaults {
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

impl RawLdap {
    /// The checked section, and whether `incremental = true` was written (not defaulted).
    pub(super) fn check(self, cx: &Cx) -> Result<(LdapConfig, bool), ConfigError> {
        let (path, base) = (cx.path, &cx.base);
        let invalid = |key: &str, reason: String| cx.invalid(key, reason);
        let l = self;
        let defaults = l.profile.defaults();
        let l_incremental_explicit = l.incremental == Some(true);
        let servers = match l.url {
            Urls::One(u) => vec![u],
            Urls::Several(list) => list,
        };
        let Some(first) = servers.first() else {
            return Err(invalid(
                "ldap.url",
                "the list is empty: name at least one server".into(),
            ));
        };
        let tls = if first.starts_with("ldaps://") {
            if l.starttls {
                return Err(invalid(
                    "ldap.starttls",
                    "StartTLS cannot be combined with an ldaps:// URL; use one or the other".into(),
                ));
            }
            TlsMode::Ldaps
        } else if first.starts_with("ldap://") {
            if l.starttls {
                TlsMode::StartTls
            } else {
                TlsMode::Plain
            }
        } else {
            return Err(invalid(
                "ldap.url",
                format!("`{first}` must start with ldap:// or ldaps://"),
            ));
        };
        for u in &servers {
            check_url(u, first).map_err(|r| invalid("ldap.url", r))?;
        }
        let bind_password = SecretSource {
            inline: l.bind_password,
            file: l.bind_password_file,
            env: l.bind_password_env,
        }
        .resolve(path, "ldap.bind_password", base)?;
        if l.bind_dn.is_some() && bind_password.is_none() {
            return Err(invalid(
                "ldap.bind_password",
                "bind_dn is set but no password: set bind_password, bind_password_file or bind_password_env".into(),
            ));
        }
        // Plain LDAP with a password is an explicit choice; on AD, even on loopback (a simple
        // bind in clear text to a DC is what "LDAP signing" audits flag).
        let loopback_ok =
            servers.iter().all(|u| is_loopback_url(u)) && l.profile != Profile::ActiveDirectory;
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
        if l.timeout_secs == 0 || l.timeout_secs > 86_400 {
            return Err(invalid(
                "ldap.timeout_secs",
                "must be between 1 and 86400 (a day)".into(),
            ));
        }
        if l.max_entries == 0 || l.max_entries > 1_000_000_000 {
            return Err(invalid(
                "ldap.max_entries",
                "must be between 1 and 1000000000".into(),
            ));
        }
        if l.search_time_limit_secs == 0 || l.search_time_limit_secs > 7 * 86_400 {
            return Err(invalid(
                "ldap.search_time_limit_secs",
                "must be between 1 and 604800 (a week)".into(),
            ));
        }
        if l.max_message_kib == 0 || l.max_message_kib > 1_048_576 {
            return Err(invalid(
                "ldap.max_message_kib",
                "must be between 1 and 1048576 (1 GiB)".into(),
            ));
        }
        if l.max_read_mib == 0 || l.max_read_mib > 1_048_576 {
            return Err(invalid(
                "ldap.max_read_mib",
                "must be between 1 and 1048576 (1 TiB)".into(),
            ));
        }
        if l.base_dn.trim().is_empty() {
            return Err(invalid("ldap.base_dn", "must not be empty".into()));
        }
        let ldap = LdapConfig {
            url: first.clone(),
            servers,
            tls,
            bind_dn: l.bind_dn,
            bind_password,
            ca_file,
            tls_verify: l.tls_verify,
            user_base: l.user_base.unwrap_or_else(|| l.base_dn.clone()),
            group_base: l.group_base.unwrap_or_else(|| l.base_dn.clone()),
            profile: l.profile,
            user_filter,
            group_filter,
            membership: l.membership.unwrap_or(Membership::MemberOf),
            membership_set: l.membership.is_some(),
            nested_groups: l.nested_groups,
            referenced_groups: l.referenced_groups.unwrap_or(defaults.referenced_groups),
            range_step: l.range_step,
            include_primary_group: l.include_primary_group,
            incremental: l
                .incremental
                .unwrap_or(l.profile == Profile::ActiveDirectory),
            page_size: l.page_size,
            timeout: Duration::from_secs(l.timeout_secs),
            max_entries: l.max_entries,
            search_time_limit: Duration::from_secs(l.search_time_limit_secs),
            max_message_kib: l.max_message_kib,
            max_read_mib: l.max_read_mib,
        };
        Ok((ldap, l_incremental_explicit))
    }
}

fn default_page_size() -> u32 {
    500
}

/// Far above any directory a gateway mirrors, far below what would exhaust memory.
fn default_max_entries() -> u64 {
    5_000_000
}

fn default_search_time_limit() -> u64 {
    4 * 3600
}

/// 64 MiB: a group of a million members in one message, where range retrieval is not used.
fn default_max_message_kib() -> usize {
    65_536
}

/// 4 GiB of attribute data in one search: ten times a million users' worth of what is mapped.
fn default_max_read_mib() -> u64 {
    4096
}

/// One server's URL: the scheme of the first (one TLS setting serves them all), a host, no
/// credentials (they would be printed wherever the URL is: logs, `check`).
fn check_url(u: &str, first: &str) -> Result<(), String> {
    let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !(u.starts_with("ldap://") || u.starts_with("ldaps://")) {
        return Err(format!("`{u}` must start with ldap:// or ldaps://"));
    }
    if scheme(u) != scheme(first) {
        return Err(format!(
            "`{u}` and `{first}` differ in scheme: every server in the list is reached the same way (all ldaps://, or all ldap:// with or without starttls)"
        ));
    }
    let parsed =
        url::Url::parse(u).map_err(|_| format!("`{u}` is not a valid LDAP URL with a host"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "must not carry credentials; use bind_dn and bind_password (or its _file / _env)"
                .into(),
        );
    }
    if parsed.host().is_none() {
        return Err(format!("`{u}` is not a valid LDAP URL with a host"));
    }
    Ok(())
}

/// A light check that catches the common mistakes (unbalanced parentheses, no parentheses)
/// before the server answers with a bare "filter error".
fn check_filter(filter: &str) -> Result<(), String> {
    ldap3::parse_filter(filter)
        .map(|_| ())
        .map_err(|_| format!("`{filter}` is not a valid LDAP filter (RFC 4515)"))
}
