//! `[ha]`: several gateways, one pushing, coordinated by a lease entry in the directory.

use std::time::Duration;

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    lease_dn: String,
    instance_id: Option<String>,
    #[serde(default = "default_renew")]
    renew: String,
    #[serde(default = "default_lease_ttl")]
    lease_ttl: String,
    #[serde(default = "default_margin")]
    margin: String,
}

fn default_renew() -> String {
    "3s".into()
}
fn default_lease_ttl() -> String {
    "15s".into()
}
fn default_margin() -> String {
    "5s".into()
}

/// The most an instance id may be: it is written into the lease's value and shown everywhere.
const MAX_ID: usize = 64;

/// The host's name: the default instance id.
fn host_name() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let uts = rustix::system::uname();
        let name = uts.nodename().to_string_lossy().trim().to_string();
        if !name.is_empty() {
            return Some(name);
        }
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
}

/// Letters, digits, `.`, `-` and `_`: what a host name holds, and nothing the lease's value
/// uses to separate its parts.
pub(crate) fn check_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(format!("`{id}` must be 1 to {MAX_ID} characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "`{id}` holds {c:?}: only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

impl RawHa {
    pub(super) fn check(self, cx: &Cx) -> Result<HaConfig, ConfigError> {
        let invalid = |key: &str, reason: String| cx.invalid(key, reason);
        let h = self;
        let instance = match h.instance_id {
            Some(id) => id,
            None => host_name().ok_or_else(|| {
                invalid(
                    "ha.instance_id",
                    "the host's name cannot be read: set an id for this gateway".into(),
                )
            })?,
        };
        check_instance_id(&instance).map_err(|r| invalid("ha.instance_id", r))?;
        let dn = h.lease_dn.trim().to_string();
        let rdn = dn.split(',').next().unwrap_or("");
        if !rdn
            .split_once('=')
            .is_some_and(|(a, v)| a.trim().eq_ignore_ascii_case("cn") && !v.trim().is_empty())
            || !dn.contains(',')
        {
            return Err(invalid(
                "ha.lease_dn",
                format!("`{dn}` must be a DN whose first part is cn=..., under an existing entry (e.g. cn=dirbridge-lease,ou=services,dc=example,dc=org)"),
            ));
        }
        let duration = |key: &str, text: &str| {
            crate::schedule::parse_duration(text).map_err(|r| invalid(key, r))
        };
        let renew = duration("ha.renew", &h.renew)?;
        let lease_ttl = duration("ha.lease_ttl", &h.lease_ttl)?;
        let margin = duration("ha.margin", &h.margin)?;
        if renew < Duration::from_millis(200) {
            return Err(invalid(
                "ha.renew",
                "at least 200ms: each renewal is a write to the directory".into(),
            ));
        }
        if margin < Duration::from_secs(1) {
            return Err(invalid(
                "ha.margin",
                "at least 1s: it is what separates the active gateway's last write from a standby's first (requests on their way, a slow renewal)".into(),
            ));
        }
        if lease_ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "ha.lease_ttl",
                "at most 1h: it is how long nobody pushes after the active gateway dies".into(),
            ));
        }
        // The active steps down at ttl - margin after its last renewal: two renewals must fit
        // in that (one may fail), or a single slow write would make it step down.
        if renew * 2 + margin > lease_ttl {
            return Err(invalid(
                "ha.lease_ttl",
                format!(
                    "must be at least twice ha.renew plus ha.margin ({}): the active gateway stops pushing at lease_ttl - margin after its last renewal, and one renewal may fail",
                    humantime::format_duration(renew * 2 + margin)
                ),
            ));
        }
        Ok(HaConfig {
            instance,
            lease_dn: dn,
            renew,
            lease_ttl,
            margin,
        })
    }
}
