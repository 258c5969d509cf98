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
//! copied into place server-side. A multipart upload is never opened at the
//! key itself: Garage drops an upload still in progress when another
//! version of its key lands, so two writers of one key would break each
//! other. Create-only and compare-and-swap rules are enforced by the index,
//! not the store: Garage, for one, ignores conditional PUTs.

use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, RetryConfig,
};
use tempfile::NamedTempFile;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::{Check, ObjectInfo, Prepared, Reader, Staged, Store};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::index::{Index, NewVersion, Record};
use crate::key::Key;

/// The user metadata key (`x-amz-meta-blake3`) holding the blake3 of the
/// object's bytes, when it was known as the object was written.
const BLAKE3_META: &str = "blake3";
/// The user metadata key (`x-amz-meta-size`) holding the size in bytes.
const SIZE_META: &str = "size";
const MIB: usize = 1 << 20;

/// The bucket through object_store, plus the same pooled HTTP client for
/// the one call object_store lacks (a CopyObject that replaces metadata).
#[derive(Debug)]
struct Bucket {
    api: AmazonS3,
    http: reqwest::Client,
}

impl std::ops::Deref for Bucket {
    type Target = AmazonS3;

    fn deref(&self) -> &AmazonS3 {
        &self.api
    }
}

/// Hands object_store our client instead of one it would build itself.
#[derive(Debug)]
struct SharedClient(reqwest::Client);

impl object_store::client::HttpConnector for SharedClient {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}

#[derive(Debug)]
pub struct S3Store {
    store: Arc<Bucket>,
    prefix: Path,
    bucket: String,
    part_size: usize,
    parts_in_flight: usize,
    /// Part buffers, in MiB, across all uploads.
    part_memory: Arc<Semaphore>,
    /// Where this node notes its multipart uploads while they are open.
    tracker: Option<Tracker>,
    stage_uploads: bool,
    /// Noted uploads and staged objects in use right now: the sweeper
    /// leaves these alone and retries the rest (an abort that failed).
    live: Live,
}

/// The tracker ids in use in this process.
#[derive(Debug, Clone, Default)]
struct Live(Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl Live {
    fn hold(&self, id: String) -> LiveGuard {
        self.0.lock().expect("live set").insert(id.clone());
        LiveGuard { live: self.clone(), id }
    }

    fn contains(&self, id: &str) -> bool {
        self.0.lock().expect("live set").contains(id)
    }
}

/// Removes its id from the live set when dropped.
struct LiveGuard {
    live: Live,
    id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.0.lock().expect("live set").remove(&self.id);
    }
}

/// Multipart uploads in flight are noted in the index (with the node's
/// name), so that those a crash left open are aborted at the next start:
/// their parts would otherwise sit in the bucket, unseen and paid for.
#[derive(Clone)]
pub struct Tracker {
    pub index: Index,
    pub node: String,
}

impl std::fmt::Debug for LiveGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveGuard({})", self.id)
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracker({})", self.node)
    }
}

impl Tracker {
    async fn note(&self, id: &str, path: &Path) -> Result<()> {
        let (index, node, id, path) = (self.index.clone(), self.node.clone(), id.to_owned(), path.to_string());
        crate::blocking::blocking(move || index.note_multipart(&id, &path, &node)).await
    }

    async fn forget(&self, id: &str) -> Result<()> {
        let (index, id) = (self.index.clone(), id.to_owned());
        crate::blocking::blocking(move || index.forget_multipart(&id)).await
    }

    /// The upload became a staged object: noted as `object:{path}` now.
    async fn completed(&self, id: &str, path: &Path) -> Result<()> {
        let (index, node, id, path) = (self.index.clone(), self.node.clone(), id.to_owned(), path.to_string());
        crate::blocking::blocking(move || {
            index.forget_multipart(&id)?;
            index.note_multipart(&format!("{STAGED_OBJECT}{path}"), &path, &node)
        })
        .await
    }
}

/// How the tracker notes a staged object (not a multipart upload).
const STAGED_OBJECT: &str = "object:";

