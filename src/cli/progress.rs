//! The progress bar of a one-shot pass in a terminal: entries read, then operations sent of
//! those planned, with the rate and the time left (indicatif), drawn on standard error from a
//! thread of its own every tenth of a second from the pass's counters (`engine::progress`).
//! Only when standard output is a terminal and the log is human-readable; log lines are written
//! above the bar (`LogWriter`), never through it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::progress::{self, Phase};

/// The bar while one is drawn: the log writes around it.
static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Draws until dropped.
pub(super) struct Progress {
    stop: Arc<AtomicBool>,
    drawer: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing, if standard output and standard error are terminals.
    pub(super) fn start(human_log: bool) -> Option<Progress> {
        use std::io::IsTerminal;
        if !human_log || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = BAR
            .get_or_init(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()))
            .clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let drawer = std::thread::Builder::new()
            .name("dirbridge-progress".into())
            .spawn(move || draw(&bar, &stopped))
            .ok()?;
        Some(Progress {
            stop,
            drawer: Some(drawer),
        })
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.drawer.take() {
            let _ = d.join();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // Whole objects a second, not indicatif's four decimals.
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            },
        )
}

fn draw(bar: &ProgressBar, stop: &AtomicBool) {
    let reading = style("{spinner} {msg}: {pos} entries ({rate}) {elapsed}");
    let target = style("{spinner} {msg} {elapsed}");
    let sending = style("{msg} [{bar:30}] {pos}/{len} operations ({rate}, {eta} left) {elapsed}");
    let mut shown = None;
    while !stop.load(Ordering::Relaxed) {
        let phase = progress::phase();
        if shown != Some(phase) {
            match phase {
                Phase::Starting | Phase::Done => {}
                Phase::Reading => {
                    bar.set_style(reading.clone());
                    bar.set_message("reading the directory");
                }
                Phase::ReadingTarget => {
                    bar.set_style(target.clone());
                    bar.set_message("reading the target");
                }
                Phase::Sending => {
                    // The reading's count and rate go first: never drawn against the plan.
                    let (done, planned) = progress::sent();
                    bar.reset();
                    bar.set_length(planned);
                    bar.set_position(done.min(planned));
                    bar.set_style(sending.clone());
                    bar.set_message("sending");
                }
            }
            shown = Some(phase);
        }
        match phase {
            Phase::Reading => bar.set_position(progress::read()),
            Phase::Sending => {
                let (done, planned) = progress::sent();
                bar.set_length(planned);
                // Follow-ups (an adopted user brought in line) may outnumber the plan.
                bar.set_position(done.min(planned));
            }
            Phase::ReadingTarget => bar.tick(),
            // Nothing to show yet, or any more.
            Phase::Starting | Phase::Done => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

/// Standard error for the log, written above the bar while one is drawn.
pub(super) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BAR.get() {
            Some(bar) if !bar.is_finished() => {
                bar.suspend(|| std::io::stderr().write_all(buf))?;
                Ok(buf.len())
            }
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
