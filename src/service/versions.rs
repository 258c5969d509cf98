//! Versions: listing a key's history, reading and restoring an older
//! version, and freeing the bytes no version refers to any more (after a
//! commit or delete pruned them, by age in the background, or left by a
//! crash). Freeing a blob holds its lock, so no commit can take it up
//! while its bytes go.

use std::sync::Arc;

use super::locks::{Claim, Name};
use super::{Node, UploadMeta, Want};

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::index::{Blob, Record, Version};
use crate::key::Key;
use crate::store::{ObjectInfo, Reader};

/// The error for bytes a scrub found damaged.
pub(super) fn corrupt(key: &Key, number: i64) -> Error {
    Error::CorruptData(format!(
        "the stored bytes of version {number} of `{key}` are damaged (found by a scrub); \
         restore another version or upload the dataset again"
    ))
}

impl Node {
    /// A key's versions, newest first, older than `before`. A key that has
    /// none is not found.
    pub async fn versions(&self, key: &Key, before: Option<i64>, limit: usize) -> Result<Vec<Version>> {
        let (index, k) = (self.index.clone(), key.clone());
        let versions = blocking(move || index.versions(&k, before, limit)).await?;
        if versions.is_empty() && before.is_none() {
            return Err(Error::NotFound(format!("`{key}` has no versions")));
        }
        Ok(versions)
    }

    /// Opens version `number` of `key` like [`Node::open_dataset`]: the
    /// record describes that version's bytes.
    pub async fn open_version(
        &self,
        key: &Key,
        number: i64,
        want: impl Fn(&Record) -> Result<Want>,
    ) -> Result<(Arc<Record>, Want, Option<Reader>)> {
        let (index, k) = (self.index.clone(), key.clone());
        let Some((version, blob)) = blocking(move || index.version(&k, number)).await? else {
            return Err(Error::NotFound(format!("`{key}` has no version {number}")));
        };
        if blob.corrupt {
            return Err(corrupt(key, number));
        }
        let record = Arc::new(Record {
            name: key.file_name().to_owned(),
            path: key.url_path(),
            key: key.to_string(),
            size: version.size,
            blake3: version.blake3,
            content_type: version.content_type,
            created_at: version.created_at.clone(),
            updated_at: version.created_at,
            description: None,
            tags: Vec::new(),
            version: blob.version.clone(),
            number,
            corrupt: false,
        });
        let wanted = want(&record)?;
        let range = match &wanted {
            Want::Nothing => return Ok((record, wanted, None)),
            Want::All => None,
            Want::Range(range) => Some(range.clone()),
        };
        match self.store.open_blob(&blob, range).await? {
            Some(reader) => Ok((record, wanted, Some(reader))),
            // Pruned between the row and the open.
            None => Err(Error::NotFound(format!("`{key}` has no version {number}"))),
        }
    }

    /// Makes version `number` of `key` current again, by a new commit of
    /// its bytes (itself a version, so a restore can be undone). Works for
    /// a key deleted from the catalog too.
    pub async fn restore(&self, key: &Key, number: i64, uploaded_by: Option<String>) -> Result<Record> {
        let (index, k) = (self.index.clone(), key.clone());
        let Some((version, blob)) = blocking(move || index.version(&k, number)).await? else {
            return Err(Error::NotFound(format!("`{key}` has no version {number}")));
        };
        if blob.corrupt {
            return Err(corrupt(key, number));
        }
        let prepared = self.store.stage_blob(&blob).await?;
        let info = ObjectInfo { size: blob.size, blake3: blob.blake3.clone(), content_type: version.content_type };
        let meta = UploadMeta { content_type: Some(info.content_type.clone()), uploaded_by, ..Default::default() };
        let started = std::time::Instant::now();
        let installed = self.install(key.clone(), prepared, info, meta).await;
        self.upload_ended(started, installed).map(|(record, _)| record)
    }

    /// Removes the bytes of blobs no version refers to, then their rows,
    /// each under its blob's lock (the caller holds none). A failure leaves
    /// the row doomed: the next sweep or start retries.
    pub(super) async fn free(&self, doomed: Vec<Blob>) {
        for blob in doomed {
            let freed = async {
                let _held = self.locks.take(&Claim::bytes(Name::blob(&blob)), &self.index).await?;
                let (index, store) = (self.index.clone(), self.store.clone());
                blocking(move || {
                    if !index.confirm_doomed(&blob)? {
                        return Ok(());
                    }
                    tokio::runtime::Handle::current().block_on(store.remove_blob(&blob))?;
                    index.forget_blob(&blob)
                })
                .await
            };
            if let Err(e) = freed.await {
                log::warn!("freeing a blob: {}", e.cause());
            }
        }
    }

    /// Datasets from before versions (their row has no number) become
    /// version 1 of their key, their bytes kept as a blob. Runs in the
    /// background after start, a page at a time under the commit lock (so
    /// no commit changes a key while its bytes are adopted), each row once
    /// per start: one whose bytes cannot be adopted (its file is gone,
    /// which fsck reports) is counted, not retried. How many were adopted.
    pub async fn adopt_unversioned(&self) -> Result<u64> {
        let (mut adopted, mut failed, mut after) = (0u64, 0u64, None::<String>);
        loop {
            // The whole catalog for a page: few rows, once after an upgrade.
            let _held = self.locks.take(&Claim::all(), &self.index).await?;
            let (index, store, cursor) = (self.index.clone(), self.store.clone(), after.clone());
            let (done, missed, last) = blocking(move || {
                let handle = tokio::runtime::Handle::current();
                let page = index.unversioned(cursor.as_deref(), 200)?;
                let (mut done, mut missed) = (0u64, 0u64);
                for record in &page {
                    let Ok(key) = Key::parse(&record.key) else { continue };
                    match handle.block_on(store.adopt(&key, record)) {
                        Ok(blob) => {
                            index.adopt(record, &blob)?;
                            done += 1;
                        }
                        Err(e) => {
                            missed += 1;
                            log::debug!("`{key}` stays without versions: {}", e.cause());
                        }
                    }
                }
                Ok((done, missed, page.last().map(|r| r.key.clone())))
            })
            .await?;
            adopted += done;
            failed += missed;
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        if adopted > 0 {
            log::info!("{adopted} dataset(s) from before versions are now version 1 of their key");
        }
        if failed > 0 {
            log::warn!("{failed} dataset(s) from before versions could not be adopted (their bytes are missing?); run `spillway fsck`");
        }
        Ok(adopted)
    }

    /// Prunes the versions that stopped being current longer ago than
    /// `keep_versions_for`, and frees what a crash or a failed removal left
    /// doomed. Returns how many blobs went.
    pub async fn prune_versions(&self) -> Result<usize> {
        let keep_for = crate::index::Retention::of(&self.settings).keep_for;
        let cutoff = crate::timestamp::unix_now().saturating_sub(keep_for.as_secs().min(i64::MAX as u64) as i64);
        let index = self.index.clone();
        let doomed = blocking(move || {
            index.prune_replaced_before(cutoff)?;
            index.doomed_blobs()
        })
        .await?;
        let freed = doomed.len();
        self.free(doomed).await;
        Ok(freed)
    }
}
