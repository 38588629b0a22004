//! The HA lease in the directory: one entry whose `description` names the gateway that pushes
//! (`holder=<id>;gen=<n>;beat=<k>`). Taking and renewing it is a compare-and-swap in one
//! modify (delete the exact values read, add the new one): the server refuses it when anyone
//! changed the entry since the read. Judging time is the caller's (`daemon/ha.rs`).

use std::collections::HashSet;

use ldap3::Mod;

use super::ldap::Session;
use super::result_text::{describe, op_error};
use super::SourceError;
use crate::config::Profile;

/// The attribute holding the lease: every directory has it on the entry's classes, and a
/// service account can be given write access to it alone.
pub(crate) const ATTRIBUTE: &str = "description";

/// The highest generation or beat a lease value may hold.
const MAX_COUNT: u64 = 1 << 53;

/// One value of the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseValue {
    /// The gateway that holds it; `None`: free (released).
    pub holder: Option<String>,
    /// Counted up by each take-over: which holding this is.
    pub generation: u64,
    /// Counted up by each renewal: a value that changes is a holder that lives.
    pub beat: u64,
}

impl LeaseValue {
    pub(crate) fn text(&self) -> String {
        format!(
            "holder={};gen={};beat={}",
            self.holder.as_deref().unwrap_or(""),
            self.generation,
            self.beat
        )
    }

    /// The value as written by [`LeaseValue::text`]; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<LeaseValue> {
        let mut parts = text.split(';');
        let holder = parts.next()?.strip_prefix("holder=")?;
        let generation: u64 = parts.next()?.strip_prefix("gen=")?.parse().ok()?;
        let beat: u64 = parts.next()?.strip_prefix("beat=")?.parse().ok()?;
        // Counters no gateway reaches (2^53 renewals at one a millisecond: 285,000 years): a
        // value near the top is written by hand, and counting on from it would overflow.
        if generation > MAX_COUNT
            || beat > MAX_COUNT
            || parts.next().is_some()
            || crate::config::check_instance_id(holder).is_err() && !holder.is_empty()
        {
            return None;
        }
        Some(LeaseValue {
            holder: (!holder.is_empty()).then(|| holder.to_string()),
            generation,
            beat,
        })
    }
}

/// The lease entry's values at one read, sorted: the whole set is what a swap replaces, so
/// values nobody should have written are swept away by the next take-over, never trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub values: Vec<String>,
}

impl Observed {
    /// The lease, when the entry holds exactly one value of the lease's form.
    pub(crate) fn lease(&self) -> Option<LeaseValue> {
        match self.values.as_slice() {
            [one] => LeaseValue::parse(one),
            _ => None,
        }
    }

    /// The highest generation among the values (a take-over counts on from it).
    pub(crate) fn generation(&self) -> u64 {
        self.values
            .iter()
            .filter_map(|v| LeaseValue::parse(v))
            .map(|l| l.generation)
            .max()
            .unwrap_or(0)
    }
}

/// The outcome of a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swap {
    Done,
    /// The entry changed since it was read (another gateway wrote first): nothing was written.
    Lost,
}

fn write_error(dn: &str, reason: String) -> SourceError {
    SourceError::Write {
        dn: dn.to_string(),
        reason,
    }
}

/// Reads the lease; `None` when the entry does not exist.
pub(crate) async fn read(session: &mut Session, dn: &str) -> Result<Option<Observed>, SourceError> {
    let entry = session.read_entry(dn, &[ATTRIBUTE.to_string()]).await?;
    Ok(entry.map(|e| {
        let mut values: Vec<String> = e
            .values(ATTRIBUTE)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        values.sort();
        Observed { values }
    }))
}

/// The value of the entry's RDN, when it is a plain `cn=...` (what creating the entry needs).
fn common_name(dn: &str) -> Option<&str> {
    let rdn = dn.split(',').next()?;
    let (attr, value) = rdn.split_once('=')?;
    let value = value.trim();
    (attr.trim().eq_ignore_ascii_case("cn")
        && !value.is_empty()
        && !value.contains(['\\', '+', '"']))
    .then_some(value)
}

