//! systemd's notify protocol, for `run` under `Type=notify` (`packaging/dirbridge.service`):
//! `READY=1` once the status server listens, a `STATUS=` line whenever the board's summary
//! changes, `WATCHDOG=1` at half of `WatchdogSec` for as long as the runtime schedules the
//! notifier and the board answers (a deadlock or a wedged runtime stops the pings and systemd
//! restarts the service; a long pass is not a hang: every directory and target request has a
//! timeout of its own), and `STOPPING=1` as soon as a stop is asked for. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the socket `NOTIFY_SOCKET` names, a
//! path or, after `@`, an abstract address. It is written here rather than with the sd-notify
//! crate, which cannot reach an abstract socket (systemd may hand one out, and then the service
//! would never be seen ready and be killed at its start timeout).

use std::sync::Arc;
use std::time::Duration;

use super::status::Board;

/// How often the status line is looked at when there is no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Sends `lines` to the service manager, if there is one.
fn send(lines: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&socket, lines) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

fn send_to(socket: &std::ffi::OsStr, lines: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(lines.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => {
            return Err(std::io::Error::other("abstract sockets are Linux only"));
        }
        None => {
            sock.send_to(lines.as_bytes(), socket)?;
        }
    }
    Ok(())
}

/// The watchdog's interval, when systemd asks for pings from this process: `WATCHDOG_USEC`
/// above zero (zero is off), and `WATCHDOG_PID` this process if it is set.
fn watchdog() -> Option<Duration> {
    watchdog_of(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_of(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid {
        Some(p) if p.trim().parse::<u32>().ok() != Some(me) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

/// A status text on one line (a line break would start another key).
fn status(text: &str) -> String {
    format!("STATUS={}\n", text.replace(['\n', '\r'], " "))
}

/// The service is up: its status server listens and its loop starts.
pub(super) fn ready(board: &Board) {
    send(&format!("READY=1\n{}", status(&board.status_line())));
}

/// A stop was asked for: what is in flight finishes and the state is saved.
pub(super) fn stopping() {
    send(&format!(
        "STOPPING=1\n{}",
        status("stopping: finishing what is in flight, saving the state")
    ));
}

/// Keeps systemd told: the status line when it changes, and the watchdog's pings.
pub(super) fn spawn_notifier(board: Arc<Board>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = watchdog();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).max(Duration::from_millis(10)));
    tokio::spawn(async move {
        let mut last = String::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Taking the board's lock is part of the proof of life.
            let line = board.status_line();
            let mut message = String::new();
            if line != last {
                message.push_str(&status(&line));
            }
            if watchdog.is_some() {
                message.push_str("WATCHDOG=1\n");
            }
            if !message.is_empty() {
                send(&message);
            }
            last = line;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_on_only_when_asked_of_this_process() {
        assert_eq!(
            watchdog_of(Some("200000"), None, 7),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            watchdog_of(Some("200000"), Some("7"), 7),
            Some(Duration::from_millis(200))
        );
        assert_eq!(watchdog_of(Some("200000"), Some("8"), 7), None);
        // Zero is systemd's "off", not "as fast as possible".
        assert_eq!(watchdog_of(Some("0"), None, 7), None);
        assert_eq!(watchdog_of(Some("soon"), None, 7), None);
        assert_eq!(watchdog_of(None, Some("7"), 7), None);
    }

    #[test]
    fn a_status_is_one_line() {
        assert_eq!(status("a\nb\rc"), "STATUS=a b c\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_reach_a_path_and_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("notify");
        let at_path = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        send_to(path.as_os_str(), "READY=1\n").unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 64];
        let n = at_path.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"READY=1\n");
        let name = format!("dirbridge-test-{}", std::process::id());
        let addr =
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let abstract_sock = UnixDatagram::bind_addr(&addr).unwrap_or_else(|e| panic!("{e}"));
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "WATCHDOG=1\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let n = abstract_sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }
}
