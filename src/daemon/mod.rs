//! `dirbridge run`: the gateway as a service. It syncs on a poll interval, runs the full resync
//! on its schedule, backs off after failures, serves its status, and stops cleanly on SIGTERM or
//! Ctrl-C.

mod http;
mod schedule;
mod status;

use std::sync::Arc;
use std::time::Duration;

pub use schedule::{parse_duration, Schedule};
pub use status::Board;

use crate::config::Config;
use crate::engine::{self, RunKind};
use crate::state::Store;
use crate::target::Target;

/// The longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Waits for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The delay before the next attempt after `failures` failed runs in a row: the poll interval,
/// doubled per failure up to [`MAX_BACKOFF`], with up to a quarter of jitter so that gateways
/// restarted together do not hammer the directory together.
fn delay(poll: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return poll;
    }
    let base = Duration::from_secs(2u64.saturating_pow(failures.min(16))).min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    (base + jitter).min(poll.max(base))
}

/// Runs until a shutdown signal. Returns once state is flushed.
pub async fn run<T: Target>(cfg: &Config, store: Arc<Store>, target: &T) -> anyhow::Result<()> {
    let board = Arc::new(Board::new(store.clone(), cfg.daemon.poll_interval));
    if let Some(addr) = cfg.daemon.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("daemon.listen: cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "status server listening");
        tokio::spawn(http::serve(listener, board.clone()));
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    let mut next_resync = cfg
        .daemon
        .full_resync
        .next_after(time::OffsetDateTime::now_utc());
    tracing::info!(
        poll = ?cfg.daemon.poll_interval,
        next_resync = ?next_resync.map(|t| t.to_string()),
        "dirbridge running"
    );
    loop {
        let now = time::OffsetDateTime::now_utc();
        let kind = match next_resync {
            Some(t) if now >= t => RunKind::Resync,
            _ => RunKind::Sync,
        };
        let outcome = tokio::select! {
            r = engine::run(cfg, &store, target, kind) => Some(r),
            _ = &mut shutdown => None,
        };
        let Some(outcome) = outcome else {
            tracing::info!(
                "stopping: the run in progress was abandoned; confirmed changes are saved"
            );
            break;
        };
        match &outcome {
            Ok(report) => {
                failures = 0;
                tracing::info!(run = report.run, "{}", report.summary.line(kind.name()));
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::error!(error = %e, failures, "{} failed", kind.name());
            }
        }
        board.record(kind, &outcome);
        if kind == RunKind::Resync {
            next_resync = cfg
                .daemon
                .full_resync
                .next_after(time::OffsetDateTime::now_utc());
        }
        let wait = delay(cfg.daemon.poll_interval, failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => {
                tracing::info!("stopping");
                break;
            }
        }
    }
    store.flush_now().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_never_passes_the_poll_interval_needlessly() {
        let poll = Duration::from_secs(60);
        assert_eq!(delay(poll, 0), poll);
        let d1 = delay(poll, 1);
        assert!(
            d1 >= Duration::from_secs(2) && d1 <= Duration::from_millis(2500),
            "{d1:?}"
        );
        let d5 = delay(poll, 5);
        assert!(
            d5 >= Duration::from_secs(32) && d5 <= Duration::from_secs(40),
            "{d5:?}"
        );
        assert!(delay(poll, 30) <= MAX_BACKOFF + MAX_BACKOFF / 4);
        assert!(delay(Duration::from_secs(1), 3) >= Duration::from_secs(8));
    }
}
