//! One read of the directory into the desired state: users, then groups, then the groups that
//! users' `memberOf` names but the group search did not return. Multi-valued attributes the
//! server sends in ranges (AD range retrieval) are completed before an entry is mapped.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use super::EngineError;
use crate::config::{Config, LdapConfig, Membership, ReferencedGroups};
use crate::mapping::desired::Previous;
use crate::mapping::{DesiredBuilder, Mapper};
use crate::model::{DesiredState, Key};
use crate::source::entry::RawEntry;
use crate::source::ldap::{ReadBudget, Session};
use crate::source::{range, SourceError};
use crate::state::records::Snapshot;
use crate::state::{StateError, Store};

/// Figures of one read, for logs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadStats {
    /// `full`, `unchanged` (the watermark had not moved) or `delta` (only changes were read).
    pub mode: &'static str,
    /// Objects the directory reported as changed since the watermark (delta reads).
    pub changed: u64,
    pub user_entries: u64,
    pub group_entries: u64,
    pub referenced_groups: u64,
    pub references_skipped: u64,
    pub range_reads: u64,
}

/// Reads users and groups. `known_users` are the keys already pushed (used to settle duplicate
/// userNames in favour of the one already on the target).
pub(crate) async fn read_desired(
    cfg: &Config,
    known_users: &BTreeSet<Key>,
) -> Result<(DesiredState, ReadStats), SourceError> {
    let (builder, stats) = read_directory(cfg, None).await?;
    Ok((builder.finish(known_users), stats))
}

/// [`read_desired`] up to what needs the records' keys: every entry read and mapped (users
/// shared with what was pushed as far as `previous` knows it).
pub(crate) async fn read_directory(
    cfg: &Config,
    previous: Option<Previous>,
) -> Result<(DesiredBuilder, ReadStats), SourceError> {
    let mut session = Session::open(&cfg.ldap).await?;
    let result = match check_mapping(&mut session, cfg).await {
        Ok(()) => read_with(&mut session, cfg, previous).await,
        Err(e) => Err(e),
    };
    session.close().await;
    result
}

/// The directory read into the desired state, and every record: the records are read on a
/// thread of their own while the directory is read and its entries resolved (decoding 100k
/// records takes a third of a second; the directory read waits on the server, and at the end
/// only the longer of resolving and decoding is waited for). The few keys `finish` asks
/// about (users sharing a userName, held managers) are looked up one by one.
pub(super) async fn with_records(
    cfg: &Config,
    store: &Store,
) -> Result<(DesiredState, ReadStats, Snapshot), EngineError> {
    let reader = store.records_reader();
    // The records once read, for the mapping to share users with (`DesiredBuilder::share_with`)
    // and for the plan.
    let records: Arc<OnceLock<Snapshot>> = Arc::default();
    let slot = Arc::clone(&records);
    // No thread to be had: the records are read after the directory, as they once were.
    let records_read = RecordsThread(
        std::thread::Builder::new()
            .name("dirbridge-records".into())
            .spawn(move || reader.read().map(|read| drop(slot.set(read))))
            .ok(),
    );
    let seen = Arc::clone(&records);
    let previous: Previous = Box::new(move |key| {
        let pushed = seen.get()?.users.get_key_value(key);
        Some(pushed.map(|(k, r)| (k.clone(), Arc::clone(&r.pushed))))
    });
    let (builder, stats) = read_directory(cfg, Some(previous)).await?;
    let failed = std::cell::Cell::new(None);
    let known = |k: &str| {
        store.has_user(k).unwrap_or_else(|e| {
            // The first error is the one reported.
            let first = failed.take().unwrap_or(e);
            failed.set(Some(first));
            false
        })
    };
    // `finish` drops the mapping's handle on the records.
    let desired = builder.finish_with(&known);
    let read = match records_read.take() {
        Some(h) => h
            .join()
            .map_err(|p| EngineError::Defect(super::panic_text(p.as_ref()))),
        None => Ok(Ok(())),
    };
    if let Some(e) = failed.take() {
        return Err(e.into());
    }
    read??;
    let read = match Arc::try_unwrap(records) {
        Ok(slot) => slot.into_inner(),
        Err(shared) => shared.get().cloned(),
    };
    let read = match read {
        Some(r) => r,
        None => store.snapshot()?,
    };
    Ok((desired, stats, read))
}

/// The thread reading the records. Dropped unjoined (a pass that failed or was stopped), it
/// waits for the thread: the thread's read of the store is over before the pass is (no
/// thread of a finished pass is left decoding while the process exits).
struct RecordsThread(Option<std::thread::JoinHandle<Result<(), StateError>>>);

impl RecordsThread {
    fn take(mut self) -> Option<std::thread::JoinHandle<Result<(), StateError>>> {
        self.0.take()
    }
}

