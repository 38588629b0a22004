//! Keeps an Active Directory change-notification registration open and turns each notification
//! into a wake-up of the poll loop, which then runs an incremental uSNChanged read. Where the DC
//! does not allow notifications (or the connection keeps failing), `available` says so and the
//! loop polls on the short fallback interval instead.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff;
use crate::config::LdapConfig;
use crate::source::ldap::Session;
use crate::source::notify::Notifications;
use crate::source::SourceError;

/// A registration refused this soon is taken as "not allowed here" rather than a glitch.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);
/// How long to wait before asking again after a refusal.
const RETRY_REFUSED: Duration = Duration::from_secs(300);

pub(super) struct Notifier {
    pub changed: Arc<Notify>,
    pub available: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn register(cfg: &LdapConfig) -> Result<(Session, Notifications), SourceError> {
    let mut session = Session::open(cfg).await?;
    // The domain's root: deleted objects move to its CN=Deleted Objects.
    let nc = session.usn_position().await?.naming_context;
    let n = session.notifications(&nc).await?;
    Ok((session, n))
}

pub(super) fn spawn(cfg: LdapConfig) -> Notifier {
    let changed = Arc::new(Notify::new());
    let (tx, available) = watch::channel(false);
    let wake = changed.clone();
    let task = tokio::spawn(async move {
        let mut failures = 0u32;
        let mut told = false;
        loop {
            let started = Instant::now();
            let outcome = match register(&cfg).await {
                Ok((_session, mut n)) => {
                    let _ = tx.send(true);
                    loop {
                        match n.next().await {
                            Ok(()) => {
                                failures = 0;
                                wake.notify_one();
                            }
                            Err(e) => break e,
                        }
                    }
                }
                Err(e) => e,
            };
            let _ = tx.send(false);
            failures = failures.saturating_add(1);
            let wait = if started.elapsed() < REFUSED_WITHIN && failures > 2 {
                RETRY_REFUSED
            } else {
                backoff(failures)
            };
            if !told || failures <= 2 {
                tracing::warn!(error = %outcome, retry_in = ?wait, "AD change notification unavailable: polling on daemon.notify_fallback meanwhile");
                told = true;
            }
            // Catch up on whatever the lost registration may have missed.
            wake.notify_one();
            tokio::time::sleep(wait).await;
        }
    });
    Notifier {
        changed,
        available,
        task,
    }
}
