//! The node's log: env_logger's lines (one filter, `SPILLWAY_LOG`), written
//! to stderr in batches. A write per access line was about 6% of the
//! node's CPU serving 64 KiB ranges (44 against 41 µs per range, by hand);
//! nginx offers the same trade (`access_log ... buffer= flush=`).
//!
//! When lines reach stderr: at once for a warning or an error; before the
//! node says it is listening; at a clean exit; and otherwise within
//! [`FLUSH_EVERY`], or once [`HELD`] bytes wait. A node killed with -9
//! loses at most the info lines of that last interval.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use log::{Level, Log, Metadata, Record};

/// The longest an info line waits to be written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Lines held past this are written at once.
const HELD: usize = 64 * 1024;

static LINES: OnceLock<Arc<Lines>> = OnceLock::new();

#[derive(Default)]
struct Lines {
    held: Mutex<Vec<u8>>,
    /// Held while a batch is written, so that batches keep their order.
    writing: Mutex<()>,
}

impl Lines {
    fn write(&self) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let batch = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if held.is_empty() {
                return;
            }
            // A buffer of the size a batch reaches, rather than one grown
            // from nothing by reallocations after every batch.
            std::mem::replace(&mut *held, Vec::with_capacity(HELD + HELD / 4))
        };
        // Nowhere to report a failed write of the log itself.
        let _ = std::io::stderr().lock().write_all(&batch);
    }
}

/// What env_logger writes into: the held lines.
struct Pipe(Arc<Lines>);

impl Write for Pipe {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut held = self.0.held.lock().unwrap_or_else(|e| e.into_inner());
        held.extend_from_slice(line);
        let full = held.len() >= HELD;
        drop(held);
        if full {
            self.0.write();
        }
        Ok(line.len())
    }

    /// env_logger flushes after every line: the batching is the point.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Batched {
    inner: env_logger::Logger,
    lines: Arc<Lines>,
}

impl Log for Batched {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        // env_logger applies the filter itself; only a warning or an error
        // (rare) is matched a second time, to know whether to write at once.
        self.inner.log(record);
        if record.level() <= Level::Warn && self.inner.matches(record) {
            self.lines.write();
        }
    }

    fn flush(&self) {
        self.lines.write();
    }
}

/// The node's logger: lines in batches (see above).
pub fn init_batched(filter: &str) {
    let lines = LINES.get_or_init(Default::default).clone();
    let inner = builder(filter).target(env_logger::Target::Pipe(Box::new(Pipe(lines.clone())))).build();
    log::set_max_level(inner.filter());
    if log::set_boxed_logger(Box::new(Batched { inner, lines: lines.clone() })).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new().name("spillway-log".into()).spawn(move || loop {
        std::thread::sleep(FLUSH_EVERY);
        lines.write();
    });
    if let Err(e) = spawned {
        eprintln!("spillway: cannot start the log writer ({e}); info lines are written once 64 KiB wait");
    }
}

/// A logger that writes every line as it comes (the command-line tools).
pub fn init_direct(filter: &str) {
    builder(filter).init();
}

fn builder(filter: &str) -> env_logger::Builder {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("SPILLWAY_LOG", filter))
}

/// Writes the lines held now (nothing to do with the direct logger).
pub fn flush() {
    if let Some(lines) = LINES.get() {
        lines.write();
    }
}
