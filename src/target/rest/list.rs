//! Listing a REST target's users or groups page by page: by a next-page value (cursor, page
//! number or URL) the answer holds, or by page numbers from a start page. A server that ignores
//! the page it is asked for (the same page again) or never ends stops the listing with an error,
//! never a loop or a listing with duplicates.

use serde_json::Value;

use super::answer::text_of;
use super::template::{lookup, Vars};
use super::RestClient;
use crate::config::rest::Event;
use crate::target::{TargetError, TargetErrorKind};

/// The most pages one listing reads.
const MAX_PAGES: usize = 100_000;

impl RestClient {
    /// Every object the list event returns, as raw JSON items.
    pub(super) async fn list_raw(&self, event: Event) -> Result<Vec<Value>, TargetError> {
        let Some(ev) = self.cfg.events.get(&event) else {
            return Ok(Vec::new());
        };
        let label = format!("{} {}", ev.method, ev.path);
        let bad = |m: String| TargetError {
            request: label.clone(),
            kind: TargetErrorKind::BadResponse(m),
        };
        let mut out = Vec::new();
        let mut page: Option<Value> = ev.start_page.map(Value::from);
        let mut previous_pages = std::collections::HashSet::new();
        let mut seen_cursors = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut vars = Vars::default();
            if let Some(p) = &page {
                vars.set("page", p.clone());
            }
            let doc = match page.as_ref().and_then(Value::as_str).filter(|p| {
                ev.next.is_some() && (p.starts_with("http://") || p.starts_with("https://"))
            }) {
                // The answer named the next page's URL: followed only on the target's own origin.
                Some(u) => self.get_url(event, u).await?,
                None => self.send(event, &vars).await?,
            };
            let first = previous_pages.is_empty();
            let batch = page_items(&doc, ev.data.as_deref(), first).map_err(&bad)?;
            if batch.is_empty() {
                break;
            }
            // A page seen before (not only the one just before: pages that alternate too).
            let digest = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                serde_json::to_string(&batch)
                    .unwrap_or_default()
                    .hash(&mut h);
                h.finish()
            };
            if !previous_pages.insert(digest) {
                return Err(bad(
                    "a page repeats one read before: the server ignores the page asked for (check the list event's {page})".into(),
                ));
            }
            out.extend(batch);
            match &ev.next {
                Some(path) => {
                    let next = lookup(&doc, path).filter(|v| match v {
                        Value::Null => false,
                        Value::String(s) => !s.is_empty(),
                        Value::Bool(b) => *b,
                        _ => true,
                    });
                    let Some(next) = next else { break };
                    if !seen_cursors.insert(text_of(&next)) {
                        return Err(bad(format!(
                            "the answer names page `{}` again: the listing would never end",
                            text_of(&next)
                        )));
                    }
                    page = Some(next);
                }
                None => match &page {
                    Some(Value::Number(n)) => {
                        page = Some(Value::from(n.as_i64().unwrap_or_default() + 1));
                    }
                    // Neither a next key nor page numbers: the one answer is the whole list.
                    _ => break,
                },
            }
        }
        Ok(out)
    }

    /// A GET of a next-page URL the target gave, if it is on the target's own origin.
    async fn get_url(&self, event: Event, u: &str) -> Result<Value, TargetError> {
        let label = format!("GET (next page of {})", event.name());
        let url = url::Url::parse(u).map_err(|e| TargetError {
            request: label.clone(),
            kind: TargetErrorKind::BadResponse(format!("a next-page URL that does not parse: {e}")),
        })?;
        if url.origin() != self.base.origin() {
            return Err(TargetError {
                request: label,
                kind: TargetErrorKind::BadResponse(format!(
                    "the next page is on another origin ({}); credentials are sent to target.url's origin only",
                    url.origin().ascii_serialization()
                )),
            });
        }
        self.send_to(event, url, &Vars::default(), true).await
    }
}

/// The objects of one page of a listing. Stricter than a look-up's answer: an object where a
/// list was expected, or nothing where `data` says the list is on the first page, is a
/// configuration that does not fit the API, never an empty target (a resync would take every
/// user for gone); on a later page, nothing at `data` ends the listing.
pub(super) fn page_items(
    doc: &Value,
    data: Option<&str>,
    first: bool,
) -> Result<Vec<Value>, String> {
    let at = match data {
        Some(p) => lookup(doc, p).unwrap_or(Value::Null),
        None => doc.clone(),
    };
    match at {
        Value::Array(a) => Ok(a),
        Value::Null if !first => Ok(Vec::new()),
        Value::Null => Err(match data {
            Some(p) => format!("the first page has no list at `{p}` (the event's data)"),
            None => "the first page is empty, not a list".into(),
        }),
        Value::Object(_) => Err(match data {
            Some(p) => format!("`{p}` holds an object, not a list (the event's data)"),
            None => "the answer is an object, not a list: set the event's `data` to where the array is (e.g. data = \"users\")".into(),
        }),
        _ => Err(format!(
            "expected a list{}, found a single value",
            data.map(|d| format!(" at `{d}`")).unwrap_or_default()
        )),
    }
}
