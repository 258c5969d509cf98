//! Where datasets' bytes live: the [`Store`] seam, with two implementations,
//! the local filesystem ([`fs::FsStore`], the default) and an S3-compatible
//! object store ([`s3::S3Store`]).
//!
//! The node's one commit path drives a store in three steps:
//!
//! 1. [`Store::prepare`], outside the commit lock: make the staged bytes
//!    ready to appear at once (a file moved onto the data volume; a
//!    multipart upload with every part uploaded).
//! 2. [`Store::install`], under the commit lock, after the intent is
//!    recorded: make them appear at the key, atomically replacing any
//!    previous version (a rename; CompleteMultipartUpload). It returns the
//!    store's version of the bytes (an inode; an ETag), which the index row
//!    keeps so that a reader never pairs a row with other bytes.
//! 3. The row is written. [`Store::landed`] tells, after a crash, whether
//!    step 2 happened.
//!
//! Dropping staged or prepared bytes abandons them (a temp file is deleted;
//! a multipart upload is aborted), so every early exit leaves nothing.

pub mod fs;
pub mod s3;

use std::ops::RangeInclusive;
use std::pin::Pin;
use std::task::{Context, Poll};

use tempfile::NamedTempFile;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

use crate::error::Result;
use crate::index::{NewVersion, Record};
use crate::key::Key;

/// Bytes of a complete, verified upload, not yet installed.
pub enum Staged {
    /// A complete, fsynced local file (spool, staging, a resumable upload).
    File(NamedTempFile),
    /// A small body still in memory (object stores take it in one PUT).
    Memory(Vec<Vec<u8>>),
    /// An object store's multipart upload with every part uploaded.
    Multipart(s3::PendingUpload),
    /// A complete object in the store, to be copied to the key: a finished
    /// multipart upload, or a direct upload's incoming object.
    Object(s3::StagedObject),
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Staged::File(file) => write!(f, "Staged::File({})", file.path().display()),
            Staged::Memory(chunks) => write!(f, "Staged::Memory({} chunks)", chunks.len()),
            Staged::Multipart(_) => write!(f, "Staged::Multipart"),
            Staged::Object(_) => write!(f, "Staged::Object"),
        }
    }
}

/// What the store records with the bytes.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub blake3: String,
    pub content_type: String,
}

/// Staged bytes made ready to install, and the version they will have if
/// the store knows it before installing (a file's inode).
pub struct Prepared {
    pub staged: Staged,
    pub version: Option<String>,
}

/// A dataset's bytes (or a range of them), as the store hands them out.
pub struct Reader(pub Box<dyn AsyncRead + Send + Unpin>);

impl AsyncRead for Reader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// Rocket's sized bodies must be seekable; ours have their size set on the
/// response, so Rocket never seeks them.
impl AsyncSeek for Reader {
    fn start_seek(self: Pin<&mut Self>, _: std::io::SeekFrom) -> std::io::Result<()> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "a download is not seekable"))
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}

/// A readiness check's name and its problem, if it fails.
pub type Check = (&'static str, Option<String>);

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `fs` or `s3`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Step 1 of the commit (see the module docs), outside the commit lock.
    async fn prepare(&self, key: &Key, staged: Staged, info: &ObjectInfo) -> Result<Prepared>;

    /// Step 2: the bytes appear at `key`, replacing any previous version.
    /// Returns their version.
    async fn install(&self, key: &Key, prepared: Prepared, info: &ObjectInfo) -> Result<String>;

    /// After a crash: the version at `key` if the intent's bytes are there
    /// (`current` is the row the index still has).
    async fn landed(&self, intent: &NewVersion, current: Option<&Record>) -> Result<Option<String>>;

    /// The version at `key`, if anything is there.
    async fn version_of(&self, key: &Key) -> Result<Option<String>>;

    /// Opens the bytes `record` describes, or the range of them. `None` when
    /// the store holds another version (a replace or delete is under way).
    async fn open(&self, record: &Record, key: &Key, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>>;

    /// Removes the dataset's bytes (nothing there is not an error).
    async fn remove(&self, key: &Key) -> Result<()>;

    /// Readiness checks of the store.
    async fn checks(&self) -> Vec<Check>;
}

/// Bytes handed to the writer at once.
pub const CHUNK: usize = 256 * 1024;

/// Where the writer thread puts an upload's bytes: a file it appends to and
/// makes durable, or an object store's multipart upload.
pub trait Target: std::io::Write + Send + 'static {
    /// Makes everything written durable (fsync; every part uploaded).
    fn sync(&mut self) -> std::io::Result<()>;
    /// The directory whose volume fills up as bytes arrive, if any.
    fn dir(&self) -> Option<std::path::PathBuf>;
}
