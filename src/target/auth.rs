//! Authorization of every request to a target (`[target.auth]`): a fixed header (bearer, basic,
//! a custom header), an OAuth 2.0 client-credentials token fetched, cached until shortly before
//! it expires and renewed once when the target refuses it, or miniOrange's per-request hash.
//! Every value built from a secret is a sensitive header: never logged, never in `Debug`.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::Value;
use sha2::{Digest, Sha512};

use super::http::{body_text, clean_detail};
use super::{TargetError, TargetErrorKind};
use crate::config::rest::{AuthConfig, ClientAuth, OAuth2Config};

pub(crate) type Headers = Vec<(HeaderName, HeaderValue)>;

/// What a request carries to be let in.
pub(crate) struct Auth {
    scheme: Scheme,
    /// Every secret value and every header value made from one (and the last access tokens):
    /// removed from any text a server sends back before it reaches an error, a log or
    /// `status` (a server may echo the request in its error message).
    secrets: Vec<String>,
    tokens: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// How many access tokens are remembered for scrubbing.
const TOKENS_REMEMBERED: usize = 4;

enum Scheme {
    Fixed(Headers),
    OAuth2(Box<OAuth2State>),
    MiniOrange {
        customer_key: HeaderValue,
        key: String,
        api_key: crate::config::Secret,
    },
}

struct OAuth2State {
    cfg: OAuth2Config,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Counts tokens fetched: a refusal renews the token only if it is still the one refused.
    generation: std::sync::atomic::AtomicU64,
}

struct Token {
    header: HeaderValue,
    /// When to fetch the next one (shortly before it expires); `None`: when refused.
    renew_at: Option<Instant>,
    generation: u64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.scheme {
            Scheme::Fixed(h) if h.is_empty() => "none",
            Scheme::Fixed(_) => "fixed header",
            Scheme::OAuth2(_) => "oauth2 client credentials",
            Scheme::MiniOrange { .. } => "miniorange",
        };
        f.debug_struct("Auth").field("kind", &kind).finish()
    }
}