impl Drop for RecordsThread {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// Every attribute the configuration names in `[mapping]` must exist in the directory's schema
/// (where the bind DN may read it): a typo is an error naming the file, line and column, not a
/// field that stays empty on every user.
pub(crate) async fn check_mapping(session: &mut Session, cfg: &Config) -> Result<(), SourceError> {
    // Once per process: the configuration does not change while it runs, and the schema is
    // large on AD (a poll every few seconds need not read it each time).
    static CHECKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if cfg.mapping.written.is_empty() || CHECKED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let Some(names) = session.attribute_names().await? else {
        tracing::debug!("the directory's schema is not readable: mapped attributes not checked");
        return Ok(());
    };
    for (key, attribute) in &cfg.mapping.written {
        if !names.contains(&attribute.to_lowercase()) {
            return Err(SourceError::UnknownAttribute {
                location: cfg.locate(key, attribute),
                key: key.clone(),
                attribute: attribute.clone(),
            });
        }
    }
    CHECKED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Where a full read's entries are mapped.
enum Mapping {
    Thread(std::thread::JoinHandle<DesiredBuilder>),
    Inline(Box<DesiredBuilder>),
}

/// Entries whose ranged attributes still have values to fetch.
type Incomplete = Vec<(RawEntry, Vec<(String, u32)>)>;

/// Runs one paged search and hands every entry to `add`, whole: an entry whose ranged
/// attributes are not complete is kept until the search is over (a session runs one operation
/// at a time), completed, then handed over. Returns the number of entries.
pub(super) async fn search(
    session: &mut Session,
    base: &str,
    filter: &str,
    attrs: &[String],
    step: Option<u32>,
    stats: &mut ReadStats,
    mut add: impl FnMut(RawEntry),
) -> Result<u64, SourceError> {
    let mut incomplete = Vec::new();
    let mut budget = session.read_budget();
    let s = session
        .search_paged(base, filter, attrs, |mut e| {
            super::progress::entry_read();
            let pending = range::fold(&mut e);
            if pending.is_empty() {
                add(e);
            } else {
                incomplete.push((e, pending));
            }
        })
        .await?;
    stats.references_skipped += s.references;
    budget.spend(s.bytes);
    for e in complete(session, incomplete, step, stats, &mut budget).await? {
        add(e);
    }
    Ok(s.entries)
}

async fn complete(
    session: &mut Session,
    incomplete: Incomplete,
    step: Option<u32>,
    stats: &mut ReadStats,
    budget: &mut ReadBudget,
) -> Result<Vec<RawEntry>, SourceError> {
    let mut out = Vec::with_capacity(incomplete.len());
    for (mut e, pending) in incomplete {
        for (attr, next) in pending {
            let rest = session
                .read_ranges(&e.dn, &attr, next, step, budget)
                .await?;
            stats.range_reads += 1;
            e.attrs.extend(&attr, rest);
        }
        out.push(e);
    }
    Ok(out)
}

/// Adds `name` to an attribute list unless it is there already (names are case-insensitive).
pub(super) fn with_attribute(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        list.push(name.to_string());
    }
}

/// The attribute list with every multi-valued membership attribute asked for as a first range,
/// when a range step is configured.
pub(super) fn ranged(attrs: Vec<String>, cfg: &Config) -> Vec<String> {
    let Some(step) = cfg.ldap.range_step else {
        return attrs;
    };
    let multi = [
        &cfg.mapping.member_attribute,
        &cfg.mapping.member_of_attribute,
    ];
    attrs
        .into_iter()
        .map(|a| {
            if multi.iter().any(|m| m.eq_ignore_ascii_case(&a)) {
                range::request(&a, 0, Some(step))
            } else {
                a
            }
        })
        .collect()
}

/// 389-DS's memberOf includes the groups a user is in through nested groups: with the default
/// `membership = "memberOf"`, nested members would be pushed as direct ones (and `run`, which
/// reads `member`, would disagree with `sync`). Unless `ldap.membership` is set, memberships come
/// from the groups' `member` values there.
pub(crate) async fn membership_for_server<'c>(
    session: &mut Session,
    l: &'c LdapConfig,
) -> Result<std::borrow::Cow<'c, LdapConfig>, SourceError> {
    use std::sync::atomic::{AtomicU8, Ordering};
    // Asked once per process (the configured server does not change while it runs): 0 not yet
    // known, 1 another server, 2 389-DS. A failed read is not remembered.
    static SERVER: AtomicU8 = AtomicU8::new(0);
    if l.membership_set || l.membership != Membership::MemberOf {
        return Ok(std::borrow::Cow::Borrowed(l));
    }
    let is_389 = match SERVER.load(Ordering::Relaxed) {
        0 => {
            let yes = session.is_389ds().await?;
            SERVER.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            if yes {
                tracing::info!(
                    "389 Directory Server: its memberOf includes nested groups, so memberships are \
                     read from the groups' member values (set ldap.membership to choose)"
                );
            }
            yes
        }
        known => known == 2,
    };
    if !is_389 {
        return Ok(std::borrow::Cow::Borrowed(l));
    }
    let mut ldap = l.clone();
    ldap.membership = Membership::Member;
    Ok(std::borrow::Cow::Owned(ldap))
}

