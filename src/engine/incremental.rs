//! Incremental reads of Active Directory. The state store keeps a mirror of the in-scope entries
//! and a watermark (DC, invocationId, highestCommittedUSN). A run then reads:
//! - nothing but the watermark, when `highestCommittedUSN` has not moved;
//! - the objects whose `uSNChanged` passed the watermark (deleted ones too, through the Show
//!   Deleted control), each read again within the configured scope: found means changed, not
//!   found means deleted or out of scope;
//! - everything, when there is no watermark, the DC or its invocationId differs (another DC, or
//!   one restored from a backup: its USNs mean nothing), the configuration changed, or a resync
//!   asks for it.
//!
//! Adding a user to a group changes only the group's USN, so for every changed group the users
//! that joined or left it are read again (their `memberOf` changed without their USN).

use std::collections::{BTreeMap, BTreeSet};

use super::read::{ranged, search, with_attribute, ReadStats};
use super::EngineError;
use crate::config::{Config, Membership};
use crate::mapping::{guid_bytes, DesiredBuilder, Mapper};
use crate::model::{DesiredState, Key};
use crate::source::entry::RawEntry;
use crate::source::ldap::Session;
use crate::source::{dn, SourceError};
use crate::state::{Mirror, Store, Watermark};

/// How many objectGUIDs one scoped re-read asks for.
const GUIDS_PER_QUERY: usize = 50;

/// A read whose mirror is not saved yet: the caller saves it once it has accepted the read
/// (an empty read, for one, is refused and must not become the mirror).
pub(super) struct TrackedRead {
    pub desired: DesiredState,
    pub stats: ReadStats,
    mirror: Mirror,
    /// The mirror before (None after a full read, which replaces it).
    previous: Option<Mirror>,
    watermark: Watermark,
}

impl TrackedRead {
    /// Saves the mirror and moves the watermark.
    pub(super) async fn save(&self, store: &Store) -> Result<(), EngineError> {
        if self.stats.mode == "unchanged" {
            return Ok(());
        }
        store
            .save_mirror(&self.mirror, self.previous.as_ref(), &self.watermark)
            .await?;
        Ok(())
    }
}

/// Reads the directory for a run, incrementally where the mirror allows. `full` forces a full
/// read (resync).
pub(super) async fn read_tracked(
    cfg: &Config,
    store: &Store,
    known_users: &BTreeSet<Key>,
    full: bool,
) -> Result<TrackedRead, EngineError> {
    let mapper = Mapper::new(&cfg.mapping, &cfg.ldap);
    let mut session = Session::open(&cfg.ldap).await?;
    let result = match super::read::check_mapping(&mut session, cfg).await {
        Ok(()) => read_with(&mut session, cfg, store, &mapper, full).await,
        Err(e) => Err(e.into()),
    };
    session.close().await;
    let (mirror, previous, watermark, stats) = result?;
    let mut builder = DesiredBuilder::new(mapper);
    for e in mirror.users.values() {
        builder.add_user(e);
    }
    for e in mirror.groups.values() {
        builder.add_group(e);
    }
    Ok(TrackedRead {
        desired: builder.finish(known_users),
        stats,
        mirror,
        previous,
        watermark,
    })
}

/// The new mirror, the one it replaces (None: replace all), the watermark, and the figures.
type Read = (Mirror, Option<Mirror>, Watermark, ReadStats);

