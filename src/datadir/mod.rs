//! The bytes on local disk: the directory layout, the one function that
//! joins a key onto the data directory, and the crash-safe install and
//! remove steps of the commit protocol. Everything here blocks; callers run
//! it on blocking threads.
//!
//! Layout below `data_dir`:
//!
//! ```text
//! datasets/     one file per dataset, at the key's path: a hard link to its blob
//! blobs/        one read-only file per distinct content (see `blobs`)
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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{
    fstat, fsync, mkdirat, openat, renameat, statat, unlinkat, AtFlags, FileType, Mode, OFlags, Stat, CWD,
};
use rustix::io::Errno;
use tempfile::NamedTempFile;

use crate::config::Settings;
use crate::error::Error;
use crate::key::Key;

mod blobs;
mod dirsync;
mod resolve;

pub use resolve::fsync_dir;
use resolve::{
    io_error, is_plain_name, is_symlink, open_dir, rename_over, symlink_refused, temp_file_in, upload_name,
    upload_symlink, KeyPath,
};

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
    pub blobs: PathBuf,
    /// The spool is on the data volume: spilled files are renamed in place.
    pub spool_on_data_volume: bool,
    /// The device of the data volume.
    data_dev: u64,
    /// `datasets/`, `blobs/`, `staging/`, the spool and `uploads/`, opened at start (never through
    /// a symlink): files in them are created, opened, renamed and removed
    /// relative to these, so a folder swapped for a symlink after start is
    /// never followed. What still goes by path: a temp file dropped on an
    /// error path is unlinked by its path (tempfile's `TempPath`), so with
    /// its folder swapped for a symlink meanwhile the unlink misses (the file
    /// stays in the real folder, swept at the next start) or removes a file
    /// of the same random name at the symlink's target; the start-up sweeps
    /// (`sweep_leftovers`, `spool_files`, the orphan-upload sweep) list the
    /// folders by path just after they were opened; and an S3 store rereads
    /// a spool file with `NamedTempFile::reopen` (by path, checked to be the
    /// same inode).
    dirs: Arc<Dirs>,
    /// Folder fsyncs after renames, shared by concurrent commits.
    syncs: Arc<dirsync::DirSyncs>,
}

#[derive(Debug)]
struct Dirs {
    datasets: OwnedFd,
    blobs: OwnedFd,
    staging: OwnedFd,
    spool: OwnedFd,
    uploads: OwnedFd,
}

impl Layout {
    /// Creates the directories (if needed) and resolves them to absolute
    /// paths. None of `datasets/`, `staging/`, `uploads/` and (when it lies
    /// below `data_dir`, as by default) the spool may be a symlink, nor any
    /// folder between `data_dir` and the spool.
    pub fn prepare(settings: &Settings) -> io::Result<Layout> {
        fs::create_dir_all(&settings.data_dir)?;
        let root = fs::canonicalize(&settings.data_dir)?;
        let root_fd = open_dir(CWD, root.as_path())?;
        let below_root = |names: &[&std::ffi::OsStr]| -> io::Result<OwnedFd> {
            let mut dir = open_dir(&root_fd, ".")?;
            let mut path = root.clone();
            for name in names {
                path.push(name);
                match mkdirat(&dir, *name, Mode::from_bits_truncate(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                dir = match open_dir(&dir, *name) {
                    Err(Errno::LOOP | Errno::NOTDIR) if is_symlink(&dir, &name.to_string_lossy()) => {
                        let message = format!("{} is a symlink; the node follows none below data_dir", path.display());
                        return Err(io::Error::other(message));
                    }
                    other => other?,
                };
            }
            Ok(dir)
        };
        let datasets_fd = below_root(&["datasets".as_ref()])?;
        let staging_fd = below_root(&["staging".as_ref()])?;
        let uploads_fd = below_root(&["uploads".as_ref()])?;
        let blobs_fd = below_root(&["blobs".as_ref()])?;
        let configured = settings.spool_dir();
        // The spool below data_dir (by default `data_dir/spool`) is opened
        // one folder at a time from data_dir, never through a symlink.
        let inside: Option<Vec<&std::ffi::OsStr>> = configured.strip_prefix(&settings.data_dir).ok().and_then(|rel| {
            rel.components().map(|c| if let Component::Normal(n) = c { Some(n) } else { None }).collect()
        });
        let (spool, spool_fd) = match inside {
            Some(names) if !names.is_empty() => {
                (names.iter().fold(root.clone(), |p, n| p.join(n)), below_root(&names)?)
            }
            _ => {
                fs::create_dir_all(&configured)?;
                let spool = fs::canonicalize(configured)?;
                let fd = open_dir(CWD, spool.as_path())?;
                (spool, fd)
            }
        };
        let data_dev = rustix::fs::fstat(&datasets_fd)?.st_dev;
        let spool_on_data_volume = rustix::fs::fstat(&spool_fd)?.st_dev == data_dev;
        Ok(Layout {
            index_file: root.join("index.sqlite"),
            uploads: root.join("uploads"),
            blobs: root.join("blobs"),
            datasets: root.join("datasets"),
            staging: root.join("staging"),
            root,
            spool,
            spool_on_data_volume,
            data_dev,
            syncs: Default::default(),
            dirs: Arc::new(Dirs {
                datasets: datasets_fd,
                blobs: blobs_fd,
                staging: staging_fd,
                spool: spool_fd,
                uploads: uploads_fd,
            }),
        })
    }

    /// The one place a key becomes a path: each folder of the key is
    /// opened from `datasets/` by file descriptor, one segment at a time
    /// and never through a symlink, so whatever the key or the disk holds,
    /// the result is strictly inside `datasets/`. With `create`, missing
    /// folders are made (each new entry fsynced); without, a missing folder
    /// is `None`, and so is (with `create` too) a folder that disappeared
    /// between its `mkdirat` and `openat`.
    fn resolve<'k>(&self, key: &'k Key, create: bool) -> Result<Option<KeyPath<'k>>, Error> {
        let segments: Vec<&str> = key.segments().collect();
        let (name, folders) = segments.split_last().expect("a key has a segment");
        // `datasets/` as opened at start: a copy of its descriptor, not a
        // walk of its path again for every key.
        let mut dirs = vec![rustix::io::fcntl_dupfd_cloexec(&self.dirs.datasets, 0).map_err(io_error)?];
        for (depth, segment) in folders.iter().enumerate() {
            assert!(is_plain_name(segment), "key segment {segment:?} is not a plain file name");
            let parent = dirs.last().expect("datasets/ is open");
            let dir = match open_dir(parent, *segment) {
                Err(Errno::NOENT) if create => match mkdirat(parent, *segment, Mode::from_bits_truncate(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {
                        fsync(parent).map_err(io_error)?;
                        open_dir(parent, *segment)
                    }
                    Err(e) => Err(e),
                },
                other => other,
            };
            match dir {
                Ok(dir) => dirs.push(dir),
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::NOTDIR | Errno::LOOP) if is_symlink(parent, segment) => {
                    return Err(symlink_refused(&segments[..=depth]))
                }
                Err(Errno::NOTDIR) if create => {
                    return Err(Error::Conflict(format!(
                        "`{}` is a dataset, so it cannot also hold `{key}`",
                        segments[..=depth].join("/")
                    )))
                }
                Err(Errno::NOTDIR) => return Ok(None),
                Err(e) => return Err(io_error(e)),
            }
        }
        assert!(is_plain_name(name), "key segment {name:?} is not a plain file name");
        Ok(Some(KeyPath { dirs, name, key }))
    }

