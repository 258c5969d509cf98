//! The bytes on local disk: the directory layout, the one function that
//! joins a key onto the data directory, and the crash-safe install and
//! remove steps of the commit protocol. Everything here blocks; callers run
//! it on blocking threads.
//!
//! Layout below `data_dir`:
//!
//! ```text
//! datasets/     one file per dataset, at the key's path
//! staging/      temp files on the data volume (small uploads, cross-volume copies, trash)
//! spool/        default spool for uploads in flight (`spool_dir` may move it)
//! uploads/      resumable (tus) uploads in progress, one file per upload id
//! index.sqlite  the catalog (rebuildable from datasets/)
//! ```
//!
//! Since a key maps to a path, a key cannot be both a dataset and a "folder"
//! of other datasets: `a` and `a/b` cannot both exist. The second one is
//! refused with `409 key-conflict`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use tempfile::NamedTempFile;

use crate::config::Settings;
use crate::error::Error;
use crate::key::Key;

/// Temp files we create in a spool directory start with this, so that a
/// shared spool directory is only ever swept of our own files.
pub const SPOOL_PREFIX: &str = ".spillway-";

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub datasets: PathBuf,
    pub staging: PathBuf,
    pub spool: PathBuf,
    pub index_file: PathBuf,
    pub uploads: PathBuf,
    /// The spool is on the data volume: spilled files are renamed in place.
    pub spool_on_data_volume: bool,
}

impl Layout {
    /// Creates the directories (if needed) and resolves them to absolute paths.
    pub fn prepare(settings: &Settings) -> io::Result<Layout> {
        fs::create_dir_all(&settings.data_dir)?;
        let root = fs::canonicalize(&settings.data_dir)?;
        let spool = settings.spool_dir();
        fs::create_dir_all(&spool)?;
        let spool = fs::canonicalize(spool)?;
        let datasets = root.join("datasets");
        let staging = root.join("staging");
        fs::create_dir_all(&datasets)?;
        fs::create_dir_all(&staging)?;
        let uploads = root.join("uploads");
        fs::create_dir_all(&uploads)?;
        let spool_on_data_volume = fs::metadata(&spool)?.dev() == fs::metadata(&datasets)?.dev();
        Ok(Layout {
            index_file: root.join("index.sqlite"),
            uploads,
            root,
            datasets,
            staging,
            spool,
            spool_on_data_volume,
        })
    }

    /// The one place a key becomes a path. Every segment must be a plain
    /// file name (the key rules guarantee it; this re-checks), so the result
    /// is always strictly inside `datasets/`.
    pub fn dataset_path(&self, key: &Key) -> PathBuf {
        let mut path = self.datasets.clone();
        for segment in key.segments() {
            let mut components = Path::new(segment).components();
            assert!(
                matches!((components.next(), components.next()), (Some(Component::Normal(_)), None)),
                "key segment {segment:?} is not a plain file name"
            );
            path.push(segment);
        }
        path
    }

