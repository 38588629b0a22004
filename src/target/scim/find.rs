//! Look-ups and listings, tolerant of providers that ignore or refuse query parameters.
//!
//! A look-up asks with a filter and checks the answer ([`lookup::pick`]); when the provider
//! ignores or refuses the filter (or says in `/ServiceProviderConfig` that it cannot filter),
//! the resource type is listed once per pass and looked up in an [`Index`]; the one candidate is
//! read again by id and checked before it is returned. A listing asks for pages with
//! `startIndex` and `count`, falls back to `startIndex` alone and then to no paging at all when
//! the provider refuses them, follows the page size the provider answers with, and stops when a
//! page brings nothing new.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::Value;

use super::client::ScimClient;
use super::decode;
use super::lookup::{self, Attr, Index, Pick};
use crate::target::{TargetError, TargetErrorKind};

/// How long a pass of the service reuses the look-up index of a provider that cannot filter.
pub(super) const INDEX_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);
/// Page size asked for when listing.
pub(super) const LIST_PAGE: u64 = 200;
/// Most resources one listing takes when the provider does not say how many exist: a provider
/// that never says it is done cannot make a listing endless.
const MAX_LISTED: u64 = 5_000_000;

/// A listing, decoded page by page (no page is kept once read), with the look-up index.
pub(super) struct Listed<R> {
    pub(super) items: Vec<R>,
    pub(super) index: Index,
}

/// How many resources a listing takes once the provider said `total` exist: those, and room for
/// objects created while it is read (each page may say a new total; the first one bounds it).
fn listing_bound(first_total: Option<u64>) -> u64 {
    match first_total {
        Some(t) => t.saturating_add(t / 2).saturating_add(1000).min(MAX_LISTED),
        None => MAX_LISTED,
    }
}

/// How listings ask for pages: reduced when the provider refuses a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Paging {
    StartIndexAndCount,
    StartIndexOnly,
    None,
}

/// The attributes indexed for each resource type.
fn indexed(resource: &str) -> &'static [Attr] {
    if resource == "Groups" {
        &[Attr::DisplayName, Attr::ExternalId]
    } else {
        &[Attr::UserName, Attr::ExternalId]
    }
}

/// A look-up failure that says the provider cannot filter this way (rather than that the target
/// is unusable): the look-up goes on through the index.
fn filter_refused(e: &TargetError) -> bool {
    matches!(
        e.kind,
        TargetErrorKind::Http {
            status: 400 | 404 | 405 | 406 | 422 | 500 | 501,
            ..
        } | TargetErrorKind::BadResponse(_)
    )
}

impl ScimClient {
    /// The one `resource` whose `attr` holds `value`, checked; `None` when there is none.
    pub(super) async fn find_one(
        &self,
        resource: &str,
        attr: Attr,
        value: &str,
    ) -> Result<Option<Value>, TargetError> {
        let label = format!("GET /{resource}?filter={} eq …", attr.scim_name());
        if self.filter_usable(resource, attr) {
            let mut url = self.url(resource, None)?;
            url.query_pairs_mut().append_pair(
                "filter",
                &format!("{} eq {}", attr.scim_name(), super::filter_literal(value)),
            );
            let answer = self
                .call(Method::GET, url, None, &label)
                .await
                .and_then(|doc| decode::list(&doc).map_err(|e| Self::bad(&label, e)));
            match answer {
                Ok((items, _)) => match lookup::pick(items, attr, value) {
                    Pick::Found(doc) => return Ok(Some(doc)),
                    Pick::NotFound => return Ok(None),
                    Pick::Ambiguous(n) => return Err(ambiguous(&label, n)),
                    Pick::FilterIgnored => {
                        self.quirks.note(
                            "filter-ignored",
                            format!(
                                "{label} answered with resources the filter excludes: the provider ignores `filter`"
                            ),
                            "look-ups list the resources once per pass and match locally; only an exact match is adopted",
                        );
                        self.stop_filtering(resource, attr);
                    }
                },
                Err(e) if e.is_fatal() || !filter_refused(&e) => return Err(e),
                Err(e) => {
                    self.quirks.note(
                        &format!("filter-refused-{resource}-{}", attr.scim_name()),
                        format!(
                            "the provider refuses a filter on {resource} {}: {e}",
                            attr.scim_name()
                        ),
                        "these look-ups list the resources once per pass and match locally",
                    );
                    self.stop_filtering(resource, attr);
                }
            }
        }
        self.find_in_index(resource, attr, value).await
    }

    fn filter_usable(&self, resource: &str, attr: Attr) -> bool {
        !self
            .filter_unsupported
            .load(std::sync::atomic::Ordering::Relaxed)
            && self
                .unfilterable
                .lock()
                .map(|s| !s.contains(&(resource.to_string(), attr)))
                .unwrap_or(false)
    }

