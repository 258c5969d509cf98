//! The filesystem store: one file per dataset below `data_dir/datasets`,
//! installed by rename (see [`crate::datadir::Layout`]). A file's version is
//! its inode.

use std::fs::File;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::{Check, Installed, Native, ObjectInfo, Prepared, Reader, Staged, Store};
use crate::blocking::blocking;
use crate::cache::Cache;
use crate::datadir::Layout;
use crate::error::{Error, Result};
use crate::index::{Blob, NewVersion, Record};
use crate::key::Key;

pub struct FsStore {
    pub layout: Arc<Layout>,
    /// Datasets' files opened recently, by key: a small read then costs no
    /// path walk, open, stat and close (about a tenth of the node's CPU
    /// serving 64 KiB ranges, `perf`). Cleared whenever a file is put at a
    /// key or taken away, so that no deleted file stays open here.
    files: Arc<Cache<OpenFile>>,
}

/// Files held open: a ranged GET of the datasets being read at once.
const OPEN_FILES: usize = 256;

#[derive(Clone)]
struct OpenFile {
    file: Arc<File>,
    inode: u64,
    size: u64,
}

impl OpenFile {
    /// The file the record describes? An inode held open is never reused,
    /// so the same number is the same file.
    fn is(&self, record: &Record) -> bool {
        record.version.parse() == Ok(self.inode) && record.size == self.size
    }
}

