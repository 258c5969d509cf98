//! The upload pipeline: body → capped in-memory spool → (spill) → temp file,
//! hashed with blake3 (and sha-256/512 when the client sent a digest) while
//! the bytes pass, then fsynced. Every upload way (PUT, multipart, and later
//! the end of a resumable upload) goes through [`Spooler::spool`]; the
//! result is a complete, verified [`Spooled`] file ready for the commit.
//!
//! The async side only receives: it fills 256 KiB chunks and hands them over
//! a bounded channel to one blocking writer thread, which hashes and writes.
//! The channel's bound is the per-upload memory once an upload has spilled.
//! Until then, up to `spool_memory` bytes are kept in memory, reserved from a
//! global budget; an upload that ends within that cap is written once, to a
//! staging file on the data volume. The temp file is a `NamedTempFile`: any
//! early return (error, disconnect, stall) drops and deletes it.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256, Sha512};
use tempfile::NamedTempFile;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::store::Layout;

/// Bytes handed to the writer at once.
pub const CHUNK: usize = 256 * 1024;
/// Chunks queued between the receiving task and the writer thread.
const QUEUE: usize = 4;
/// How often (in bytes received) free space is re-checked while streaming.
const SPACE_CHECK_EVERY: u64 = 4 * 1024 * 1024;

/// The global cap on spool memory across all uploads.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    cap: usize,
}

impl MemoryBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            used: AtomicUsize::new(0),
            cap,
        })
    }

    /// Bytes currently held by in-memory spools.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.cap)
            })
            .is_ok()
    }
}

/// Memory reserved by one upload; returned to the budget on drop.
struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    fn grow(&mut self, n: usize) -> bool {
        let ok = self.budget.try_take(n);
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What the client promised about the body.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    /// `Content-Length`: a shorter body is a truncated upload.
    pub length: Option<u64>,
    pub sha256: Option<Vec<u8>>,
    pub sha512: Option<Vec<u8>>,
    pub blake3: Option<blake3::Hash>,
}

impl Expected {
    /// Reads `Content-Digest` / `Repr-Digest` (RFC 9530) and `X-Blake3`.
    /// Algorithms we do not know are ignored, as the RFC allows.
    pub fn with_digests(
        mut self,
        digest_fields: &[&str],
        x_blake3: Option<&str>,
    ) -> Result<Expected> {
        for field in digest_fields {
            for member in field.split(',') {
                let Some((alg, value)) = member.trim().split_once('=') else {
                    return Err(Error::BadRequest(format!(
                        "malformed digest field member `{member}`"
                    )));
                };
                let alg = alg.trim().to_ascii_lowercase();
                if alg != "sha-256" && alg != "sha-512" {
                    continue;
                }
                let b64 = value
                    .trim()
                    .strip_prefix(':')
                    .and_then(|v| v.strip_suffix(':'))
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "the {alg} digest must be a byte sequence (:base64:)"
                        ))
                    })?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| {
                        Error::BadRequest(format!("the {alg} digest is not valid base64"))
                    })?;
                let (slot, len) = match alg.as_str() {
                    "sha-256" => (&mut self.sha256, 32),
                    _ => (&mut self.sha512, 64),
                };
                if bytes.len() != len {
                    return Err(Error::BadRequest(format!(
                        "the {alg} digest must be {len} bytes"
                    )));
                }
                *slot = Some(bytes);
            }
        }
        if let Some(hex) = x_blake3 {
            let hash = blake3::Hash::from_hex(hex.trim())
                .map_err(|_| Error::BadRequest("X-Blake3 must be 64 hex digits".into()))?;
            self.blake3 = Some(hash);
        }
        Ok(self)
    }
}

/// A complete upload on disk, fsynced and verified; deleted if dropped.
#[derive(Debug)]
pub struct Spooled {
    pub file: NamedTempFile,
    pub size: u64,
    pub blake3: blake3::Hash,
}

/// Where an upload's bytes go; shared by every upload way.
#[derive(Debug, Clone)]
pub struct Spooler {
    pub layout: Arc<Layout>,
    pub budget: Arc<MemoryBudget>,
    pub spool_memory: usize,
    pub max_size: u64,
    pub stall_timeout: Duration,
    pub disk_reserve: u64,
}

enum Sink {
    Memory {
        chunks: Vec<Vec<u8>>,
        len: usize,
        reservation: Reservation,
    },
    Disk(Writer),
}

impl Sink {
    /// An empty chunk buffer: one the writer has finished with, if any, so
    /// that a long upload cycles a few warm buffers instead of mapping and
    /// zeroing fresh memory for every chunk.
    fn buffer(&mut self) -> Vec<u8> {
        match self {
            Sink::Disk(writer) => writer
                .recycled()
                .unwrap_or_else(|| Vec::with_capacity(CHUNK)),
            Sink::Memory { .. } => Vec::with_capacity(CHUNK),
        }
    }
}

