//! A stored file as a response body. Bytes the page cache already holds
//! are read straight into the server's send buffer, on the task that sends
//! them (`preadv2` with `RWF_NOWAIT` never waits for the disk): no hop to
//! the blocking pool and no copy through a buffer of our own, which is what
//! a whole GET spent most of its CPU on besides the two kernel copies.
//! Bytes the cache does not hold are read on the blocking pool, a block at
//! a time, as a `tokio::fs::File` would.

use std::fs::File;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustix::io::{Errno, ReadWriteFlags};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;

/// The most read on the blocking pool at once (bytes not in the cache).
const BLOCK: usize = 1024 * 1024;

pub struct FileBody {
    file: Arc<File>,
    pos: u64,
    end: u64,
    /// `RWF_NOWAIT` reads work here (not on every filesystem).
    nowait: bool,
    read: Option<JoinHandle<io::Result<Vec<u8>>>>,
    held: Vec<u8>,
    held_at: usize,
}

impl FileBody {
    /// `len` bytes of `file` from `start`; a file found shorter ends the
    /// body early, as `AsyncReadExt::take` on the file did (the server
    /// then breaks off the response it sized).
    pub fn new(file: impl Into<Arc<File>>, start: u64, len: u64) -> FileBody {
        FileBody {
            file: file.into(),
            pos: start,
            end: start.saturating_add(len),
            nowait: true,
            read: None,
            held: Vec::new(),
            held_at: 0,
        }
    }

    /// Reads what the page cache holds into `buf` without waiting; `None`
    /// when it would have to wait for the disk.
    fn read_cached(&mut self, buf: &mut ReadBuf<'_>, want: usize) -> Option<io::Result<()>> {
        let dst = buf.initialize_unfilled_to(want);
        match rustix::io::preadv2(&*self.file, &mut [IoSliceMut::new(dst)], self.pos, ReadWriteFlags::NOWAIT) {
            Ok(0) => {
                self.end = self.pos;
                Some(Ok(()))
            }
            Ok(n) => {
                buf.advance(n);
                self.pos += n as u64;
                Some(Ok(()))
            }
            Err(Errno::AGAIN) => None,
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                self.nowait = false;
                None
            }
            Err(e) => Some(Err(e.into())),
        }
    }
}

impl AsyncRead for FileBody {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.held_at < this.held.len() {
                let n = buf.remaining().min(this.held.len() - this.held_at);
                buf.put_slice(&this.held[this.held_at..this.held_at + n]);
                this.held_at += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(read) = &mut this.read {
                let result = ready!(Pin::new(read).poll(cx));
                this.read = None;
                let bytes = result.map_err(io::Error::other)??;
                match bytes.len() {
                    0 => this.end = this.pos,
                    n => this.pos += n as u64,
                }
                (this.held, this.held_at) = (bytes, 0);
                continue;
            }
            let want = (this.end - this.pos).min(buf.remaining() as u64) as usize;
            if want == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.nowait {
                if let Some(done) = this.read_cached(buf, want) {
                    return Poll::Ready(done);
                }
            }
            let (file, pos) = (this.file.clone(), this.pos);
            let len = (this.end - this.pos).min(BLOCK as u64) as usize;
            this.read = Some(tokio::task::spawn_blocking(move || read_at_most(&file, pos, len)));
        }
    }
}

/// Up to `len` bytes at `pos`; fewer only at the end of the file.
fn read_at_most(file: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut bytes[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(got);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn file_of(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        file
    }

    #[tokio::test]
    async fn reads_the_range_cached_or_not() {
        let bytes: Vec<u8> = (0..3 * BLOCK + 77).map(|i| (i % 253) as u8).collect();
        for nowait in [true, false] {
            let mut body = FileBody::new(file_of(&bytes), 5, bytes.len() as u64 - 10);
            body.nowait = nowait;
            let mut got = Vec::new();
            body.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, &bytes[5..bytes.len() - 5], "nowait {nowait}");
        }
    }

    #[tokio::test]
    async fn a_shorter_file_ends_the_body() {
        let bytes = vec![9u8; 1000];
        for nowait in [true, false] {
            let mut body = FileBody::new(file_of(&bytes), 100, 5000);
            body.nowait = nowait;
            let mut got = Vec::new();
            body.read_to_end(&mut got).await.unwrap();
            assert_eq!(got.len(), 900, "nowait {nowait}");
        }
    }
}
