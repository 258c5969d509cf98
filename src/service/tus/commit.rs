//! How an upload ends with its last byte: its bytes committed as the
//! dataset at its key, exactly like a PUT, checked first against the
//! blake3 its client named (at creation, in `Upload-Metadata`, or on the
//! last PATCH, in `X-Blake3`).

use std::path::PathBuf;

use rustix::fs::OFlags;
use tempfile::{NamedTempFile, TempPath};

use super::super::Node;
use super::Metadata;
use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::index::{Record, UploadRow};
use crate::ingest::Received;
use crate::key::Key;
use crate::store::Staged;

impl Node {
    /// Commits a complete upload's file as its dataset.
    pub(super) async fn tus_commit(
        &self,
        row: &UploadRow,
        path: PathBuf,
        size: u64,
        hasher: blake3::Hasher,
        sent: Option<blake3::Hash>,
    ) -> Result<Record> {
        let file = self.layout.open_upload(&row.id, OFlags::RDONLY)?;
        let path = TempPath::try_from_path(path).map_err(Error::internal)?;
        let staged = Staged::File(NamedTempFile::from_parts(file, path));
        self.tus_commit_received(row, Received { staged, size, blake3: hasher.finalize() }, sent).await
    }

    /// Commits a complete upload's bytes as its dataset, if they have the
    /// blake3 of the completing PATCH's `X-Blake3` (`sent`); the commit
    /// checks the one given at creation. On failure the upload is gone (its
    /// bytes were consumed), so a later HEAD cannot claim success.
    pub(super) async fn tus_commit_received(
        &self,
        row: &UploadRow,
        received: Received,
        sent: Option<blake3::Hash>,
    ) -> Result<Record> {
        let metadata = Metadata::parse(row.metadata.as_deref())?;
        let key = Key::parse(row.key.as_deref().unwrap_or_default())?;
        let (index, id) = (self.index.clone(), row.id.clone());
        let started = std::time::Instant::now();
        let committed = match sent {
            Some(sent) if sent != received.blake3 => {
                Err(Error::DigestMismatch("the upload's blake3 does not match the X-Blake3 of its last PATCH".into()))
            }
            _ => self.commit(key, received, metadata.upload_meta(&row.owner)).await,
        };
        match self.upload_ended(started, committed) {
            Ok((record, _)) => {
                self.metrics.tus_event("finished");
                blocking(move || index.complete_upload(&id)).await?;
                Ok(record)
            }
            Err(e) => {
                blocking(move || index.delete_upload(&id)).await?;
                Err(e)
            }
        }
    }
}