impl Spooler {
    /// Streams `body` to a verified temp file. On any error nothing is left.
    pub async fn spool<R: AsyncRead + Unpin>(
        &self,
        mut body: R,
        expected: &Expected,
    ) -> Result<Spooled> {
        if let Some(length) = expected.length {
            if length > self.max_size {
                return Err(Error::TooLarge {
                    limit: self.max_size,
                });
            }
            self.check_space(&self.layout.staging, length)?;
            if length > self.spool_memory as u64 {
                self.check_space(&self.layout.spool, length)?;
            }
        }
        let wants = Wants {
            sha256: expected.sha256.is_some(),
            sha512: expected.sha512.is_some(),
        };
        let mut sink = match expected.length {
            Some(length) if length > self.spool_memory as u64 => {
                Sink::Disk(Writer::start(self.layout.new_spool_file()?, wants))
            }
            _ => Sink::Memory {
                chunks: Vec::new(),
                len: 0,
                reservation: Reservation {
                    budget: self.budget.clone(),
                    bytes: 0,
                },
            },
        };

        let mut received: u64 = 0;
        let mut next_space_check = SPACE_CHECK_EVERY;
        let mut buf = sink.buffer();
        loop {
            let n = match tokio::time::timeout(self.stall_timeout, body.read_buf(&mut buf)).await {
                Err(_) => return Err(Error::Stalled(self.stall_timeout.as_secs())),
                Ok(Err(e)) => return Err(Error::Disconnected(e.to_string())),
                Ok(Ok(n)) => n,
            };
            received += n as u64;
            if received > self.max_size {
                return Err(Error::TooLarge {
                    limit: self.max_size,
                });
            }
            let eof = n == 0;
            if buf.len() < CHUNK && !eof {
                continue;
            }
            if !buf.is_empty() {
                sink = self.push(sink, buf, wants).await?;
                buf = sink.buffer();
            }
            if received >= next_space_check {
                next_space_check = received + SPACE_CHECK_EVERY;
                if let Sink::Disk(w) = &sink {
                    self.check_space(&w.dir, 0)?;
                }
            }
            if eof {
                break;
            }
        }

        if let Some(length) = expected.length {
            if received != length {
                return Err(Error::Truncated {
                    received,
                    expected: length,
                });
            }
        }

        let writer = match sink {
            Sink::Disk(writer) => writer,
            Sink::Memory {
                chunks,
                reservation,
                ..
            } => {
                let mut writer = Writer::start(self.layout.new_staging_file()?, wants);
                for chunk in chunks {
                    writer.send(chunk).await?;
                }
                drop(reservation);
                writer
            }
        };
        let written = writer.finish().await?;
        debug_assert_eq!(written.size, received);
        written.verify(expected)?;
        Ok(Spooled {
            file: written.file,
            size: written.size,
            blake3: written.blake3,
        })
    }

    async fn push(&self, sink: Sink, chunk: Vec<u8>, wants: Wants) -> Result<Sink> {
        match sink {
            Sink::Disk(mut writer) => {
                writer.send(chunk).await?;
                Ok(Sink::Disk(writer))
            }
            Sink::Memory {
                mut chunks,
                len,
                mut reservation,
            } => {
                let grown = len + chunk.len();
                if grown <= self.spool_memory && reservation.grow(chunk.len()) {
                    chunks.push(chunk);
                    return Ok(Sink::Memory {
                        chunks,
                        len: grown,
                        reservation,
                    });
                }
                // Spill: past the per-upload cap, or the global budget is spent.
                self.check_space(&self.layout.spool, (len + chunk.len()) as u64)?;
                let mut writer = Writer::start(self.layout.new_spool_file()?, wants);
                for c in chunks {
                    writer.send(c).await?;
                }
                drop(reservation);
                writer.send(chunk).await?;
                Ok(Sink::Disk(writer))
            }
        }
    }

