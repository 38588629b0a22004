//! HTTP side of the SCIM client: requests, SCIM's error answers, PATCH or GET + PUT.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use super::discover::Capabilities;
use super::find::Paging;
use super::local_patch;
use super::lookup::{Attr, Index};
use crate::config::{TargetConfig, UpdateMethod};
use crate::target::http::{body_text, clean_detail, Body, ErrorShape, HttpCore, Outgoing};
use crate::target::quirks::Quirks;
use crate::target::{TargetError, TargetErrorKind};

const SCIM_JSON: &str = "application/scim+json";

/// A SCIM 2.0 service provider.
pub(crate) struct ScimClient {
    core: HttpCore,
    pub(super) base: url::Url,
    pub(super) custom_paths: Vec<String>,
    method: UpdateMethod,
    /// Updates go as GET + PUT instead of PATCH (configured, or found at preflight).
    use_put: AtomicBool,
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
    /// The user attributes whose keeping a create's answer is checked for, parsed once.
    pub(super) kept_paths: Vec<(String, super::path::ScimPath)>,
    /// Names listed in this pass for creates without look-ups.
    pub(super) taken: crate::target::taken::SharedTaken,
}

/// Why no URL names a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unnamed {
    /// The id is empty, `.` or `..` (a step, not a segment), or holds a tab or a line break
    /// (which a URL drops): the URL would name another object (the collection, for `..`).
    Id,
    /// The base URL cannot hold a path (`mailto:`-like).
    Base,
}

/// `{base}/{resource}[/{id}]` for a base whose path ends with `/`, the id escaped as one
/// segment, or why no URL names it: the base's segments extended, not a relative URL parsed
/// (`join` parsed the whole URL again for every request).
pub(super) fn resource_url(
    base: &url::Url,
    resource: &str,
    id: Option<&str>,
) -> Result<url::Url, Unnamed> {
    if id.is_some_and(|id| matches!(id, "" | "." | "..") || id.contains(['\t', '\n', '\r'])) {
        return Err(Unnamed::Id);
    }
    let mut u = base.clone();
    {
        let mut segs = u.path_segments_mut().map_err(|()| Unnamed::Base)?;
        segs.pop_if_empty().push(resource);
        if let Some(id) = id {
            segs.push(id);
        }
    }
    Ok(u)
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
        let core = HttpCore::new(cfg, "application/scim+json, application/json")?;
        let mut base = cfg.url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let kept_paths = [
            "title",
            "displayName",
            "name.givenName",
            "name.familyName",
            "emails",
            super::ENT_DEPARTMENT,
            super::ENT_EMPLOYEE_NUMBER,
            super::ENT_MANAGER,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(custom_paths.iter().cloned())
        .filter_map(|p| Some((p.clone(), super::path::ScimPath::parse(&p).ok()?)))
        .collect();
        Ok(ScimClient {
            kept_paths,
            core,
            base,
            custom_paths,
            method: cfg.update_method,
            use_put: AtomicBool::new(cfg.update_method == UpdateMethod::Put),
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
            taken: Default::default(),
        })
    }

    /// `{base}/{resource}[/{id}]`, with the id escaped as one path segment.
    pub(super) fn url(&self, resource: &str, id: Option<&str>) -> Result<url::Url, TargetError> {
        let err = |kind| TargetError {
            request: resource.to_string(),
            kind,
        };
        resource_url(&self.base, resource, id).map_err(|why| {
            err(match why {
                Unnamed::Id => TargetErrorKind::BadResponse(format!(
                    "the provider's id {:?} is empty, `.`, `..` or holds a tab or a line break: \
                     it cannot be named in a URL",
                    id.unwrap_or_default()
                )),
                Unnamed::Base => TargetErrorKind::Config(format!(
                    "target.url {} cannot hold a path",
                    self.base.as_str()
                )),
            })
        })
    }

    /// Sends a request (with the retries of [`HttpCore::call`]) and returns the JSON body
    /// (`Value::Null` for an empty one).
    pub(super) async fn call(
        &self,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        label: &str,
    ) -> Result<Value, TargetError> {
        let body = body
            .map(|b| Body::json(b, SCIM_JSON))
            .transpose()
            .map_err(|e| Self::bad(label, e))?;
        let req = Outgoing {
            method,
            url,
            headers: &[],
            body: body.as_ref(),
            label,
        };
        self.core.call(&req, &ScimAnswers).await
    }

    /// True when the provider answers a request at all (any HTTP status but 401/403): one GET
    /// of `/ServiceProviderConfig`, without retries.
    pub(super) async fn answers(&self) -> bool {
        let Ok(url) = self.url("ServiceProviderConfig", None) else {
            return false;
        };
        let auth = match self.core.auth_headers().await {
            Ok(a) => a,
            Err(_) => return false,
        };
        let req = Outgoing {
            method: Method::GET,
            url,
            headers: &[],
            body: None,
            label: "GET /ServiceProviderConfig",
        };
        match self.core.call_once(&req, &ScimAnswers, &auth).await {
            Ok(_) => true,
            // An answer, even an error or not JSON, is an answer; a refused credential stops.
            Err((e, _, _)) => match e.kind {
                TargetErrorKind::Http { status, .. } => !matches!(status, 401 | 403),
                TargetErrorKind::BadResponse(_) => true,
                _ => false,
            },
        }
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

/// How a SCIM error answer reads (RFC 7644 §3.12: `detail` and `scimType`).
struct ScimAnswers;

impl ErrorShape for ScimAnswers {
    fn http_error(&self, status: StatusCode, body: &[u8]) -> TargetErrorKind {
        let doc: Option<Value> = serde_json::from_slice(body).ok();
        let detail = doc
            .as_ref()
            .and_then(|d| d.get("detail").and_then(Value::as_str).map(clean_detail))
            .or_else(|| body_text(body));
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
