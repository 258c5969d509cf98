//! How resumable uploads end other than by their last PATCH: concatenated
//! into a final upload, terminated, or swept once expired (and the files a
//! crash left without a row).

use std::io::Read;
use std::path::PathBuf;

use rustix::fs::OFlags;

use super::super::Node;
use super::slots::take;
use super::{is_upload_id, Metadata, UploadInfo};
use crate::access::Caller;
use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::index::UploadRow;
use crate::ingest::{Expected, Received};
use crate::key::Key;
use crate::store::Staged;
use crate::timestamp::unix_now;

impl Node {
    /// `POST /uploads` with `Upload-Concat: final;...`: the partial uploads,
    /// in order, become one dataset; the partials (all `caller`'s) are removed.
    pub(super) async fn tus_concatenate(
        &self,
        mut row: UploadRow,
        parts: &[String],
        key: Key,
        metadata: Metadata,
        caller: &Caller,
    ) -> Result<UploadInfo> {
        let mut total = 0u64;
        let mut stored = 0;
        for part in parts {
            let part_row = self.upload_row(part, caller).await?;
            let offset = self.offset_of(&part_row).await?;
            if part_row.concat != "partial" || part_row.length != Some(offset) {
                return Err(Error::BadRequest(format!("upload `{part}` is not a complete partial upload")));
            }
            total += offset;
            stored += usize::from(part_row.stored_offset.is_some());
        }
        if total > self.spooler.max_size {
            return Err(Error::TooLarge { limit: self.spooler.max_size });
        }
        if stored > 0 {
            if stored < parts.len() {
                return Err(Error::BadRequest("the partial uploads are not all kept in the store".into()));
            }
            return self.concatenate_stored(row, parts, key, metadata, total).await;
        }
        self.spooler.check_space(&self.layout.staging, total)?;
        crate::failpoint::delay_key_async("tus.concat.before_read", key.as_str()).await;
        let (layout, part_ids) = (self.layout.clone(), parts.to_vec());
        let staging = self.layout.new_staging_file()?;
        let received = blocking(move || {
            let mut target = staging;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; crate::store::CHUNK];
            for id in &part_ids {
                let mut part = layout.open_upload(id, OFlags::RDONLY)?;
                loop {
                    let n = part.read(&mut buf).map_err(Error::internal)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    std::io::Write::write_all(&mut target, &buf[..n])?;
                }
            }
            target.as_file().sync_all()?;
            Ok(Received { staged: Staged::File(target), size: total, blake3: hasher.finalize() })
        })
        .await?;
        row.length = Some(total);
        row.completed = true;
        let started = std::time::Instant::now();
        let committed = self.commit(key, received, metadata.upload_meta(&row.owner)).await;
        let (record, _) = self.upload_ended(started, committed)?;
        self.metrics.tus_event("finished");
        let (index, layout, r, used) = (self.index.clone(), self.layout.clone(), row.clone(), parts.to_vec());
        blocking(move || {
            index.create_upload(&r)?;
            for part in &used {
                index.delete_upload(part)?;
                let _ = layout.remove_upload_file(part);
            }
            Ok(())
        })
        .await?;
        for part in parts {
            // A refused PATCH may have left a complete partial's hash.
            self.tus.forget(part);
        }
        Ok(self.info_of(&row, total, Some(record)))
    }

    /// [`Node::tus_concatenate`] of partial uploads kept in the store: their
    /// objects are read back in order and streamed, hashed, into the store
    /// as the new dataset (blake3 cannot join the partials' hashes, whose
    /// bytes do not start at subtree boundaries of the whole).
    async fn concatenate_stored(
        &self,
        mut row: UploadRow,
        parts: &[String],
        key: Key,
        metadata: Metadata,
        total: u64,
    ) -> Result<UploadInfo> {
        let store = self.store.parts().ok_or_else(|| Error::internal("this store keeps no resumable upload"))?;
        let mut body: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(tokio::io::empty());
        for part in parts {
            body = Box::new(tokio::io::AsyncReadExt::chain(body, store.read_kept(part).await?));
        }
        let expected = Expected { length: Some(total), ..Expected::default() };
        let started = std::time::Instant::now();
        let received = self.spooler.spool_to(body, &expected, Some(&key)).await;
        let committed = match received {
            Ok(received) => self.commit(key, received, metadata.upload_meta(&row.owner)).await,
            Err(e) => Err(e),
        };
        let (record, _) = self.upload_ended(started, committed)?;
        self.metrics.tus_event("finished");
        row.length = Some(total);
        row.completed = true;
        let (index, r) = (self.index.clone(), row.clone());
        blocking(move || index.create_upload(&r)).await?;
        for part in parts {
            if let Err(e) = self.remove_stored_now(part).await {
                log::warn!("removing the concatenated partial upload {part}: {}", e.cause());
            }
        }
        Ok(self.info_of(&row, total, Some(record)))
    }

    /// `DELETE /uploads/{id}`: stops any PATCH in progress and removes the
    /// upload's bytes and row.
    pub async fn tus_terminate(&self, id: &str, caller: &Caller) -> Result<()> {
        let row = self.upload_row(id, caller).await?;
        if row.stored_offset.is_some() {
            super::lease::wait_free(&self.index, id, self.tus_lease()).await?;
            if !self.remove_stored(id).await? {
                return Err(Error::UploadInUse);
            }
            self.metrics.tus_event("terminated");
            return Ok(());
        }
        let slot = self.tus.slot(id);
        let (_state, _) = take(&slot).await?;
        self.remove_upload(&row.id).await?;
        self.tus.forget(id);
        self.metrics.tus_event("terminated");
        Ok(())
    }

    pub(super) async fn remove_upload(&self, id: &str) -> Result<()> {
        let (index, layout, id) = (self.index.clone(), self.layout.clone(), id.to_owned());
        blocking(move || {
            layout.remove_upload_file(&id).map_err(Error::internal)?;
            index.delete_upload(&id)?;
            Ok(())
        })
        .await
    }

    /// Removes expired uploads (and their bytes) that no PATCH is writing.
    pub async fn tus_sweep(&self) -> Result<usize> {
        let (index, node) = (self.index.clone(), self.node_id.clone());
        let expired = blocking(move || index.expired_uploads(&node, unix_now())).await?;
        let mut removed = 0;
        for (id, stored) in expired {
            if stored {
                // Any node sweeps these; one being written is left alone.
                if self.remove_stored(&id).await? {
                    self.metrics.tus_event("expired");
                    removed += 1;
                }
                continue;
            }
            let slot = self.tus.slot(&id);
            let Ok(_state) = slot.state.try_lock() else {
                continue;
            };
            self.remove_upload(&id).await?;
            self.tus.forget(&id);
            self.metrics.tus_event("expired");
            removed += 1;
        }
        Ok(removed)
    }

    /// At start: data files of uploads whose row never got written (a crash
    /// between the two steps of a creation) are removed. Only regular files
    /// named like an upload id are ever removed; anything else found in
    /// `uploads/` (a folder, a symlink, an operator's file) is left in place
    /// with a warning naming it, and never stops the start.
    pub fn sweep_orphan_upload_files(&self) -> Result<Vec<PathBuf>> {
        let ids: std::collections::HashSet<String> = self.index.upload_ids(&self.node_id)?.into_iter().collect();
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.layout.uploads).map_err(Error::internal)? {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    log::warn!("reading {}: {e}", self.layout.uploads.display());
                    continue;
                }
            };
            let (path, name) = (entry.path(), entry.file_name());
            let id = name.to_str().filter(|n| is_upload_id(n));
            if id.is_some_and(|id| ids.contains(id)) {
                continue;
            }
            // `DirEntry::file_type` does not follow a symlink.
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            if id.is_none() || !regular {
                log::warn!("{} is not a resumable upload's file; it is left in place", path.display());
                continue;
            }
            match self.layout.remove_upload_file(&name.to_string_lossy()) {
                Ok(()) => removed.push(path),
                Err(e) => log::warn!("removing the orphan upload file {}: {e}", path.display()),
            }
        }
        Ok(removed)
    }
}