impl S3Store {
    pub fn new(settings: &Settings, tracker: Option<Tracker>) -> Result<S3Store> {
        let s3 = &settings.s3;
        // One pooled client for object_store and for our CopyObject, so
        // both trust the same (the operating system's) certificates.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::internal(format!("cannot set up the HTTP client: {e}")))?;
        let mut builder = AmazonS3Builder::new()
            .with_region(&s3.region)
            .with_bucket_name(&s3.bucket)
            .with_virtual_hosted_style_request(!s3.path_style)
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .with_http_connector(SharedClient(http.clone()))
            // A store that is down answers 503 soon, rather than after the
            // crate's default three minutes of retries.
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..Default::default() });
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &s3.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &s3.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| Error::internal(format!("the S3 settings do not work: {e}")))?;
        let part_size = s3.part_size(settings.max_dataset_size.as_u64());
        let budget_mib = (s3.part_memory_budget.as_u64() as usize / MIB).max(part_size / MIB);
        Ok(S3Store {
            store: Arc::new(Bucket { api: store, http }),
            prefix: Path::from(s3.prefix.trim_matches('/')),
            bucket: s3.bucket.clone(),
            part_size,
            parts_in_flight: s3.parts_in_flight,
            part_memory: Arc::new(Semaphore::new(budget_mib)),
            tracker,
            stage_uploads: s3.stage_uploads,
            live: Live::default(),
        })
    }

    /// Aborts the multipart uploads and removes the staged objects this
    /// node noted and no longer uses: at start, what a crash left; later,
    /// what an abort could not remove while the store was away. Runs on a
    /// blocking thread. Returns how many went.
    pub fn abort_left_open(&self, index: &Index, node: &str) -> Result<usize> {
        let handle = tokio::runtime::Handle::current();
        let mut removed = 0;
        for (id, path) in index.open_multiparts(node)? {
            if self.live.contains(&id) {
                continue;
            }
            let path = Path::from(path.as_str());
            let done = if id.starts_with(STAGED_OBJECT) {
                handle.block_on(self.store.delete(&path))
            } else {
                handle.block_on(self.store.abort_multipart(&path, &id))
            };
            match done {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_error(e)),
            }
            index.forget_multipart(&id)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// A private copy of `from` (a direct upload's incoming object), made
    /// server-side: what the node then checks and hashes is exactly what it
    /// installs, whatever the client does to `from` meanwhile. `None` when
    /// `from` is gone (another acknowledge took it).
    pub async fn stage_copy(&self, from: &Path) -> Result<Option<(StagedObject, u64)>> {
        let path = self.prefix.clone().join("staging").join(uuid::Uuid::new_v4().simple().to_string());
        let noted = format!("{STAGED_OBJECT}{path}");
        if let Some(tracker) = &self.tracker {
            tracker.note(&noted, &path).await?;
        }
        let object = StagedObject {
            path: Some(path.clone()),
            store: self.store.clone(),
            tracker: self.tracker.clone(),
            _live: Some(self.live.hold(noted)),
        };
        match self.store.copy(from, &path).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s3_error(e)),
        }
        let size = self.store.head(&path).await.map_err(s3_error)?.size;
        Ok(Some((object, size)))
    }

    /// Deletes `path` if its version is still `version` (a direct upload
    /// the client has not replaced since).
    pub async fn delete_if_unchanged(&self, path: &Path, version: &str) -> Result<()> {
        match self.head(path).await? {
            Some((_, current, _)) if current == version => self.delete(path).await,
            _ => Ok(()),
        }
    }

    /// Opens a multipart upload at `location`, noted by the tracker.
    async fn open_multipart(&self, location: Path, attributes: Attributes) -> Result<Multipart> {
        let options = PutMultipartOptions { attributes, ..Default::default() };
        let id = self.store.create_multipart_opts(&location, options).await.map_err(s3_error)?;
        let upload = Multipart {
            store: self.store.clone(),
            location,
            _live: self.live.hold(id.clone()),
            id,
            tracker: self.tracker.clone(),
        };
        if let Some(tracker) = &self.tracker {
            if let Err(e) = tracker.note(&upload.id, &upload.location).await {
                abort(upload).await;
                return Err(e);
            }
        }
        Ok(upload)
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn under(&self, area: &str, key: &Key) -> Path {
        let mut path = self.prefix.clone().join(area);
        for segment in key.segments() {
            path = path.join(segment);
        }
        path
    }

    /// Where a dataset's object lives.
    pub fn object(&self, key: &Key) -> Path {
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
    pub fn incoming(&self, key: &Key) -> Path {
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

    async fn part_permit(&self) -> OwnedSemaphorePermit {
        self.part_memory
            .clone()
            .acquire_many_owned((self.part_size / MIB) as u32)
            .await
            .expect("the part semaphore is never closed")
    }

    /// Starts a multipart upload at the key's object, to be fed while the
    /// body streams. Nothing appears at the key until the commit completes it.
    pub async fn stream_to(&self, key: &Key) -> Result<PartSink> {
        let upload = self.open_multipart(self.upload_location(key), Attributes::new()).await?;
        let (tx, rx) = mpsc::channel(1);
        let (done_tx, done) = oneshot::channel();
        let in_flight = self.parts_in_flight;
        tokio::spawn(async move {
            let _ = done_tx.send(upload_parts(upload, rx, in_flight).await);
        });
        Ok(PartSink {
            buf: Vec::new(),
            permit: None,
            part_size: self.part_size,
            tx: Some(tx),
            done: Some(done),
            pending: None,
            memory: self.part_memory.clone(),
            handle: tokio::runtime::Handle::current(),
        })
    }

    /// Uploads a complete local file as a multipart upload (not completed).
    async fn upload_file(&self, key: &Key, file: NamedTempFile, info: &ObjectInfo) -> Result<PendingUpload> {
        let upload = self.open_multipart(self.upload_location(key), attributes(info)).await?;
        let (tx, rx) = mpsc::channel(1);
        let uploader = tokio::spawn(upload_parts(upload, rx, self.parts_in_flight));
        let mut reader = tokio::fs::File::from_std(file.reopen().map_err(Error::internal)?);
        loop {
            let permit = self.part_permit().await;
            let mut part = Vec::with_capacity(self.part_size);
            (&mut reader).take(self.part_size as u64).read_to_end(&mut part).await.map_err(Error::internal)?;
            if part.is_empty() {
                break;
            }
            if tx.send(Part::Data(part.into(), permit)).await.is_err() {
                break;
            }
        }
        let _ = tx.send(Part::Finish).await;
        drop(tx);
        uploader.await.map_err(|e| Error::internal(format!("part uploader failed: {e}")))?
    }

    /// A presigned URL for `method` on `path`.
    pub async fn presign(&self, method: &str, path: &Path, expires_in: Duration) -> Result<String> {
        let method = method.parse().map_err(Error::internal)?;
        let url = self.store.signed_url(method, path, expires_in).await.map_err(s3_error)?;
        Ok(url.to_string())
    }

    /// Size and content type of an object, if it exists.
    pub async fn head(&self, path: &Path) -> Result<Option<(u64, String, Option<String>)>> {
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
    pub async fn hash_object(&self, path: &Path) -> Result<(blake3::Hash, u64)> {
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
    pub async fn list_datasets(&self) -> Result<Vec<Found>> {
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

    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }
}

/// Content type and blake3 as object attributes.
fn attributes(info: &ObjectInfo) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, info.content_type.clone().into());
    attributes.insert(Attribute::Metadata(BLAKE3_META.into()), info.blake3.clone().into());
    attributes.insert(Attribute::Metadata(SIZE_META.into()), info.size.to_string().into());
    attributes
}

/// An ETag without quotes or weakness marker: the version we keep.
fn etag(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or_default().trim();
    raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"').to_owned()
}

/// S3 failures for the client: a missing object is 404, anything else means
/// the store cannot serve us now (503 with Retry-After); the cause, which
/// may hold the store's internals, goes to the log only.
/// An error of a part upload or a completion. Its upload gone means it was
/// dropped by the store: Garage drops an unfinished multipart upload of a key
/// when another write to that key lands (with `stage_uploads = false`).
fn multipart_error(e: object_store::Error) -> Error {
    match &e {
        object_store::Error::NotFound { .. } => {
            log::warn!("object store dropped a multipart upload: {e}");
            Error::Superseded
        }
        _ => s3_error(e),
    }
}

pub fn s3_error(e: object_store::Error) -> Error {
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

enum Part {
    Data(Bytes, OwnedSemaphorePermit),
    Finish,
}

/// An open multipart upload: where, its id, and who noted it.
struct Multipart {
    store: Arc<Bucket>,
    location: Path,
    id: String,
    tracker: Option<Tracker>,
    _live: LiveGuard,
}

/// Uploads parts as they come, at most `in_flight` at once. The upload is
/// aborted unless every part was sent and uploaded.
async fn upload_parts(upload: Multipart, mut rx: mpsc::Receiver<Part>, in_flight: usize) -> Result<PendingUpload> {
    let mut pending = PendingUpload { upload: Some(upload), parts: Vec::new() };
    let mut running = FuturesUnordered::new();
    let mut finished = false;
    let mut next = 0usize;
    while let Some(part) = rx.recv().await {
        let (data, permit) = match part {
            Part::Data(data, permit) => (data, permit),
            Part::Finish => {
                finished = true;
                break;
            }
        };
        while running.len() >= in_flight {
            if let Some(result) = running.next().await {
                let (idx, part): (usize, PartId) = result?;
                pending.set_part(idx, part);
            }
        }
        let upload = pending.upload.as_ref().expect("the upload is live");
        let (store, location, id, idx) = (upload.store.clone(), upload.location.clone(), upload.id.clone(), next);
        next += 1;
        running.push(async move {
            let result = store.put_part(&location, &id, idx, PutPayload::from(data)).await.map_err(multipart_error);
            drop(permit);
            result.map(|part| (idx, part))
        });
    }
    while let Some(result) = running.next().await {
        let (idx, part) = result?;
        pending.set_part(idx, part);
    }
    if !finished {
        // The writer went away: the upload was abandoned; `pending` aborts.
        return Err(Error::internal("upload abandoned"));
    }
    Ok(pending)
}

/// A multipart upload whose parts are all uploaded. Dropped without
/// [`PendingUpload::complete`], it is aborted, so no parts are orphaned.
pub struct PendingUpload {
    upload: Option<Multipart>,
    parts: Vec<Option<PartId>>,
}

impl PendingUpload {
    fn set_part(&mut self, idx: usize, part: PartId) {
        if self.parts.len() <= idx {
            self.parts.resize(idx + 1, None);
        }
        self.parts[idx] = Some(part);
    }

    /// Completes the upload; it is aborted if that fails.
    async fn complete_parts(mut self) -> Result<(Multipart, String)> {
        let upload = self.upload.take().expect("the upload is live");
        let parts: Option<Vec<PartId>> = std::mem::take(&mut self.parts).into_iter().collect();
        let Some(parts) = parts else {
            abort(upload).await;
            return Err(Error::internal("a part of the multipart upload is missing"));
        };
        match upload.store.complete_multipart(&upload.location, &upload.id, parts).await {
            Ok(result) => Ok((upload, etag(result.e_tag.as_deref()))),
            Err(e) => {
                abort(upload).await;
                Err(multipart_error(e))
            }
        }
    }

    /// Completes an upload opened at its key (under the commit lock): the
    /// object appears; returns its version.
    async fn complete_at_key(self) -> Result<String> {
        let (upload, version) = self.complete_parts().await?;
        if let Some(tracker) = &upload.tracker {
            if let Err(e) = tracker.forget(&upload.id).await {
                log::warn!("forgetting a completed multipart upload: {}", e.cause());
            }
        }
        Ok(version)
    }

    /// Completes an upload opened at a staging object.
    async fn complete(self) -> Result<StagedObject> {
        let (upload, _) = self.complete_parts().await?;
        let live = upload._live.live.clone();
        let object = StagedObject {
            path: Some(upload.location.clone()),
            store: upload.store.clone(),
            tracker: upload.tracker.clone(),
            _live: Some(live.hold(format!("{STAGED_OBJECT}{}", upload.location))),
        };
        if let Some(tracker) = &upload.tracker {
            tracker.completed(&upload.id, &upload.location).await?;
        }
        Ok(object)
    }
}

/// A complete private object (a finished staged upload, or the copy of a
/// direct upload) waiting to be copied to its key; deleted if dropped.
pub struct StagedObject {
    path: Option<Path>,
    store: Arc<Bucket>,
    tracker: Option<Tracker>,
    _live: Option<LiveGuard>,
}

impl StagedObject {
    pub fn path(&self) -> &Path {
        self.path.as_ref().expect("the object is live")
    }

    /// Copies it to `to` (server-side, with `info` as the copy's content
    /// type and metadata) and removes it; the copy's version.
    async fn install(mut self, to: &Path, bucket: &str, info: &ObjectInfo) -> Result<String> {
        let from = self.path.take().expect("the object is live");
        let copied = copy_with_metadata(&self.store, bucket, &from, to, info).await;
        let result = match copied {
            Ok(()) => match self.store.head(to).await {
                Ok(meta) => Ok(etag(meta.e_tag.as_deref())),
                Err(e) => Err(s3_error(e)),
            },
            Err(e) => Err(e),
        };
        // Installed or not, the private copy has served.
        discard(self.store.clone(), from, self.tracker.clone()).await;
        result
    }
}

/// A dataset found in the store (reindex).
#[derive(Debug, Clone)]
pub struct Found {
    pub key: Key,
    pub size: u64,
    pub version: String,
    /// The blake3 the store recorded with the bytes, when it did.
    pub blake3: Option<String>,
    pub content_type: Option<String>,
}

/// Characters of a key escaped in `x-amz-copy-source` (as object_store
/// escapes paths).
const COPY_SOURCE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// CopyObject with the metadata replaced (`x-amz-metadata-directive:
/// REPLACE`), so that the copy carries its blake3 and content type:
/// object_store's copy keeps the source's. The request is presigned by
/// object_store's signer, with those headers signed, and sent as it is.
async fn copy_with_metadata(store: &Bucket, bucket: &str, from: &Path, to: &Path, info: &ObjectInfo) -> Result<()> {
    use backon::{ExponentialBuilder, Retryable};
    use object_store::signer::SignedUrlOptions;
    use reqwest::header::{HeaderName, HeaderValue};
    let source = format!("{bucket}/{}", percent_encoding::utf8_percent_encode(from.as_ref(), COPY_SOURCE));
    let mut headers = vec![
        ("x-amz-copy-source", source),
        ("x-amz-metadata-directive", "REPLACE".to_owned()),
        ("x-amz-meta-blake3", info.blake3.clone()),
        ("x-amz-meta-size", info.size.to_string()),
    ];
    if HeaderValue::from_str(&info.content_type).is_ok() {
        headers.push(("content-type", info.content_type.clone()));
    }
    let mut options = SignedUrlOptions::new();
    for (name, value) in &headers {
        let value = HeaderValue::from_str(value).map_err(Error::internal)?;
        options = options.with_signed_header(HeaderName::from_static(name), value);
    }
    let url =
        store.signed_url_opts(reqwest::Method::PUT, to, Duration::from_secs(300), &options).await.map_err(s3_error)?;
    let attempt = || async {
        let mut request = store.http.put(url.as_str());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.map_err(|e| CopyFailure::Transient(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| CopyFailure::Transient(e.to_string()))?;
        CopyFailure::check(status, &body)
    };
    // As object_store retries its own calls: a few times, backing off.
    let policy = ExponentialBuilder::default().with_max_times(3).with_total_delay(Some(Duration::from_secs(15)));
    match attempt.retry(policy).when(CopyFailure::is_transient).await {
        Ok(()) => Ok(()),
        Err(CopyFailure::Missing(answer)) => {
            log::warn!("object store: copying {from} to {to}: {answer}");
            Err(Error::NotFound("the object to copy is missing in the store".into()))
        }
        Err(CopyFailure::Transient(cause) | CopyFailure::Refused(cause)) => {
            log::warn!("object store: copying {from} to {to}: {cause}");
            Err(Error::Unavailable("the object store", cause))
        }
    }
}

/// Why a CopyObject did not land.
#[derive(Debug)]
enum CopyFailure {
    /// The source is gone (`NoSuchKey`).
    Missing(String),
    /// Worth another try: the connection broke, a 5xx, `SlowDown`.
    Transient(String),
    Refused(String),
}

/// An S3 error document: `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ErrorDocument {
    code: String,
    message: String,
}

impl CopyFailure {
    /// S3 may answer a CopyObject 200 and still fail it: the body's root
    /// element says which (`CopyObjectResult` or `Error`).
    fn check(status: reqwest::StatusCode, body: &str) -> std::result::Result<(), CopyFailure> {
        let failed = !status.is_success() || root_element(body).as_deref() == Some("Error");
        if !failed {
            return Ok(());
        }
        let doc: ErrorDocument = quick_xml::de::from_str(body).unwrap_or_default();
        let answer = format!("{status} {} {}", doc.code, doc.message);
        Err(match doc.code.as_str() {
            "NoSuchKey" => CopyFailure::Missing(answer),
            _ if status == reqwest::StatusCode::NOT_FOUND => CopyFailure::Missing(answer),
            "InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout" => CopyFailure::Transient(answer),
            _ if status.is_server_error() => CopyFailure::Transient(answer),
            _ => CopyFailure::Refused(answer),
        })
    }

    fn is_transient(&self) -> bool {
        matches!(self, CopyFailure::Transient(_))
    }
}

/// The name of an XML document's root element.
fn root_element(xml: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                return Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

async fn discard(store: Arc<Bucket>, path: Path, tracker: Option<Tracker>) {
    match store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
            if let Some(tracker) = &tracker {
                let _ = tracker.forget(&format!("{STAGED_OBJECT}{path}")).await;
            }
        }
        // Still noted: the next start tries again.
        Err(e) => log::warn!("removing a staged object: {e}"),
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(discard(self.store.clone(), path, self.tracker.clone()));
            }
        }
    }
}

