//! HTTP side of the SCIM client: requests, status handling, paging.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use super::discover::Capabilities;
use super::find::Paging;
use super::local_patch;
use super::lookup::{Attr, Index};
use crate::config::{TargetConfig, UpdateMethod};
use crate::target::quirks::Quirks;
use crate::target::retry::{self, Failure, Pacer};
use crate::target::{TargetError, TargetErrorKind};

const SCIM_JSON: &str = "application/scim+json";
/// Longest error detail kept from a target answer.
const MAX_DETAIL: usize = 500;

/// A SCIM 2.0 service provider.
pub(crate) struct ScimClient {
    http: reqwest::Client,
    pub(super) base: url::Url,
    pub(super) custom_paths: Vec<String>,
    method: UpdateMethod,
    /// Updates go as GET + PUT instead of PATCH (configured, or found at preflight).
    use_put: AtomicBool,
    /// Further attempts after a retryable failure.
    retries: u32,
    /// Largest answer body read, in bytes.
    max_body: usize,
    pacer: Option<Pacer>,
    pub(super) quirks: Quirks,
    /// `/ServiceProviderConfig` says the provider cannot filter: every look-up is local.
    pub(super) filter_unsupported: AtomicBool,
    /// (resource, attribute) look-ups whose filter the provider ignored or refused.
    pub(super) unfilterable: std::sync::Mutex<BTreeSet<(String, Attr)>>,
    pub(super) user_index: tokio::sync::Mutex<Option<Index>>,
    pub(super) group_index: tokio::sync::Mutex<Option<Index>>,
    pub(super) paging: std::sync::Mutex<Paging>,
    /// What `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` said, once read.
    pub(super) caps: std::sync::RwLock<Capabilities>,
    /// PATCH operations (resource, op, attribute) the provider answered 501 to: sent as GET + PUT.
    put_ops: std::sync::Mutex<BTreeSet<String>>,
    /// Member removals go as `remove` of `members` with a value list (the provider refuses
    /// the `members[value eq "id"]` form).
    pub(super) remove_by_value: AtomicBool,
    /// User attributes the provider does not keep (absent from what it answers to a create).
    pub(super) not_kept: std::sync::Mutex<BTreeSet<String>>,
    /// When the discovery documents were last read.
    discovered: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a discovery of the provider's abilities is reused.
const REDISCOVER: std::time::Duration = std::time::Duration::from_secs(600);

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl ScimClient {
    /// Builds the client. `custom_paths` are the custom attributes mapped, read back on resync.
    pub(crate) fn new(cfg: &TargetConfig, custom_paths: Vec<String>) -> Result<ScimClient, String> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &cfg.token {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    "target.token holds characters not allowed in an HTTP header".to_string()
                })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/scim+json, application/json"),
        );
        let mut builder = reqwest::Client::builder()
            .tls_backend_native()
            .default_headers(headers)
            .user_agent(concat!("dirbridge/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(10)))
            .tcp_keepalive(std::time::Duration::from_secs(30))
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.ca_file {
            for block in crate::tls::pem_blocks(ca)? {
                let cert = reqwest::Certificate::from_pem(&block).map_err(|e| {
                    format!(
                        "CA file {} holds an unreadable certificate: {e}",
                        ca.display()
                    )
                })?;
                builder = builder.add_root_certificate(cert);
            }
        }
        if !cfg.tls_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        let mut base = cfg.url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(ScimClient {
            http,
            base,
            custom_paths,
            method: cfg.update_method,
            use_put: AtomicBool::new(cfg.update_method == UpdateMethod::Put),
            retries: cfg.retries,
            max_body: cfg.max_response_bytes,
            pacer: cfg.rate_limit.map(Pacer::new),
            quirks: Quirks::default(),
            filter_unsupported: AtomicBool::new(false),
            unfilterable: Default::default(),
            user_index: Default::default(),
            group_index: Default::default(),
            paging: std::sync::Mutex::new(Paging::StartIndexAndCount),
            caps: Default::default(),
            put_ops: Default::default(),
            remove_by_value: AtomicBool::new(false),
            not_kept: Default::default(),
            discovered: Default::default(),
        })
    }

    /// `{base}/{resource}[/{id}]`, with the id escaped as one path segment.
    pub(super) fn url(&self, resource: &str, id: Option<&str>) -> Result<url::Url, TargetError> {
        let mut u = self.base.join(resource).map_err(|e| TargetError {
            request: resource.to_string(),
            kind: TargetErrorKind::BadResponse(e.to_string()),
        })?;
        if let Some(id) = id {
            if let Ok(mut segs) = u.path_segments_mut() {
                segs.push(id);
            }
        }
        Ok(u)
    }

    /// Sends a request, retrying what may be retried (see [`retry::retryable`]) up to
    /// `target.retries` times, and returns the JSON body (`Value::Null` for an empty one).
    pub(super) async fn call(
        &self,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        label: &str,
    ) -> Result<Value, TargetError> {
        let mut attempt = 0u32;
        loop {
            if let Some(p) = &self.pacer {
                p.wait().await;
            }
            let (error, failure, retry_after) = match self
                .call_once(method.clone(), url.clone(), body, label)
                .await
            {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            attempt += 1;
            let too_long = retry_after.is_some_and(|d| d > retry::LONGEST_RETRY_AFTER);
            if !retry::retryable(&method, failure) && failure == Failure::Unanswered {
                // A POST whose answer was lost: one object's problem, not the target's.
                let kind = match error.kind {
                    TargetErrorKind::Transport(m) | TargetErrorKind::BadResponse(m) => {
                        TargetErrorKind::Lost(m)
                    }
                    TargetErrorKind::Timeout => TargetErrorKind::Lost("no answer in time".into()),
                    other => other,
                };
                return Err(TargetError {
                    request: error.request,
                    kind,
                });
            }
            if attempt > self.retries || too_long || !retry::retryable(&method, failure) {
                return Err(error);
            }
            let wait = retry::delay(attempt, retry_after);
            tracing::warn!(request = label, error = %error, attempt, retry_in = ?wait, "target request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// True when the provider answers a request at all (any HTTP status but 401/403): one GET
    /// of `/ServiceProviderConfig`, without retries.
    pub(super) async fn answers(&self) -> bool {
        let Ok(url) = self.url("ServiceProviderConfig", None) else {
            return false;
        };
        match self
            .call_once(Method::GET, url, None, "GET /ServiceProviderConfig")
            .await
        {
            Ok(_) => true,
            // An answer, even an error or not JSON, is an answer; a refused credential stops.
            Err((e, _, _)) => match e.kind {
                TargetErrorKind::Http { status, .. } => !matches!(status, 401 | 403),
                TargetErrorKind::BadResponse(_) => true,
                _ => false,
            },
        }
    }

    /// One attempt: the body, or the error with what retrying needs to know.
    async fn call_once(
        &self,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        label: &str,
    ) -> Result<Value, (TargetError, Failure, Option<std::time::Duration>)> {
        let err = |kind| TargetError {
            request: label.to_string(),
            kind,
        };
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            // Never an empty body in place of one that could not be encoded.
            let bytes = serde_json::to_vec(b).map_err(|e| {
                (
                    err(TargetErrorKind::BadResponse(format!(
                        "the request body could not be encoded: {e}"
                    ))),
                    Failure::Status(0),
                    None,
                )
            })?;
            req = req.header(CONTENT_TYPE, SCIM_JSON).body(bytes);
        }
        let resp = req.send().await.map_err(|e| {
            let f = if e.is_connect() {
                Failure::NotSent
            } else {
                Failure::Unanswered
            };
            (err(transport_kind(&e)), f, None)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, time::OffsetDateTime::now_utc()));
        // Read in chunks, and never more than target.max_response_kib: a server's answer cannot
        // make the gateway hold an unbounded body.
        let mut resp = resp;
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if bytes.len() + c.len() > self.max_body {
                        return Err((
                            err(TargetErrorKind::BadResponse(format!(
                                "an answer larger than target.max_response_kib ({} KiB)",
                                self.max_body / 1024
                            ))),
                            // Not resent: the same request would bring the same answer.
                            Failure::Status(0),
                            None,
                        ));
                    }
                    bytes.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err((err(transport_kind(&e)), Failure::Unanswered, None)),
            }
        }
        if !status.is_success() {
            return Err((
                err(http_kind(status, &bytes)),
                Failure::Status(status.as_u16()),
                retry_after,
            ));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            (
                err(TargetErrorKind::BadResponse(format!(
                    "HTTP {} with a body that is not JSON ({e})",
                    status.as_u16()
                ))),
                // A success whose body broke on the way (truncated): carried out, answer lost.
                Failure::Unanswered,
                None,
            )
        })
    }

    /// Applies a PatchOp to `{resource}/{id}`: with PATCH, or, where the provider does not
    /// support it, by reading the resource, applying the operations locally and PUTting it back.
    /// Returns the answer's body (`Null` when there is none).
    pub(super) async fn patch(
        &self,
        resource: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, TargetError> {
        let url = self.url(resource, Some(id))?;
        let ops = op_keys(resource, body);
        let known_unsupported = self
            .put_ops
            .lock()
            .map(|s| ops.iter().any(|o| s.contains(o)))
            .unwrap_or(false);
        if !self.use_put.load(Ordering::Relaxed) && !known_unsupported {
            let label = format!("PATCH /{resource}/{id}");
            match self
                .call(Method::PATCH, url.clone(), Some(body), &label)
                .await
            {
                // PATCH is supported, but not for these operations: GET + PUT for them.
                Err(e) if e.status() == Some(501) => {
                    self.quirks.note(
                        &format!("patch-not-implemented-{resource}"),
                        format!(
                            "{label} answered 501 Not Implemented for {}",
                            ops.join(", ")
                        ),
                        "such changes are sent as GET + PUT of the whole resource",
                    );
                    if let Ok(mut s) = self.put_ops.lock() {
                        s.extend(ops);
                    }
                }
                other => return other,
            }
        }
        self.get_and_put(resource, id, body).await
    }

    /// Reads the resource, applies the PatchOp to it locally and PUTs it back.
    pub(super) async fn get_and_put(
        &self,
        resource: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, TargetError> {
        let url = self.url(resource, Some(id))?;
        let label = format!("GET /{resource}/{id}");
        let mut doc = self.call(Method::GET, url.clone(), None, &label).await?;
        local_patch::apply(&mut doc, body).map_err(|e| Self::bad(&label, e))?;
        let label = format!("PUT /{resource}/{id}");
        self.call(Method::PUT, url, Some(&doc), &label).await
    }

    /// PATCH and nothing else (no GET + PUT fallback); `None` when updates go as GET + PUT.
    pub(super) async fn patch_only(
        &self,
        resource: &str,
        id: &str,
        body: &Value,
    ) -> Option<Result<Value, TargetError>> {
        if self.use_put.load(Ordering::Relaxed) {
            return None;
        }
        let label = format!("PATCH /{resource}/{id}");
        let url = match self.url(resource, Some(id)) {
            Ok(u) => u,
            Err(e) => return Some(Err(e)),
        };
        Some(self.call(Method::PATCH, url, Some(body), &label).await)
    }

    /// Reads `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` where the provider serves
    /// them, and adapts: GET + PUT where PATCH is unsupported, local look-ups where filtering
    /// is, attributes the schema lacks left out, `name.formatted` where it is required. Only a
    /// refused credential stops here; anything else keeps the protocol's defaults.
    pub(super) async fn discover(&self) -> Result<(), TargetError> {
        // The service's passes (one per change burst) reuse a recent discovery: three requests
        // per pass would be latency for nothing.
        if self
            .discovered
            .lock()
            .map(|d| d.is_some_and(|at| at.elapsed() < REDISCOVER))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut caps = Capabilities::default();
        for resource in ["ServiceProviderConfig", "ResourceTypes", "Schemas"] {
            let label = format!("GET /{resource}");
            match self
                .call(Method::GET, self.url(resource, None)?, None, &label)
                .await
            {
                Ok(doc) => match resource {
                    "ServiceProviderConfig" => caps.read_service_provider_config(&doc),
                    "ResourceTypes" => caps.read_resource_types(&doc),
                    _ => caps.read_schemas(&doc),
                },
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => tracing::debug!(error = %e, "discovery document not served"),
            }
        }
        if self.method == UpdateMethod::Auto {
            let supported = caps.patch.unwrap_or(true);
            if !supported {
                self.quirks.note(
                    "patch-unsupported",
                    "/ServiceProviderConfig says patch.supported = false",
                    "updates are sent as GET + PUT of the whole resource",
                );
            }
            self.use_put.store(!supported, Ordering::Relaxed);
        }
        if caps.filter == Some(false) {
            self.quirks.note(
                "filter-unsupported",
                "/ServiceProviderConfig says filter.supported = false",
                "look-ups list the resources once per pass and match locally; only an exact match is adopted",
            );
            self.filter_unsupported.store(true, Ordering::Relaxed);
        }
        if caps.needs_formatted_name() {
            self.quirks.note(
                "formatted-name-required",
                "the User schema requires name.formatted",
                "name.formatted is sent as the given and family names joined (or displayName, or userName)",
            );
        }
        if let Ok(mut c) = self.caps.write() {
            *c = caps;
        }
        if let Ok(mut d) = self.discovered.lock() {
            *d = Some(std::time::Instant::now());
        }
        Ok(())
    }

    pub(super) async fn delete(&self, resource: &str, id: &str) -> Result<(), TargetError> {
        let label = format!("DELETE /{resource}/{id}");
        let url = self.url(resource, Some(id))?;
        self.call(Method::DELETE, url, None, &label)
            .await
            .map(|_| ())
    }

    pub(super) fn bad(label: &str, e: String) -> TargetError {
        TargetError {
            request: label.to_string(),
            kind: TargetErrorKind::BadResponse(e),
        }
    }

    pub(super) fn created_id(doc: &Value, label: &str) -> Result<String, TargetError> {
        doc.get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Self::bad(label, "the created resource has no id".into()))
    }
}

fn transport_kind(e: &reqwest::Error) -> TargetErrorKind {
    if e.is_timeout() {
        return TargetErrorKind::Timeout;
    }
    // The error chain holds the useful part (connection refused, certificate unknown, ...);
    // reqwest errors carry the URL, which holds no secret (credentials in URLs are refused).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    TargetErrorKind::Transport(without_query(msg, e.url()))
}

fn http_kind(status: StatusCode, body: &[u8]) -> TargetErrorKind {
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    let detail = doc
        .as_ref()
        .and_then(|d| d.get("detail").and_then(Value::as_str).map(str::to_string))
        .or_else(|| {
            let t = String::from_utf8_lossy(body).trim().to_string();
            (!t.is_empty()).then_some(t)
        })
        .map(|d| {
            let mut d: String = d
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_DETAIL)
                .collect();
            if d.len() >= MAX_DETAIL {
                d.push('…');
            }
            d
        });
    // SCIM's error code.
    let code = doc.as_ref().and_then(|d| {
        d.get("scimType")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    TargetErrorKind::Http {
        status: status.as_u16(),
        code,
        detail,
    }
}

/// What a PatchOp does, per operation, as `resource op attribute` (a value filter's value left
/// out): the unit in which a provider implements PATCH or not.
fn op_keys(resource: &str, body: &Value) -> Vec<String> {
    body.get("Operations")
        .and_then(Value::as_array)
        .map(|ops| {
            ops.iter()
                .map(|o| {
                    let op = o.get("op").and_then(Value::as_str).unwrap_or_default();
                    let path = o.get("path").and_then(Value::as_str).unwrap_or_default();
                    let attr = path.split('[').next().unwrap_or(path);
                    format!("{resource} {} {attr}", op.to_ascii_lowercase())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An error text without the request's query: a look-up's query holds a userName or a key,
/// which have no place in logs and `status` (the method and path say which request it was).
fn without_query(msg: String, url: Option<&url::Url>) -> String {
    match url {
        Some(u) if u.query().is_some() => {
            let mut bare = u.clone();
            bare.set_query(None);
            msg.replace(u.as_str(), bare.as_str())
        }
        _ => msg,
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn error_texts_carry_no_query() {
        let u = url::Url::parse("http://idp.example.com/v2/Users?filter=userName+eq+%22ann%22")
            .unwrap();
        let msg = format!("error sending request for url ({u}): connection reset");
        let out = without_query(msg, Some(&u));
        assert_eq!(
            out,
            "error sending request for url (http://idp.example.com/v2/Users): connection reset"
        );
    }
}
