//! The lease task: one read of the lease every `ha.renew`, and the write it calls for.

use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{Fence, Role};
use crate::config::{HaConfig, LdapConfig};
use crate::daemon::Board;
use crate::source::ldap::Session;
use crate::source::lease::{self, LeaseValue, Observed, Swap};
use crate::source::SourceError;

/// The lease task's state.
pub(super) struct Keeper {
    pub(super) ldap: LdapConfig,
    pub(super) ha: HaConfig,
    /// The service's status board (none for a one-shot command).
    pub(super) board: Option<Arc<Board>>,
    pub(super) tx: watch::Sender<Role>,
    pub(super) fence: Arc<Fence>,
    pub(super) standby_only: bool,
    pub(super) session: Option<Session>,
    /// The lease's values as last read, and when this gateway first saw them so.
    pub(super) seen: Option<(Observed, Instant)>,
    /// What this gateway last wrote, while it holds the lease.
    pub(super) mine: Option<LeaseValue>,
    /// How many times it took the lease.
    pub(super) took: u64,
    /// A write whose answer has not come (a step that ran out of time), with when it was sent
    /// and whether it was a take: if the next read finds its value, the server carried it out.
    pub(super) attempted: Option<(LeaseValue, Instant, bool)>,
    /// Another gateway renews the lease under this gateway's id (shown as the problem).
    pub(super) impostor: Option<String>,
}

