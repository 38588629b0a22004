//! `[daemon]`: how `dirbridge run` follows the directory and shows its status.

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    #[serde(default = "default_poll")]
    poll_interval: String,
    #[serde(default = "default_full_resync")]
    full_resync: String,
    #[serde(default)]
    full_resync_mode: ResyncMode,
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
    status_token: Option<crate::config::Secret>,
    status_token_file: Option<String>,
    status_token_env: Option<String>,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            poll_interval: default_poll(),
            full_resync: default_full_resync(),
            full_resync_mode: ResyncMode::default(),
            listen: default_listen(),
            change_feed: ChangeFeed::default(),
            coalesce: default_coalesce(),
            notify_fallback: default_notify_fallback(),
            heartbeat: default_heartbeat(),
            status_token: None,
            status_token_file: None,
            status_token_env: None,
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

impl RawDaemon {
    pub(super) fn check(self, cx: &Cx, ldap: &LdapConfig) -> Result<DaemonConfig, ConfigError> {
        let invalid = |key: &str, reason: String| cx.invalid(key, reason);
        let d = self;
        let poll_interval = crate::schedule::parse_duration(&d.poll_interval)
            .map_err(|r| invalid("daemon.poll_interval", r))?;
        let full_resync = crate::schedule::Schedule::parse(&d.full_resync)
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
                Some(a)
            }
        };
        let status_token = crate::config::SecretSource {
            inline: d.status_token,
            file: d.status_token_file,
            env: d.status_token_env,
        }
        .resolve(cx.path, "daemon.status_token", &cx.base)?;
        // The status page and the metrics name users and errors: off loopback, never open.
        if listen.is_some_and(|a| !a.ip().is_loopback()) && status_token.is_none() {
            return Err(invalid(
                "daemon.listen",
                "the status server would be reachable from the network: set daemon.status_token_file \
                 (or _env) for a bearer token that /status, /metrics and the dashboard will require \
                 (/healthz and /readyz stay open), or listen on 127.0.0.1"
                    .into(),
            ));
        }
        let coalesce = crate::schedule::parse_duration(&d.coalesce)
            .map_err(|r| invalid("daemon.coalesce", r))?;
        if coalesce > std::time::Duration::from_secs(10) {
            return Err(invalid(
                "daemon.coalesce",
                "at most 10s: it delays every change by up to that much".into(),
            ));
        }
        let notify_fallback = crate::schedule::parse_duration(&d.notify_fallback)
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
            if let Some(why) = ldap.syncrepl_unfit() {
                return Err(invalid("daemon.change_feed", why.into()));
            }
        }
        let daemon = DaemonConfig {
            poll_interval,
            full_resync,
            full_resync_mode: d.full_resync_mode,
            listen,
            change_feed: d.change_feed,
            coalesce,
            notify_fallback,
            heartbeat: crate::schedule::parse_duration(&d.heartbeat)
                .map_err(|r| invalid("daemon.heartbeat", r))?,
            status_token,
        };
        Ok(daemon)
    }
}
