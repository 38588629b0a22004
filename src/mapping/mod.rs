//! Directory entries to canonical users and groups.
//!
//! [`Mapper`] turns one entry into one mapped object, using the attribute names of
//! `[mapping]`; [`desired::DesiredBuilder`] collects them and resolves what needs the whole set
//! (manager DNs, memberships, nested groups, duplicate userNames) into a
//! [`crate::model::DesiredState`].

pub(crate) mod desired;
pub(crate) mod expr;
mod field;
pub(crate) mod key;
pub(crate) mod live;

pub(crate) use field::FieldSource;

pub(crate) use key::{guid_bytes, guid_string};

use std::sync::Arc;

use crate::config::{ActiveRule, LdapConfig, MappingConfig, Membership, RequiredField};
use crate::model::{Key, Rejected, Text, User};
use crate::source::entry::RawEntry;
use crate::source::{dn, sid};

pub(crate) use desired::DesiredBuilder;

/// A user entry after mapping, before set-wide resolution.
#[derive(Debug, Clone)]
pub(crate) struct MappedUser {
    pub key: Key,
    pub dn: String,
    /// The entry's GUID when the server sends extended DNs: references by GUID resolve to it.
    pub dn_guid: Option<String>,
    /// The user, with `manager` still unset (see `manager_dn`).
    pub user: Arc<User>,
    pub manager_dn: Option<String>,
    /// Normalized DNs of the groups the entry's `memberOf` names.
    pub member_of: Vec<String>,
    /// SID of the user's primary group (AD `primaryGroupID`), when asked for.
    pub primary_group_sid: Option<String>,
}

/// A group entry after mapping.
#[derive(Debug, Clone)]
pub(crate) struct MappedGroup {
    pub key: Key,
    pub dn: String,
    pub dn_guid: Option<String>,
    pub display_name: String,
    /// Normalized DNs from the group's member attribute.
    pub member_dns: Vec<String>,
    /// Normalized DNs of the groups this group is a member of.
    pub member_of: Vec<String>,
    /// The group's SID (AD), when primary groups are asked for.
    pub sid: Option<String>,
}

/// Maps entries with the configured attribute names.
#[derive(Debug, Clone)]
pub(crate) struct Mapper {
    m: MappingConfig,
    membership: Membership,
    nested: bool,
    primary_group: bool,
    /// Now, as a Windows FILETIME (100 ns since 1601), for `accountExpires`.
    now_filetime: i64,
}

/// 100-ns intervals between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_EPOCH: i64 = 116_444_736_000_000_000;

fn filetime_now() -> i64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() / 100)
        .unwrap_or(0);
    FILETIME_UNIX_EPOCH.saturating_add(i64::try_from(since_unix).unwrap_or(i64::MAX))
}

impl Mapper {
    pub(crate) fn new(mapping: &MappingConfig, ldap: &LdapConfig) -> Mapper {
        Mapper {
            m: mapping.clone(),
            membership: ldap.membership,
            nested: ldap.nested_groups,
            primary_group: ldap.include_primary_group,
            now_filetime: filetime_now(),
        }
    }

    /// The same mapper with a fixed "now" (a Unix time in seconds), for tests.
    #[cfg(test)]
    pub(crate) fn at_unix_time(mut self, secs: i64) -> Mapper {
        self.now_filetime = FILETIME_UNIX_EPOCH + secs * 10_000_000;
        self
    }

    pub(crate) fn membership(&self) -> Membership {
        self.membership
    }

    pub(crate) fn nested(&self) -> bool {
        self.nested
    }

    /// The attributes a user search must ask for (operational ones such as entryUUID and
    /// memberOf are only returned when asked for by name).
    pub(crate) fn user_attributes(&self) -> Vec<String> {
        let m = &self.m;
        let mut out = vec![m.key.clone()];
        for source in [
            &m.user_name,
            &m.given_name,
            &m.family_name,
            &m.display_name,
            &m.email,
            &m.title,
            &m.department,
            &m.employee_number,
        ] {
            out.extend(source.attributes());
        }
        out.extend(m.manager.iter().cloned());
        for (_, source) in &m.custom {
            out.extend(source.attributes());
        }
        if let Some(a) = &m.active.attribute {
            out.push(a.clone());
        }
        if m.active.user_account_control {
            out.push("userAccountControl".into());
        }
        if m.active.account_expires {
            out.push("accountExpires".into());
        }
        if self.membership == Membership::MemberOf {
            out.push(m.member_of_attribute.clone());
        }
        if self.primary_group {
            out.push("primaryGroupID".into());
            out.push("objectSid".into());
        }
        dedup_ci(out)
    }

    pub(crate) fn group_attributes(&self) -> Vec<String> {
        let m = &self.m;
        let mut out = vec![m.key.clone()];
        out.extend(m.group_name.attributes());
        if self.membership == Membership::Member || self.nested {
            out.push(m.member_attribute.clone());
        }
        if self.membership == Membership::MemberOf && self.nested {
            out.push(m.member_of_attribute.clone());
        }
        if self.primary_group {
            out.push("objectSid".into());
        }
        dedup_ci(out)
    }

    /// The entry's stable key, if it has one.
    pub(crate) fn key_of_entry(&self, e: &RawEntry) -> Option<Key> {
        key::stable_key(e, &self.m.key, self.m.key_format).map(Key::from)
    }

    fn key_of(&self, e: &RawEntry) -> Result<Key, Rejected> {
        key::stable_key(e, &self.m.key, self.m.key_format)
            .map(Key::from)
            .ok_or_else(|| Rejected {
                dn: e.dn.clone(),
                key: None,
                reason: format!(
                "has no {} (the stable key); check that the attribute is readable by the bind DN",
                self.m.key
            ),
            })
    }