async fn read_with(
    session: &mut Session,
    cfg: &Config,
    previous: Option<Previous>,
) -> Result<(DesiredBuilder, ReadStats), SourceError> {
    let ldap = membership_for_server(session, &cfg.ldap).await?;
    let mapper = Mapper::new(&cfg.mapping, &ldap);
    let user_attrs = ranged(mapper.user_attributes(), cfg);
    let group_attrs = ranged(mapper.group_attributes(), cfg);
    let step = cfg.ldap.range_step;
    let mut stats = ReadStats {
        mode: "full",
        ..Default::default()
    };

    // Entries are mapped on a thread of their own as they arrive: a paged search asks for its
    // next page once the last one is consumed, and mapping each entry in turn kept the
    // directory waiting at every page (at 100k users the read took 1.3 s where the directory
    // needs 0.9). In order, users then groups, as mapped inline before (and inline still if
    // no thread can be started). Handed over in batches: one wake-up of the thread per entry
    // cost as much as mapping it.
    const BATCH: usize = 64;
    let (to_map, arrived) = std::sync::mpsc::sync_channel::<Vec<(bool, RawEntry)>>(16);
    let thread_mapper = mapper.clone();
    let mapping = std::thread::Builder::new()
        .name("dirbridge-map".into())
        .spawn(move || {
            let mut builder = DesiredBuilder::new(thread_mapper);
            // (Mapped inline when no thread can be started: then unshared, as before.)
            if let Some(previous) = previous {
                builder.share_with(previous);
            }
            for (user, e) in arrived.into_iter().flatten() {
                if user {
                    builder.add_user(&e);
                } else {
                    builder.add_group(&e);
                }
            }
            builder
        });
    let mut mapping = match mapping {
        Ok(thread) => Mapping::Thread(thread),
        Err(e) => {
            tracing::warn!(error = %e, "no thread to map entries on: mapped as they are read");
            Mapping::Inline(Box::new(DesiredBuilder::new(mapper)))
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut add = |user: bool, e: RawEntry| match &mut mapping {
        Mapping::Inline(b) if user => b.add_user(&e),
        Mapping::Inline(b) => b.add_group(&e),
        // The thread only stops early by panicking: the panic is raised below.
        Mapping::Thread(_) => {
            batch.push((user, e));
            if batch.len() == BATCH {
                let _ = to_map.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
            }
        }
    };
    let searched = async {
        stats.user_entries = search(
            session,
            &cfg.ldap.user_base,
            &cfg.ldap.user_filter,
            &user_attrs,
            step,
            &mut stats,
            |e| add(true, e),
        )
        .await?;
        stats.group_entries = search(
            session,
            &cfg.ldap.group_base,
            &cfg.ldap.group_filter,
            &group_attrs,
            step,
            &mut stats,
            |e| add(false, e),
        )
        .await?;
        Ok::<(), SourceError>(())
    }
    .await;
    if !batch.is_empty() {
        let _ = to_map.send(batch);
    }
    drop(to_map);
    // Joined whatever the searches' outcome: a panic while mapping (a defect) is raised as it
    // was when mapping was inline, not hidden behind a later search error.
    let mut builder = match mapping {
        Mapping::Inline(b) => *b,
        Mapping::Thread(thread) => match thread.join() {
            Ok(b) => b,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    };
    searched?;

    if ldap.membership == Membership::MemberOf
        && cfg.ldap.referenced_groups == ReferencedGroups::Create
    {
        // The groups the users name that the group search did not return, read one by one
        // within one budget: as many as a server names cannot make the read endless.
        let mut budget = session.read_budget();
        for dn in builder.unknown_group_dns() {
            budget
                .check("the reads of the groups named in memberOf")
                .map_err(|reason| SourceError::Search {
                    base: dn.clone(),
                    filter: "(objectClass=*)".into(),
                    reason,
                })?;
            if let Some(mut entry) = session.read_entry(&dn, &group_attrs).await? {
                budget.spend(entry.size() as u64);
                let pending = range::fold(&mut entry);
                for e in complete(
                    session,
                    vec![(entry, pending)],
                    step,
                    &mut stats,
                    &mut budget,
                )
                .await?
                {
                    builder.add_group(&e);
                    stats.referenced_groups += 1;
                }
            }
        }
    }
    Ok((builder, stats))
}