    /// The dataset's file where it exists (opened for reading, never
    /// through a symlink).
    pub fn open_dataset(&self, key: &Key) -> Result<Option<File>, Error> {
        let Some(path) = self.resolve(key, false)? else { return Ok(None) };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(path.dir(), path.name, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP) => Err(path.refused()),
            Err(e) => Err(io_error(e)),
        }
    }

    /// The data file of a resumable upload. Ids are validated by the caller
    /// (32 lowercase hex digits), so this stays inside `uploads/`.
    pub fn upload_path(&self, id: &str) -> PathBuf {
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "bad upload id");
        self.uploads.join(id)
    }

    /// Opens a resumable upload's file with `flags` (`O_RDONLY`,
    /// `O_WRONLY|O_APPEND`, ...), relative to `uploads/` as opened at start
    /// and never through a symlink (`O_NOFOLLOW`).
    pub fn open_upload(&self, id: &str, flags: OFlags) -> Result<File, Error> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(&self.dirs.uploads, upload_name(id), flags, Mode::from_bits_truncate(0o666)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::LOOP) => Err(upload_symlink(id)),
            // Terminated meanwhile (a final upload checked it first): as
            // when it was terminated before, not a failure of the node.
            Err(Errno::NOENT) if !flags.contains(OFlags::CREATE) => {
                Err(Error::Gone(format!("the bytes of upload `{id}` are gone")))
            }
            Err(e) => Err(Error::from_io(e.into())),
        }
    }

    /// The length of a resumable upload's file (`NotFound` when it is gone).
    pub fn upload_len(&self, id: &str) -> Result<Option<u64>, Error> {
        match statat(&self.dirs.uploads, upload_name(id), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => Err(upload_symlink(id)),
            Ok(stat) => Ok(Some(stat.st_size as u64)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::internal(io::Error::from(e))),
        }
    }

    /// Removes a resumable upload's file (gone already is fine).
    pub fn remove_upload_file(&self, id: &str) -> io::Result<()> {
        match unlinkat(&self.dirs.uploads, upload_name(id), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the entries of `uploads/` durable.
    pub fn sync_uploads_dir(&self) -> io::Result<()> {
        Ok(fsync(&self.dirs.uploads)?)
    }

    /// The key of a file below `datasets/`, if its path is a valid key.
    pub fn key_of(&self, path: &Path) -> Option<Key> {
        let relative = path.strip_prefix(&self.datasets).ok()?;
        Key::parse(relative.to_str()?).ok()
    }

    pub fn new_spool_file(&self) -> io::Result<NamedTempFile> {
        temp_file_in(&self.dirs.spool, &self.spool)
    }

    pub fn new_staging_file(&self) -> io::Result<NamedTempFile> {
        temp_file_in(&self.dirs.staging, &self.staging)
    }

    /// A file of ours in staging, the spool or uploads (by its path) as the
    /// folder opened at start and its name there; any other path as is.
    fn at_of<'p>(&self, path: &'p Path) -> (BorrowedFd<'_>, &'p Path) {
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => (parent, Path::new(name)),
            _ => return (CWD, path),
        };
        if parent == self.staging {
            (self.dirs.staging.as_fd(), name)
        } else if parent == self.spool {
            (self.dirs.spool.as_fd(), name)
        } else if parent == self.uploads {
            (self.dirs.uploads.as_fd(), name)
        } else {
            (CWD, path)
        }
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

    /// Whether a file (by its metadata) lies on the data volume, where a
    /// rename can install it.
    pub fn is_on_data_volume(&self, meta: &std::fs::Metadata) -> bool {
        meta.dev() == self.data_dev
    }

    /// Renames a staged file on the data volume (see
    /// [`Layout::is_on_data_volume`]) to the key's path, atomically
    /// replacing any previous version, and makes the directory entry
    /// durable. A symlink at the key is refused, not replaced: it was not
    /// put there by the node.
    pub fn place(&self, staged: NamedTempFile, key: &Key) -> Result<(), Error> {
        // What is renamed is a name: it must still be the file that was
        // written (a resumable upload's file may have been swapped).
        let (at, name) = self.at_of(staged.path());
        let named = statat(at, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error)?;
        let regular = FileType::from_raw_mode(named.st_mode) == FileType::RegularFile;
        if !regular || named.st_ino != staged.as_file().metadata()?.ino() {
            return Err(Error::SymlinkRefused(format!(
                "the staged file of `{key}` was replaced; nothing is installed"
            )));
        }
        // A folder moved away between its mkdirat and openat, or removed
        // after it was opened and before the rename into it (a concurrent
        // DELETE pruning it once empty: a DELETE of another key below it
        // shares its lock), is opened again a few times; never a panic.
        for _ in 0..5 {
            let Some(path) = self.resolve(key, true)? else { continue };
            match path.kind() {
                Some(FileType::Symlink) => return Err(path.refused()),
                Some(FileType::Directory) => return Err(conflict_with_folder(key)),
                _ => {}
            }
            crate::failpoint::delay_key("place.before_rename", key.as_str());
            match rename_over(at, name, path.dir(), path.name) {
                Ok(()) => {}
                // A removed folder has no links left.
                Err(Errno::NOENT) if fstat(path.dir()).is_ok_and(|dir| dir.st_nlink == 0) => continue,
                Err(e) => return Err(io_error(e)),
            }
            // Renamed away: nothing is left for the guard to delete.
            drop(staged.into_temp_path().keep());
            self.syncs.sync(path.dir())?;
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "a folder of `{key}` kept disappearing while it was created; nothing is installed"
        )))
    }

    /// The inode of a dataset's file, if it exists.
    pub fn inode_of(&self, key: &Key) -> Option<u64> {
        self.stat_of(key).map(|stat| stat.st_ino)
    }

    /// The status of a dataset's file, if it exists and is a plain file.
    pub fn stat_of(&self, key: &Key) -> Option<Stat> {
        let path = self.resolve(key, false).ok()??;
        let stat = statat(path.dir(), path.name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        (FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile).then_some(stat)
    }

    /// A copy in staging of a file spooled on another volume, so that
    /// [`Layout::place`] never renames across filesystems. Its inode is the
    /// one the dataset will have; the commit makes it durable
    /// (`Store::settle`).
    pub fn copy_to_data_volume(&self, spooled: NamedTempFile) -> Result<NamedTempFile, Error> {
        let mut staging = self.new_staging_file()?;
        // Read through the open file, not reopened by path.
        let mut source = spooled.as_file().try_clone()?;
        io::Seek::rewind(&mut source)?;
        io::copy(&mut source, staging.as_file_mut())?;
        staging.as_file_mut().flush()?;
        Ok(staging)
    }

    /// Removes a dataset's file: renamed into staging first (atomic, so a
    /// crash leaves either the dataset or a swept leftover), then unlinked,
    /// then empty parent folders are pruned. A symlink at the key is
    /// refused: removing it is not removing a dataset.
    pub fn remove(&self, key: &Key) -> Result<(), Error> {
        let Some(path) = self.resolve(key, false)? else { return Ok(()) };
        match path.kind() {
            None => return Ok(()),
            Some(FileType::Symlink) => return Err(path.refused()),
            _ => {}
        }
        let trash = self.new_staging_file()?.into_temp_path();
        let (at, name) = self.at_of(&trash);
        match renameat(path.dir(), path.name, at, name) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io_error(e)),
        }
        fsync(path.dir()).map_err(io_error)?;
        // Unlinked in staging as opened at start, not by path.
        match unlinkat(at, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => drop(trash.keep()),
            Err(e) => log::warn!("removing {}: {e}", trash.display()),
        }
        path.prune_empty_folders();
        Ok(())
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
