//! `[ha]`: which of several gateways pushes. One task per gateway reads the lease entry every
//! `ha.renew` (`source/lease.rs`); the holder renews it, a standby takes it over once its value
//! has not changed for `ha.lease_ttl` by this gateway's own monotonic clock (never by comparing
//! clocks across hosts). The holder may send until `ha.lease_ttl - ha.margin` after the start
//! of its last successful renewal ([`Fence`]): it stops before any standby can take over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Board;
use crate::config::{HaConfig, LdapConfig};
use crate::source::ldap::Session;
use crate::source::lease::{self, LeaseValue, Observed, Swap};
use crate::source::SourceError;

/// Until when this gateway may send to the target. Read before every write
/// (`daemon/fenced.rs`); a time, not a flag, so that a gateway frozen past it (a stopped VM)
/// finds it closed the moment it runs again, before its lease task has run.
pub(crate) struct Fence {
    base: Instant,
    /// Nanoseconds after `base`; 0: closed; `u64::MAX`: always open (no `[ha]`).
    until: AtomicU64,
}

impl Fence {
    fn new(until: u64) -> Arc<Fence> {
        Arc::new(Fence {
            base: Instant::now(),
            until: AtomicU64::new(until),
        })
    }

    /// A fence open for `d` from now (tests).
    #[cfg(test)]
    pub(crate) fn open_for(d: Duration) -> Arc<Fence> {
        let f = Fence::new(0);
        f.open_until(Instant::now() + d);
        f
    }

    pub(crate) fn open(&self) -> bool {
        match self.until.load(Ordering::SeqCst) {
            u64::MAX => true,
            0 => false,
            until => (self.base.elapsed().as_nanos() as u64) < until,
        }
    }

    /// When it closes by itself (`None`: never, or already closed).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.until.load(Ordering::SeqCst) {
            u64::MAX | 0 => None,
            until => Some(self.base + Duration::from_nanos(until)),
        }
    }

    fn open_until(&self, t: Instant) {
        let nanos = t.saturating_duration_since(self.base).as_nanos() as u64;
        self.until
            .store(nanos.clamp(1, u64::MAX - 1), Ordering::SeqCst);
    }

    fn close(&self) {
        self.until.store(0, Ordering::SeqCst);
    }
}

/// What this gateway knows of the lease, for the loops and the status board.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Role {
    /// This gateway holds the lease and may push.
    pub active: bool,
    /// The generation of the holding (this gateway's when active, else the last seen).
    pub generation: u64,
    /// Who holds it, as last read (`None`: free, or not readable).
    pub holder: Option<String>,
    /// Why the lease could not be read or written, when it could not.
    pub problem: Option<String>,
    /// How many times this process took the lease: each take is reconciled before a pass
    /// (counted here, not by the lease's generation, which a hand-edited lease can send back).
    pub took: u64,
    /// Not this gateway's, and unchanged for longer than the ttl: nobody renews it, and this
    /// gateway does not take it (standby only, or its take-over writes fail).
    pub expired: bool,
}

/// The service's side of the lease: its role, the fence, and the release on stop.
pub(crate) struct Ha {
    rx: watch::Receiver<Role>,
    fence: Arc<Fence>,
    release: Option<oneshot::Sender<oneshot::Sender<()>>>,
    enabled: bool,
    /// The take the loops last reconciled with the target for (see [`Role::took`]).
    reconciled: u64,
}

impl Ha {
    /// Without `[ha]`: always active, nothing to reconcile.
    pub(crate) fn off() -> Ha {
        let (_tx, rx) = watch::channel(Role {
            active: true,
            ..Role::default()
        });
        Ha {
            rx,
            fence: Fence::new(u64::MAX),
            release: None,
            enabled: false,
            reconciled: 0,
        }
    }

    /// Starts the lease task.
    pub(crate) fn start(
        ldap: &LdapConfig,
        ha: &HaConfig,
        board: Option<Arc<Board>>,
        standby_only: bool,
    ) -> Ha {
        let (tx, rx) = watch::channel(Role::default());
        let fence = Fence::new(0);
        let (release_tx, release_rx) = oneshot::channel();
        // The lease's connection waits for a server no longer than a step may take (a first
        // server of ldap.url that takes connections and never answers costs that, then the
        // next is tried).
        let step = (ha.lease_ttl - ha.margin) / 2;
        let ldap = LdapConfig {
            timeout: ldap.timeout.min(step.max(Duration::from_secs(1))),
            ..ldap.clone()
        };
        let keeper = Keeper {
            ldap,
            ha: ha.clone(),
            board,
            tx,
            fence: fence.clone(),
            standby_only,
            session: None,
            seen: None,
            mine: None,
            took: 0,
        };
        tokio::spawn(keeper.run(release_rx));
        Ha {
            rx,
            fence,
            release: Some(release_tx),
            enabled: true,
            reconciled: 0,
        }
    }

    pub(crate) fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// This gateway may push now.
    pub(crate) fn active(&self) -> bool {
        self.rx.borrow().active && self.fence.open()
    }

