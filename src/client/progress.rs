//! Progress of a transfer: an indicatif bar (bytes, rate, ETA) when stderr is
//! a terminal, and a few plain lines otherwise (see `LINE_FRACTION`), so
//! logs of scripts and CI stay readable.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    /// The overall bar of a run of many files, which this one's bytes move.
    parent: Option<ProgressBar>,
    /// The last position handed on to `parent` or `whole`.
    reported: AtomicU64,
    /// The transfer this one is a part of (a part of a file sent in parts):
    /// this part's bytes move it.
    whole: Option<Progress>,
    /// Bytes the parts of this transfer moved (see `whole`).
    of_parts: AtomicU64,
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
            Display::Bar(bar(ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()), label, start))
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
        Progress::with(label, total, start, display, None)
    }

    fn with(label: &str, total: u64, start: u64, display: Display, parent: Option<ProgressBar>) -> Progress {
        let inner = Inner {
            label: label.to_string(),
            total,
            display,
            parent,
            reported: AtomicU64::new(start),
            whole: None,
            of_parts: AtomicU64::new(0),
        };
        Progress { inner: Arc::new(inner) }
    }

    /// The display of one part (`total` bytes) of this transfer: it shows
    /// nothing itself and moves this one.
    pub fn part(&self, total: u64) -> Progress {
        let mut part = Progress::with(&self.inner.label, total, 0, Display::Quiet, None);
        Arc::get_mut(&mut part.inner).expect("a new display").whole = Some(self.clone());
        part
    }

    /// Hands the bytes moved since the last call on to the overall bar; a
    /// resume's jump (`jump`) shrinks the overall total instead, so it
    /// counts as neither sent nor still to send.
    fn report(&self, position: u64, jump: bool) {
        if let Some(whole) = &self.inner.whole {
            let before = self.inner.reported.swap(position, Ordering::Relaxed);
            let moved = position.saturating_sub(before);
            let at = whole.inner.of_parts.fetch_add(moved, Ordering::Relaxed) + moved;
            match jump {
                true => whole.resume_at(at),
                false => whole.set(at),
            }
            return;
        }
        let Some(parent) = &self.inner.parent else { return };
        let before = self.inner.reported.swap(position, Ordering::Relaxed);
        let moved = position.saturating_sub(before);
        if jump {
            parent.set_length(parent.length().unwrap_or(0).saturating_sub(moved));
        } else {
            parent.inc(moved);
        }
    }

    /// The transfer is at `position` bytes.
    pub fn set(&self, position: u64) {
        self.report(position, false);
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
        self.report(position, true);
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
        if let Some(whole) = &self.inner.whole {
            return whole.note(message);
        }
        match &self.inner.display {
            Display::Bar(bar) => bar.suspend(|| eprintln!("{message}")),
            Display::Lines(_) => eprintln!("{message}"),
            Display::Quiet => {}
        }
    }

    /// The transfer is complete.
    pub fn finish(&self) {
        self.report(self.inner.total, false);
        match &self.inner.display {
            Display::Bar(bar) if self.inner.parent.is_some() => bar.finish_and_clear(),
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
        match &self.inner.display {
            Display::Bar(bar) if self.inner.parent.is_some() => bar.finish_and_clear(),
            Display::Bar(bar) => bar.abandon(),
            _ => {}
        }
    }

    fn line(&self, lines: &Lines, what: &str) -> String {
        let total = self.inner.total;
        let percent = lines.position.saturating_mul(100).checked_div(total).unwrap_or(100);
        let rate = rate(lines.position.saturating_sub(lines.start), lines.started.elapsed());
        format!(
            "{}: {what} {} of {} ({percent}%), {}/s",
            self.inner.label,
            human_size(lines.position),
            human_size(total),
            human_size(rate)
        )
    }
}

/// Bytes per second of `moved` bytes in `elapsed`.
pub fn rate(moved: u64, elapsed: Duration) -> u64 {
    (moved as f64 / elapsed.as_secs_f64().max(0.001)) as u64
}

