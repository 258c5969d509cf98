//! Progress of a transfer: an indicatif bar (bytes, rate, ETA) when stderr is
//! a terminal, and a few plain lines otherwise (see `LINE_FRACTION`), so
//! logs of scripts and CI stay readable.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::human_size;

/// How a transfer reports progress. Cheap to clone; all clones share one
/// display.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

enum Display {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
    Quiet,
}

struct Inner {
    label: String,
    total: u64,
    display: Display,
}

/// State of the line-based display.
struct Lines {
    started: Instant,
    /// Where this run started (a resumed transfer starts past 0).
    start: u64,
    last_line: Instant,
    last_position: u64,
    position: u64,
}

/// A line per this much of the total (a tenth), but not more often than
/// `LINE_MIN_INTERVAL`; and one at least every `LINE_MAX_INTERVAL` while
/// bytes move.
const LINE_FRACTION: u64 = 10;
const LINE_MIN_INTERVAL: Duration = Duration::from_secs(2);
const LINE_MAX_INTERVAL: Duration = Duration::from_secs(30);

impl Progress {
    /// A display for `total` bytes labelled `label`, starting at `start`;
    /// nothing at all when `quiet`.
    pub fn new(label: &str, total: u64, start: u64, quiet: bool) -> Progress {
        let display = if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar.set_position(start);
            bar.reset_eta();
            Display::Bar(bar)
        } else {
            let now = Instant::now();
            Display::Lines(Mutex::new(Lines {
                started: now,
                start,
                last_line: now,
                last_position: start,
                position: start,
            }))
        };
        Progress { inner: Arc::new(Inner { label: label.to_string(), total, display }) }
    }

    /// The transfer is at `position` bytes.
    pub fn set(&self, position: u64) {
        match &self.inner.display {
            Display::Bar(bar) => bar.set_position(position),
            Display::Lines(lines) => {
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                lines.position = position;
                let step = (self.inner.total / LINE_FRACTION).max(1);
                let since = lines.last_line.elapsed();
                let due = (position >= lines.last_position.saturating_add(step) && since >= LINE_MIN_INTERVAL)
                    || (since >= LINE_MAX_INTERVAL && position != lines.last_position);
                if due && position < self.inner.total {
                    lines.last_line = Instant::now();
                    lines.last_position = position;
                    eprintln!("{}", self.line(&lines, "at"));
                }
            }
            Display::Quiet => {}
        }
    }

    /// The transfer resumes at `position`: bytes before it were moved by an
    /// earlier run and count for neither the rate nor the ETA.
    pub fn resume_at(&self, position: u64) {
        match &self.inner.display {
            Display::Bar(bar) => {
                bar.set_position(position);
                bar.reset_eta();
            }
            Display::Lines(lines) => {
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                *lines = Lines { started: now, start: position, last_line: now, last_position: position, position };
            }
            Display::Quiet => {}
        }
    }

    /// The total this display counts towards.
    pub fn total(&self) -> u64 {
        self.inner.total
    }

    /// A message that must not be torn by the bar.
    pub fn note(&self, message: &str) {
        match &self.inner.display {
            Display::Bar(bar) => bar.suspend(|| eprintln!("{message}")),
            Display::Lines(_) => eprintln!("{message}"),
            Display::Quiet => {}
        }
    }

    /// The transfer is complete.
    pub fn finish(&self) {
        match &self.inner.display {
            Display::Bar(bar) => bar.finish(),
            Display::Lines(lines) => {
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                lines.position = self.inner.total;
                eprintln!("{}", self.line(&lines, "done"));
            }
            Display::Quiet => {}
        }
    }

    /// The transfer stopped without completing; leaves the bar where it is.
    pub fn abandon(&self) {
        if let Display::Bar(bar) = &self.inner.display {
            bar.abandon();
        }
    }

    fn line(&self, lines: &Lines, what: &str) -> String {
        let total = self.inner.total;
        let percent = lines.position.saturating_mul(100).checked_div(total).unwrap_or(100);
        let seconds = lines.started.elapsed().as_secs_f64().max(0.001);
        let rate = lines.position.saturating_sub(lines.start) as f64 / seconds;
        format!(
            "{}: {what} {} of {} ({percent}%), {}/s",
            self.inner.label,
            human_size(lines.position),
            human_size(total),
            human_size(rate as u64)
        )
    }
}