    fn stop_filtering(&self, resource: &str, attr: Attr) {
        if let Ok(mut s) = self.unfilterable.lock() {
            s.insert((resource.to_string(), attr));
        }
    }

    fn index_slot(&self, resource: &str) -> &tokio::sync::Mutex<Option<Index>> {
        if resource == "Groups" {
            &self.group_index
        } else {
            &self.user_index
        }
    }

    async fn find_in_index(
        &self,
        resource: &str,
        attr: Attr,
        value: &str,
    ) -> Result<Option<Value>, TargetError> {
        let ids = {
            let mut slot = self.index_slot(resource).lock().await;
            if slot.is_none() {
                let listed = self.list_all(resource, |_| Ok(())).await?;
                tracing::info!(
                    resource,
                    listed = listed.items.len(),
                    "listed the target once for local look-ups"
                );
                *slot = Some(listed.index);
            }
            slot.as_ref()
                .map(|ix| ix.candidates(attr, value).to_vec())
                .unwrap_or_default()
        };
        let label = format!("GET /{resource}/…");
        match ids.as_slice() {
            [] => Ok(None),
            [id] => {
                let url = self.url(resource, Some(id))?;
                match self.call(Method::GET, url, None, &label).await {
                    // Read again and checked: it may have changed since the listing.
                    Ok(doc) if attr.matches(&doc, value) && doc.get("id").is_some() => {
                        Ok(Some(doc))
                    }
                    Ok(_) => Ok(None),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            }
            many => Err(ambiguous(&label, many.len())),
        }
    }

    /// Adds a resource the gateway just created (what it sent, and the id given) to the index,
    /// if one is in use.
    pub(super) async fn remember(&self, resource: &str, sent: &Value, id: &str) {
        if let Some(ix) = self.index_slot(resource).lock().await.as_mut() {
            ix.insert_as(sent, id, indexed(resource));
        }
    }

    /// Drops the index of a resource type if it is older than `age` (a pass of the service
    /// reuses a recent one: its own creations are in it, and a 409 drops it).
    pub(super) async fn forget_index_older_than(&self, resource: &str, age: std::time::Duration) {
        let mut slot = self.index_slot(resource).lock().await;
        if slot.as_ref().is_some_and(|ix| ix.built.elapsed() > age) {
            *slot = None;
        }
    }

    /// Drops the index of a resource type (a 409 says it missed something).
    pub(super) async fn forget_index(&self, resource: &str) {
        *self.index_slot(resource).lock().await = None;
    }

    /// Replaces the index with one built from a listing made anyway (a resync's).
    pub(super) async fn set_index(&self, resource: &str, index: Index) {
        *self.index_slot(resource).lock().await = Some(index);
    }

    /// How many resources of a type the provider holds, from a one-resource page (`None` when
    /// it does not say or refuses the question).
    async fn total(&self, resource: &str) -> Option<u64> {
        let mut url = self.url(resource, None).ok()?;
        url.query_pairs_mut()
            .append_pair("startIndex", "1")
            .append_pair("count", "1");
        let label = format!("GET /{resource}?startIndex=1&count=1");
        let doc = self.call(Method::GET, url, None, &label).await.ok()?;
        decode::list(&doc).ok().and_then(|(_, total)| total)
    }

    /// Before `creates` creates of a resource type: lists it once if that costs fewer requests
    /// than a look-up per create, and keeps the names it holds (`target/taken.rs`).
    pub(super) async fn list_for_creates(
        &self,
        resource: &str,
        creates: usize,
    ) -> Result<(), TargetError> {
        if creates < crate::target::taken::MIN_CREATES {
            return Ok(());
        }
        let total = self.total(resource).await;
        if !crate::target::taken::worth_listing(creates, total, LIST_PAGE) {
            return Ok(());
        }
        let attr = if resource == "Groups" {
            Attr::DisplayName
        } else {
            Attr::UserName
        };
        let listed = self
            .list_all(resource, |d| {
                Ok(d.get(attr.scim_name())
                    .and_then(Value::as_str)
                    .map(str::to_string))
            })
            .await?;
        tracing::info!(
            resource,
            listed = listed.items.len(),
            creates,
            "listed the target once: creates of names it does not hold go without a look-up"
        );
        let names = listed.items.into_iter().flatten();
        self.taken.with(|t| {
            if resource == "Groups" {
                t.set_groups(names)
            } else {
                t.set_users(names)
            }
        });
        // A provider that cannot filter looks names up in this same listing; one that can
        // needs no index kept (and none grown by every create).
        if !self.filter_usable(resource, attr) {
            self.set_index(resource, listed.index).await;
        }
        Ok(())
    }

    /// Every resource of a type, each handed to `decode` as its page arrives.
    pub(super) async fn list_all<R>(
        &self,
        resource: &str,
        decode: impl Fn(&Value) -> Result<R, TargetError>,
    ) -> Result<Listed<R>, TargetError> {
        // A listing that came up short is read again once: on a provider that orders by
        // something other than creation, objects created meanwhile shift the pages.
        let mut short_again = false;
        loop {
            let paging = self.paging.lock().map(|p| *p).unwrap_or(Paging::None);
            match self.list_with(resource, paging, &decode).await {
                Ok(v) => return Ok(v),
                Err(e) if !short_again && e.to_string().contains("could be listed") => {
                    short_again = true;
                    tracing::debug!(error = %e, "listing came up short; reading it again");
                }
                Err(e) if paging != Paging::None && paging_refused(&e) => {
                    let next = if paging == Paging::StartIndexAndCount {
                        Paging::StartIndexOnly
                    } else {
                        Paging::None
                    };
                    self.quirks.note(
                        if next == Paging::StartIndexOnly {
                            "count-refused"
                        } else {
                            "paging-refused"
                        },
                        format!("a listing with {paging:?} paging failed: {e}"),
                        if next == Paging::StartIndexOnly {
                            "listings send startIndex alone and follow the provider's page size"
                        } else {
                            "listings ask for everything at once"
                        },
                    );
                    if let Ok(mut p) = self.paging.lock() {
                        *p = (*p).max(next);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn list_with<R>(
        &self,
        resource: &str,
        paging: Paging,
        decode: &impl Fn(&Value) -> Result<R, TargetError>,
    ) -> Result<Listed<R>, TargetError> {
        let attrs = indexed(resource);
        let mut listed = Listed {
            items: Vec::new(),
            index: Index::new(&[], attrs),
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut start = 1u64;
        // Set by the first page: how many the provider said exist, and how many are taken.
        let mut first: Option<(Option<u64>, u64)> = None;
        loop {
            let mut url = self.url(resource, None)?;
            let label = match paging {
                Paging::StartIndexAndCount => {
                    url.query_pairs_mut()
                        .append_pair("startIndex", &start.to_string())
                        .append_pair("count", &LIST_PAGE.to_string());
                    format!("GET /{resource}?startIndex={start}&count={LIST_PAGE}")
                }
                Paging::StartIndexOnly => {
                    url.query_pairs_mut()
                        .append_pair("startIndex", &start.to_string());
                    format!("GET /{resource}?startIndex={start}")
                }
                Paging::None => format!("GET /{resource}"),
            };
            let doc = self.call(Method::GET, url, None, &label).await?;
            let (items, total) = decode::list(&doc).map_err(|e| Self::bad(&label, e))?;
            let (first_total, bound) = *first.get_or_insert_with(|| (total, listing_bound(total)));
            let n = items.len() as u64;
            let mut fresh = 0usize;
            for item in &items {
                let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                // A resource seen on an earlier page (the provider ignores startIndex, or the
                // listing shifted) is taken once.
                if id.is_empty() || seen.insert(id.to_string()) {
                    fresh += 1;
                    listed.items.push(decode(item)?);
                    listed.index.insert(item, attrs);
                }
            }
            drop(items);
            drop(doc);
            let count = listed.items.len() as u64;
            if count > bound {
                return Err(Self::bad(
                    &label,
                    format!(
                        "the provider sent more than {bound} {resource}{}; the listing is not trusted",
                        match first_total {
                            Some(t) => format!(" though its first page said {t} exist"),
                            None => " without saying how many exist".to_string(),
                        }
                    ),
                ));
            }
            start += n;
            let complete = total.is_some_and(|t| count >= t);
            if paging == Paging::None || n == 0 || fresh == 0 || complete {
                // An incomplete listing would make a resync recreate what it did not see.
                if let Some(t) = total.filter(|t| count < *t) {
                    let why = if fresh == 0 && n > 0 {
                        " (pages repeat: the provider ignores startIndex, or its content moved while it was listed)"
                    } else {
                        ""
                    };
                    return Err(Self::bad(
                        &label,
                        format!("the provider says {t} {resource} exist but only {count} could be listed{why}"),
                    ));
                }
                return Ok(listed);
            }
        }
    }
}

/// A listing failure that may come from a paging parameter the provider does not take.
fn paging_refused(e: &TargetError) -> bool {
    matches!(
        e.kind,
        TargetErrorKind::Http {
            status: 400 | 422 | 500 | 501,
            ..
        }
    )
}

fn ambiguous(label: &str, n: usize) -> TargetError {
    TargetError {
        request: label.to_string(),
        kind: TargetErrorKind::BadResponse(format!(
            "{n} resources match exactly; none is adopted (resolve the duplicates on the target)"
        )),
    }
}
