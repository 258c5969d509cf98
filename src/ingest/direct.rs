//! An upload's file (a PUT's spool file, a resumable upload's file) written
//! around the page cache (`O_DIRECT`).
//!
//! A buffered `write()` copies every byte into the page cache, and on this
//! project's machine that copy was most of a big upload's CPU (about 1 s
//! per GiB of the 1.35 a buffered node took, `perf`:
//! `copy_folio_from_iter_atomic`).
//! With `O_DIRECT` the device reads the bytes from our buffer instead. The
//! buffer must be aligned, and so must every write's length and offset, so
//! bytes are gathered into one aligned buffer of [`DIRECT_BUFFER`] bytes
//! and written when it is full; the last, unaligned bytes are written
//! through the page cache before the fsync. Where the filesystem refuses
//! direct I/O (`EINVAL`), the file falls back to ordinary writes for good.
//!
//! Bytes written this way are not in the page cache afterwards: the first
//! read of a new dataset comes from the disk, and an upload no longer
//! pushes other datasets' cached pages out.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use tempfile::NamedTempFile;

use crate::store::Target;

/// Bytes gathered before one direct write: large enough that the device
/// sees few, long writes (1 MiB writes reached 1.1 GB/s here, 4 MiB 1.4),
/// small enough that 16 uploads at once hold little.
pub const DIRECT_BUFFER: usize = 2 * 1024 * 1024;
/// What offsets, lengths and the buffer's address are aligned to: the page
/// size, a multiple of every common logical block size.
const ALIGN: usize = 4096;

/// An open file and the directory it lives in (resumable uploads).
pub struct OpenFile {
    pub file: File,
    pub dir: PathBuf,
}

/// A file an upload's bytes are appended to, and how it is made durable.
pub trait Backing: Send + 'static {
    fn file(&self) -> &File;
    fn sync(&self) -> io::Result<()>;
    fn dir(&self) -> Option<PathBuf>;
}

impl Backing for NamedTempFile {
    fn file(&self) -> &File {
        self.as_file()
    }

    /// A spool file gets its fsync at the commit (`Store::settle`), while
    /// the index records the intent: here it would run alone, before it.
    /// Nothing links the file anywhere before then, and a crash before
    /// then loses nothing acknowledged.
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn dir(&self) -> Option<PathBuf> {
        self.path().parent().map(PathBuf::from)
    }
}

impl Backing for OpenFile {
    fn file(&self) -> &File {
        &self.file
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn dir(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }
}

/// A file written with `O_DIRECT` where the filesystem allows it.
pub struct DirectFile<B> {
    file: B,
    /// Where bytes gather while direct writes are on; `None` once they
    /// are off (or never were), when bytes go straight to the file.
    gather: Option<Gather>,
    /// Bytes in the file: where the next write goes.
    pos: u64,
}

/// An aligned buffer of [`DIRECT_BUFFER`] bytes and how much of it holds
/// bytes not yet written.
struct Gather {
    /// Over-allocated by [`ALIGN`]; the aligned window is found from the
    /// allocation's address each time (it never moves), not kept.
    buf: Vec<u8>,
    filled: usize,
}

impl Gather {
    fn new() -> Gather {
        Gather { buf: vec![0u8; DIRECT_BUFFER + ALIGN], filled: 0 }
    }

    fn window(&mut self) -> &mut [u8] {
        let start = self.buf.as_ptr().align_offset(ALIGN);
        &mut self.buf[start..start + DIRECT_BUFFER]
    }

    /// Drops the first `n` gathered bytes (written), keeping the rest.
    fn consume(&mut self, n: usize) {
        let filled = self.filled;
        self.window().copy_within(n..filled, 0);
        self.filled -= n;
    }
}

impl<B: Backing> DirectFile<B> {
    /// Appends to `file`, which holds `len` bytes, with positioned writes
    /// (its own offset stays where it is). With `direct` false (a small
    /// body, written once), or when `len` is not aligned (a resumed upload
    /// that broke off mid-block), it is written through the page cache.
    pub fn new(file: B, len: u64, direct: bool) -> DirectFile<B> {
        let direct = direct && len.is_multiple_of(ALIGN as u64) && set_direct(file.file(), true).is_ok();
        DirectFile { file, gather: direct.then(Gather::new), pos: len }
    }

    pub fn inner(&self) -> &B {
        &self.file
    }

    /// The file, once [`Target::sync`] has written everything.
    pub fn into_inner(self) -> B {
        debug_assert!(self.gather.is_none(), "bytes may be left unwritten");
        self.file
    }