async fn abort(upload: Multipart) {
    match upload.store.abort_multipart(&upload.location, &upload.id).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
            if let Some(tracker) = &upload.tracker {
                let _ = tracker.forget(&upload.id).await;
            }
        }
        // Still noted: the next start tries again.
        Err(e) => log::warn!("aborting a multipart upload: {e}"),
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(abort(upload));
            }
        }
    }
}

/// The writer thread's end of a streaming upload: fills part buffers and
/// hands them to the uploader task (blocking while the parts in flight and
/// the global part memory are spent, so a slow store slows the client).
pub struct PartSink {
    buf: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    part_size: usize,
    tx: Option<mpsc::Sender<Part>>,
    done: Option<oneshot::Receiver<Result<PendingUpload>>>,
    pending: Option<PendingUpload>,
    memory: Arc<Semaphore>,
    handle: tokio::runtime::Handle,
}

impl PartSink {
    fn send_part(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let permit = self.permit.take().expect("a filled buffer holds a permit");
        let sent = self.tx.as_ref().is_some_and(|tx| tx.blocking_send(Part::Data(data.into(), permit)).is_ok());
        if !sent {
            return Err(self.failure());
        }
        Ok(())
    }

    /// The uploader stopped: its error, carried through `io::Error`.
    fn failure(&mut self) -> io::Error {
        self.tx = None;
        let error = match self.done.take().map(|done| done.blocking_recv()) {
            Some(Ok(Err(e))) => e,
            _ => Error::internal("the part uploader stopped"),
        };
        io::Error::other(error)
    }