impl FsStore {
    pub fn new(layout: Arc<Layout>) -> FsStore {
        FsStore { layout, files: Arc::new(Cache::new(OPEN_FILES)) }
    }
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore").field("layout", &self.layout).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Store for FsStore {
    fn kind(&self) -> &'static str {
        "fs"
    }

    fn describe(&self) -> String {
        format!("files below {}", self.layout.datasets.display())
    }

    async fn prepare(&self, _key: &Key, staged: Staged, _info: &ObjectInfo) -> Result<Prepared> {
        // The usual case, a file already on the data volume, needs only an
        // fstat: no trip to the blocking pool and back.
        if let Staged::File(file) = &staged {
            let meta = file.as_file().metadata()?;
            if self.layout.is_on_data_volume(&meta) {
                return Ok(Prepared::new(staged, Some(meta.ino().to_string())));
            }
        }
        let layout = self.layout.clone();
        blocking(move || {
            let file = match staged {
                // Both made durable by the commit (`settle`).
                Staged::File(file) => layout.copy_to_data_volume(file)?,
                Staged::Memory(chunks) => {
                    let mut file = layout.new_staging_file()?;
                    for chunk in chunks {
                        file.write_all(&chunk)?;
                    }
                    file
                }
                Staged::Native(_) => return Err(Error::internal("staged bytes of another store")),
            };
            let inode = file.as_file().metadata()?.ino();
            Ok(Prepared::new(Staged::File(file), Some(inode.to_string())))
        })
        .await
    }

    async fn reuse(&self, prepared: Prepared, info: &ObjectInfo, blob: Option<&Blob>) -> Result<Prepared> {
        if blob.is_some_and(|b| b.corrupt) {
            return Ok(prepared);
        }
        // On the commit's blocking thread (see `Store::reuse`).
        let Some(kept) = self.layout.open_blob(&info.blake3, info.size)? else {
            return Ok(prepared);
        };
        // The staged copy is dropped (deleted): the blob's inode is the
        // version the key will have.
        let inode = kept.metadata()?.ino();
        Ok(Prepared::new(Staged::Native(Native::new(KeptBlob(kept))), Some(inode.to_string())))
    }

    fn settle(&self, prepared: &Prepared) -> Result<()> {
        if let Staged::File(file) = &prepared.staged {
            crate::failpoint::io("store.settle")?;
            file.as_file().sync_all()?;
        }
        Ok(())
    }

    async fn install(&self, key: &Key, prepared: Prepared, info: &ObjectInfo) -> Result<Installed> {
        let version = prepared.version.unwrap_or_default();
        // On the commit's blocking thread (see `Store::install`).
        let layout = &self.layout;
        let file = match prepared.staged {
            Staged::File(file) => {
                layout.keep_as_blob(&file, &info.blake3, info.size)?;
                file
            }
            Staged::Native(native) => layout.link_blob(native.take::<KeptBlob>()?.0, &info.blake3, info.size)?,
            Staged::Memory(_) => return Err(Error::internal("the filesystem store installs prepared files only")),
        };
        let placed = layout.place(file, key);
        self.files.clear();
        placed?;
        Ok(Installed { blob: version.clone(), version })
    }

    async fn landed(&self, intent: &NewVersion, _current: Option<&Record>) -> Result<Option<Installed>> {
        let version = self.version_of(&intent.key).await?;
        Ok(version.filter(|v| *v == intent.version).map(|v| Installed { blob: v.clone(), version: v }))
    }

    async fn unmade(&self, intent: &NewVersion, kept: Option<&Blob>) -> Result<()> {
        if kept.is_some_and(|b| b.version == intent.version) {
            return Ok(());
        }
        let (layout, v) = (self.layout.clone(), intent.clone());
        blocking(move || layout.remove_blob(&v.blake3, v.size, &v.version)).await
    }

    async fn stage_blob(&self, blob: &Blob) -> Result<Prepared> {
        let file =
            self.open_blob_file(blob).await?.ok_or_else(|| Error::NotFound("the stored bytes are gone".into()))?;
        Ok(Prepared::new(Staged::Native(Native::new(KeptBlob(file))), Some(blob.version.clone())))
    }

    async fn open_blob(&self, blob: &Blob, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>> {
        let Some(file) = self.open_blob_file(blob).await? else { return Ok(None) };
        let size = blob.size;
        blocking(move || reader(file, size, range).map(Some)).await
    }

    async fn remove_blob(&self, blob: &Blob) -> Result<()> {
        let (layout, blob) = (self.layout.clone(), blob.clone());
        blocking(move || layout.remove_blob(&blob.blake3, blob.size, &blob.version)).await
    }

    async fn adopt(&self, key: &Key, record: &Record) -> Result<String> {
        let (layout, key, record) = (self.layout.clone(), key.clone(), record.clone());
        blocking(move || {
            if let Some(blob) = layout.open_blob(&record.blake3, record.size)? {
                return Ok(blob.metadata()?.ino().to_string());
            }
            let file = layout.open_dataset(&key)?.ok_or_else(|| Error::no_dataset(&key))?;
            layout.keep_file_as_blob(&key, &file, &record.blake3, record.size)?;
            Ok(file.metadata()?.ino().to_string())
        })
        .await
    }

    async fn version_of(&self, key: &Key) -> Result<Option<String>> {
        Ok(self.layout.inode_of(key).map(|inode| inode.to_string()))
    }

    async fn open(&self, record: &Record, key: &Key, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>> {
        if let Some(open) = self.files.get(key.as_str()).filter(|open| open.is(record)) {
            return reader(open.file, record.size, range).map(Some);
        }
        let (layout, files, k, record) = (self.layout.clone(), self.files.clone(), key.clone(), record.clone());
        let small = range.as_ref().map_or(record.size, |r| r.end() - r.start() + 1) <= OPEN_INLINE;
        let open = move || -> Result<Option<Reader>> {
            let opened = files.load(k.as_str(), || -> Result<Option<OpenFile>> {
                let Some(file) = layout.open_dataset(&k)? else { return Ok(None) };
                let meta = file.metadata()?;
                let open = OpenFile { file: Arc::new(file), inode: meta.ino(), size: meta.len() };
                Ok(open.is(&record).then_some(open))
            })?;
            opened.map(|open| reader(open.file, record.size, range)).transpose()
        };
        if small {
            // As nginx does: an open, mostly from the dentry cache, costs
            // less here than two thread switches to the blocking pool and
            // back; the body's reads never wait for the disk (`FileBody`).
            open()
        } else {
            blocking(open).await
        }
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        let (layout, key, files) = (self.layout.clone(), key.clone(), self.files.clone());
        blocking(move || {
            let removed = layout.remove(&key);
            files.clear();
            removed
        })
        .await
    }

    async fn checks(&self) -> Vec<Check> {
        vec![("data directory", writable(&self.layout.staging))]
    }
}

/// A blob opened for a key to link to.
struct KeptBlob(File);

impl FsStore {
    /// A blob's file, if the one the index knows is there.
    async fn open_blob_file(&self, blob: &Blob) -> Result<Option<File>> {
        let (layout, blob) = (self.layout.clone(), blob.clone());
        blocking(move || -> Result<Option<File>> {
            let Some(file) = layout.open_blob(&blob.blake3, blob.size)? else { return Ok(None) };
            let meta = file.metadata()?;
            Ok((meta.ino().to_string() == blob.version && meta.len() == blob.size).then_some(file))
        })
        .await
    }
}

/// The largest range whose file is opened on the async worker that asked
/// for it rather than on the blocking pool: for a small read the hop there
/// and back costs more than the open.
const OPEN_INLINE: u64 = 256 * 1024;

/// `len` bytes of a file, or the range of them. The body reads straight
/// into the server's buffer (see `FileBody`): a range read first into a
/// buffer of its own was copied once more, and that buffer's allocation
/// and zeroing cost as much again.
fn reader(file: impl Into<Arc<File>>, size: u64, range: Option<RangeInclusive<u64>>) -> Result<Reader> {
    let (start, len) = range.map_or((0, size), |r| (*r.start(), r.end() - r.start() + 1));
    Ok(Reader(Box::new(super::file_body::FileBody::new(file, start, len))))
}

/// A readiness check: a temp file can be created in `dir`.
pub fn writable(dir: &std::path::Path) -> Option<String> {
    match tempfile::Builder::new().prefix(crate::datadir::SPOOL_PREFIX).tempfile_in(dir) {
        Ok(_) => None,
        Err(e) => {
            // The client sees the kind of failure; the path goes to the log.
            log::warn!("readiness: cannot write in {}: {e}", dir.display());
            Some(format!("cannot write: {}", io::Error::from(e.kind())))
        }
    }
}
