//! Walking below the data directory without following a symlink: a key's
//! folders one by one from an open directory, with `O_NOFOLLOW`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{fsync, openat, renameat, statat, unlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use tempfile::{NamedTempFile, TempPath};

use super::SPOOL_PREFIX;
use crate::error::Error;
use crate::key::Key;

/// A key's folders, each opened from the one before (the first is
/// `datasets/`), and the name of its file in the last one.
pub(super) struct KeyPath<'k> {
    pub(super) dirs: Vec<OwnedFd>,
    pub(super) name: &'k str,
    pub(super) key: &'k Key,
}

impl KeyPath<'_> {
    pub(super) fn dir(&self) -> &OwnedFd {
        self.dirs.last().expect("datasets/ is open")
    }

    /// What is at the key's path (not following a symlink), if anything.
    pub(super) fn kind(&self) -> Option<FileType> {
        statat(self.dir(), self.name, AtFlags::SYMLINK_NOFOLLOW).ok().map(|s| FileType::from_raw_mode(s.st_mode))
    }

    pub(super) fn refused(&self) -> Error {
        symlink_refused(&self.key.segments().collect::<Vec<_>>())
    }

    /// Removes now-empty folders above a removed key (best effort: a folder
    /// that just got a new entry stays), through the descriptors held, so
    /// a folder swapped for a symlink meanwhile is not followed.
    pub(super) fn prune_empty_folders(self) {
        let folders: Vec<&str> = self.key.segments().collect();
        for (depth, parent) in self.dirs.iter().enumerate().take(self.dirs.len() - 1).rev() {
            if unlinkat(parent, folders[depth], AtFlags::REMOVEDIR).is_err() {
                break;
            }
            let _ = fsync(parent);
        }
    }
}

/// Opens a directory, not following a symlink at `path`'s last component.
pub(super) fn open_dir<P: rustix::path::Arg>(at: impl AsFd, path: P) -> Result<OwnedFd, Errno> {
    openat(at, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

pub(super) fn is_symlink(dir: impl AsFd, name: &str) -> bool {
    statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
}

pub(super) fn is_plain_name(segment: &str) -> bool {
    let mut components = Path::new(segment).components();
    matches!((components.next(), components.next()), (Some(Component::Normal(_)), None))
}

/// An upload id as a file name (ids are validated by the caller: 32
/// lowercase hex digits, so this stays inside `uploads/`).
pub(super) fn upload_name(id: &str) -> &str {
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "bad upload id");
    id
}

/// Creates a new temp file (`.spillway-<random>`, mode 0600) in `dir` as
/// opened at start, never through a symlink; `path` is that folder's path,
/// for the name the [`NamedTempFile`] carries.
pub(super) fn temp_file_in(dir: &OwnedFd, path: &Path) -> io::Result<NamedTempFile> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    loop {
        let name = format!("{SPOOL_PREFIX}{}", uuid::Uuid::new_v4().simple());
        match openat(dir, name.as_str(), flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => return Ok(NamedTempFile::from_parts(File::from(fd), TempPath::try_from_path(path.join(name))?)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) fn upload_symlink(id: &str) -> Error {
    Error::SymlinkRefused(format!("the file of upload `{id}` is a symbolic link; the node does not follow one"))
}

/// Moves the name `from` over `to`. When both already name one file (the
/// same bytes again, a blob linked to itself) a rename does nothing and
/// leaves `from` (POSIX): it is unlinked then, so the name moves either way.
pub(super) fn rename_over<P: rustix::path::Arg + Copy>(
    from_dir: impl AsFd,
    from: P,
    to_dir: impl AsFd,
    to: &str,
) -> Result<(), Errno> {
    renameat(&from_dir, from, to_dir, to)?;
    match unlinkat(from_dir, from, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn io_error(e: Errno) -> Error {
    Error::from_io(e.into())
}

/// The error for a symlink met at `segments` below `datasets/`.
pub(super) fn symlink_refused(segments: &[&str]) -> Error {
    Error::SymlinkRefused(format!(
        "`{}` below the data directory is a symbolic link; the node does not follow one",
        segments.join("/")
    ))
}

/// Makes a directory's entries durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
