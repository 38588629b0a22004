//! Entries that reached the feed without their key are read again by DN (a base search within
//! the scope's filter) before the next pass: 389-DS sends the changed entries of a refresh
//! resumed from a cookie without operational attributes such as entryUUID, even when asked.

use super::{feed_attributes, Feed, FeedScope, Refetched};
use crate::config::Config;
use crate::source::dn::normalize;
use crate::source::ldap::Session;
use crate::source::SourceError;

/// Reads again every entry the feed is waiting for. An error leaves the rest waiting (the pass
/// waits too, so a cookie never covers a change that was not read).
pub(crate) async fn refetch(
    session: &mut Session,
    cfg: &Config,
    feed: &mut Feed,
) -> Result<(), SourceError> {
    let pending = feed.refetches();
    if pending.is_empty() {
        return Ok(());
    }
    let (user_attrs, group_attrs) = feed_attributes(cfg, feed.mapper());
    let (mut keyed, mut other) = (0u64, 0u64);
    for (scope, uuid, dn) in pending {
        let (filter, attrs) = match scope {
            FeedScope::Users => (&cfg.ldap.user_filter, &user_attrs),
            FeedScope::Groups => (&cfg.ldap.group_filter, &group_attrs),
        };
        let found = session.read_entry_matching(&dn, filter, attrs).await?;
        // The entry asked for, or nothing: a server answering with another entry is not
        // believed (the feed would put it in the place of this one).
        let found = match found {
            Some(e) if normalize(&e.dn) != normalize(&dn) => {
                return Err(SourceError::Search {
                    base: dn.clone(),
                    filter: filter.clone(),
                    reason: format!("a read of this entry was answered with {}", e.dn),
                })
            }
            f => f,
        };
        match feed.apply_refetched(scope, &uuid, &dn, found) {
            Refetched::Keyed => keyed += 1,
            Refetched::Missing | Refetched::Unkeyed => other += 1,
        }
    }
    tracing::info!(
        read_again = keyed,
        not_placed = other,
        "entries that came without their key were read again by DN"
    );
    Ok(())
}
