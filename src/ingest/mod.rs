//! The upload pipeline: body → capped in-memory spool → (spill) → temp file,
//! hashed with blake3 (and sha-256/512 when the client sent a digest) while
//! the bytes pass. Every upload way (PUT, multipart, and later the end of a
//! resumable upload) goes through [`Spooler::spool`]; the result is a
//! complete, verified [`Received`] file ready for the commit, which fsyncs
//! it while the index records the intent (`Store::settle`).
//!
//! The async side only receives: it fills 256 KiB chunks and hands them over
//! a bounded channel to one blocking writer thread, which hashes and writes.
//! The channel's bound is the per-upload memory once an upload has spilled.
//! A spilled upload's spool file is written around the page cache
//! (`direct.rs`), which saves the CPU of copying every byte into it.
//! Until then, up to `spool_memory` bytes are kept in memory, reserved from a
//! global budget; an upload that ends within that cap is written once, to a
//! staging file on the data volume, in one trip to the blocking pool. The
//! temp file is a `NamedTempFile`: any early return (error, disconnect,
//! stall) drops and deletes it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tempfile::NamedTempFile;
use tokio::io::{AsyncRead, AsyncReadExt};

mod direct;
mod expected;
mod writer;

use direct::DIRECT_BUFFER;
pub use direct::{DirectFile, OpenFile};
use expected::check_blake3;
pub use expected::{Algorithm, Digest, Expected, Hashing};
use writer::write_whole;
pub use writer::{Writer, Written};

use crate::datadir::Layout;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::{Staged, Store, Streaming, CHUNK};

/// Chunks queued between the receiving task and the writer thread.
const QUEUE: usize = 4;
/// How often (in bytes received) free space is re-checked while streaming.
const SPACE_CHECK_EVERY: u64 = 4 * 1024 * 1024;
/// What may reach the disk from one check to the next: the bytes received
/// in between, the chunks queued for (or held by) the writer, and what the
/// writer has gathered for its next direct write.
const SPACE_HEADROOM: u64 = SPACE_CHECK_EVERY + (QUEUE as u64 + 2) * CHUNK as u64 + DIRECT_BUFFER as u64;

/// The global cap on spool memory across all uploads.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    cap: usize,
}

impl MemoryBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(MemoryBudget { used: AtomicUsize::new(0), cap })
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

/// A complete upload, verified: a file (deleted if dropped; durable only
/// once the commit settles it, see `Store::settle`), or
/// with an object store, the body in memory or in an uncompleted multipart
/// upload (aborted if dropped).
#[derive(Debug)]
pub struct Received {
    pub staged: Staged,
    pub size: u64,
    pub blake3: blake3::Hash,
}

/// Reads a request body in [`CHUNK`]-sized buffers, with the stall timeout
/// on every read and a cap on the total. The chunk being filled lives in the
/// reader, so that when the body breaks off (or the read is cancelled) the
/// bytes that did arrive can still be taken with [`ChunkReader::take_pending`].
pub struct ChunkReader<R> {
    body: R,
    pending: Vec<u8>,
    /// Counts every byte received (`spillway_upload_bytes_total`).
    counter: prometheus::IntCounter,
    stall_timeout: Duration,
    limit: u64,
    pub received: u64,
}

impl<R: AsyncRead + Unpin> ChunkReader<R> {
    pub fn new(body: R, stall_timeout: Duration, limit: u64, counter: prometheus::IntCounter) -> Self {
        ChunkReader { body, pending: Vec::with_capacity(CHUNK), counter, stall_timeout, limit, received: 0 }
    }