/// Creates the lease entry, free; false when it exists already (another gateway was first).
pub(crate) async fn create(
    session: &mut Session,
    dn: &str,
    profile: Profile,
) -> Result<bool, SourceError> {
    let cn = common_name(dn).ok_or_else(|| {
        write_error(
            dn,
            "cannot create the lease entry from this DN (its first part must be a plain cn=...): create it by hand (see the README's HA section)".into(),
        )
    })?;
    // An entry of a class every server has, with a description and nothing else required.
    let class = match profile {
        Profile::OpenLdap => "applicationProcess",
        Profile::ActiveDirectory => "container",
    };
    let free = LeaseValue {
        holder: None,
        generation: 0,
        beat: 0,
    }
    .text();
    let attrs = vec![
        ("objectClass", HashSet::from([class])),
        ("cn", HashSet::from([cn])),
        (ATTRIBUTE, HashSet::from([free.as_str()])),
    ];
    let verdict = session.verdict();
    let timeout = session.timeout();
    let res = session
        .ldap_mut()
        .with_timeout(timeout)
        .add(dn, attrs)
        .await
        .map_err(|e| write_error(dn, op_error(e, &verdict)))?;
    match res.rc {
        0 => Ok(true),
        68 => Ok(false),
        rc => Err(write_error(
            dn,
            format!(
                "cannot create the lease entry: {} (create it by hand, or let the bind DN add it: see the README's HA section)",
                describe(rc, &res.text)
            ),
        )),
    }
}

/// Replaces exactly the values read (`from`) with `to`, in one modify: refused by the server
/// ([`Swap::Lost`]) if any of them is gone or `to` is there already.
pub(crate) async fn swap(
    session: &mut Session,
    dn: &str,
    from: &Observed,
    to: &LeaseValue,
) -> Result<Swap, SourceError> {
    let new = to.text();
    let mut mods = Vec::with_capacity(2);
    if !from.values.is_empty() {
        let old: HashSet<&str> = from.values.iter().map(String::as_str).collect();
        mods.push(Mod::Delete(ATTRIBUTE, old));
    }
    mods.push(Mod::Add(ATTRIBUTE, HashSet::from([new.as_str()])));
    let verdict = session.verdict();
    let timeout = session.timeout();
    let res = session
        .ldap_mut()
        .with_timeout(timeout)
        .modify(dn, mods)
        .await
        .map_err(|e| write_error(dn, op_error(e, &verdict)))?;
    match res.rc {
        0 => Ok(Swap::Done),
        // noSuchAttribute: a value read is gone; attributeOrValueExists: the new one is
        // there (another gateway wrote the same); noSuchObject: the entry was deleted.
        16 | 20 | 32 => Ok(Swap::Lost),
        rc => Err(write_error(
            dn,
            format!(
                "cannot write the lease: {} (the bind DN needs write access to its description: see the README's HA section)",
                describe(rc, &res.text)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_as_written_and_nothing_else_passes_for_one() {
        let v = LeaseValue {
            holder: Some("gw-a.example.org".into()),
            generation: 7,
            beat: 42,
        };
        assert_eq!(v.text(), "holder=gw-a.example.org;gen=7;beat=42");
        assert_eq!(LeaseValue::parse(&v.text()), Some(v));
        let free = LeaseValue::parse("holder=;gen=3;beat=0").unwrap();
        assert_eq!(free.holder, None);
        for bad in [
            "",
            "holder=a",
            "holder=a;gen=1",
            "holder=a;gen=x;beat=1",
            "holder=a;gen=1;beat=1;extra=2",
            "holder=a b;gen=1;beat=1",
            "gen=1;holder=a;beat=1",
            "holder=a;gen=-1;beat=1",
            "holder=a;gen=18446744073709551615;beat=0",
            "holder=a;gen=1;beat=9007199254740993",
        ] {
            assert_eq!(LeaseValue::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_single_well_formed_value_is_a_lease() {
        let one = Observed {
            values: vec!["holder=a;gen=2;beat=5".into()],
        };
        assert_eq!(one.lease().unwrap().holder.as_deref(), Some("a"));
        let two = Observed {
            values: vec![
                "holder=a;gen=2;beat=5".into(),
                "holder=b;gen=3;beat=0".into(),
            ],
        };
        assert_eq!(two.lease(), None);
        assert_eq!(two.generation(), 3);
        let junk = Observed {
            values: vec!["set by hand".into()],
        };
        assert_eq!(junk.lease(), None);
        assert_eq!(junk.generation(), 0);
    }

    #[test]
    fn only_a_plain_common_name_is_created() {
        assert_eq!(common_name("cn=lease,ou=s,dc=x"), Some("lease"));
        assert_eq!(common_name("CN = lease ,dc=x"), Some("lease"));
        assert_eq!(common_name("ou=lease,dc=x"), None);
        assert_eq!(common_name("cn=a\\,b,dc=x"), None);
        assert_eq!(common_name("cn=a+uid=b,dc=x"), None);
    }
}
