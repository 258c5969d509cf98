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
//!    recorded and the bytes are durable ([`Store::settle`], which runs
//!    while the intent commits): make them appear at the key, atomically
//!    replacing any previous version (a rename; CompleteMultipartUpload).
//!    It returns the store's version of the bytes (an inode; an ETag),
//!    which the index row keeps so that a reader never pairs a row with
//!    other bytes.
//! 3. The row is written. [`Store::landed`] tells, after a crash, whether
//!    step 2 happened.
//!
//! Dropping staged or prepared bytes abandons them (a temp file is deleted;
//! a multipart upload is aborted), so every early exit leaves nothing.
//!
//! Nothing outside this folder names a store: [`open`] picks one from the
//! settings, and what only one store understands (an S3 multipart upload, a
//! staged object) travels as [`Staged::Native`], opaque to everyone else.

mod direct;
mod file_body;
pub mod fs;
mod parts;
mod s3;

use std::any::Any;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tempfile::NamedTempFile;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

use crate::config::{Settings, StorageKind};
use crate::datadir::Layout;
use crate::error::{Error, Result};
use crate::index::{Blob, Index, NewVersion, Record};
use crate::key::Key;

pub use direct::{Direct, Incoming};
pub use parts::Parts;

/// The store the settings name. `index` and `node`, when given, let a
/// store note what it leaves open (S3 multipart uploads) so that a crash
/// leaves nothing the next start does not remove; `open` removes what a
/// previous run left.
pub fn open(settings: &Settings, layout: &Arc<Layout>, noted_in: Option<(Index, String)>) -> Result<Arc<dyn Store>> {
    Ok(match settings.storage {
        StorageKind::Fs => Arc::new(fs::FsStore::new(layout.clone())),
        StorageKind::S3 => Arc::new(s3::S3Store::open(settings, noted_in)?),
    })
}

/// A dataset found in the store itself, for `spillway reindex`.
#[derive(Debug)]
pub struct Found {
    pub key: Key,
    pub size: u64,
    pub version: String,
    /// What the store recorded with the bytes, if it did.
    pub blake3: Option<String>,
    pub content_type: Option<String>,
}

/// Bytes of a complete, verified upload, not yet installed.
pub enum Staged {
    /// A complete local file (spool, staging, a resumable upload): durable
    /// once [`Store::settle`] has run, which the commit does before it is
    /// linked anywhere.
    File(NamedTempFile),
    /// A small body still in memory (object stores take it in one PUT).
    Memory(Vec<Vec<u8>>),
    /// Bytes already in the store, in a form only that store knows.
    Native(Native),
}

/// A store's own staged bytes; dropped, they are abandoned like any other.
pub struct Native(Box<dyn Any + Send>);

impl Native {
    pub(crate) fn new<T: Any + Send>(staged: T) -> Native {
        Native(Box::new(staged))
    }

    /// The staged bytes as the store that made them knows them.
    pub(crate) fn take<T: Any>(self) -> Result<T> {
        self.0.downcast().map(|b| *b).map_err(|_| Error::internal("staged bytes of another store"))
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Staged::File(file) => write!(f, "Staged::File({})", file.path().display()),
            Staged::Memory(chunks) => write!(f, "Staged::Memory({} chunks)", chunks.len()),
            Staged::Native(_) => write!(f, "Staged::Native"),
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
    /// The blob of these bytes is corrupt: the new bytes replace it.
    pub replace_blob: bool,
}

impl Prepared {
    pub fn new(staged: Staged, version: Option<String>) -> Prepared {
        Prepared { staged, version, replace_blob: false }
    }
}

/// What an install left: the store's version of the bytes at the key, and
/// of the blob that keeps them for older versions (on the filesystem the
/// key's file is the blob: the two are one inode).
#[derive(Debug, Clone)]
pub struct Installed {
    pub version: String,
    pub blob: String,
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
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// `fs` or `s3`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Step 1 of the commit (see the module docs), outside the commit lock.
    async fn prepare(&self, key: &Key, staged: Staged, info: &ObjectInfo) -> Result<Prepared>;

    /// Under the commit lock, before the intent: bytes the store already
    /// keeps as a blob (`blob`, the index's row of the same blake3 and size,
    /// if any) take the place of the staged ones, so that they are stored
    /// once. A corrupt blob is never reused: the new bytes replace it.
    /// Like [`Store::install`], it is driven with `Handle::block_on` from
    /// the commit's blocking thread, where it may block.
    async fn reuse(&self, prepared: Prepared, _info: &ObjectInfo, _blob: Option<&Blob>) -> Result<Prepared> {
        Ok(prepared)
    }

