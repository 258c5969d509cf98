//! The S3-compatible store (Garage, MinIO, Ceph RGW, AWS S3), through the
//! `object_store` crate: it signs, retries and speaks multipart for us.
//!
//! Objects live at `{prefix}/datasets/{key}`; direct uploads (presigned
//! PUTs) land at `{prefix}/incoming/{key}` until they are acknowledged. An
//! object's version is its ETag. Uploads through the node stream into a
//! multipart upload (parts of [`crate::config::S3Settings::part_size`],
//! at most `parts_in_flight` per upload, part buffers drawn from a global
//! `part_memory_budget`) at a private `{prefix}/staging/{uuid}` object,
//! aborted on any failure; at the commit, under the commit lock, it is
//! copied into place server-side (one CopyObject, or UploadPartCopy requests
//! past `copy_part_threshold`). A multipart upload is never opened at the
//! key itself: Garage drops an upload still in progress when another
//! version of its key lands, so two writers of one key would break each
//! other. Create-only and compare-and-swap rules are enforced by the index,
//! not the store: Garage, for one, ignores conditional PUTs.

mod blobs;
mod bucket;
mod copy;
mod direct;
mod metadata;
mod multipart;
mod part_copy;
mod parts;
mod staged;
mod store_impl;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt};
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::key::Key;

use super::Found;
use bucket::Bucket;
use metadata::{etag, BLAKE3_META};
use multipart::PendingUpload;
use staged::StagedObject;
use tracker::{Live, Tracker, STAGED_OBJECT};

const MIB: usize = 1 << 20;

#[derive(Debug)]
pub struct S3Store {
    store: Arc<Bucket>,
    prefix: Path,
    bucket: String,
    part_size: usize,
    parts_in_flight: usize,
    /// Part buffers, in MiB, across all uploads.
    part_memory: Arc<Semaphore>,
    /// The budget's size, in MiB.
    part_budget_mib: u32,
    /// Where this node notes its multipart uploads while they are open.
    tracker: Option<Tracker>,
    stage_uploads: bool,
    /// Copies of objects larger than this are made in parts.
    copy_part_threshold: u64,
    /// Noted uploads and staged objects in use right now: the sweeper
    /// leaves these alone and retries the rest (an abort that failed).
    live: Live,
}

/// What only this store stages: it travels as [`crate::store::Native`].
enum S3Staged {
    /// A multipart upload with every part uploaded.
    Multipart(PendingUpload),
    /// A complete private object, to be copied to the key: a finished
    /// multipart upload, or a direct upload's copy.
    Object(StagedObject),
    /// A blob, to be copied to the key (a restore); it stays.
    Blob(object_store::path::Path),
}

impl S3Store {
    /// The store of `settings.s3`. With `noted_in` (the index and this
    /// node's name), open multipart uploads are noted there, and those a
    /// previous run left are aborted now.
    pub fn open(settings: &Settings, noted_in: Option<(Index, String)>) -> Result<S3Store> {
        let tracker = noted_in.map(|(index, node)| Tracker { index, node });
        let store = S3Store::new(settings, tracker)?;
        // Opened on a blocking thread of the node's runtime (or none: fsck).
        let aborted = match tokio::runtime::Handle::try_current() {
            Ok(handle) if store.tracker.is_some() => handle.block_on(store.abort_left_open())?,
            _ => 0,
        };
        if aborted > 0 {
            log::warn!("aborted {aborted} multipart upload(s) a previous run left open");
        }
        Ok(store)
    }

    fn new(settings: &Settings, tracker: Option<Tracker>) -> Result<S3Store> {
        let s3 = &settings.s3;
        let store = Bucket::new(s3)?;
        let part_size = s3.part_size(settings.max_dataset_size.as_u64());
        let budget_mib = (s3.part_memory_budget.as_u64() as usize / MIB).max(part_size / MIB);
        Ok(S3Store {
            store: Arc::new(store),
            prefix: Path::from(s3.prefix.trim_matches('/')),
            bucket: s3.bucket.clone(),
            part_size,
            parts_in_flight: s3.parts_in_flight,
            part_memory: Arc::new(Semaphore::new(budget_mib)),
            part_budget_mib: budget_mib as u32,
            tracker,
            stage_uploads: s3.stage_uploads,
            copy_part_threshold: s3.copy_part_threshold.as_u64(),
            live: Live::default(),
        })
    }

