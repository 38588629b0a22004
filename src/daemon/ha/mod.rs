//! `[ha]`: which of several gateways pushes. One task per gateway reads the lease entry every
//! `ha.renew` (`source/lease.rs`); the holder renews it, a standby takes it over once its value
//! has not changed for `ha.lease_ttl` by this gateway's own monotonic clock (never by comparing
//! clocks across hosts). The holder may send until `ha.lease_ttl - ha.margin` after the start
//! of its last successful renewal ([`Fence`]): it stops before any standby can take over.

mod fence;
mod holder;
mod keeper;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Board;
use crate::config::{HaConfig, LdapConfig};
pub(crate) use fence::Fence;
pub(crate) use holder::{read_holder, HolderView};
use keeper::Keeper;

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
            attempted: None,
            impostor: None,
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

async fn sleep_until_some(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
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
