//! `dirbridge test-mapping USER`: one directory entry as the directory holds it, as the
//! mapping turns it into a user, and the requests a sync would send for it now (a creation, or
//! the update against what was last pushed, and its group memberships). Reads the directory,
//! sends nothing, changes no state.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{policy, read_desired, EngineError};
use crate::config::Config;
use crate::mapping::Mapper;
use crate::model::{Key, User};
use crate::plan::apply::{prepare, Request};
use crate::plan::{plan, Operation};
use crate::source::entry::RawEntry;
use crate::source::ldap::Session;
use crate::source::{dn, filter, SourceError};
use crate::state::records::{GroupRecord, Origin, Snapshot, UserRecord};

/// What `test-mapping` shows.
#[derive(Debug, Serialize)]
pub(crate) struct Preview {
    pub dn: String,
    pub key: Option<Key>,
    /// Every attribute the entry has (what the bind DN may read), text or `hex:...`.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Why the entry would not be synced, if it would not.
    pub rejected: Option<String>,
    /// The user as it would be pushed (manager as the manager's key).
    pub user: Option<User>,
    /// Groups the user would be a member of.
    pub groups: Vec<String>,
    /// The operations a sync would send for it now, in order, resolved against the records;
    /// objects not created yet have placeholder ids.
    #[serde(skip)]
    pub requests: Vec<Request>,
}

/// Why an entry could not be previewed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PreviewError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no user entry matches `{0}` (searched by DN, userName, uid, mail, userPrincipalName and sAMAccountName within ldap.user_base and ldap.user_filter)")]
    NotFound(String),
    #[error("{count} user entries match `{who}` ({dns}): give the DN")]
    Ambiguous {
        who: String,
        count: usize,
        dns: String,
    },
}

impl From<SourceError> for PreviewError {
    fn from(e: SourceError) -> Self {
        PreviewError::Engine(EngineError::Source(e))
    }
}

fn looks_like_dn(s: &str) -> bool {
    s.contains('=') && (s.contains(',') || s.to_ascii_lowercase().starts_with("cn="))
}

fn shown(values: crate::source::entry::Values<'_>) -> Vec<String> {
    values
        .map(|v| match std::str::from_utf8(v) {
            Ok(t) if !t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => t.to_string(),
            _ => format!("hex:{}", hex::encode(v)),
        })
        .collect()
}

/// Finds the entry `who` names: a DN, or a value of the userName attributes, uid, mail,
/// userPrincipalName or sAMAccountName, within the user scope.
async fn find_entry(cfg: &Config, mapper: &Mapper, who: &str) -> Result<RawEntry, PreviewError> {
    let mut session = Session::open(&cfg.ldap).await?;
    let mut attrs: Vec<String> = vec!["*".into(), "+".into()];
    attrs.extend(mapper.user_attributes());
    let found = if looks_like_dn(who) {
        session
            .read_entry(who, &attrs)
            .await
            .map(|e| e.into_iter().collect())
    } else {
        let value = filter::escape(who.as_bytes());
        let mut names: Vec<String> = cfg.mapping.user_name.attributes();
        for a in ["uid", "mail", "userPrincipalName", "sAMAccountName"] {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(a)) {
                names.push(a.to_string());
            }
        }
        let alternatives: String = names.iter().map(|a| format!("({a}={value})")).collect();
        let f = format!("(&{}(|{alternatives}))", cfg.ldap.user_filter);
        let mut out: Vec<RawEntry> = Vec::new();
        session
            .search_paged(&cfg.ldap.user_base, &f, &attrs, |e| out.push(e))
            .await
            .map(|_| out)
    };
    session.close().await;
    let mut found = found?;
    match found.len() {
        0 => Err(PreviewError::NotFound(who.to_string())),
        1 => Ok(found.remove(0)),
        n => Err(PreviewError::Ambiguous {
            who: who.to_string(),
            count: n,
            dns: found
                .iter()
                .map(|e| e.dn.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Previews one entry against the records.
pub(crate) async fn preview<T: crate::target::Target>(
    cfg: &Config,
    records: &Snapshot,
    target: &T,
    who: &str,
) -> Result<Preview, PreviewError> {
    let mapper = Mapper::new(&cfg.mapping, &cfg.ldap);
    let entry = find_entry(cfg, &mapper, who).await?;
    let key = mapper.key_of_entry(&entry);
    let known: BTreeSet<Key> = records.users.keys().cloned().collect();
    // The whole read: a user's manager and groups are resolved against the whole set.
    let (mut desired, _) = read_desired(cfg, &known).await?;
    let mut records = records.clone();
    super::fit(target, &mut desired, &mut records);
    let records = &records;
    let norm = dn::normalize(&entry.dn);
    let rejected = desired
        .rejected
        .iter()
        .find(|r| dn::normalize(&r.dn) == norm || (r.key.is_some() && r.key == key))
        .map(|r| r.reason.clone());
    let user = key
        .as_ref()
        .and_then(|k| desired.users.get(k))
        .map(|u| User::clone(u));
    let mut preview = Preview {
        dn: entry.dn.clone(),
        key: key.clone(),
        attributes: entry
            .attrs
            .iter()
            .map(|(k, v)| (k.to_string(), shown(v)))
            .collect(),
        rejected,
        user,
        groups: Vec::new(),
        requests: Vec::new(),
    };
    let Some(key) = key else {
        return Ok(preview);
    };
    if preview.user.is_none() && preview.rejected.is_none() {
        preview.rejected = Some(
            "the entry is outside the user scope (ldap.user_base / ldap.user_filter), so it is not synced".into(),
        );
        return Ok(preview);
    }
    preview.groups = desired
        .groups
        .values()
        .filter(|g| g.members.contains(&key))
        .map(|g| g.display_name.clone())
        .collect();
    // Every operation goes through a scratch copy of the records, so a creation gives later
    // operations (memberships) an id to refer to; only this user's are kept.
    let mut scratch = records.clone();
    for op in plan(&desired, records, &policy(cfg)) {
        let op = match op {
            Operation::AddMembers {
                group,
                display_name,
                members,
            } if members.contains(&key) => Operation::AddMembers {
                group,
                display_name,
                members: vec![key.clone()],
            },
            Operation::RemoveMembers {
                group,
                display_name,
                members,
            } if members.contains(&key) => Operation::RemoveMembers {
                group,
                display_name,
                members: vec![key.clone()],
            },
            other => other,
        };
        let mine = match &op {
            Operation::AddMembers { members, .. } | Operation::RemoveMembers { members, .. } => {
                members == &vec![key.clone()]
            }
            Operation::CreateUser { key: k, .. }
            | Operation::UpdateUser { key: k, .. }
            | Operation::DeactivateUser { key: k, .. }
            | Operation::DeleteUser { key: k, .. } => k == &key,
            _ => false,
        };
        let Ok(req) = prepare(&scratch, &op) else {
            continue;
        };
        match &op {
            Operation::CreateUser { key: k, user, .. } => {
                scratch.users.insert(
                    k.clone(),
                    UserRecord::new(
                        format!("<id of {} once created>", user.user_name),
                        Origin::Created,
                        user.clone(),
                    ),
                );
            }
            Operation::CreateGroup {
                key: k,
                display_name,
            } => {
                scratch.groups.insert(
                    k.clone(),
                    GroupRecord {
                        target_id: format!("<id of group {display_name} once created>"),
                        origin: Origin::Created,
                        display_name: display_name.clone(),
                        members: Default::default(),
                    },
                );
            }
            _ => {}
        }
        if mine {
            preview.requests.push(req);
        }
    }
    Ok(preview)
}
