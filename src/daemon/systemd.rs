//! systemd's notify protocol, for `run` under `Type=notify` (`packaging/dirbridge.service`):
//! `READY=1` once the status server listens, a `STATUS=` line whenever the board's summary
//! changes, `WATCHDOG=1` at half of `WatchdogSec` for as long as the runtime schedules the
//! notifier and the board answers (a deadlock or a wedged runtime stops the pings and systemd
//! restarts the service; a long pass is not a hang: every directory and target request has a
//! timeout of its own), and `STOPPING=1` as soon as a stop is asked for. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use super::status::Board;

/// How often the status line is looked at when there is no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);

#[cfg(target_os = "linux")]
fn send(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// The service is up: its status server listens and its loop starts.
pub(super) fn ready(board: &Board) {
    #[cfg(target_os = "linux")]
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&board.status_line()),
    ]);
    #[cfg(not(target_os = "linux"))]
    let _ = board;
}

/// A stop was asked for: what is in flight finishes and the state is saved.
pub(super) fn stopping() {
    #[cfg(target_os = "linux")]
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: finishing what is in flight, saving the state"),
    ]);
}

/// Keeps systemd told: the status line when it changes, and the watchdog's pings.
pub(super) fn spawn_notifier(board: Arc<Board>) {
    #[cfg(target_os = "linux")]
    {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        let watchdog = sd_notify::watchdog_enabled();
        let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).max(Duration::from_millis(10)));
        tokio::spawn(async move {
            let mut last = String::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Taking the board's lock is part of the proof of life.
                let line = board.status_line();
                let mut states = Vec::new();
                if line != last {
                    states.push(sd_notify::NotifyState::Status(&line));
                }
                if watchdog.is_some() {
                    states.push(sd_notify::NotifyState::Watchdog);
                }
                if !states.is_empty() {
                    send(&states);
                }
                last = line;
            }
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = board;
}
