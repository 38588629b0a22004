//! Finding objects on a REST target without trusting it: look-up events and listings kept
//! for a while as an index, one exact match or none, a "not found" checked against a fresh
//! listing, a listing that cannot be read taken for a configuration error.

use std::time::Instant;

use serde_json::Value;

use super::template::Vars;
use super::{answer, RestClient, FRESH, INDEX_AGE};
use crate::config::rest::Event;
use crate::target::{RemoteGroup, RemoteUser, Target, TargetError, TargetErrorKind};

impl RestClient {
    /// The users as listed (one listing reused for a while): for look-ups where the API has
    /// no look-up event.
    pub(super) async fn user_index(&self) -> Result<Vec<RemoteUser>, TargetError> {
        indexed(&self.users, self.list_users()).await
    }

    pub(super) async fn group_index(&self) -> Result<Vec<RemoteGroup>, TargetError> {
        indexed(&self.groups, self.list_groups()).await
    }

    /// Whether a listing used as a look-up index was read more than a few seconds ago.
    pub(super) async fn index_is_old<T>(
        &self,
        slot: &tokio::sync::Mutex<Option<(Instant, Vec<T>)>>,
    ) -> bool {
        slot.lock()
            .await
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() > FRESH)
    }

    /// Before a run with many creates: the users (and groups) listed once, where the API can
    /// list them, so that creates of names the target does not hold go without a look-up
    /// (`target/taken.rs`). Without a look-up event every look-up reads the listing anyway; with
    /// one, the API does not say how many objects it holds, so only many creates list.
    pub(super) async fn list_for_creates(
        &self,
        users: usize,
        groups: usize,
    ) -> Result<(), TargetError> {
        use crate::target::taken::worth_listing;
        let worth =
            |creates: usize, find: Event| worth_listing(creates, (!self.has(find)).then_some(0), 1);
        if self.has(Event::ListUsers) && worth(users, Event::FindUser) {
            self.forget_index().await;
            let names: Vec<String> = self
                .user_index()
                .await?
                .into_iter()
                .map(|u| u.user.user_name.into_string())
                .collect();
            tracing::info!(listed = names.len(), creates = users, "listed the users once: creates of names the target does not hold go without a look-up");
            self.taken.with(|t| t.set_users(names));
        }
        if self.has(Event::ListGroups) && worth(groups, Event::FindGroup) {
            // Listed now, not taken from a listing an earlier pass kept.
            self.forget_index().await;
            let names: Vec<String> = self
                .group_index()
                .await?
                .into_iter()
                .map(|g| g.display_name)
                .collect();
            self.taken.with(|t| t.set_groups(names));
        }
        Ok(())
    }

    /// After a create failed or its answer was lost, the next look-up must see the target as
    /// it is now, not a listing from before.
    pub(super) async fn forget_index(&self) {
        *self.users.lock().await = None;
        *self.groups.lock().await = None;
    }

    /// What the look-up event answers for `vars`, read with `read` (nothing when the target
    /// says not found).
    pub(super) async fn looked_up<T>(
        &self,
        event: Event,
        vars: &Vars,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, TargetError> {
        let doc = match self.send(event, vars).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let ev = self.event(event)?;
        let items = answer::items(&doc, ev.data.as_deref()).map_err(|m| TargetError {
            request: format!("{} {}", ev.method, ev.path),
            kind: TargetErrorKind::BadResponse(m),
        })?;
        Ok(items.iter().filter_map(read).collect())
    }

    pub(super) async fn looked_up_users(
        &self,
        event: Event,
        vars: &Vars,
    ) -> Result<Vec<RemoteUser>, TargetError> {
        self.looked_up(event, vars, |i| {
            answer::user(i, &self.cfg.user_fields, &self.cfg.custom)
        })
        .await
    }

    pub(super) async fn looked_up_groups(
        &self,
        event: Event,
        vars: &Vars,
    ) -> Result<Vec<RemoteGroup>, TargetError> {
        self.looked_up(event, vars, |i| answer::group(i, &self.cfg.group_fields))
            .await
    }

    /// A "not found" answer about an object the gateway holds is believed only if the object
    /// is not listed either (a wrong path answers 404 too): otherwise it is an error of that
    /// object, and the record is kept.
    pub(super) async fn gone_checked(
        &self,
        r: Result<(), TargetError>,
        id: &str,
        group: bool,
    ) -> Result<(), TargetError> {
        let e = match r {
            Err(e) if e.is_not_found() => e,
            other => return other,
        };
        let listed = if group && self.has(Event::ListGroups) {
            self.forget_index().await;
            Some(self.group_index().await?.iter().any(|g| g.id == id))
        } else if !group && self.has(Event::ListUsers) {
            self.forget_index().await;
            Some(self.user_index().await?.iter().any(|u| u.id == id))
        } else {
            None
        };
        if listed == Some(true) {
            // Not "not found" (that would drop the record): an error of this object.
            return Err(TargetError {
                request: e.request.clone(),
                kind: TargetErrorKind::BadResponse(format!(
                    "HTTP {} (not found) about {} {id}, which the target still lists: check this event's path",
                    e.status().unwrap_or(404),
                    if group { "group" } else { "user" }
                )),
            });
        }
        Err(e)
    }

    /// A listing none of whose objects can be read (no id or name where the field paths say)
    /// is a configuration that does not fit the API: an error that stops the run, never an
    /// empty target (a resync would create everyone again). Objects that cannot be read among
    /// others that can are left out (they cannot be matched, so they are never touched).
    pub(super) fn decoded(
        &self,
        event: Event,
        listed: usize,
        read: usize,
        what: &str,
        name: &str,
    ) -> Result<(), TargetError> {
        if listed == 0 || read > 0 {
            if read < listed {
                tracing::debug!(
                    listed,
                    read,
                    "listed objects without an id or a name left out"
                );
            }
            return Ok(());
        }
        let paths = if what == "user" {
            &self.cfg.user_fields
        } else {
            &self.cfg.group_fields
        };
        let at = |f: &str| {
            paths
                .paths
                .get(f)
                .map(|p| format!("`{p}`"))
                .unwrap_or_else(|| "(no path)".into())
        };
        Err(TargetError {
            request: event.name().to_string(),
            kind: TargetErrorKind::Config(format!(
                "none of the {listed} {what}s listed has an id at {} and a {name} at {}: fix \
                 [target.fields.{what}] (or the event's data)",
                at("id"),
                at(name)
            )),
        })
    }

    /// The one object among `found` that `matches`; none; or an error when several do (none
    /// is adopted then).
    pub(super) fn only_one<T>(
        found: Vec<T>,
        what: &str,
        kind: &str,
        matches: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, TargetError> {
        let mut hits: Vec<T> = found.into_iter().filter(|x| matches(x)).collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(hits.pop()),
            n => Err(TargetError {
                request: format!("look-up of {what}"),
                kind: TargetErrorKind::BadResponse(format!(
                    "{n} {kind}s on the target match; none is adopted (remove the duplicates)"
                )),
            }),
        }
    }

    pub(super) fn only_match(
        found: Vec<RemoteUser>,
        what: &str,
        matches: impl Fn(&RemoteUser) -> bool,
    ) -> Result<Option<RemoteUser>, TargetError> {
        Self::only_one(found, what, "user", matches)
    }

    pub(super) fn only_group(
        found: Vec<RemoteGroup>,
        what: &str,
        matches: impl Fn(&RemoteGroup) -> bool,
    ) -> Result<Option<RemoteGroup>, TargetError> {
        Self::only_one(found, what, "group", matches)
    }
}

/// A listing kept in `slot` for [`INDEX_AGE`], read with `list` when it is missing or older.
async fn indexed<T: Clone>(
    slot: &tokio::sync::Mutex<Option<(Instant, Vec<T>)>>,
    list: impl std::future::Future<Output = Result<Vec<T>, TargetError>>,
) -> Result<Vec<T>, TargetError> {
    let mut held = slot.lock().await;
    if let Some((at, items)) = held.as_ref() {
        if at.elapsed() < INDEX_AGE {
            return Ok(items.clone());
        }
    }
    let items = list.await?;
    *held = Some((Instant::now(), items.clone()));
    Ok(items)
}