impl Keeper {
    pub(super) async fn run(mut self, mut release: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut tick = tokio::time::interval(self.ha.renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One step may take this long (a read and a write, each within the lease connection's
        // timeout): past it the connection is taken for dead and opened again on the next
        // tick. A write it cut short is recognised by the next read (`attempted`).
        let step_limit = self.ha.lease_ttl - self.ha.margin;
        // The same warning again only every few minutes (a lease the bind DN may not write
        // would log at every renewal).
        let mut warned: Option<(String, Instant)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                reply = &mut release => {
                    self.fence.close();
                    if self.mine.is_some() {
                        match tokio::time::timeout(step_limit, self.release()).await {
                            Ok(Ok(())) => tracing::info!(instance = %self.ha.instance, "HA: lease released; a standby takes over at once"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "HA: could not release the lease; it expires after ha.lease_ttl"),
                            Err(_) => tracing::warn!("HA: the directory did not answer the lease's release; it expires after ha.lease_ttl"),
                        }
                    }
                    if let Some(s) = self.session.take() {
                        s.close().await;
                    }
                    if let Ok(reply) = reply {
                        let _ = reply.send(());
                    }
                    return;
                }
            }
            // A defect in a step is that step's failure, not the end of the task: the fence
            // closes by itself if it keeps failing, and the status says why.
            // A connection first (each server of ldap.url bounded by the step's time), then the
            // step within its time.
            if self.session.is_none() {
                match Session::open(&self.ldap).await {
                    Ok(s) => self.session = Some(s),
                    Err(e) => {
                        let why = e.to_string();
                        self.warn(&mut warned, &why);
                        self.publish(Some(why));
                        continue;
                    }
                }
            }
            let step = std::panic::AssertUnwindSafe(self.step()).catch_unwind();
            let problem = match tokio::time::timeout(step_limit, step).await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(e))) => Some(e.to_string()),
                Ok(Err(panic)) => Some(format!(
                    "internal error in the lease task: {}",
                    crate::engine::panic_text(panic.as_ref())
                )),
                Err(_) => Some(format!(
                    "the directory did not answer a read and write of the lease within {}",
                    humantime::format_duration(step_limit)
                )),
            };
            if let Some(why) = &problem {
                // A new connection next time (perhaps to the next server of ldap.url).
                self.session = None;
                self.warn(&mut warned, why);
            } else {
                warned = None;
            }
            let problem = problem.or_else(|| self.impostor.clone());
            self.publish(problem);
        }
    }

    /// Logs a failure of the lease's read or write, unless the same was logged lately.
    fn warn(&self, warned: &mut Option<(String, Instant)>, why: &str) {
        const AGAIN: std::time::Duration = std::time::Duration::from_secs(300);
        if warned
            .as_ref()
            .is_some_and(|(w, at)| w == why && at.elapsed() < AGAIN)
        {
            return;
        }
        tracing::warn!(error = %why, holding = self.fence.open(), "HA: the lease could not be read or renewed (logged again in 5 minutes if it goes on)");
        *warned = Some((why.to_string(), Instant::now()));
    }

    fn publish(&mut self, problem: Option<String>) {
        let lease = self.seen.as_ref().and_then(|(o, _)| o.lease());
        let active = self.mine.is_some() && self.fence.open();
        let expired = self.mine.is_none()
            && self.seen.as_ref().is_some_and(|(o, since)| {
                !o.values.is_empty()
                    && o.lease().is_none_or(|l| l.holder.is_some())
                    && since.elapsed() > self.ha.lease_ttl + self.ha.renew
            });
        let role = Role {
            active,
            generation: match &self.mine {
                Some(m) => m.generation,
                None => lease.as_ref().map_or(0, |l| l.generation),
            },
            holder: lease.and_then(|l| l.holder),
            problem,
            took: self.took,
            expired,
        };
        if let Some(board) = &self.board {
            board.set_role(&self.ha.instance, &role);
        }
        self.tx.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }

    async fn session(&mut self) -> Result<&mut Session, SourceError> {
        if self.session.is_none() {
            self.session = Some(Session::open(&self.ldap).await?);
        }
        match self.session.as_mut() {
            Some(s) => Ok(s),
            None => Err(SourceError::Connect {
                url: self.ldap.url.clone(),
                reason: "no session".into(),
            }),
        }
    }

    /// One read of the lease, and the write it calls for.
    async fn step(&mut self) -> Result<(), SourceError> {
        let dn = self.ha.lease_dn.clone();
        let profile = self.ldap.profile;
        let session = self.session().await?;
        let observed = match lease::read(session, &dn).await? {
            Some(o) => o,
            None => {
                if lease::create(session, &dn, profile).await? {
                    tracing::info!(dn = %dn, "HA: created the lease entry");
                }
                match lease::read(session, &dn).await? {
                    Some(o) => o,
                    None => {
                        return Err(SourceError::Write {
                            dn,
                            reason: "the lease entry was created but cannot be read back".into(),
                        })
                    }
                }
            }
        };
        let now = Instant::now();
        let previous = self.seen.as_ref().map(|(o, _)| o.lease());
        let changed = self.seen.as_ref().is_none_or(|(o, _)| *o != observed);
        if changed {
            self.seen = Some((observed.clone(), now));
        }
        let lease = observed.lease();
        // A write of this gateway's whose answer never came, carried out by the server: its
        // own, with the validity it would have had.
        if let Some((value, sent, take)) = self.attempted.take() {
            if lease.as_ref() == Some(&value) {
                self.fence
                    .open_until(sent + self.ha.lease_ttl - self.ha.margin);
                if take {
                    self.took += 1;
                    tracing::info!(instance = %self.ha.instance, generation = value.generation, "HA: took the lease (the directory's answer came late): this gateway pushes");
                }
                self.mine = Some(value);
            }
        }
        // Someone else renews under this gateway's id: two gateways share it.
        let me = Some(self.ha.instance.as_str());
        self.impostor = (self.mine.is_none()
            && changed
            && lease.as_ref().and_then(|l| l.holder.as_deref()) == me
            && previous
                .flatten()
                .is_some_and(|p| p.holder.as_deref() == me))
        .then(|| {
            format!(
                "another gateway renews the lease under this gateway's id ({}): give each gateway its own ha.instance_id",
                self.ha.instance
            )
        })
        .or_else(|| self.impostor.take().filter(|_| !changed));
        if let Some(mine) = &self.mine {
            if lease.as_ref() != Some(mine) {
                tracing::warn!(holder = ?lease.as_ref().and_then(|l| l.holder.clone()), "HA: the lease was taken by another gateway: this one stops pushing");
                self.mine = None;
                self.fence.close();
            }
        }
        if self.mine.is_some() {
            if self.standby_only {
                return self.release().await;
            }
            return self.write(&observed, Write::Renew).await;
        }
        if self.standby_only {
            return Ok(());
        }
        if observed.values.is_empty() {
            // Emptied by hand: made free first, with a value every gateway writes alike (two
            // adds of the same value: the second is refused), then taken by a swap like any.
            let free = LeaseValue {
                holder: None,
                generation: 0,
                beat: 0,
            };
            let session = self.session().await?;
            lease::swap(session, &dn, &observed, &free).await?;
            return Ok(());
        }
        // A value a holder released (generation 1 or more) is taken at once; anything else,
        // the value a new or emptied entry gets included (generation 0: whoever held the
        // entry before it was deleted or emptied may still be renewing), once unchanged for
        // the ttl.
        let free = lease
            .as_ref()
            .is_some_and(|l| l.holder.is_none() && l.generation > 0);
        let expired = self
            .seen
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= self.ha.lease_ttl);
        if free || expired {
            let from = lease.and_then(|l| l.holder);
            self.write(&observed, Write::Take { from }).await?;
        }
        Ok(())
    }

    async fn write(&mut self, observed: &Observed, what: Write) -> Result<(), SourceError> {
        let next = match (&what, &self.mine) {
            (Write::Renew, Some(m)) => LeaseValue {
                beat: m.beat.saturating_add(1),
                ..m.clone()
            },
            _ => LeaseValue {
                holder: Some(self.ha.instance.clone()),
                generation: observed.generation().saturating_add(1),
                beat: 0,
            },
        };
        // The validity counts from before the write: the server may apply it at any moment
        // after, and a standby's clock starts only once it has read the new value.
        let sent = Instant::now();
        let dn = self.ha.lease_dn.clone();
        let take = matches!(what, Write::Take { .. });
        self.attempted = Some((next.clone(), sent, take));
        let session = self.session().await?;
        let swapped = lease::swap(session, &dn, observed, &next).await;
        // Kept when no answer came (the connection broke, or the step ran out of time): the
        // next read tells whether the server carried it out.
        if swapped.is_ok() {
            self.attempted = None;
        }
        match swapped? {
            Swap::Done => {
                self.fence
                    .open_until(sent + self.ha.lease_ttl - self.ha.margin);
                if let Write::Take { from } = what {
                    self.took += 1;
                    tracing::info!(instance = %self.ha.instance, generation = next.generation, previous = ?from, "HA: took the lease: this gateway pushes");
                }
                self.seen = Some((
                    Observed {
                        values: vec![next.text()],
                    },
                    Instant::now(),
                ));
                self.mine = Some(next);
            }
            Swap::Lost => {
                if self.mine.take().is_some() {
                    tracing::warn!(
                        "HA: the lease changed under this gateway's renewal: it stops pushing"
                    );
                }
                self.fence.close();
            }
        }
        Ok(())
    }

    /// Writes the lease free (this gateway's holding only: a swap from its own value).
    async fn release(&mut self) -> Result<(), SourceError> {
        self.fence.close();
        let Some(mine) = self.mine.take() else {
            return Ok(());
        };
        let free = LeaseValue {
            holder: None,
            generation: mine.generation,
            beat: mine.beat.saturating_add(1),
        };
        let from = Observed {
            values: vec![mine.text()],
        };
        let dn = self.ha.lease_dn.clone();
        let session = self.session().await?;
        lease::swap(session, &dn, &from, &free).await?;
        Ok(())
    }
}

enum Write {
    Renew,
    Take { from: Option<String> },
}
