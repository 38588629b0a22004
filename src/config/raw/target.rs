//! `[target]`: where users and groups are pushed, with what credentials and limits.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::auth::RawAuth;
use super::rest::{RawEvent, RawFields, RawResponse, RawRest};
use super::*;
use crate::config::rest::{AuthConfig, Missing};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
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
    #[serde(default)]
    allow_plaintext: bool,
    #[serde(default = "default_max_response_kib")]
    max_response_kib: usize,
    auth: Option<RawAuth>,
    #[serde(default)]
    events: BTreeMap<String, RawEvent>,
    response: Option<RawResponse>,
    fields: Option<RawFields>,
    missing_values: Option<Missing>,
}

impl RawTarget {
    /// `custom`: the custom attributes `[mapping]` maps (names a REST template may use).
    pub(super) fn check(self, cx: &Cx, custom: &[String]) -> Result<TargetConfig, ConfigError> {
        let (path, base) = (cx.path, &cx.base);
        let invalid = |key: &str, reason: String| cx.invalid(key, reason);
        let t = self;
        let url = url::Url::parse(&t.url)
            .map_err(|e| invalid("target.url", format!("`{}` is not a valid URL: {e}", t.url)))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(invalid(
                "target.url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "target.url",
                "must not carry a query or a fragment (a REST event's path can have a query)"
                    .into(),
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
        .resolve(path, "target.token", base)?;
        let plaintext =
            url.scheme() == "http" && !url.host_str().map(is_loopback_host).unwrap_or(false);
        let auth = match (token, t.auth) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "target.token",
                    "set target.token or [target.auth], not both".into(),
                ))
            }
            (Some(token), None) => AuthConfig::Bearer { token },
            (None, Some(a)) => a.check(cx, t.allow_plaintext)?,
            (None, None) => {
                return Err(invalid(
                    "target.token",
                    "credentials are required: set token, token_file or token_env (a bearer \
                     token), or a [target.auth] table (type = \"none\" for an API without any)"
                        .into(),
                ))
            }
        };
        let has_credentials = !matches!(auth, AuthConfig::None);
        // Credentials in clear over the network: refused like an LDAP password in clear text.
        if plaintext && has_credentials {
            if !t.allow_plaintext {
                return Err(invalid(
                    "target.url",
                    "the target's credentials would be sent in clear text: use https://, or set \
                     target.allow_plaintext = true to accept the risk"
                        .into(),
                ));
            }
            tracing::warn!(
                "target.url uses plain http: the credentials travel unencrypted (allow_plaintext)"
            );
        }
        let rest_keys = !t.events.is_empty()
            || t.response.is_some()
            || t.fields.is_some()
            || t.missing_values.is_some();
        let rest = match t.kind {
            TargetKind::Scim => {
                if rest_keys {
                    return Err(invalid(
                        "target.events",
                        "events, response, fields and missing_values are for kind = \"rest\" or \"miniorange\"".into(),
                    ));
                }
                None
            }
            TargetKind::Rest | TargetKind::MiniOrange => {
                let customer_key = match &auth {
                    AuthConfig::MiniOrange { customer_key, .. } => Some(customer_key.clone()),
                    _ if t.kind == TargetKind::MiniOrange => {
                        return Err(invalid(
                            "target.auth.type",
                            "kind = \"miniorange\" is authorized with type = \"miniorange\" (customer_key and api_key)".into(),
                        ))
                    }
                    _ => None,
                };
                let mut rest = RawRest {
                    kind: t.kind,
                    events: t.events,
                    response: t.response,
                    fields: t.fields,
                    missing: t.missing_values,
                }
                .check(cx, custom, customer_key.is_some())?;
                rest.customer_key = customer_key;
                Some(rest)
            }
        };
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
        if t.max_response_kib == 0 || t.max_response_kib > 1024 * 1024 {
            return Err(invalid(
                "target.max_response_kib",
                "between 1 and 1048576 (1 GiB)".into(),
            ));
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
            auth,
            rest,
            ca_file: target_ca,
            tls_verify: t.tls_verify,
            timeout: Duration::from_secs(t.timeout_secs),
            retries: t.retries,
            rate_limit,
            max_concurrency: t.max_concurrency,
            max_response_bytes: t.max_response_kib * 1024,
        };
        Ok(target)
    }
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

fn default_max_response_kib() -> usize {
    64 * 1024
}