    /// Aborts the multipart uploads and removes the staged objects this
    /// node noted and no longer uses: at start, what a crash left; later,
    /// what an abort could not remove while the store was away. Returns
    /// how many went.
    pub(super) async fn abort_left_open(&self) -> Result<usize> {
        let Some(Tracker { index, node }) = self.tracker.clone() else {
            return Ok(0);
        };
        let noted = {
            let index = index.clone();
            crate::blocking::blocking(move || index.open_multiparts(&node)).await?
        };
        let mut removed = 0;
        for (id, path) in noted {
            if self.live.contains(&id) {
                continue;
            }
            let path = Path::from(path.as_str());
            let done = if id.starts_with(STAGED_OBJECT) {
                self.store.delete(&path).await
            } else {
                self.store.abort_multipart(&path, &id).await
            };
            match done {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_error(e)),
            }
            let index = index.clone();
            crate::blocking::blocking(move || index.forget_multipart(&id)).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Deletes `path` if its version is still `version` (a direct upload
    /// the client has not replaced since).
    pub(super) async fn delete_if_unchanged(&self, path: &Path, version: &str) -> Result<()> {
        match self.head(path).await? {
            Some((_, current, _)) if current == version => self.delete(path).await,
            _ => Ok(()),
        }
    }

    fn under(&self, area: &str, key: &Key) -> Path {
        let mut path = self.prefix.clone().join(area);
        for segment in key.segments() {
            path = path.join(segment);
        }
        path
    }

    /// Where a dataset's object lives.
    pub(super) fn object(&self, key: &Key) -> Path {
        self.under("datasets", key)
    }

    /// Where an upload's multipart upload is opened: a fresh private
    /// staging object, or (`stage_uploads = false`) the key's object.
    fn upload_location(&self, key: &Key) -> Path {
        if self.stage_uploads {
            self.prefix.clone().join("staging").join(uuid::Uuid::new_v4().simple().to_string())
        } else {
            self.object(key)
        }
    }

    /// Where a direct (presigned) upload lands before it is acknowledged.
    pub(super) fn incoming(&self, key: &Key) -> Path {
        self.under("incoming", key)
    }

    fn key_of(&self, path: &Path) -> Option<Key> {
        let datasets = self.prefix.clone().join("datasets");
        let parts: Vec<String> = path
            .prefix_match(&datasets)?
            .map(|part| percent_encoding::percent_decode_str(part.as_ref()).decode_utf8_lossy().into_owned())
            .collect();
        Key::parse(&parts.join("/")).ok()
    }

    /// A presigned URL for `method` on `path`.
    pub(super) async fn presign(&self, method: &str, path: &Path, expires_in: Duration) -> Result<String> {
        let method = method.parse().map_err(Error::internal)?;
        let url = self.store.signed_url(method, path, expires_in).await.map_err(s3_error)?;
        Ok(url.to_string())
    }

    /// Size and content type of an object, if it exists.
    pub(super) async fn head(&self, path: &Path) -> Result<Option<(u64, String, Option<String>)>> {
        let options = GetOptions { head: true, ..Default::default() };
        match self.store.get_opts(path, options).await {
            Ok(result) => {
                let version = etag(result.meta.e_tag.as_deref());
                let content_type = result.attributes.get(&Attribute::ContentType).map(|v| v.to_string());
                Ok(Some((result.meta.size, version, content_type)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(e)),
        }
    }

    /// Reads an object through, hashing it with blake3 (on a blocking
    /// thread, chunk by chunk). Returns the hash and the size read.
    pub(super) async fn hash_object(&self, path: &Path) -> Result<(blake3::Hash, u64)> {
        let result = self.store.get(path).await.map_err(s3_error)?;
        let mut stream = result.into_stream();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        // Hashed a MiB or more at a time on a blocking thread, not per
        // network frame.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0usize;
        loop {
            let chunk = stream.try_next().await.map_err(s3_error)?;
            let end = chunk.is_none();
            if let Some(chunk) = chunk {
                size += chunk.len() as u64;
                batched += chunk.len();
                batch.push(chunk);
            }
            if batched >= MIB || (end && !batch.is_empty()) {
                let chunks = std::mem::take(&mut batch);
                batched = 0;
                hasher = tokio::task::spawn_blocking(move || {
                    for chunk in &chunks {
                        hasher.update(chunk);
                    }
                    hasher
                })
                .await
                .map_err(Error::internal)?;
            }
            if end {
                return Ok((hasher.finalize(), size));
            }
        }
    }

    /// Every dataset object in the bucket, with what its metadata says
    /// (reindex).
    pub(super) async fn list_datasets(&self) -> Result<Vec<Found>> {
        let datasets = self.prefix.clone().join("datasets");
        let objects: Vec<_> = self.store.list(Some(&datasets)).try_collect().await.map_err(s3_error)?;
        let mut found = Vec::with_capacity(objects.len());
        for object in objects {
            let Some(key) = self.key_of(&object.location) else {
                log::warn!("reindex: skipping object `{}`: not a valid key", object.location);
                continue;
            };
            let options = GetOptions { head: true, ..Default::default() };
            let head = self.store.get_opts(&object.location, options).await.map_err(s3_error)?;
            found.push(Found {
                key,
                size: head.meta.size,
                version: etag(head.meta.e_tag.as_deref()),
                blake3: head.attributes.get(&Attribute::Metadata(BLAKE3_META.into())).map(|v| v.to_string()),
                content_type: head.attributes.get(&Attribute::ContentType).map(|v| v.to_string()),
            });
        }
        Ok(found)
    }

    pub(super) async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }
}

/// S3 failures for the client: a missing object is 404, anything else means
/// the store cannot serve us now (503 with Retry-After); the cause, which
/// may hold the store's internals, goes to the log only.
pub(super) fn s3_error(e: object_store::Error) -> Error {
    match &e {
        object_store::Error::NotFound { .. } => {
            log::warn!("object store: {e}");
            Error::NotFound("the dataset's object is missing in the store".into())
        }
        _ => {
            log::warn!("object store: {e}");
            Error::Unavailable("the object store", e.to_string())
        }
    }
}