fn sensitive(value: &str, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| format!("{what} holds characters not allowed in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Auth {
    /// `http` fetches tokens (same TLS settings as the target).
    pub(crate) fn new(cfg: &AuthConfig, http: reqwest::Client) -> Result<Auth, String> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let form = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let secrets: Vec<String> = match cfg {
            AuthConfig::None => Vec::new(),
            AuthConfig::Bearer { token } => vec![token.expose().to_string()],
            AuthConfig::Basic { user, password } => vec![
                password.expose().to_string(),
                b64(&format!("{user}:{}", password.expose())),
            ],
            AuthConfig::Header { value, .. } => vec![value.expose().to_string()],
            AuthConfig::OAuth2(o) => vec![
                o.client_secret.expose().to_string(),
                form(o.client_secret.expose()),
                b64(&format!(
                    "{}:{}",
                    form(&o.client_id),
                    form(o.client_secret.expose())
                )),
            ],
            AuthConfig::MiniOrange { api_key, .. } => vec![api_key.expose().to_string()],
        };
        let scheme = match cfg {
            AuthConfig::None => Scheme::Fixed(Vec::new()),
            AuthConfig::Bearer { token } => Scheme::Fixed(vec![(
                AUTHORIZATION,
                sensitive(&format!("Bearer {}", token.expose()), "target.token")?,
            )]),
            AuthConfig::Basic { user, password } => {
                let pair = format!("{user}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                Scheme::Fixed(vec![(
                    AUTHORIZATION,
                    sensitive(&format!("Basic {encoded}"), "target.auth.password")?,
                )])
            }
            AuthConfig::Header { name, value } => {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("target.auth.name `{name}` is not a header name"))?;
                Scheme::Fixed(vec![(
                    name,
                    sensitive(value.expose(), "target.auth.value")?,
                )])
            }
            AuthConfig::OAuth2(o) => Scheme::OAuth2(Box::new(OAuth2State {
                cfg: (**o).clone(),
                http,
                token: tokio::sync::Mutex::new(None),
                generation: std::sync::atomic::AtomicU64::new(0),
            })),
            AuthConfig::MiniOrange {
                customer_key,
                api_key,
            } => Scheme::MiniOrange {
                customer_key: HeaderValue::from_str(customer_key).map_err(|_| {
                    "target.auth.customer_key holds characters not allowed in an HTTP header"
                        .to_string()
                })?,
                key: customer_key.clone(),
                api_key: api_key.clone(),
            },
        };
        Ok(Auth {
            scheme,
            secrets,
            tokens: Default::default(),
        })
    }

    /// `text` with every secret this authorization knows replaced by `<redacted>`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_string();
        for s in self
            .secrets
            .iter()
            .chain(tokens.iter())
            .filter(|s| s.len() >= 4)
        {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }

    /// An error with every text it carries scrubbed (see [`Auth::scrub`]).
    pub(crate) fn scrub_error(&self, e: TargetError) -> TargetError {
        let s = |t: String| self.scrub(&t);
        let kind = match e.kind {
            TargetErrorKind::Http {
                status,
                code,
                detail,
            } => TargetErrorKind::Http {
                status,
                code: code.map(s),
                detail: detail.map(s),
            },
            TargetErrorKind::Exists { status, detail } => TargetErrorKind::Exists {
                status,
                detail: detail.map(s),
            },
            TargetErrorKind::Missing { status, detail } => TargetErrorKind::Missing {
                status,
                detail: detail.map(s),
            },
            TargetErrorKind::Transport(t) => TargetErrorKind::Transport(s(t)),
            TargetErrorKind::Lost(t) => TargetErrorKind::Lost(s(t)),
            TargetErrorKind::BadResponse(t) => TargetErrorKind::BadResponse(s(t)),
            TargetErrorKind::Request(t) => TargetErrorKind::Request(s(t)),
            TargetErrorKind::Config(t) => TargetErrorKind::Config(s(t)),
            TargetErrorKind::Auth(t) => TargetErrorKind::Auth(s(t)),
            TargetErrorKind::Timeout => TargetErrorKind::Timeout,
        };
        TargetError {
            request: self.scrub(&e.request),
            kind,
        }
    }

    fn remember_token(&self, token: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.push_back(token.to_string());
        if tokens.len() > TOKENS_REMEMBERED {
            tokens.pop_front();
        }
    }

    /// The headers for one attempt, and which token they carry (see [`Auth::renew`]).
    pub(crate) async fn headers(&self) -> Result<(Headers, u64), TargetError> {
        match &self.scheme {
            Scheme::Fixed(h) => Ok((h.clone(), 0)),
            Scheme::OAuth2(o) => {
                let OAuth2State {
                    cfg,
                    http,
                    token,
                    generation,
                } = &**o;
                // One fetch at a time: requests waiting meanwhile use the token it brings.
                let mut held = token.lock().await;
                if let Some(t) = held.as_ref() {
                    if t.renew_at.is_none_or(|at| Instant::now() < at) {
                        return Ok((vec![(AUTHORIZATION, t.header.clone())], t.generation));
                    }
                }
                let gen = generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let (t, raw) = fetch_token(cfg, http, gen).await?;
                self.remember_token(&raw);
                let out = (vec![(AUTHORIZATION, t.header.clone())], gen);
                *held = Some(t);
                Ok(out)
            }
            Scheme::MiniOrange {
                customer_key,
                key,
                api_key,
            } => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or_default()
                    .to_string();
                let mut h = Sha512::new();
                h.update(key.as_bytes());
                h.update(ms.as_bytes());
                h.update(api_key.expose().as_bytes());
                let hash = hex::encode(h.finalize());
                // Replayable while the timestamp is fresh: scrubbed like a token.
                self.remember_token(&hash);
                let mut hv = HeaderValue::from_str(&hash).map_err(|_| TargetError {
                    request: "authorization".into(),
                    kind: TargetErrorKind::Auth("the hash is not a header value".into()),
                })?;
                hv.set_sensitive(true);
                let ts = HeaderValue::from_str(&ms).map_err(|_| TargetError {
                    request: "authorization".into(),
                    kind: TargetErrorKind::Auth("the time is not a header value".into()),
                })?;
                Ok((
                    vec![
                        (
                            HeaderName::from_static("customer-key"),
                            customer_key.clone(),
                        ),
                        (HeaderName::from_static("timestamp"), ts),
                        (AUTHORIZATION, hv),
                    ],
                    0,
                ))
            }
        }
    }

    /// The target refused the token of `generation`: true when a new one will be fetched for
    /// the next attempt (OAuth 2.0 only; once per request, see the caller).
    pub(crate) async fn renew(&self, generation: u64) -> bool {
        match &self.scheme {
            Scheme::OAuth2(o) => {
                let mut held = o.token.lock().await;
                if held.as_ref().is_some_and(|t| t.generation == generation) {
                    *held = None;
                }
                true
            }
            _ => false,
        }
    }
}