    /// Resolves when the role may have changed (never without `[ha]`).
    pub(crate) async fn changed(&mut self) {
        if !self.enabled {
            return std::future::pending().await;
        }
        // The fence closing by itself is a change too (a past deadline is not waited on).
        let deadline = self.fence.deadline().filter(|d| *d > Instant::now());
        tokio::select! {
            r = self.rx.changed() => {
                if r.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ = sleep_until_some(deadline) => {}
        }
    }

    /// Resolves once this gateway may push (at once without `[ha]`).
    pub(crate) async fn until_active(&mut self) {
        while !self.active() {
            self.changed().await;
        }
    }

    /// Who holds the lease as last read, and why it could not be read or written, if so.
    pub(crate) fn seen(&self) -> (Option<String>, Option<String>) {
        let r = self.rx.borrow();
        (r.holder.clone(), r.problem.clone())
    }

    /// Resolves once this gateway may no longer push (never without `[ha]`): what a pass in
    /// progress is raced against.
    pub(crate) async fn lost(&mut self) {
        while self.active() {
            self.changed().await;
        }
    }

    /// The generation to reconcile with the target before the next pass, when this gateway
    /// took the lease over since it last did (a resync: the gateway before it may have left
    /// changes half-sent).
    pub(crate) fn to_reconcile(&self) -> Option<u64> {
        let role = self.rx.borrow();
        (self.enabled && role.active && role.took != self.reconciled).then_some(role.took)
    }

    /// The take `to_reconcile` named was reconciled.
    pub(crate) fn reconciled(&mut self, took: u64) {
        self.reconciled = took;
    }

    /// On stop: hands the lease over at once (a standby takes a free lease on its next read)
    /// rather than leaving it to expire. Bounded: a directory that does not answer leaves it
    /// to expire.
    pub(crate) async fn release(mut self) {
        let Some(tx) = self.release.take() else {
            return;
        };
        self.fence.close();
        let (done_tx, done_rx) = oneshot::channel();
        if tx.send(done_tx).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
        }
    }
}

/// The lease as `dirbridge status` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HolderView {
    pub instance: String,
    pub holder: Option<String>,
    pub generation: Option<u64>,
    pub problem: Option<String>,
    pub text: String,
}

/// Reads the lease once (bounded by `ldap.timeout_secs`), for `dirbridge status`.
pub(crate) async fn read_holder(ldap: &LdapConfig, ha: &HaConfig) -> HolderView {
    let read = async {
        let mut s = Session::open(ldap).await?;
        let o = lease::read(&mut s, &ha.lease_dn).await;
        s.close().await;
        o
    };
    let read = tokio::time::timeout(ldap.timeout, read).await;
    let me = &ha.instance;
    let (holder, generation, problem, text) = match read {
        Ok(Ok(Some(o))) => match o.lease() {
            Some(l) => {
                let text = match &l.holder {
                    Some(h) => format!(
                        "HA: {h} holds the HA lease (generation {}){}",
                        l.generation,
                        if h == me {
                            "; that is this gateway"
                        } else {
                            ""
                        }
                    ),
                    None => format!("HA: the lease is free (generation {})", l.generation),
                };
                (l.holder, Some(l.generation), None, text)
            }
            None => {
                let why = format!("the lease entry {} holds no lease value", ha.lease_dn);
                (None, None, Some(why.clone()), format!("HA: {why}"))
            }
        },
        Ok(Ok(None)) => {
            let why = format!(
                "the lease entry {} does not exist yet (the first gateway to run creates it)",
                ha.lease_dn
            );
            (None, None, Some(why.clone()), format!("HA: {why}"))
        }
        Ok(Err(e)) => (
            None,
            None,
            Some(e.to_string()),
            format!("HA: cannot read the lease: {e}"),
        ),
        Err(_) => {
            let why = "the directory did not answer in time".to_string();
            (
                None,
                None,
                Some(why.clone()),
                format!("HA: cannot read the lease: {why}"),
            )
        }
    };
    HolderView {
        instance: me.clone(),
        holder,
        generation,
        problem,
        text,
    }
}

async fn sleep_until_some(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The lease task's state.
struct Keeper {
    ldap: LdapConfig,
    ha: HaConfig,
    /// The service's status board (none for a one-shot command).
    board: Option<Arc<Board>>,
    tx: watch::Sender<Role>,
    fence: Arc<Fence>,
    standby_only: bool,
    session: Option<Session>,
    /// The lease's values as last read, and when this gateway first saw them so.
    seen: Option<(Observed, Instant)>,
    /// What this gateway last wrote, while it holds the lease.
    mine: Option<LeaseValue>,
    /// How many times it took the lease.
    took: u64,
}

impl Keeper {
    async fn run(mut self, mut release: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut tick = tokio::time::interval(self.ha.renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One step may take this long (a read and a write): past it the connection is taken
        // for dead and opened again on the next tick.
        let step_limit = (self.ha.lease_ttl - self.ha.margin) / 2;
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
                        tracing::warn!(error = %e, holding = self.fence.open(), "HA: the lease could not be read or renewed");
                        self.publish(Some(e.to_string()));
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
                tracing::warn!(error = %why, holding = self.fence.open(), "HA: the lease could not be read or renewed");
            }
            self.publish(problem);
        }
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
        if self.seen.as_ref().is_none_or(|(o, _)| *o != observed) {
            self.seen = Some((observed.clone(), now));
        }
        let lease = observed.lease();
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
        let session = self.session().await?;
        match lease::swap(session, &dn, observed, &next).await? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_by_itself_at_its_deadline_and_off_never_does() {
        let fence = Fence::new(0);
        assert!(!fence.open());
        fence.open_until(Instant::now() + Duration::from_secs(2));
        assert!(fence.open());
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(fence.open());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!fence.open(), "past its deadline");
        fence.open_until(Instant::now() + Duration::from_secs(1));
        fence.close();
        assert!(!fence.open());
        let off = Ha::off();
        assert!(off.active() && off.to_reconcile().is_none());
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(off.fence().open());
    }
}