    /// The data file of a resumable upload. Ids are validated by the caller
    /// (32 lowercase hex digits), so this stays inside `uploads/`.
    pub fn upload_path(&self, id: &str) -> PathBuf {
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "bad upload id");
        self.uploads.join(id)
    }

    /// The key of a file below `datasets/`, if its path is a valid key.
    pub fn key_of(&self, path: &Path) -> Option<Key> {
        let relative = path.strip_prefix(&self.datasets).ok()?;
        Key::parse(relative.to_str()?).ok()
    }

    pub fn new_spool_file(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new().prefix(SPOOL_PREFIX).tempfile_in(&self.spool)
    }

    pub fn new_staging_file(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new().prefix(SPOOL_PREFIX).tempfile_in(&self.staging)
    }

    /// Removes what a previous run left in the spool and staging directories
    /// (uploads cut off by a crash, trash not yet unlinked). Returns the paths.
    pub fn sweep_leftovers(&self) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for dir in [&self.spool, &self.staging] {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let ours = entry.file_name().to_string_lossy().starts_with(SPOOL_PREFIX);
                if ours && entry.file_type()?.is_file() {
                    fs::remove_file(entry.path())?;
                    removed.push(entry.path());
                }
            }
        }
        Ok(removed)
    }

    /// Spool files in flight or left over (for fsck and tests).
    pub fn spool_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for dir in [&self.spool, &self.staging] {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(SPOOL_PREFIX) {
                    files.push(entry.path());
                }
            }
        }
        Ok(files)
    }

    /// Returns a complete, fsynced temp file that lies on the data volume:
    /// the file itself, or (spooled on another volume) a fsynced copy in
    /// staging, so that [`Layout::place`] never renames across filesystems.
    /// The inode of the result is the inode the dataset will have.
    pub fn to_data_volume(&self, staged: NamedTempFile) -> Result<NamedTempFile, Error> {
        if self.is_on_data_volume(staged.path())? {
            Ok(staged)
        } else {
            self.copy_to_staging(staged)
        }
    }

    /// Renames a file from [`Layout::to_data_volume`] to the key's path,
    /// atomically replacing any previous version, and makes the directory
    /// entry durable.
    pub fn place(&self, staged: NamedTempFile, key: &Key) -> Result<(), Error> {
        let target = self.dataset_path(key);
        self.create_parents(key)?;
        if target.is_dir() {
            return Err(conflict_with_folder(key));
        }
        staged.persist(&target).map_err(|e| Error::from_io(e.error))?;
        fsync_dir(target.parent().unwrap_or(&self.datasets))?;
        Ok(())
    }

    /// The inode of a dataset's file, if it exists.
    pub fn inode_of(&self, key: &Key) -> Option<u64> {
        fs::symlink_metadata(self.dataset_path(key)).ok().filter(|m| m.is_file()).map(|m| m.ino())
    }

    fn is_on_data_volume(&self, path: &Path) -> io::Result<bool> {
        Ok(fs::metadata(path)?.dev() == fs::metadata(&self.datasets)?.dev())
    }

    fn copy_to_staging(&self, spooled: NamedTempFile) -> Result<NamedTempFile, Error> {
        let mut staging = self.new_staging_file()?;
        let mut source = spooled.reopen()?;
        io::copy(&mut source, staging.as_file_mut())?;
        staging.as_file_mut().flush()?;
        staging.as_file().sync_all()?;
        Ok(staging)
    }

    /// Creates the key's parent directories, fsyncing each new entry.
    fn create_parents(&self, key: &Key) -> Result<(), Error> {
        let mut dir = self.datasets.clone();
        let segments: Vec<&str> = key.segments().collect();
        for segment in &segments[..segments.len() - 1] {
            let parent = dir.clone();
            dir.push(segment);
            match fs::create_dir(&dir) {
                Ok(()) => fsync_dir(&parent)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists || e.kind() == io::ErrorKind::NotADirectory => {
                    return Err(Error::Conflict(format!(
                        "`{}` is a dataset, so it cannot also hold `{key}`",
                        parent.join(segment).strip_prefix(&self.datasets).unwrap_or(Path::new(segment)).display()
                    )));
                }
                Err(e) => return Err(Error::from_io(e)),
            }
        }
        Ok(())
    }

    /// Removes a dataset's file: renamed into staging first (atomic, so a
    /// crash leaves either the dataset or a swept leftover), then unlinked,
    /// then empty parent folders are pruned.
    pub fn remove(&self, key: &Key) -> io::Result<()> {
        let target = self.dataset_path(key);
        let trash = self.new_staging_file()?.into_temp_path();
        match fs::rename(&target, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fsync_dir(target.parent().unwrap_or(&self.datasets))?;
        drop(trash);
        self.prune_empty_parents(key);
        Ok(())
    }

    /// Removes now-empty folders above a removed key (best effort: a folder
    /// that just got a new entry stays).
    fn prune_empty_parents(&self, key: &Key) {
        let mut dir = self.dataset_path(key);
        while dir.pop() && dir != self.datasets && dir.starts_with(&self.datasets) {
            if fs::remove_dir(&dir).is_err() {
                break;
            }
            if let Some(parent) = dir.parent() {
                let _ = fsync_dir(parent);
            }
        }
    }

    /// Bytes free for unprivileged writers on the volume holding `path`.
    pub fn free_space(path: &Path) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(path)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
}

/// The data directory's lock: one process (a node, fsck, reindex) at a time.
/// Released by the kernel when the holder exits, however it exits.
#[derive(Debug)]
pub struct DataLock(#[allow(dead_code)] File);

impl DataLock {
    pub fn acquire(layout: &Layout) -> Result<DataLock, Error> {
        let path = layout.root.join("spillway.lock");
        let file =
            fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(Error::internal)?;
        match file.try_lock() {
            Ok(()) => Ok(DataLock(file)),
            Err(fs::TryLockError::WouldBlock) => {
                Err(Error::internal(format!("another spillway process is using {}", layout.root.display())))
            }
            Err(fs::TryLockError::Error(e)) => Err(Error::internal(e)),
        }
    }
}

pub fn conflict_with_folder(key: &Key) -> Error {
    Error::Conflict(format!("`{key}` holds other datasets below it, so it cannot be a dataset itself"))
}

/// Makes a directory's entries durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
