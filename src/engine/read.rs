//! One read of the directory into the desired state: users, then groups, then the groups that
//! users' `memberOf` names but the group search did not return.

use std::collections::BTreeSet;

use crate::config::{Config, Membership, ReferencedGroups};
use crate::mapping::{DesiredBuilder, Mapper};
use crate::model::{DesiredState, Key};
use crate::source::ldap::Session;
use crate::source::SourceError;

/// Figures of one read, for logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    pub user_entries: u64,
    pub group_entries: u64,
    pub referenced_groups: u64,
    pub references_skipped: u64,
}

/// Reads users and groups. `known_users` are the keys already pushed (used to settle duplicate
/// userNames in favour of the one already on the target).
pub async fn read_desired(
    cfg: &Config,
    known_users: &BTreeSet<Key>,
) -> Result<(DesiredState, ReadStats), SourceError> {
    let mut session = Session::open(&cfg.ldap).await?;
    let result = read_with(&mut session, cfg, known_users).await;
    session.close().await;
    result
}

async fn read_with(
    session: &mut Session,
    cfg: &Config,
    known_users: &BTreeSet<Key>,
) -> Result<(DesiredState, ReadStats), SourceError> {
    let mapper = Mapper::new(&cfg.mapping, &cfg.ldap);
    let user_attrs = mapper.user_attributes();
    let group_attrs = mapper.group_attributes();
    let mut builder = DesiredBuilder::new(mapper);
    let mut stats = ReadStats::default();

    let s = session
        .search_paged(
            &cfg.ldap.user_base,
            &cfg.ldap.user_filter,
            &user_attrs,
            |e| builder.add_user(&e),
        )
        .await?;
    stats.user_entries = s.entries;
    stats.references_skipped += s.references;

    let s = session
        .search_paged(
            &cfg.ldap.group_base,
            &cfg.ldap.group_filter,
            &group_attrs,
            |e| builder.add_group(&e),
        )
        .await?;
    stats.group_entries = s.entries;
    stats.references_skipped += s.references;

    if cfg.ldap.membership == Membership::MemberOf
        && cfg.ldap.referenced_groups == ReferencedGroups::Create
    {
        for dn in builder.unknown_group_dns() {
            if let Some(entry) = session.read_entry(&dn, &group_attrs).await? {
                builder.add_group(&entry);
                stats.referenced_groups += 1;
            }
        }
    }
    Ok((builder.finish(known_users), stats))
}