    pub(crate) fn map_user(&self, e: &RawEntry) -> Result<MappedUser, Rejected> {
        let key = self.key_of(e)?;
        let reject = |reason: String| Rejected {
            dn: e.dn.clone(),
            key: Some(key.clone()),
            reason,
        };
        let text = |s: &FieldSource| s.value(e).map_err(|nt| reject(nt.to_string()));
        let short = |s: &FieldSource| s.text(e).map_err(|nt| reject(nt.to_string()));
        let m = &self.m;
        // The userName is the one value trimmed: a look-up key, where stray spaces are mistakes.
        let user_name = short(&m.user_name)?
            .map(|n| Text::from(n.trim()))
            .ok_or_else(|| {
                reject(format!(
                    "has no value for userName from {}",
                    m.user_name.describe()
                ))
            })?;
        let mut custom = std::collections::BTreeMap::new();
        for (path, source) in &m.custom {
            if let Some(v) = text(source)? {
                custom.insert(path.clone(), v);
            }
        }
        let user = User {
            user_name,
            given_name: short(&m.given_name)?,
            family_name: short(&m.family_name)?,
            display_name: short(&m.display_name)?,
            email: short(&m.email)?,
            active: is_active(e, &m.active, self.now_filetime)
                .map_err(|nt| reject(nt.to_string()))?,
            title: short(&m.title)?,
            department: short(&m.department)?,
            employee_number: short(&m.employee_number)?,
            manager: None,
            custom: custom.into(),
        };
        for field in &m.required {
            let present = match field {
                RequiredField::GivenName => user.given_name.is_some(),
                RequiredField::FamilyName => user.family_name.is_some(),
                RequiredField::Email => user.email.is_some(),
                RequiredField::DisplayName => user.display_name.is_some(),
            };
            if !present {
                return Err(reject(format!(
                    "has no value for the required SCIM attribute {} (see mapping.required)",
                    field.scim_name()
                )));
            }
        }
        let manager_dn = e
            .first_text(&m.manager)
            .map_err(|nt| reject(nt.to_string()))?;
        let member_of = if self.membership == Membership::MemberOf {
            e.texts(&m.member_of_attribute)
                .map_err(|nt| reject(nt.to_string()))?
                .iter()
                .map(|d| dn::normalize(d))
                .collect()
        } else {
            Vec::new()
        };
        let primary_group_sid = if self.primary_group {
            let rid = e
                .first_text(&["primaryGroupID".to_string()])
                .map_err(|nt| reject(nt.to_string()))?
                .and_then(|r| r.parse::<u32>().ok());
            let sid = e.values("objectSid").first().and_then(sid::to_string);
            rid.zip(sid).and_then(|(rid, sid)| sid::sibling(&sid, rid))
        } else {
            None
        };
        Ok(MappedUser {
            key,
            dn: e.dn.clone(),
            dn_guid: e.dn_guid.clone(),
            user: Arc::new(user),
            manager_dn,
            member_of,
            primary_group_sid,
        })
    }

    pub(crate) fn map_group(&self, e: &RawEntry) -> Result<MappedGroup, Rejected> {
        let key = self.key_of(e)?;
        let reject = |reason: String| Rejected {
            dn: e.dn.clone(),
            key: Some(key.clone()),
            reason,
        };
        let display_name = match self
            .m
            .group_name
            .value(e)
            .map_err(|nt| reject(nt.to_string()))?
        {
            Some(n) => n,
            None => dn::first_rdn_value(&e.dn).ok_or_else(|| {
                reject(format!(
                    "has no value for the group name from {}",
                    self.m.group_name.describe()
                ))
            })?,
        };
        let dns = |attr: &str| -> Result<Vec<String>, Rejected> {
            Ok(e.texts(attr)
                .map_err(|nt| reject(nt.to_string()))?
                .iter()
                .map(|d| dn::normalize(d))
                .collect())
        };
        Ok(MappedGroup {
            key: key.clone(),
            dn: e.dn.clone(),
            dn_guid: e.dn_guid.clone(),
            display_name,
            member_dns: dns(&self.m.member_attribute)?,
            member_of: dns(&self.m.member_of_attribute)?,
            sid: self
                .primary_group
                .then(|| e.values("objectSid").first().and_then(sid::to_string))
                .flatten(),
        })
    }
}

/// userAccountControl's ACCOUNTDISABLE flag.
const UF_ACCOUNTDISABLE: i64 = 0x2;

fn is_active(
    e: &RawEntry,
    rule: &ActiveRule,
    now_filetime: i64,
) -> Result<bool, crate::source::entry::NotText> {
    let first_number = |attr: &str| -> Result<Option<i64>, crate::source::entry::NotText> {
        Ok(e.texts(attr)?
            .first()
            .and_then(|v| v.trim().parse::<i64>().ok()))
    };
    if rule.user_account_control {
        if let Some(uac) = first_number("userAccountControl")? {
            if uac & UF_ACCOUNTDISABLE != 0 {
                return Ok(false);
            }
        }
    }
    if rule.account_expires {
        // 0 and i64::MAX both mean "never expires".
        if let Some(expires) = first_number("accountExpires")? {
            if expires != 0 && expires != i64::MAX && expires <= now_filetime {
                return Ok(false);
            }
        }
    }
    let Some(attr) = &rule.attribute else {
        return Ok(true);
    };
    if rule.present_means_inactive {
        return Ok(!e.has(attr));
    }
    let values = e.texts(attr)?;
    Ok(!values.iter().any(|v| {
        rule.inactive_values
            .iter()
            .any(|iv| iv.eq_ignore_ascii_case(v.trim()))
    }))
}

fn dedup_ci(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    list.into_iter()
        .filter(|a| seen.insert(a.to_ascii_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests;