    /// Every part uploaded, the upload ready to complete (after `sync`).
    pub fn into_pending(mut self) -> Result<PendingUpload> {
        self.pending.take().ok_or_else(|| Error::internal("the multipart upload was not finished"))
    }
}

impl Write for PartSink {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            if self.permit.is_none() {
                let memory = self.memory.clone();
                let mib = (self.part_size / MIB) as u32;
                let permit = self.handle.block_on(memory.acquire_many_owned(mib)).map_err(io::Error::other)?;
                self.permit = Some(permit);
                self.buf.reserve_exact(self.part_size);
            }
            let n = (self.part_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.part_size {
                self.send_part()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl super::Target for PartSink {
    /// Sends the last part and waits until every part is uploaded.
    fn sync(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let finished = self.tx.take().is_some_and(|tx| tx.blocking_send(Part::Finish).is_ok());
        let done = self.done.take().map(|done| done.blocking_recv());
        match done {
            Some(Ok(Ok(pending))) if finished => {
                self.pending = Some(pending);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(io::Error::other(e)),
            _ => Err(io::Error::other(Error::internal("the part uploader stopped"))),
        }
    }

    fn dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn prepare(&self, key: &Key, staged: Staged, info: &ObjectInfo) -> Result<Prepared> {
        let staged = match staged {
            // Small enough for one PUT: read it into memory.
            Staged::File(file) if info.size <= self.part_size as u64 => {
                let mut bytes = Vec::with_capacity(info.size as usize);
                tokio::fs::File::from_std(file.reopen().map_err(Error::internal)?)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(Error::internal)?;
                Staged::Memory(vec![bytes])
            }
            Staged::File(file) => Staged::Multipart(self.upload_file(key, file, info).await?),
            other => other,
        };
        let staged = match staged {
            // Completed outside the lock: a staging object is private.
            Staged::Multipart(pending) if self.stage_uploads => Staged::Object(pending.complete().await?),
            other => other,
        };
        Ok(Prepared { staged, version: None })
    }

    async fn install(&self, key: &Key, prepared: Prepared, info: &ObjectInfo) -> Result<String> {
        let location = self.object(key);
        match prepared.staged {
            Staged::Memory(chunks) => {
                let payload: PutPayload = chunks.into_iter().map(Bytes::from).collect();
                let options = PutOptions { attributes: attributes(info), ..Default::default() };
                let result = self.store.put_opts(&location, payload, options).await.map_err(s3_error)?;
                Ok(etag(result.e_tag.as_deref()))
            }
            Staged::Object(object) => object.install(&location, &self.bucket, info).await,
            Staged::Multipart(pending) => pending.complete_at_key().await,
            Staged::File(_) => Err(Error::internal("a file must be prepared before it is installed")),
        }
    }

    async fn landed(&self, intent: &NewVersion, current: Option<&Record>) -> Result<Option<String>> {
        let Some((size, version, _)) = self.head(&self.object(&intent.key)).await? else {
            return Ok(None);
        };
        // Same bytes as the row's: the install never happened (or put back
        // the same bytes, which the row already describes).
        if current.is_some_and(|r| r.version == version) || size != intent.size {
            return Ok(None);
        }
        Ok(Some(version))
    }

    async fn version_of(&self, key: &Key) -> Result<Option<String>> {
        Ok(self.head(&self.object(key)).await?.map(|(_, version, _)| version))
    }

    async fn open(&self, record: &Record, key: &Key, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>> {
        let options = GetOptions {
            range: range.filter(|_| record.size > 0).map(|r| GetRange::Bounded(*r.start()..*r.end() + 1)),
            ..Default::default()
        };
        let result = match self.store.get_opts(&self.object(key), options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s3_error(e)),
        };
        if etag(result.meta.e_tag.as_deref()) != record.version || result.meta.size != record.size {
            return Ok(None);
        }
        let stream = result.into_stream().map_err(io::Error::other);
        Ok(Some(Reader(Box::new(tokio_util::io::StreamReader::new(stream)))))
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        self.delete(&self.object(key)).await
    }

    async fn checks(&self) -> Vec<Check> {
        // A HEAD of an object that never exists: "not found" is an answer.
        let probe = self.prefix.clone().join(".spillway-ready");
        let problem = match self.head(&probe).await {
            Ok(_) => None,
            Err(_) => Some("it does not answer; the cause is in the log".to_string()),
        };
        vec![("object store", problem)]
    }
}