    /// Refuses with 507 when writing `incoming` more bytes to the volume of
    /// `dir` would leave less than the reserve free.
    pub fn check_space(&self, dir: &std::path::Path, incoming: u64) -> Result<()> {
        let free = Layout::free_space(dir).map_err(Error::internal)?;
        if free < incoming.saturating_add(self.disk_reserve) {
            return Err(Error::InsufficientStorage(format!(
                "storing {incoming} more bytes would leave less than the configured reserve free"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Wants {
    sha256: bool,
    sha512: bool,
}

enum Msg {
    Data(Vec<u8>),
    Done,
}

/// One blocking thread that hashes and writes an upload's chunks in order.
struct Writer {
    tx: mpsc::Sender<Msg>,
    /// Buffers the writer is done with, for reuse.
    spent: mpsc::Receiver<Vec<u8>>,
    handle: JoinHandle<io::Result<Written>>,
    dir: PathBuf,
}

struct Written {
    file: NamedTempFile,
    size: u64,
    blake3: blake3::Hash,
    sha256: Option<Vec<u8>>,
    sha512: Option<Vec<u8>>,
}

impl Writer {
    fn start(file: NamedTempFile, wants: Wants) -> Writer {
        let dir = file.path().parent().map(PathBuf::from).unwrap_or_default();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (spent_tx, spent) = mpsc::channel(QUEUE + 2);
        let handle = tokio::task::spawn_blocking(move || write_loop(file, rx, spent_tx, wants));
        Writer {
            tx,
            spent,
            handle,
            dir,
        }
    }

    fn recycled(&mut self) -> Option<Vec<u8>> {
        let mut buf = self.spent.try_recv().ok()?;
        buf.clear();
        Some(buf)
    }

    async fn send(&mut self, chunk: Vec<u8>) -> Result<()> {
        if self.tx.send(Msg::Data(chunk)).await.is_err() {
            // The writer stopped early: its result says why.
            return Err(self.failure().await);
        }
        Ok(())
    }

    async fn failure(&mut self) -> Error {
        match (&mut self.handle).await {
            Ok(Err(e)) => Error::from_io(e),
            Ok(Ok(_)) => Error::internal("spool writer ended before the upload did"),
            Err(e) => Error::internal(format!("spool writer panicked: {e}")),
        }
    }

    async fn finish(mut self) -> Result<Written> {
        if self.tx.send(Msg::Done).await.is_err() {
            return Err(self.failure().await);
        }
        match self.handle.await {
            Ok(result) => result.map_err(Error::from_io),
            Err(e) => Err(Error::internal(format!("spool writer panicked: {e}"))),
        }
    }
}

fn write_loop(
    mut file: NamedTempFile,
    mut rx: mpsc::Receiver<Msg>,
    spent: mpsc::Sender<Vec<u8>>,
    wants: Wants,
) -> io::Result<Written> {
    let mut blake3 = blake3::Hasher::new();
    let mut sha256 = wants.sha256.then(Sha256::new);
    let mut sha512 = wants.sha512.then(Sha512::new);
    let mut size = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Msg::Data(chunk)) => {
                blake3.update(&chunk);
                if let Some(h) = sha256.as_mut() {
                    h.update(&chunk);
                }
                if let Some(h) = sha512.as_mut() {
                    h.update(&chunk);
                }
                file.as_file_mut().write_all(&chunk)?;
                size += chunk.len() as u64;
                // Keep a few warm buffers for reuse; free the rest.
                let _ = spent.try_send(chunk);
            }
            Some(Msg::Done) => break,
            // The upload was abandoned: dropping `file` deletes it.
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "upload abandoned",
                ))
            }
        }
    }
    file.as_file().sync_all()?;
    Ok(Written {
        file,
        size,
        blake3: blake3.finalize(),
        sha256: sha256.map(|h| h.finalize().to_vec()),
        sha512: sha512.map(|h| h.finalize().to_vec()),
    })
}

impl Written {
    fn verify(&self, expected: &Expected) -> Result<()> {
        let mismatch = |alg: &str| {
            Err(Error::DigestMismatch(format!(
                "the body's {alg} does not match the digest sent"
            )))
        };
        if expected
            .sha256
            .as_ref()
            .is_some_and(|d| Some(d) != self.sha256.as_ref())
        {
            return mismatch("sha-256");
        }
        if expected
            .sha512
            .as_ref()
            .is_some_and(|d| Some(d) != self.sha512.as_ref())
        {
            return mismatch("sha-512");
        }
        if expected.blake3.is_some_and(|d| d != self.blake3) {
            return mismatch("blake3");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_caps_and_releases() {
        let budget = MemoryBudget::new(100);
        let mut a = Reservation {
            budget: budget.clone(),
            bytes: 0,
        };
        assert!(a.grow(60));
        let mut b = Reservation {
            budget: budget.clone(),
            bytes: 0,
        };
        assert!(!b.grow(60));
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn digest_fields_parse() {
        let e = Expected::default()
            .with_digests(
                &["sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, md5=:xx:"],
                None,
            )
            .unwrap();
        assert_eq!(e.sha256.unwrap().len(), 32);
        assert!(Expected::default()
            .with_digests(&["sha-256=abc"], None)
            .is_err());
        assert!(Expected::default().with_digests(&[], Some("zz")).is_err());
    }
}