async fn read_with(
    session: &mut Session,
    cfg: &Config,
    store: &Store,
    mapper: &Mapper,
    full: bool,
) -> Result<Read, EngineError> {
    // Where the DC is, read before anything else: what changes during the read is read again
    // next time rather than missed.
    let pos = session.usn_position().await?;
    let wm = Watermark {
        dc: pos.dc.clone(),
        invocation_id: pos.invocation_id.clone(),
        usn: pos.usn,
        fingerprint: super::fingerprint(cfg, "usn"),
    };
    let previous = store.watermark()?;
    let usable = previous.as_ref().filter(|p| {
        !full
            && p.dc == wm.dc
            && p.invocation_id == wm.invocation_id
            && p.fingerprint == wm.fingerprint
    });
    let Some(prev) = usable else {
        if let Some(p) = &previous {
            if p.invocation_id != wm.invocation_id && p.dc == wm.dc {
                tracing::warn!(dc = %wm.dc, "the DC's invocationId changed (restored from a backup?): reading everything");
            } else if p.dc != wm.dc {
                tracing::info!(previous = %p.dc, now = %wm.dc, "another DC answers: reading everything");
            }
        }
        let (mirror, stats) = read_full(session, cfg, mapper).await?;
        return Ok((mirror, None, wm, stats));
    };
    let mirror = store.mirror()?;
    if pos.usn == prev.usn {
        let stats = ReadStats {
            mode: "unchanged",
            ..Default::default()
        };
        return Ok((mirror, None, wm, stats));
    }
    let (next, stats) =
        read_delta(session, cfg, mapper, &mirror, prev.usn, &pos.naming_context).await?;
    Ok((next, Some(mirror), wm, stats))
}

/// The attributes to read: the mapping's, plus the groups' member values (needed to see who
/// joined or left a changed group).
fn attributes(cfg: &Config, mapper: &Mapper) -> (Vec<String>, Vec<String>) {
    let users = ranged(mapper.user_attributes(), cfg);
    let mut groups = mapper.group_attributes();
    with_attribute(&mut groups, &cfg.mapping.member_attribute);
    (users, ranged(groups, cfg))
}

fn keyed(mapper: &Mapper, entries: Vec<RawEntry>) -> BTreeMap<Key, RawEntry> {
    entries
        .into_iter()
        .map(|e| {
            // An entry without a readable key is kept under its DN, so it is still reported.
            let k = mapper
                .key_of_entry(&e)
                .unwrap_or_else(|| format!("dn:{}", e.dn).into());
            (k, e)
        })
        .collect()
}

async fn read_full(
    session: &mut Session,
    cfg: &Config,
    mapper: &Mapper,
) -> Result<(Mirror, ReadStats), SourceError> {
    let (user_attrs, group_attrs) = attributes(cfg, mapper);
    let step = cfg.ldap.range_step;
    let mut stats = ReadStats {
        mode: "full",
        ..Default::default()
    };
    let mut users = Vec::new();
    stats.user_entries = search(
        session,
        &cfg.ldap.user_base,
        &cfg.ldap.user_filter,
        &user_attrs,
        step,
        &mut stats,
        |e| users.push(e),
    )
    .await?;
    let mut groups = Vec::new();
    stats.group_entries = search(
        session,
        &cfg.ldap.group_base,
        &cfg.ldap.group_filter,
        &group_attrs,
        step,
        &mut stats,
        |e| groups.push(e),
    )
    .await?;
    Ok((
        Mirror {
            users: keyed(mapper, users),
            groups: keyed(mapper, groups),
        },
        stats,
    ))
}

/// Sets each of `keys` in `mirror` to what a scoped re-read found: the entry, or nothing (deleted,
/// or out of the scope).
fn refresh(mirror: &mut BTreeMap<Key, RawEntry>, keys: &[Key], found: &BTreeMap<Key, RawEntry>) {
    for k in keys {
        match found.get(k) {
            Some(e) => mirror.insert(k.clone(), e.clone()),
            None => mirror.remove(k),
        };
    }
}

/// `(|(objectGUID=\xx...)(...))` for a list of GUID keys.
fn guid_filter(keys: &[Key]) -> String {
    let mut out = String::from("(|");
    for k in keys {
        if let Some(b) = guid_bytes(k) {
            out.push_str("(objectGUID=");
            out.push_str(&crate::source::filter::escape_all(&b));
            out.push(')');
        }
    }
    out.push(')');
    out
}

/// Reads again, within `base` and `filter`, the objects with these keys.
async fn reread(
    session: &mut Session,
    cfg: &Config,
    base: &str,
    filter: &str,
    attrs: &[String],
    keys: &[Key],
    stats: &mut ReadStats,
) -> Result<Vec<RawEntry>, SourceError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(GUIDS_PER_QUERY) {
        let f = format!("(&{filter}{})", guid_filter(chunk));
        search(session, base, &f, attrs, cfg.ldap.range_step, stats, |e| {
            out.push(e)
        })
        .await?;
    }
    Ok(out)
}