    /// Under the commit lock, while the intent commits: makes the prepared
    /// bytes durable, if they are not yet, before [`Store::install`] links
    /// them anywhere. A spool file is written without an fsync (see
    /// `ingest`): this is where it gets one, in parallel with the index's,
    /// and not at all when [`Store::reuse`] dropped it for a kept blob.
    fn settle(&self, _prepared: &Prepared) -> Result<()> {
        Ok(())
    }

    /// Step 2: the bytes appear at `key`, replacing any previous version,
    /// and are kept as their blob. Driven with `Handle::block_on` from a
    /// blocking thread (the commit's, or a repair's): the filesystem store
    /// renames and fsyncs in place rather than hop to another thread.
    async fn install(&self, key: &Key, prepared: Prepared, info: &ObjectInfo) -> Result<Installed>;

    /// After a crash: what is at `key` if the intent's bytes are there
    /// (`current` is the row the index still has).
    async fn landed(&self, intent: &NewVersion, current: Option<&Record>) -> Result<Option<Installed>>;

    /// After a crash that rolled an install back: removes the blob it may
    /// have made, unless the index keeps one of these bytes (`kept`).
    async fn unmade(&self, intent: &NewVersion, kept: Option<&Blob>) -> Result<()>;

    /// A blob's bytes, staged to be installed at a key (a restore).
    async fn stage_blob(&self, blob: &Blob) -> Result<Prepared>;

    /// Opens a blob (an older version's bytes), or the range of it. `None`
    /// when the store holds other bytes under its name.
    async fn open_blob(&self, blob: &Blob, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>>;

    /// Removes a doomed blob's bytes (nothing there is not an error).
    async fn remove_blob(&self, blob: &Blob) -> Result<()>;

    /// Makes the bytes at `key` (`record`, from before versions) a blob;
    /// returns the blob's version.
    async fn adopt(&self, key: &Key, record: &Record) -> Result<String>;

    /// The version at `key`, if anything is there.
    async fn version_of(&self, key: &Key) -> Result<Option<String>>;

    /// Opens the bytes `record` describes, or the range of them. `None` when
    /// the store holds another version (a replace or delete is under way).
    async fn open(&self, record: &Record, key: &Key, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>>;

    /// Removes the dataset's bytes (nothing there is not an error).
    async fn remove(&self, key: &Key) -> Result<()>;

    /// Readiness checks of the store.
    async fn checks(&self) -> Vec<Check>;

    /// For the start-up log: where the bytes live.
    fn describe(&self) -> String;

    /// Whether the bytes live off this node. Then an upload whose key is
    /// known streams into the store ([`Store::stream_to`]) once it outgrows
    /// memory, a small one goes from memory, and no dataset takes room on
    /// this node's disk.
    fn remote(&self) -> bool {
        false
    }

    /// Where the writer thread puts an upload to `key` once it outgrows
    /// memory, when the store is [`Store::remote`].
    async fn stream_to(&self, _key: &Key) -> Result<Box<dyn Streaming>> {
        Err(Error::internal("this store takes uploads through a local file"))
    }

    /// Direct uploads and downloads between clients and the store, if the
    /// store offers them.
    fn direct(&self) -> Option<&dyn Direct> {
        None
    }

    /// Where resumable uploads keep their bytes as they arrive, if the store
    /// keeps them itself (an object store); else they go to a local file.
    fn parts(&self) -> Option<&dyn Parts> {
        None
    }

    /// Removes what failed uploads left in the store while it was away
    /// (the next start would, too). How many went.
    async fn sweep(&self) -> Result<usize> {
        Ok(0)
    }

    /// Every dataset in a [`Store::remote`] store, for `spillway reindex`
    /// (`progress` gets the bytes read to hash what the store did not
    /// record). The filesystem store's datasets are the data directory's
    /// files, which `reindex` walks itself.
    async fn inventory(&self, _progress: &(dyn Fn(u64) + Sync)) -> Result<Vec<Found>> {
        Err(Error::internal("reindex walks the data directory of a local store"))
    }
}

/// Bytes handed to the writer at once.
pub const CHUNK: usize = 256 * 1024;

/// Where the writer thread puts an upload's bytes: a file it appends to and
/// makes durable, or an object store's multipart upload.
pub trait Target: std::io::Write + Send + 'static {
    /// Makes everything written durable (fsync; every part uploaded); a
    /// spool file is only completed, and made durable at its commit
    /// ([`Store::settle`]).
    fn sync(&mut self) -> std::io::Result<()>;
    /// The directory whose volume fills up as bytes arrive, if any.
    fn dir(&self) -> Option<std::path::PathBuf>;
}

/// A [`Target`] in the store itself; finished after [`Target::sync`].
pub trait Streaming: Target {
    fn finish(self: Box<Self>) -> Result<Staged>;
}

impl Target for Box<dyn Streaming> {
    fn sync(&mut self) -> std::io::Result<()> {
        (**self).sync()
    }

    fn dir(&self) -> Option<std::path::PathBuf> {
        (**self).dir()
    }
}