/// One client-credentials grant (RFC 6749 §4.4).
async fn fetch_token(
    cfg: &OAuth2Config,
    http: &reqwest::Client,
    generation: u64,
) -> Result<(Token, String), TargetError> {
    let label = format!("POST {}", cfg.token_url.path());
    let fail = |kind| TargetError {
        request: label.clone(),
        kind,
    };
    let mut pairs: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(s) = &cfg.scope {
        pairs.push(("scope", s));
    }
    if let Some(a) = &cfg.audience {
        pairs.push(("audience", a));
    }
    let mut req = http
        .post(cfg.token_url.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    match cfg.client_auth {
        ClientAuth::Basic => {
            // RFC 6749 §2.3.1: each part form-encoded, then joined and base64-encoded.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!(
                "{}:{}",
                enc(&cfg.client_id),
                enc(cfg.client_secret.expose())
            );
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            let v = sensitive(&v, "target.auth.client_secret")
                .map_err(|e| fail(TargetErrorKind::Auth(e)))?;
            req = req.header(AUTHORIZATION, v);
        }
        ClientAuth::Post => {
            pairs.push(("client_id", &cfg.client_id));
            pairs.push(("client_secret", cfg.client_secret.expose()));
        }
    }
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let resp = req
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form)
        .send()
        .await
        .map_err(|e| fail(super::http::transport_kind(&e)))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| fail(super::http::transport_kind(&e)))?;
    if bytes.len() > 1024 * 1024 {
        return Err(fail(TargetErrorKind::Auth(
            "the token endpoint's answer is larger than 1 MiB".into(),
        )));
    }
    let doc: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status.as_u16() == 429 || status.is_server_error() {
        // Not a refusal of the credentials: the endpoint is busy or failing, so asked again.
        return Err(fail(TargetErrorKind::Transport(format!(
            "the token endpoint answered HTTP {}",
            status.as_u16()
        ))));
    }
    if !status.is_success() {
        // RFC 6749 §5.2: `error` and `error_description`; never the request (it holds the secret).
        let text = doc
            .as_ref()
            .and_then(|d| {
                let e = d.get("error").and_then(Value::as_str)?;
                Some(match d.get("error_description").and_then(Value::as_str) {
                    Some(desc) => format!("{e}: {}", clean_detail(desc)),
                    None => e.to_string(),
                })
            })
            .or_else(|| body_text(&bytes))
            .unwrap_or_default();
        return Err(fail(TargetErrorKind::Auth(format!(
            "the token endpoint answered HTTP {}{}{text}",
            status.as_u16(),
            if text.is_empty() { "" } else { ": " }
        ))));
    }
    // Not JSON: most likely cut on the way, so asked again (a token endpoint that never
    // answers JSON fails after the retries with this message).
    let doc = doc.ok_or_else(|| {
        fail(TargetErrorKind::Transport(
            "the token endpoint's answer is not JSON".into(),
        ))
    })?;
    let token = doc
        .get(&cfg.token_key)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            fail(TargetErrorKind::Auth(format!(
                "the token endpoint's answer has no `{}` (target.auth.token_key)",
                cfg.token_key
            )))
        })?;
    let lifetime = match doc.get(&cfg.expiry_key) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s > 0.0)
    .map(|s| Duration::from_secs_f64(s.min(365.0 * 86_400.0)));
    let scheme = match doc.get(&cfg.token_type_key).and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_string(),
        Some(t) if !t.is_empty() => t.to_string(),
        _ => cfg.token_type.clone(),
    };
    let header = sensitive(&format!("{scheme} {token}"), "the access token")
        .map_err(|e| fail(TargetErrorKind::Auth(e)))?;
    // Renewed a fifth of its lifetime before it ends (at most 60 s before), so that a request
    // never leaves with a token about to expire.
    let renew_at = lifetime.map(|l| Instant::now() + l - (l / 5).min(Duration::from_secs(60)));
    tracing::debug!(lifetime = ?lifetime, "access token obtained");
    Ok((
        Token {
            header,
            renew_at,
            generation,
        },
        token.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn secrets_a_server_echoes_back_are_scrubbed_from_errors() {
        let auth = Auth::new(
            &AuthConfig::Basic {
                user: "gw".into(),
                password: Secret::new("pa:ss-w0rd"),
            },
            reqwest::Client::new(),
        )
        .unwrap();
        let e = TargetError {
            request: "POST /users".into(),
            kind: TargetErrorKind::Http {
                status: 400,
                code: None,
                detail: Some(
                    "bad request: Authorization: Basic Z3c6cGE6c3MtdzByZA== (password pa:ss-w0rd)"
                        .into(),
                ),
            },
        };
        let text = auth.scrub_error(e).to_string();
        assert!(
            !text.contains("pa:ss-w0rd") && !text.contains("Z3c6cGE6c3MtdzByZA=="),
            "{text}"
        );
        assert!(text.contains("<redacted>"), "{text}");
        auth.remember_token("tok-abc-123");
        assert_eq!(
            auth.scrub("token tok-abc-123 expired"),
            "token <redacted> expired"
        );
    }
}
