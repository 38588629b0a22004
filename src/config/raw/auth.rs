//! `[target.auth]`: how requests to the target are authorized. Every secret has the inline,
//! `_file` and `_env` forms; a key that belongs to another type is refused, not ignored.

use serde::Deserialize;

use super::*;
use crate::config::rest::{AuthConfig, ClientAuth, OAuth2Config};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(rename = "type")]
    kind: String,
    token: Option<Secret>,
    token_file: Option<String>,
    token_env: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    password_file: Option<String>,
    password_env: Option<String>,
    name: Option<String>,
    value: Option<Secret>,
    value_file: Option<String>,
    value_env: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<String>,
    client_secret_env: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    client_auth: Option<ClientAuth>,
    token_key: Option<String>,
    expiry_key: Option<String>,
    token_type_key: Option<String>,
    token_type: Option<String>,
    customer_key: Option<String>,
    api_key: Option<Secret>,
    api_key_file: Option<String>,
    api_key_env: Option<String>,
}

impl RawAuth {
    /// The checked authorization. `plaintext_ok`: http:// to a host off loopback was accepted.
    pub(super) fn check(self, cx: &Cx, plaintext_ok: bool) -> Result<AuthConfig, ConfigError> {
        let a = self;
        let secret = |inline: Option<Secret>,
                      file: Option<String>,
                      env: Option<String>,
                      key: &str|
         -> Result<Option<Secret>, ConfigError> {
            SecretSource { inline, file, env }.resolve(cx.path, key, &cx.base)
        };
        let has_token = a.token.is_some() || a.token_file.is_some() || a.token_env.is_some();
        let has_password =
            a.password.is_some() || a.password_file.is_some() || a.password_env.is_some();
        let has_value = a.value.is_some() || a.value_file.is_some() || a.value_env.is_some();
        let has_secret = a.client_secret.is_some()
            || a.client_secret_file.is_some()
            || a.client_secret_env.is_some();
        let has_api_key =
            a.api_key.is_some() || a.api_key_file.is_some() || a.api_key_env.is_some();
        let oauth_keys = a.token_url.is_some()
            || a.client_id.is_some()
            || has_secret
            || a.scope.is_some()
            || a.audience.is_some()
            || a.client_auth.is_some()
            || a.token_key.is_some()
            || a.expiry_key.is_some()
            || a.token_type_key.is_some()
            || a.token_type.is_some();
        let used: [(&str, bool); 6] = [
            ("bearer", has_token),
            ("basic", a.user.is_some() || has_password),
            ("header", a.name.is_some() || has_value),
            ("oauth2", oauth_keys),
            ("miniorange", a.customer_key.is_some() || has_api_key),
            ("none", false),
        ];
        if !used.iter().any(|(t, _)| *t == a.kind) {
            return Err(cx.invalid(
                "target.auth.type",
                format!(
                    "`{}` is not one of bearer, basic, header, oauth2, miniorange, none",
                    a.kind
                ),
            ));
        }
        if let Some((other, _)) = used.iter().find(|(t, set)| *set && *t != a.kind) {
            return Err(cx.invalid(
                "target.auth",
                format!(
                    "holds keys of type = \"{other}\" while type = \"{}\": remove them",
                    a.kind
                ),
            ));
        }
        let required = |v: Option<String>, key: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| cx.invalid(key, format!("required with type = \"{}\"", a.kind)))
        };
        let need = |s: Option<Secret>, key: &str| {
            s.ok_or_else(|| {
                cx.invalid(
                    key,
                    format!(
                        "required with type = \"{}\" (inline, {key}_file or {key}_env)",
                        a.kind
                    ),
                )
            })
        };
        Ok(match a.kind.as_str() {
            "none" => AuthConfig::None,
            "bearer" => AuthConfig::Bearer {
                token: need(
                    secret(a.token, a.token_file, a.token_env, "target.auth.token")?,
                    "target.auth.token",
                )?,
            },
            "basic" => {
                let user = required(a.user, "target.auth.user")?;
                if user.contains(':') {
                    return Err(cx.invalid(
                        "target.auth.user",
                        "a Basic user name cannot hold `:` (RFC 7617)".into(),
                    ));
                }
                AuthConfig::Basic {
                    user,
                    password: need(
                        secret(
                            a.password,
                            a.password_file,
                            a.password_env,
                            "target.auth.password",
                        )?,
                        "target.auth.password",
                    )?,
                }
            }
            "header" => {
                let name = required(a.name, "target.auth.name")?;
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(cx.invalid(
                        "target.auth.name",
                        format!("`{name}` is not an HTTP header name"),
                    ));
                }
                AuthConfig::Header {
                    name,
                    value: need(
                        secret(a.value, a.value_file, a.value_env, "target.auth.value")?,
                        "target.auth.value",
                    )?,
                }
            }
            "oauth2" => {
                let raw_url = required(a.token_url, "target.auth.token_url")?;
                let token_url = url::Url::parse(&raw_url).map_err(|e| {
                    cx.invalid(
                        "target.auth.token_url",
                        format!("`{raw_url}` is not a valid URL: {e}"),
                    )
                })?;
                match token_url.scheme() {
                    "https" => {}
                    "http"
                        if plaintext_ok
                            || token_url.host_str().map(is_loopback_host).unwrap_or(false) => {}
                    _ => {
                        return Err(cx.invalid(
                            "target.auth.token_url",
                            "the client secret would travel in clear text: use https:// (or \
                             target.allow_plaintext = true to accept the risk)"
                                .into(),
                        ))
                    }
                }
                AuthConfig::OAuth2(Box::new(OAuth2Config {
                    token_url,
                    client_id: required(a.client_id, "target.auth.client_id")?,
                    client_secret: need(
                        secret(
                            a.client_secret,
                            a.client_secret_file,
                            a.client_secret_env,
                            "target.auth.client_secret",
                        )?,
                        "target.auth.client_secret",
                    )?,
                    scope: a.scope,
                    audience: a.audience,
                    client_auth: a.client_auth.unwrap_or(ClientAuth::Basic),
                    token_key: a.token_key.unwrap_or_else(|| "access_token".into()),
                    expiry_key: a.expiry_key.unwrap_or_else(|| "expires_in".into()),
                    token_type_key: a.token_type_key.unwrap_or_else(|| "token_type".into()),
                    token_type: a.token_type.unwrap_or_else(|| "Bearer".into()),
                }))
            }
            _ => {
                let customer_key = required(a.customer_key, "target.auth.customer_key")?;
                if !customer_key.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(cx.invalid(
                        "target.auth.customer_key",
                        "a miniOrange customer key is letters and digits".into(),
                    ));
                }
                AuthConfig::MiniOrange {
                    customer_key,
                    api_key: need(
                        secret(
                            a.api_key,
                            a.api_key_file,
                            a.api_key_env,
                            "target.auth.api_key",
                        )?,
                        "target.auth.api_key",
                    )?,
                }
            }
        })
    }
}
