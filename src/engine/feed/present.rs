//! A refresh resumed from a cookie is checked against a listing of what is in scope. 389-DS does
//! not report an entry that left a search's filter while the gateway was away (a user who got
//! `description: out` stays in the mirror, while a full read drops it: `run` and `sync` would
//! disagree for ever). One keys-only search per scope after each resumed refresh settles it, as
//! a modifyTimestamp poll does on every poll; what the mirror holds beyond it has left.

use std::collections::BTreeSet;

use super::{Feed, FeedScope};
use crate::config::Config;
use crate::source::ldap::Session;
use crate::source::SourceError;

/// Lists the keys in each scope whose resumed refresh is not checked yet, and drops from the
/// mirror what is not among them.
pub(crate) async fn check_listed(
    session: &mut Session,
    cfg: &Config,
    feed: &mut Feed,
) -> Result<(), SourceError> {
    let attrs = vec![cfg.mapping.key.clone()];
    for scope in feed.unchecked_scopes() {
        let (base, filter) = match scope {
            FeedScope::Users => (&cfg.ldap.user_base, &cfg.ldap.user_filter),
            FeedScope::Groups => (&cfg.ldap.group_base, &cfg.ldap.group_filter),
        };
        let mapper = feed.mapper().clone();
        let mut listed = BTreeSet::new();
        session
            .search_paged(base, filter, &attrs, |e| {
                if let Some(k) = mapper.key_of_entry(&e) {
                    listed.insert(k);
                }
            })
            .await?;
        let gone = feed.keep_listed(scope, &listed);
        if gone > 0 {
            tracing::info!(
                scope = scope.name(),
                gone,
                "left the scope while the gateway was away (the server's refresh did not say so)"
            );
        }
    }
    Ok(())
}