    /// Writes the gathered bytes whose length is a multiple of [`ALIGN`],
    /// keeping the rest at the buffer's start.
    fn flush_aligned(&mut self) -> io::Result<()> {
        let Some(gather) = &mut self.gather else { return Ok(()) };
        let aligned = gather.filled / ALIGN * ALIGN;
        let mut done = 0;
        while done < aligned {
            match self.file.file().write_at(&gather.window()[done..aligned], self.pos) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    // This filesystem takes no direct writes after all, or a
                    // short write left an unaligned offset: the page cache
                    // takes the rest.
                    gather.consume(done);
                    return self.fall_back();
                }
                Err(e) => return Err(e),
            }
        }
        gather.consume(aligned);
        Ok(())
    }

    /// Turns direct I/O off for good and writes what is gathered through
    /// the page cache (nothing to do once it is off).
    fn fall_back(&mut self) -> io::Result<()> {
        let Some(mut gather) = self.gather.take() else { return Ok(()) };
        set_direct(self.file.file(), false)?;
        let filled = gather.filled;
        self.file.file().write_all_at(&gather.window()[..filled], self.pos)?;
        self.pos += filled as u64;
        Ok(())
    }
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_fd();
    let mut flags = fcntl_getfl(fd)?;
    flags.set(OFlags::DIRECT, on);
    Ok(fcntl_setfl(fd, flags)?)
}

impl<B: Backing> Write for DirectFile<B> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(gather) = &mut self.gather else {
            let n = self.file.file().write_at(data, self.pos)?;
            self.pos += n as u64;
            return Ok(n);
        };
        let (filled, n) = (gather.filled, data.len().min(DIRECT_BUFFER - gather.filled));
        gather.window()[filled..filled + n].copy_from_slice(&data[..n]);
        gather.filled += n;
        if gather.filled == DIRECT_BUFFER {
            self.flush_aligned()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<B: Backing> Target for DirectFile<B> {
    fn sync(&mut self) -> io::Result<()> {
        self.flush_aligned()?;
        // The unaligned tail goes through the page cache, and so does any
        // later read through this open file (a copy to another volume reads
        // it with buffers of any alignment).
        self.fall_back()?;
        self.file.sync()
    }

    fn dir(&self) -> Option<PathBuf> {
        self.file.dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Written in uneven pieces, synced: the file holds exactly the bytes,
    /// whether or not the filesystem under the temp dir takes direct I/O.
    fn round_trip(len: usize, direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = DirectFile::new(NamedTempFile::new_in(dir.path()).unwrap(), 0, direct);
        let data = body(len);
        for piece in data.chunks(100_003) {
            file.write_all(piece).unwrap();
        }
        file.sync().unwrap();
        let mut back = Vec::new();
        file.into_inner().reopen().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "{len} bytes (direct: {direct}) came back different");
    }

    #[test]
    fn sizes_around_the_buffer_and_the_alignment() {
        for len in [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, DIRECT_BUFFER, DIRECT_BUFFER + 1, 3 * DIRECT_BUFFER + 4097] {
            round_trip(len, true);
        }
        round_trip(DIRECT_BUFFER + 5, false);
    }

    /// Writes `len` bytes after a 7-byte prefix the file already holds, at
    /// an offset the kernel refuses for a direct write (EINVAL, as from a
    /// filesystem without direct I/O), and checks every byte came through.
    fn refused_then_fallen_back(len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let temp = NamedTempFile::new_in(dir.path()).unwrap();
        temp.as_file().write_all_at(b"1234567", 0).unwrap();
        let mut file = DirectFile::new(temp, 0, true);
        file.pos = 7;
        let data = body(len);
        file.write_all(&data).unwrap();
        file.sync().unwrap();
        assert!(file.gather.is_none());
        let mut back = Vec::new();
        file.into_inner().reopen().unwrap().read_to_end(&mut back).unwrap();
        assert!(back[..7] == *b"1234567" && back[7..] == data[..], "{len} bytes");
    }

    #[test]
    fn a_refused_direct_write_falls_back_without_losing_bytes() {
        refused_then_fallen_back(DIRECT_BUFFER + 10);
    }

    #[test]
    fn a_direct_write_refused_at_the_sync_falls_back_too() {
        // Fewer bytes than a buffer: the first direct write is the sync's.
        refused_then_fallen_back(3 * ALIGN + 5);
    }

    #[test]
    fn o_direct_is_on_while_writing_and_off_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = DirectFile::new(NamedTempFile::new_in(dir.path()).unwrap(), 0, true);
        let flags = fcntl_getfl(file.file.as_file()).unwrap();
        assert_eq!(file.gather.is_some(), flags.contains(OFlags::DIRECT));
        file.write_all(&body(ALIGN)).unwrap();
        file.sync().unwrap();
        assert!(!fcntl_getfl(file.file.as_file()).unwrap().contains(OFlags::DIRECT));

        // Appending after an unaligned length (a resumed upload that broke
        // off mid-block): through the page cache, after the bytes there.
        let mut file = DirectFile::new(file.into_inner(), ALIGN as u64, true);
        file.write_all(b"abc").unwrap();
        file.sync().unwrap();
        let mut file = DirectFile::new(file.into_inner(), ALIGN as u64 + 3, true);
        assert!(file.gather.is_none());
        file.write_all(b"def").unwrap();
        file.sync().unwrap();
        let mut back = Vec::new();
        file.into_inner().reopen().unwrap().read_to_end(&mut back).unwrap();
        assert!(back[..ALIGN] == body(ALIGN)[..] && back[ALIGN..] == *b"abcdef");
    }
}
