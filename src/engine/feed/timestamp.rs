//! Polling by `modifyTimestamp`, for servers without content synchronization. Each poll reads
//! the entries modified since the highest timestamp seen (the server's clock, not ours), then
//! lists the keys still in scope, which is how deletions and moves out of scope are seen: a
//! timestamp search cannot return what is gone. The results are fed to the same [`Feed`] as
//! syncrepl events (modify, then a present phase), so both share one mirror logic.

use sha2::{Digest, Sha256};

use super::{feed_attributes, Feed, FeedScope};
use crate::config::Config;
use crate::source::entry::RawEntry;
use crate::source::ldap::Session;
use crate::source::syncrepl::{EntryState, SyncInfo};
use crate::source::SourceError;

/// The entry's identity for the feed: its entryUUID, or (servers without one) a digest of its
/// stable key.
fn identity(feed: &Feed, e: &RawEntry) -> Vec<u8> {
    if let Some(u) = e
        .texts("entryUUID")
        .ok()
        .and_then(|v| v.into_iter().next())
        .and_then(|t| super::uuid_bytes(&t))
    {
        return u;
    }
    let key = feed
        .mapper()
        .key_of_entry(e)
        .unwrap_or_else(|| format!("dn:{}", crate::source::dn::normalize(&e.dn)).into());
    Sha256::digest(key.as_bytes())[..16].to_vec()
}

/// The highest `modifyTimestamp` of `e` and `current` (GeneralizedTime strings of one server
/// compare as text).
fn later(current: Option<String>, e: &RawEntry) -> Option<String> {
    let t = e
        .texts("modifyTimestamp")
        .ok()
        .and_then(|v| v.into_iter().next());
    match (current, t) {
        (Some(c), Some(t)) => Some(if t > c { t } else { c }),
        (c, t) => c.or(t),
    }
}

/// Figures of one poll.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PollStats {
    pub changed: u64,
    pub listed: u64,
}

/// One poll of both scopes into `feed`.
pub(crate) async fn poll(
    session: &mut Session,
    cfg: &Config,
    feed: &mut Feed,
) -> Result<PollStats, SourceError> {
    let (user_attrs, group_attrs) = feed_attributes(cfg, feed.mapper());
    let key_attr = cfg.mapping.key.clone();
    let mut stats = PollStats::default();
    for scope in FeedScope::ALL {
        let (base, filter, attrs) = match scope {
            FeedScope::Users => (&cfg.ldap.user_base, &cfg.ldap.user_filter, &user_attrs),
            FeedScope::Groups => (&cfg.ldap.group_base, &cfg.ldap.group_filter, &group_attrs),
        };
        let mut attrs = attrs.clone();
        attrs.push("modifyTimestamp".into());
        let since = feed.begin(scope).and_then(|c| String::from_utf8(c).ok());
        let changed_filter = match &since {
            // The watermark is a value the server itself sent: still, allow only what a
            // GeneralizedTime holds, so it can never change the filter.
            Some(t)
                if t.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'Z' | '+' | '-')) =>
            {
                format!(
                    "(&{filter}(modifyTimestamp>={}))",
                    crate::source::filter::escape(t.as_bytes())
                )
            }
            _ => filter.clone(),
        };
        let full = changed_filter == *filter;
        tracing::debug!(scope = scope.name(), since = ?since, filter = %changed_filter, "timestamp poll");
        let mut entries = Vec::new();
        session
            .search_paged(base, &changed_filter, &attrs, |e| entries.push(e))
            .await?;
        let mut mark = since.clone();
        for e in entries {
            mark = later(mark, &e);
            let uuid = identity(feed, &e);
            let dn = e.dn.clone();
            let state = if full {
                EntryState::Add
            } else {
                EntryState::Modify
            };
            feed.apply_entry(scope, state, &uuid, &dn, Some(e), None);
            stats.changed += 1;
        }
        if full {
            // Everything was just read: what the mirror holds beyond it is gone.
            feed.apply_info(
                scope,
                SyncInfo::RefreshDelete {
                    cookie: mark.map(String::into_bytes),
                    done: true,
                },
            );
            continue;
        }
        // What is still in scope: the rest of the mirror was deleted or left it.
        let list_attrs = vec!["entryUUID".to_string(), key_attr.clone()];
        let mut present = Vec::new();
        session
            .search_paged(base, filter, &list_attrs, |e| {
                present.push(identity(feed, &e))
            })
            .await?;
        stats.listed += present.len() as u64;
        for uuid in present {
            feed.apply_entry(scope, EntryState::Present, &uuid, "", None, None);
        }
        feed.apply_info(
            scope,
            SyncInfo::RefreshPresent {
                cookie: mark.map(String::into_bytes),
                done: true,
            },
        );
    }
    Ok(stats)
}
