//! `blobs/`: one file per distinct content, named by its blake3 and size
//! (`blobs/ab/abcd….SIZE`), read-only. A key's current file in `datasets/`
//! is a hard link to its blob, so identical bytes take the room of one
//! copy whatever keys and versions refer to them, and an older version is
//! read from its blob. A blob is never edited in place: new bytes for a
//! name (a blob found corrupt, uploaded again) are renamed over it.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use rustix::fs::{fchmod, fsync, linkat, mkdirat, openat, statat, unlinkat, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use tempfile::{NamedTempFile, TempPath};

use super::resolve::{io_error, open_dir, rename_over};
use super::{Layout, SPOOL_PREFIX};
use crate::error::Error;
use crate::key::Key;

/// Stored files are read-only: an edit in place would change every key
/// and version that shares the bytes.
const READ_ONLY: u32 = 0o444;

/// A blob's folder and file name.
fn blob_name(blake3: &str, size: u64) -> Result<(&str, String), Error> {
    // Lowercase, as blake3 writes it: the name must be the one hex form.
    let valid = blake3::Hash::from_hex(blake3).is_ok() && !blake3.bytes().any(|b| b.is_ascii_uppercase());
    if !valid {
        return Err(Error::internal(format!("not a blake3 hex digest: {blake3:?}")));
    }
    Ok((&blake3[..2], format!("{blake3}.{size}")))
}

impl Layout {
    /// The blob folder `sub` below `blobs/`, made if missing.
    fn blob_folder(&self, sub: &str, create: bool) -> Result<Option<OwnedFd>, Error> {
        match open_dir(&self.dirs.blobs, sub) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) if create => {
                match mkdirat(&self.dirs.blobs, sub, Mode::from_bits_truncate(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => fsync(&self.dirs.blobs).map_err(io_error)?,
                    Err(e) => return Err(io_error(e)),
                }
                open_dir(&self.dirs.blobs, sub).map(Some).map_err(io_error)
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// The blob of these bytes, opened for reading, if it exists.
    pub fn open_blob(&self, blake3: &str, size: u64) -> Result<Option<File>, Error> {
        let (sub, name) = blob_name(blake3, size)?;
        let Some(folder) = self.blob_folder(sub, false)? else { return Ok(None) };
        match openat(&folder, name.as_str(), OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Makes a staged file (complete, settled, on the data volume) the blob
    /// of its bytes: read-only, linked at the blob's name (replacing what
    /// was there), the entry made durable. The staged file keeps its name.
    pub fn keep_as_blob(&self, staged: &NamedTempFile, blake3: &str, size: u64) -> Result<(), Error> {
        let (at, staged_name) = self.at_of(staged.path());
        self.link_as_blob(at, staged_name, staged.as_file(), blake3, size)
    }

    /// Makes a dataset's file from before versions its blob (read-only).
    pub fn keep_file_as_blob(&self, key: &Key, file: &File, blake3: &str, size: u64) -> Result<(), Error> {
        let path = self.resolve(key, false)?.ok_or_else(|| Error::no_dataset(key))?;
        self.link_as_blob(path.dir(), path.name, file, blake3, size)
    }

    fn link_as_blob(
        &self,
        at: impl AsFd,
        at_name: impl rustix::path::Arg,
        file: &File,
        blake3: &str,
        size: u64,
    ) -> Result<(), Error> {
        let (sub, name) = blob_name(blake3, size)?;
        fchmod(file, Mode::from_bits_truncate(READ_ONLY)).map_err(io_error)?;
        let folder = self.blob_folder(sub, true)?.expect("created");
        // The second name is made in staging, where the start-up sweep
        // looks: a crash before the rename must not leave it in blobs/.
        let temp = format!("{SPOOL_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let staging = &self.dirs.staging;
        linkat(at, at_name, staging, temp.as_str(), AtFlags::empty()).map_err(io_error)?;
        crate::failpoint::hold("blobs.link.before_rename");
        if let Err(e) = rename_over(staging, &temp, &folder, &name) {
            let _ = unlinkat(staging, temp.as_str(), AtFlags::empty());
            return Err(io_error(e));
        }
        Ok(self.syncs.sync(&folder)?)
    }

    /// A new name in staging for a blob, to be placed at a key with
    /// [`Layout::place`] (the blob itself keeps its name).
    pub fn link_blob(&self, blob: File, blake3: &str, size: u64) -> Result<NamedTempFile, Error> {
        let (sub, name) = blob_name(blake3, size)?;
        let folder =
            self.blob_folder(sub, false)?.ok_or_else(|| Error::NotFound("the stored bytes are gone".into()))?;
        let temp = format!("{SPOOL_PREFIX}{}", uuid::Uuid::new_v4().simple());
        linkat(&folder, name.as_str(), &self.dirs.staging, temp.as_str(), AtFlags::empty()).map_err(|e| match e {
            Errno::NOENT => Error::NotFound("the stored bytes are gone".into()),
            e => io_error(e),
        })?;
        let path = TempPath::try_from_path(self.staging.join(&temp)).map_err(Error::internal)?;
        let linked = NamedTempFile::from_parts(blob, path);
        let (at, linked_name) = self.at_of(linked.path());
        let stat = statat(at, linked_name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error)?;
        if stat.st_ino != linked.as_file().metadata()?.ino() {
            return Err(Error::internal("the blob changed while it was linked"));
        }
        Ok(linked)
    }

    /// Removes a blob whose inode is `inode` (a newer file at its name is
    /// left alone).
    pub fn remove_blob(&self, blake3: &str, size: u64, inode: &str) -> Result<(), Error> {
        let (sub, name) = blob_name(blake3, size)?;
        let Some(folder) = self.blob_folder(sub, false)? else { return Ok(()) };
        match statat(&folder, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if stat.st_ino.to_string() == inode => {}
            Ok(_) | Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_error(e)),
        }
        match unlinkat(&folder, name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => fsync(&folder).map_err(io_error),
            Err(e) => Err(io_error(e)),
        }
    }
}