    /// The next full chunk (the last may be shorter); `None` at the end of
    /// the body. `spare`, an empty buffer, takes the place of the chunk
    /// returned. Cancel-safe: a cancelled call loses no received byte.
    pub async fn next_chunk(&mut self, spare: Vec<u8>) -> Result<Option<Vec<u8>>> {
        loop {
            let n = match tokio::time::timeout(self.stall_timeout, self.body.read_buf(&mut self.pending)).await {
                Err(_) => return Err(Error::Stalled(self.stall_timeout.as_secs())),
                Ok(Err(e)) => return Err(Error::Disconnected(e.to_string())),
                Ok(Ok(n)) => n,
            };
            self.received += n as u64;
            self.counter.inc_by(n as u64);
            if self.received > self.limit {
                return Err(Error::TooLarge { limit: self.limit });
            }
            if (n == 0 && !self.pending.is_empty()) || self.pending.len() >= CHUNK {
                return Ok(Some(std::mem::replace(&mut self.pending, spare)));
            }
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// The bytes received since the last full chunk (after an error).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// Where an upload's bytes go; shared by every upload way.
#[derive(Debug, Clone)]
pub struct Spooler {
    pub layout: Arc<Layout>,
    pub budget: Arc<MemoryBudget>,
    pub spool_memory: usize,
    /// Spill files and resumable uploads' files written with `O_DIRECT`.
    pub direct_writes: bool,
    pub max_size: u64,
    pub stall_timeout: Duration,
    pub disk_reserve: u64,
    pub received_bytes: prometheus::IntCounter,
    /// Where datasets live: a remote store takes uploads whose key is
    /// known as they arrive.
    pub store: Arc<dyn Store>,
}

enum Sink {
    Memory { chunks: Vec<Vec<u8>>, len: usize, reservation: Reservation },
    Disk(Writer<DirectFile<NamedTempFile>>),
    Store(Writer<Box<dyn Streaming>>),
}

impl Spooler {
    /// Streams `body` to a verified temp file. On any error nothing is left.
    pub async fn spool<R: AsyncRead + Unpin>(&self, body: R, expected: &Expected) -> Result<Received> {
        self.spool_to(body, expected, None).await
    }

    /// Like [`Spooler::spool`]; with an object store and the key known, a
    /// body past the memory cap streams into a multipart upload at the key
    /// instead of a spool file.
    pub async fn spool_to<R: AsyncRead + Unpin>(
        &self,
        body: R,
        expected: &Expected,
        key: Option<&Key>,
    ) -> Result<Received> {
        let target = key.filter(|_| self.store.remote());
        let max_size = expected.limit.map_or(self.max_size, |l| l.min(self.max_size));
        if let Some(length) = expected.length {
            if length > max_size {
                return Err(Error::TooLarge { limit: max_size });
            }
            if target.is_none() {
                self.check_space(&self.layout.staging, length)?;
                if length > self.spool_memory as u64 {
                    self.check_space(&self.layout.spool, length)?;
                }
            }
        }
        let algorithms = expected.algorithms();
        let mut sink = match expected.length {
            Some(length) if length > self.spool_memory as u64 => self.spill_writer(&algorithms, target).await?,
            _ => Sink::Memory {
                chunks: Vec::new(),
                len: 0,
                reservation: Reservation { budget: self.budget.clone(), bytes: 0 },
            },
        };

        let mut body = ChunkReader::new(body, self.stall_timeout, max_size, self.received_bytes.clone());
        let mut space = self.watch_space();
        while let Some(chunk) = body.next_chunk(sink.buffer()).await? {
            sink = self.push(sink, chunk, &algorithms, target).await?;
            if let Sink::Disk(Writer { dir: Some(dir), .. }) = &sink {
                space.check(dir, body.received)?;
            }
        }
        let received = body.received;
        if let Some(length) = expected.length {
            if received != length {
                return Err(Error::Truncated { received, expected: length });
            }
        }

        let mut written = match sink {
            Sink::Disk(writer) => writer.finish().await?,
            Sink::Store(writer) => {
                let mut written = writer.finish().await?;
                written.hashing.verify(&expected.digests)?;
                let blake3 = check_blake3(&mut written.hashing, expected)?;
                let staged = written.target.finish()?;
                return Ok(Received { staged, size: written.size, blake3 });
            }
            Sink::Memory { chunks, .. } if target.is_some() => {
                // An object store takes a small body in one PUT, from memory.
                // Hashed (up to `spool_memory`) off the async workers.
                let (chunks, mut hashing) = tokio::task::spawn_blocking(move || {
                    let mut hashing = Hashing::new(blake3::Hasher::new(), &algorithms);
                    chunks.iter().for_each(|c| hashing.update(c));
                    (chunks, hashing)
                })
                .await
                .map_err(|e| Error::internal(format!("hashing failed: {e}")))?;
                hashing.verify(&expected.digests)?;
                let blake3 = check_blake3(&mut hashing, expected)?;
                return Ok(Received { staged: Staged::Memory(chunks), size: received, blake3 });
            }
            Sink::Memory { chunks, reservation, .. } => {
                let layout = self.layout.clone();
                // Small, written once: through the page cache.
                let open = move || Ok(DirectFile::new(layout.new_staging_file()?, 0, false));
                let written = write_whole(open, Hashing::new(blake3::Hasher::new(), &algorithms), chunks).await?;
                drop(reservation);
                written
            }
        };
        debug_assert_eq!(written.size, received);
        written.hashing.verify(&expected.digests)?;
        let blake3 = check_blake3(&mut written.hashing, expected)?;
        Ok(Received { staged: Staged::File(written.target.into_inner()), size: written.size, blake3 })
    }

    async fn spill_writer(&self, algorithms: &[Algorithm], target: Option<&Key>) -> Result<Sink> {
        let hashing = Hashing::new(blake3::Hasher::new(), algorithms);
        Ok(match target {
            Some(key) => Sink::Store(Writer::start(self.store.stream_to(key).await?, hashing)),
            None => Sink::Disk(Writer::start(
                DirectFile::new(self.layout.new_spool_file()?, 0, self.direct_writes),
                hashing,
            )),
        })
    }

    async fn push(&self, sink: Sink, chunk: Vec<u8>, algorithms: &[Algorithm], target: Option<&Key>) -> Result<Sink> {
        match sink {
            Sink::Disk(mut writer) => {
                writer.send(chunk).await?;
                Ok(Sink::Disk(writer))
            }
            Sink::Store(mut writer) => {
                writer.send(chunk).await?;
                Ok(Sink::Store(writer))
            }
            Sink::Memory { mut chunks, len, mut reservation } => {
                let grown = len + chunk.len();
                if grown <= self.spool_memory && reservation.grow(chunk.len()) {
                    chunks.push(chunk);
                    return Ok(Sink::Memory { chunks, len: grown, reservation });
                }
                // Spill: past the per-upload cap, or the global budget is spent.
                if target.is_none() {
                    self.check_space(&self.layout.spool, grown as u64)?;
                }
                let mut sink = self.spill_writer(algorithms, target).await?;
                for c in chunks.into_iter().chain([chunk]) {
                    match &mut sink {
                        Sink::Disk(writer) => writer.send(c).await?,
                        Sink::Store(writer) => writer.send(c).await?,
                        Sink::Memory { .. } => unreachable!("spill_writer spills"),
                    }
                }
                drop(reservation);
                Ok(sink)
            }
        }
    }

    /// A watch on free space for one body streaming to disk.
    pub fn watch_space(&self) -> SpaceWatch<'_> {
        SpaceWatch { spooler: self, next: 0 }
    }

    /// Refuses with 507 when writing `incoming` more bytes to the volume of
    /// `dir` would leave less than the reserve free.
    pub fn check_space(&self, dir: &Path, incoming: u64) -> Result<()> {
        let free = Layout::free_space(dir).map_err(Error::internal)?;
        if free < incoming.saturating_add(self.disk_reserve) {
            return Err(Error::InsufficientStorage(format!(
                "storing {} more would leave less than the configured reserve ({}) free",
                crate::error::readable(incoming),
                crate::error::readable(self.disk_reserve)
            )));
        }
        Ok(())
    }
}

/// Free space, re-checked while a body of unknown size streams to disk:
/// from its first chunk on and then every [`SPACE_CHECK_EVERY`] bytes
/// received, its volume must keep the reserve with room for what may land
/// before the next check, so the reserve holds even where the bytes taken
/// are kept (a resumable upload's). Every way bytes stream to disk (a
/// PUT's spool file, a PATCH) goes through one.
pub struct SpaceWatch<'s> {
    spooler: &'s Spooler,
    next: u64,
}

impl SpaceWatch<'_> {
    /// After `received` bytes were handed to the writer for `dir`: a 507
    /// once the volume is below the reserve.
    pub fn check(&mut self, dir: &Path, received: u64) -> Result<()> {
        if received < self.next {
            return Ok(());
        }
        self.next = received + SPACE_CHECK_EVERY;
        self.spooler.check_space(dir, SPACE_HEADROOM)
    }
}

impl Sink {
    /// An empty chunk buffer: one the writer has finished with, if any, so
    /// that a long upload cycles a few warm buffers instead of mapping and
    /// zeroing fresh memory for every chunk.
    fn buffer(&mut self) -> Vec<u8> {
        match self {
            Sink::Disk(writer) => writer.buffer(),
            Sink::Store(writer) => writer.buffer(),
            Sink::Memory { .. } => Vec::with_capacity(CHUNK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_caps_and_releases() {
        let budget = MemoryBudget::new(100);
        let mut a = Reservation { budget: budget.clone(), bytes: 0 };
        assert!(a.grow(60));
        let mut b = Reservation { budget: budget.clone(), bytes: 0 };
        assert!(!b.grow(60));
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