fn bar(bar: ProgressBar, label: &str, start: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar.set_position(start);
    bar.reset_eta();
    bar
}

/// The display of a run of many files: one overall bar (bytes this run
/// sends) with a bar per file in flight on a terminal; on other outputs
/// only the end of each file is said (by the caller), not its progress.
pub struct Overall {
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
}

impl Overall {
    pub fn new(label: &str, bytes: u64, quiet: bool) -> Overall {
        if quiet || !std::io::stderr().is_terminal() {
            return Overall { multi: None, bar: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(bar(ProgressBar::new(bytes), label, 0));
        Overall { multi: Some(multi), bar: Some(overall) }
    }

    /// The display of one file of the run.
    pub fn file(&self, label: &str, total: u64) -> Progress {
        match (&self.multi, &self.bar) {
            (Some(multi), Some(overall)) => {
                let file = multi.add(bar(ProgressBar::new(total), label, 0));
                Progress::with(label, total, 0, Display::Bar(file), Some(overall.clone()))
            }
            _ => Progress::with(label, total, 0, Display::Quiet, None),
        }
    }

    /// A line of output (stdout) that must not be torn by the bars.
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(multi) => multi.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Bytes that will not be sent after all (a file skipped or failed).
    pub fn forget(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(bar.length().unwrap_or(0).saturating_sub(bytes));
        }
    }

    /// A line that must not be torn by the bars.
    pub fn note(&self, message: &str) {
        match &self.multi {
            Some(multi) => multi.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed transfer's rate counts what this run moved, not the
    /// offset it resumed at (375 MiB/s was shown for a 129 MiB/s upload).
    #[test]
    fn a_resume_is_not_counted_as_transferred() {
        let progress = Progress::with(
            "t",
            1000,
            0,
            Display::Lines(Mutex::new(Lines {
                started: Instant::now(),
                start: 0,
                last_line: Instant::now(),
                last_position: 0,
                position: 0,
            })),
            Some(ProgressBar::hidden()),
        );
        let parent = progress.inner.parent.clone().unwrap();
        parent.set_length(1000);
        progress.resume_at(600);
        progress.set(700);
        let Display::Lines(lines) = &progress.inner.display else { unreachable!() };
        let lines = lines.lock().unwrap();
        assert_eq!((lines.start, lines.position), (600, 700));
        // The overall bar: 100 bytes sent of the 400 this run has to send.
        assert_eq!((parent.position(), parent.length()), (100, Some(400)));
        assert_eq!(rate(lines.position - lines.start, Duration::from_secs(1)), 100);
    }

    /// Parts move the whole: their bytes add up, a part's resume is a jump
    /// of the whole.
    #[test]
    fn parts_add_up() {
        let whole = Progress::with("t", 300, 0, Display::Bar(ProgressBar::hidden()), Some(ProgressBar::hidden()));
        let overall = whole.inner.parent.clone().unwrap();
        overall.set_length(300);
        let (a, b) = (whole.part(100), whole.part(200));
        a.resume_at(50);
        b.set(20);
        a.set(60);
        let Display::Bar(bar) = &whole.inner.display else { unreachable!() };
        assert_eq!(bar.position(), 80);
        assert_eq!((overall.position(), overall.length()), (30, Some(250)));
    }

    /// The same for a terminal's bar: the estimator starts again at the
    /// resume offset.
    #[test]
    fn a_bar_rate_restarts_at_a_resume() {
        let progress = Progress::with("t", 1 << 30, 0, Display::Bar(ProgressBar::hidden()), None);
        let Display::Bar(bar) = &progress.inner.display else { unreachable!() };
        bar.set_length(1 << 30);
        progress.resume_at(1 << 29);
        std::thread::sleep(Duration::from_millis(20));
        progress.set((1 << 29) + 1024);
        // A rate counting the jump would be above 512 MiB / 20 ms.
        assert!(bar.per_sec() < (64 << 20) as f64, "{} B/s", bar.per_sec());
    }
}
