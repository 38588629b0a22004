//! What a standby gateway (`[ha]`) keeps of the directory when it polls (AD, servers without
//! syncprov): the keys in scope, listed every poll, and those that left between two listings.
//! A take-over then looks those up by externalId, so an object the gateway before it created,
//! and that has left the directory since without that gateway pushing it, is found and
//! removed. (With syncrepl the standby's change feed tells the same from its mirror.)

use super::{guarded, Also, EngineError};
use crate::config::Config;
use crate::mapping::Mapper;
use crate::source::ldap::Session;

/// The keys listed `before` and not `now`: they left the directory or the scope.
pub(crate) fn left(before: &Also, now: &Also) -> Also {
    Also {
        users: before.users.difference(&now.users).cloned().collect(),
        groups: before.groups.difference(&now.groups).cloned().collect(),
    }
}

/// Adds the keys of every user and group in scope to `seen` (one keys-only search per scope).
pub(crate) async fn list_keys(cfg: &Config, seen: &mut Also) -> Result<(), EngineError> {
    let (users, groups) = guarded(async {
        let mut session = Session::open(&cfg.ldap).await?;
        let mapper = Mapper::new(&cfg.mapping, &cfg.ldap);
        let attrs = vec![cfg.mapping.key.clone()];
        let mut users = Vec::new();
        let mut groups = Vec::new();
        let read = async {
            session
                .search_paged(&cfg.ldap.user_base, &cfg.ldap.user_filter, &attrs, |e| {
                    users.extend(mapper.key_of_entry(&e));
                })
                .await?;
            session
                .search_paged(&cfg.ldap.group_base, &cfg.ldap.group_filter, &attrs, |e| {
                    groups.extend(mapper.key_of_entry(&e));
                })
                .await
        }
        .await;
        session.close().await;
        read?;
        Ok((users, groups))
    })
    .await?;
    seen.users.extend(users);
    seen.groups.extend(groups);
    Ok(())
}