/// The users referenced by a group entry's member values (GUID references only: extended DNs).
fn member_keys(cfg: &Config, e: Option<&RawEntry>) -> BTreeSet<Key> {
    let Some(e) = e else { return BTreeSet::new() };
    e.texts(&cfg.mapping.member_attribute)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| dn::split_extended(v).0)
        .map(Key::from)
        .collect()
}

async fn read_delta(
    session: &mut Session,
    cfg: &Config,
    mapper: &Mapper,
    mirror: &Mirror,
    since: u64,
    naming_context: &str,
) -> Result<(Mirror, ReadStats), SourceError> {
    let (user_attrs, group_attrs) = attributes(cfg, mapper);
    let mut stats = ReadStats {
        mode: "delta",
        ..Default::default()
    };
    // Every object changed since the watermark, deleted ones included, anywhere in the domain:
    // an object moved out of the scope must be seen leaving it, and a deleted one is under the
    // domain's CN=Deleted Objects, whatever base_dn says.
    let filter = format!(
        "(&(|(objectClass=user)(objectClass=group))(uSNChanged>={}))",
        since + 1
    );
    let mut changed: BTreeSet<Key> = BTreeSet::new();
    let guid_attr = vec!["objectGUID".to_string()];
    session
        .search_paged_with(naming_context, &filter, &guid_attr, true, |e| {
            if let Some(b) = e
                .values("objectGUID")
                .first()
                .and_then(|b| <&[u8; 16]>::try_from(b).ok())
            {
                changed.insert(crate::mapping::guid_string(b).into());
            }
        })
        .await?;
    stats.changed = changed.len() as u64;
    let changed: Vec<Key> = changed.into_iter().collect();

    let mut next = mirror.clone();
    let users = reread(
        session,
        cfg,
        &cfg.ldap.user_base,
        &cfg.ldap.user_filter,
        &user_attrs,
        &changed,
        &mut stats,
    )
    .await?;
    let groups = reread(
        session,
        cfg,
        &cfg.ldap.group_base,
        &cfg.ldap.group_filter,
        &group_attrs,
        &changed,
        &mut stats,
    )
    .await?;
    stats.user_entries = users.len() as u64;
    stats.group_entries = groups.len() as u64;
    let users = keyed(mapper, users);
    let groups = keyed(mapper, groups);
    refresh(&mut next.users, &changed, &users);
    refresh(&mut next.groups, &changed, &groups);

    // Users whose memberOf changed with a group: those that joined or left it, or all of its
    // members when the group itself was renamed or moved (memberOf names it by DN).
    if mapper.membership() == Membership::MemberOf {
        let mut affected: BTreeSet<Key> = BTreeSet::new();
        for k in &changed {
            let before = mirror.groups.get(k);
            let after = next.groups.get(k);
            let (old, new) = (member_keys(cfg, before), member_keys(cfg, after));
            if before.map(|e| &e.dn) != after.map(|e| &e.dn) {
                affected.extend(old.union(&new).cloned());
            } else {
                affected.extend(old.symmetric_difference(&new).cloned());
            }
        }
        // Groups nested in a changed group: their memberOf changed the same way.
        let nested: Vec<Key> = affected
            .iter()
            .filter(|k| mirror.groups.contains_key(*k) && !groups.contains_key(*k))
            .cloned()
            .collect();
        if !nested.is_empty() {
            let again = reread(
                session,
                cfg,
                &cfg.ldap.group_base,
                &cfg.ldap.group_filter,
                &group_attrs,
                &nested,
                &mut stats,
            )
            .await?;
            refresh(&mut next.groups, &nested, &keyed(mapper, again));
        }
        let affected: Vec<Key> = affected
            .into_iter()
            .filter(|k| !users.contains_key(k) && !mirror.groups.contains_key(k))
            .collect();
        if !affected.is_empty() {
            let again = reread(
                session,
                cfg,
                &cfg.ldap.user_base,
                &cfg.ldap.user_filter,
                &user_attrs,
                &affected,
                &mut stats,
            )
            .await?;
            refresh(&mut next.users, &affected, &keyed(mapper, again));
        }
    }
    Ok((next, stats))
}
