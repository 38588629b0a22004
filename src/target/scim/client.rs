//! HTTP side of the SCIM client: requests, status handling, paging.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{decode, encode, local_patch};
use crate::config::{TargetConfig, UpdateMethod};
use crate::model::{FieldChange, Key, User};
use crate::target::retry::{self, Failure, Pacer};
use crate::target::{RemoteGroup, RemoteUser, Target, TargetError, TargetErrorKind};

const SCIM_JSON: &str = "application/scim+json";
/// Page size for listing users and groups on a resync.
const LIST_PAGE: u64 = 200;
/// Longest error detail kept from a target answer.
const MAX_DETAIL: usize = 500;

/// A SCIM 2.0 service provider.
pub struct ScimClient {
    http: reqwest::Client,
    base: url::Url,
    custom_paths: Vec<String>,
    method: UpdateMethod,
    /// Updates go as GET + PUT instead of PATCH (configured, or found at preflight).
    use_put: AtomicBool,
    /// Further attempts after a retryable failure.
    retries: u32,
    pacer: Option<Pacer>,
}

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl ScimClient {
    /// Builds the client. `custom_paths` are the custom attributes mapped, read back on resync.
    pub fn new(cfg: &TargetConfig, custom_paths: Vec<String>) -> Result<ScimClient, String> {
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
            pacer: cfg.rate_limit.map(Pacer::new),
        })
    }

    /// `{base}/{resource}[/{id}]`, with the id escaped as one path segment.
    fn url(&self, resource: &str, id: Option<&str>) -> Result<url::Url, TargetError> {
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
    async fn call(
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
            req = req
                .header(CONTENT_TYPE, SCIM_JSON)
                .body(serde_json::to_vec(b).unwrap_or_default());
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
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| (err(transport_kind(&e)), Failure::Unanswered, None))?;
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

    async fn find_one(
        &self,
        resource: &str,
        attr: &str,
        value: &str,
    ) -> Result<Option<Value>, TargetError> {
        let label = format!("GET /{resource}?filter={attr} eq …");
        let mut url = self.url(resource, None)?;
        url.query_pairs_mut().append_pair(
            "filter",
            &format!("{attr} eq {}", super::filter_literal(value)),
        );
        let doc = self.call(Method::GET, url, None, &label).await?;
        let (items, _) = decode::list(&doc).map_err(|e| TargetError {
            request: label.clone(),
            kind: TargetErrorKind::BadResponse(e),
        })?;
        match items.len() {
            0 => Ok(None),
            1 => Ok(items.into_iter().next()),
            n => Err(TargetError {
                request: label,
                kind: TargetErrorKind::BadResponse(format!(
                    "{n} resources match; cannot tell which one to adopt"
                )),
            }),
        }
    }

    async fn list_all(&self, resource: &str) -> Result<Vec<Value>, TargetError> {
        let mut out = Vec::new();
        let mut start = 1u64;
        // Bounded: a provider that ignores startIndex would otherwise loop forever.
        for _ in 0..100_000 {
            let label = format!("GET /{resource}?startIndex={start}");
            let mut url = self.url(resource, None)?;
            url.query_pairs_mut()
                .append_pair("startIndex", &start.to_string())
                .append_pair("count", &LIST_PAGE.to_string());
            let doc = self.call(Method::GET, url, None, &label).await?;
            let (items, total) = decode::list(&doc).map_err(|e| TargetError {
                request: label,
                kind: TargetErrorKind::BadResponse(e),
            })?;
            let n = items.len() as u64;
            out.extend(items);
            start += n;
            let done = n == 0
                || total
                    .map(|t| out.len() as u64 >= t)
                    .unwrap_or(n < LIST_PAGE);
            if done {
                return Ok(out);
            }
        }
        Ok(out)
    }

    /// Applies a PatchOp to `{resource}/{id}`: with PATCH, or, where the provider does not
    /// support it, by reading the resource, applying the operations locally and PUTting it back.
    async fn patch(&self, resource: &str, id: &str, body: &Value) -> Result<(), TargetError> {
        let url = self.url(resource, Some(id))?;
        if !self.use_put.load(Ordering::Relaxed) {
            let label = format!("PATCH /{resource}/{id}");
            return self
                .call(Method::PATCH, url, Some(body), &label)
                .await
                .map(|_| ());
        }
        let label = format!("GET /{resource}/{id}");
        let mut doc = self.call(Method::GET, url.clone(), None, &label).await?;
        local_patch::apply(&mut doc, body).map_err(|e| Self::bad(&label, e))?;
        let label = format!("PUT /{resource}/{id}");
        self.call(Method::PUT, url, Some(&doc), &label)
            .await
            .map(|_| ())
    }

    /// Reads `patch.supported` from /ServiceProviderConfig. A provider that does not serve it is
    /// taken to support PATCH (RFC 7644 makes PATCH part of the protocol).
    async fn detect_patch_support(&self) -> Result<(), TargetError> {
        let url = self.url("ServiceProviderConfig", None)?;
        match self
            .call(Method::GET, url, None, "GET /ServiceProviderConfig")
            .await
        {
            Ok(doc) => {
                let supported = doc
                    .pointer("/patch/supported")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if !supported {
                    tracing::info!(
                        "the target does not support PATCH: updates are sent as GET + PUT"
                    );
                }
                self.use_put.store(!supported, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "no usable ServiceProviderConfig; using PATCH");
                Ok(())
            }
        }
    }

    async fn delete(&self, resource: &str, id: &str) -> Result<(), TargetError> {
        let label = format!("DELETE /{resource}/{id}");
        let url = self.url(resource, Some(id))?;
        self.call(Method::DELETE, url, None, &label)
            .await
            .map(|_| ())
    }

    fn bad(label: &str, e: String) -> TargetError {
        TargetError {
            request: label.to_string(),
            kind: TargetErrorKind::BadResponse(e),
        }
    }

    fn created_id(doc: &Value, label: &str) -> Result<String, TargetError> {
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
    TargetErrorKind::Transport(msg)
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
    let scim_type = doc.as_ref().and_then(|d| {
        d.get("scimType")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    TargetErrorKind::Http {
        status: status.as_u16(),
        scim_type,
        detail,
    }
}

impl Target for ScimClient {
    fn describe(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    async fn preflight(&self) -> Result<(), TargetError> {
        let mut url = self.url("Users", None)?;
        url.query_pairs_mut().append_pair("count", "1");
        self.call(Method::GET, url, None, "GET /Users?count=1")
            .await?;
        if self.method == UpdateMethod::Auto {
            self.detect_patch_support().await?;
        }
        Ok(())
    }

    async fn find_user(&self, user_name: &str) -> Result<Option<RemoteUser>, TargetError> {
        match self.find_one("Users", "userName", user_name).await? {
            Some(doc) => decode::user(&doc, &self.custom_paths)
                .map(Some)
                .map_err(|e| Self::bad("GET /Users?filter=userName eq …", e)),
            None => Ok(None),
        }
    }

    async fn find_user_by_key(&self, key: &Key) -> Result<Option<RemoteUser>, TargetError> {
        match self.find_one("Users", "externalId", key).await? {
            Some(doc) => decode::user(&doc, &self.custom_paths)
                .map(Some)
                .map_err(|e| Self::bad("GET /Users?filter=externalId eq …", e)),
            None => Ok(None),
        }
    }

    async fn find_group_by_key(&self, key: &Key) -> Result<Option<RemoteGroup>, TargetError> {
        match self.find_one("Groups", "externalId", key).await? {
            Some(doc) => decode::group(&doc)
                .map(Some)
                .map_err(|e| Self::bad("GET /Groups?filter=externalId eq …", e)),
            None => Ok(None),
        }
    }

    async fn create_user(
        &self,
        key: &Key,
        user: &User,
        manager_id: Option<&str>,
    ) -> Result<String, TargetError> {
        let body = encode::user_resource(key, user, manager_id);
        let doc = self
            .call(
                Method::POST,
                self.url("Users", None)?,
                Some(&body),
                "POST /Users",
            )
            .await?;
        Self::created_id(&doc, "POST /Users")
    }

    async fn update_user(
        &self,
        id: &str,
        changes: &[FieldChange],
        _user: &User,
        manager_id: Option<&str>,
    ) -> Result<(), TargetError> {
        self.patch("Users", id, &encode::user_patch(changes, manager_id))
            .await
    }

    async fn deactivate_user(&self, id: &str) -> Result<(), TargetError> {
        self.patch("Users", id, &encode::deactivate_patch()).await
    }

    async fn delete_user(&self, id: &str) -> Result<(), TargetError> {
        self.delete("Users", id).await
    }

    async fn find_group(&self, display_name: &str) -> Result<Option<RemoteGroup>, TargetError> {
        match self.find_one("Groups", "displayName", display_name).await? {
            Some(doc) => decode::group(&doc)
                .map(Some)
                .map_err(|e| Self::bad("GET /Groups?filter=displayName eq …", e)),
            None => Ok(None),
        }
    }

    async fn create_group(&self, key: &Key, display_name: &str) -> Result<String, TargetError> {
        let body = encode::group_resource(key, display_name);
        let doc = self
            .call(
                Method::POST,
                self.url("Groups", None)?,
                Some(&body),
                "POST /Groups",
            )
            .await?;
        Self::created_id(&doc, "POST /Groups")
    }

    async fn rename_group(&self, id: &str, display_name: &str) -> Result<(), TargetError> {
        self.patch("Groups", id, &encode::rename_patch(display_name))
            .await
    }

    async fn add_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        self.patch("Groups", id, &encode::add_members_patch(member_ids))
            .await
    }

    async fn remove_members(&self, id: &str, member_ids: &[String]) -> Result<(), TargetError> {
        self.patch("Groups", id, &encode::remove_members_patch(member_ids))
            .await
    }

    async fn delete_group(&self, id: &str) -> Result<(), TargetError> {
        self.delete("Groups", id).await
    }

    async fn list_users(&self) -> Result<Vec<RemoteUser>, TargetError> {
        self.list_all("Users")
            .await?
            .iter()
            .map(|d| decode::user(d, &self.custom_paths).map_err(|e| Self::bad("GET /Users", e)))
            .collect()
    }

    async fn list_groups(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        self.list_all("Groups")
            .await?
            .iter()
            .map(|d| decode::group(d).map_err(|e| Self::bad("GET /Groups", e)))
            .collect()
    }
}
