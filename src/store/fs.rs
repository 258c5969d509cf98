//! The filesystem store: one file per dataset below `data_dir/datasets`,
//! installed by rename (see [`crate::datadir::Layout`]). A file's version is
//! its inode.

use std::fs::File;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::CHUNK;
use super::{Check, ObjectInfo, Prepared, Reader, Staged, Store};
use crate::blocking::blocking;
use crate::datadir::Layout;
use crate::error::{Error, Result};
use crate::index::{NewVersion, Record};
use crate::key::Key;

#[derive(Debug)]
pub struct FsStore {
    pub layout: Arc<Layout>,
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
        let layout = self.layout.clone();
        blocking(move || {
            let file = match staged {
                Staged::File(file) => layout.to_data_volume(file)?,
                Staged::Memory(chunks) => {
                    let mut file = layout.new_staging_file()?;
                    for chunk in chunks {
                        file.write_all(&chunk)?;
                    }
                    file.as_file().sync_all()?;
                    file
                }
                Staged::Native(_) => return Err(Error::internal("staged bytes of another store")),
            };
            let inode = file.as_file().metadata()?.ino();
            Ok(Prepared { staged: Staged::File(file), version: Some(inode.to_string()) })
        })
        .await
    }

    async fn install(&self, key: &Key, prepared: Prepared, _info: &ObjectInfo) -> Result<String> {
        let Staged::File(file) = prepared.staged else {
            return Err(Error::internal("the filesystem store installs prepared files only"));
        };
        let version = prepared.version.unwrap_or_default();
        let (layout, key) = (self.layout.clone(), key.clone());
        blocking(move || layout.place(file, &key)).await?;
        Ok(version)
    }

    async fn landed(&self, intent: &NewVersion, _current: Option<&Record>) -> Result<Option<String>> {
        let version = self.version_of(&intent.key).await?;
        Ok(version.filter(|v| *v == intent.version))
    }

    async fn version_of(&self, key: &Key) -> Result<Option<String>> {
        Ok(self.layout.inode_of(key).map(|inode| inode.to_string()))
    }

    async fn open(&self, record: &Record, key: &Key, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>> {
        let (layout, k, version, size) = (self.layout.clone(), key.clone(), record.version.clone(), record.size);
        let file = blocking(move || -> Result<Option<File>> {
            let Some(file) = layout.open_dataset(&k)? else { return Ok(None) };
            let meta = file.metadata()?;
            Ok((meta.ino().to_string() == version && meta.len() == size).then_some(file))
        })
        .await?;
        let Some(mut file) = file else {
            return Ok(None);
        };
        let (start, len) = range.map_or((0, size), |r| (*r.start(), r.end() - r.start() + 1));
        io::Seek::seek(&mut file, io::SeekFrom::Start(start)).map_err(Error::internal)?;
        let mut file = tokio::fs::File::from_std(file);
        file.set_max_buf_size(CHUNK);
        Ok(Some(Reader(Box::new(file.take(len)))))
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        let (layout, key) = (self.layout.clone(), key.clone());
        blocking(move || layout.remove(&key)).await
    }

    async fn checks(&self) -> Vec<Check> {
        vec![("data directory", writable(&self.layout.staging))]
    }
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
