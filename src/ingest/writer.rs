//! The blocking writer thread: takes chunks over a bounded channel, hashes
//! and writes them to a target (a temp file or an upload's file, see
//! `direct.rs`; an object store's parts), and makes them durable at the end.
//! A body already whole in memory skips the channel ([`write_whole`]).

use std::io;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Hashing, QUEUE};
use crate::error::{Error, Result};
use crate::store::{Target, CHUNK};

enum Msg {
    Data(Vec<u8>),
    Done,
}

/// One blocking thread that hashes and writes an upload's chunks in order.
/// Dropping it without [`Writer::finish`] abandons the bytes (a temp file
/// target deletes itself).
pub struct Writer<T: Target> {
    tx: mpsc::Sender<Msg>,
    /// Buffers the writer is done with, for reuse.
    spent: mpsc::Receiver<Vec<u8>>,
    handle: JoinHandle<io::Result<Written<T>>>,
    pub(super) dir: Option<PathBuf>,
}

pub struct Written<T> {
    pub target: T,
    pub size: u64,
    pub hashing: Hashing,
}

impl<T: Target> Writer<T> {
    pub fn start(target: T, hashing: Hashing) -> Writer<T> {
        let dir = target.dir();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (spent_tx, spent) = mpsc::channel(QUEUE + 2);
        let handle = tokio::task::spawn_blocking(move || write_loop(target, hashing, rx, spent_tx));
        Writer { tx, spent, handle, dir }
    }

    /// An empty buffer for the next chunk, recycled when one is free.
    pub fn buffer(&mut self) -> Vec<u8> {
        match self.spent.try_recv() {
            Ok(mut buf) => {
                buf.clear();
                buf
            }
            Err(_) => Vec::with_capacity(CHUNK),
        }
    }

    pub async fn send(&mut self, chunk: Vec<u8>) -> Result<()> {
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

    /// Waits for every chunk to be written, then syncs the target
    /// ([`Target::sync`]: a spool file's fsync is left to its commit).
    pub async fn finish(mut self) -> Result<Written<T>> {
        if self.tx.send(Msg::Done).await.is_err() {
            return Err(self.failure().await);
        }
        joined(self.handle.await)
    }
}

/// A writer's result once its blocking task has ended.
fn joined<T>(ended: std::result::Result<io::Result<T>, tokio::task::JoinError>) -> Result<T> {
    match ended {
        Ok(result) => result.map_err(Error::from_io),
        Err(e) => Err(Error::internal(format!("spool writer panicked: {e}"))),
    }
}

fn write_loop<T: Target>(
    mut target: T,
    mut hashing: Hashing,
    mut rx: mpsc::Receiver<Msg>,
    spent: mpsc::Sender<Vec<u8>>,
) -> io::Result<Written<T>> {
    let mut size = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Msg::Data(chunk)) => {
                size += write_chunk(&mut target, &mut hashing, &chunk)?;
                // Keep a few warm buffers for reuse; free the rest.
                let _ = spent.try_send(chunk);
            }
            Some(Msg::Done) => break,
            // Abandoned: dropping a temp file target deletes it.
            None => return Err(io::Error::new(io::ErrorKind::Interrupted, "upload abandoned")),
        }
    }
    target.sync()?;
    Ok(Written { target, size, hashing })
}

/// Hashes and writes a body already whole in memory (a small upload's) in
/// one trip to the blocking pool, `open`ing its target there. Fed over the
/// channel instead, the writer thread and the receiving task would wake
/// each other a few times more per upload, for no overlap to gain.
pub async fn write_whole<T: Target>(
    open: impl FnOnce() -> io::Result<T> + Send + 'static,
    mut hashing: Hashing,
    chunks: Vec<Vec<u8>>,
) -> Result<Written<T>> {
    joined(
        tokio::task::spawn_blocking(move || {
            let mut target = open()?;
            let mut size = 0;
            for chunk in &chunks {
                size += write_chunk(&mut target, &mut hashing, chunk)?;
            }
            target.sync()?;
            Ok(Written { target, size, hashing })
        })
        .await,
    )
}

fn write_chunk<T: Target>(target: &mut T, hashing: &mut Hashing, chunk: &[u8]) -> io::Result<u64> {
    hashing.update(chunk);
    target.write_all(chunk)?;
    Ok(chunk.len() as u64)
}
