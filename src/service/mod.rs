//! The node: coordinates the byte store (`store`: the filesystem or an
//! object store), the catalog (`index`) and the upload pipeline (`upload`).
//! HTTP handlers call these methods and nothing below them. Uploads stream
//! in parallel; a commit or delete holds the locks of its key (and of its
//! bytes, see `locks`) for the install + index step, so commits of
//! different keys never wait for each other.

mod conditional;
mod direct;
mod locks;
mod open;
pub mod scrub;
pub mod tus;
mod versions;

pub use conditional::{EtagList, Precondition, Want};
use versions::corrupt;

use std::sync::Arc;

use serde::Deserialize;
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::blocking::blocking;
use crate::config::Settings;
use crate::datadir::{conflict_with_folder, DataLock, Layout};
use crate::error::{Error, Result};
use crate::index::{Blob, Index, Intent, MetadataPatch, NewVersion, Record};
use crate::ingest::{Expected, Received, Spooler};
use crate::key::Key;
use crate::metrics::{Metrics, Outcome};
use crate::store::fs::writable;
use crate::store::{Check, ObjectInfo, Prepared, Reader, Staged, Store};
use crate::timestamp::now;

/// Everything about an upload except its bytes.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub content_type: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub precondition: Precondition,
    pub expected: Expected,
    /// The token's name, when tokens are configured.
    pub uploaded_by: Option<String>,
}

/// The body of `POST /datasets/{key}/action/acknowledge`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    #[serde(flatten)]
    pub metadata: MetadataPatch,
    pub blake3: Option<String>,
}

/// Holding one of these is the right to run an upload.
/// It counts in `spillway_uploads_in_flight` while it lives.
pub struct UploadPermit {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

pub struct Node {
    settings: Settings,
    layout: Arc<Layout>,
    index: Index,
    store: Arc<dyn Store>,
    /// Names this node among nodes sharing an index.
    node_id: String,
    spooler: Spooler,
    metrics: Arc<Metrics>,
    access: crate::access::Access,
    tus: crate::service::tus::Resumable,
    locks: locks::Locks,
    uploads: Arc<Semaphore>,
    _lock: DataLock,
}

impl Node {
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn access(&self) -> &crate::access::Access {
        &self.access
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The largest dataset the node takes (`max_dataset_size`).
    pub fn max_size(&self) -> u64 {
        self.spooler.max_size
    }

    /// How long a body may go without a byte (`stall_timeout`).
    pub fn stall_timeout(&self) -> std::time::Duration {
        self.spooler.stall_timeout
    }

    /// Spools one body (a form's file part) through the upload pipeline.
    pub async fn spool<R: AsyncRead + Unpin + Send>(&self, body: R, expected: &Expected) -> Result<Received> {
        self.spooler.spool(body, expected).await
    }

    /// The Prometheus exposition, with the gauges read now.
    pub async fn render_metrics(&self) -> String {
        let index = self.index.clone();
        match blocking(move || index.totals()).await {
            Ok(totals) => {
                self.metrics.version_bytes.set(totals.version_bytes as i64);
                self.metrics.stored_bytes.set(totals.stored_bytes as i64);
            }
            Err(e) => log::warn!("metrics: the index does not answer: {}", e.cause()),
        }
        let free = |dir: &std::path::Path| Layout::free_space(dir).ok();
        let volumes = [("data", free(&self.layout.datasets)), ("spool", free(&self.layout.spool))];
        self.metrics.tus_in_memory.set(self.tus.in_memory() as i64);
        self.metrics.render(self.spooler.budget.used(), &volumes)
    }

    /// Readiness checks, each with its problem if it fails.
    /// Runs on a blocking thread (it drives the store's checks).
    pub fn readiness(&self) -> Vec<Check> {
        let space = |dir: &std::path::Path| match Layout::free_space(dir) {
            Ok(free) if free < self.spooler.disk_reserve => Some(format!(
                "{} free, below the reserve of {}",
                crate::error::readable(free),
                crate::error::readable(self.spooler.disk_reserve)
            )),
            Ok(_) => None,
            Err(e) => {
                log::warn!("readiness: cannot read free space of {}: {e}", dir.display());
                Some(format!("cannot read free space: {}", std::io::Error::from(e.kind())))
            }
        };
        let mut checks = vec![(
            "index",
            self.index.ping().err().map(|e| {
                log::warn!("readiness: the index does not answer: {}", e.cause());
                "it does not answer; the cause is in the log".to_string()
            }),
        )];
        checks.extend(tokio::runtime::Handle::current().block_on(self.store.checks()));
        checks.extend([
            ("spool directory", writable(&self.layout.spool)),
            ("data volume", space(&self.layout.datasets)),
            ("spool volume", space(&self.layout.spool)),
        ]);
        checks
    }

    /// Admission control: at most `max_uploads` uploads at once.
    pub fn admit_upload(&self) -> Result<UploadPermit> {
        let permit = self.uploads.clone().try_acquire_owned().map_err(|_| {
            self.metrics.upload_ended(Outcome::Rejected, 0.0);
            Error::Busy { limit: self.settings.max_uploads }
        })?;
        let gauge = self.metrics.uploads_in_flight.clone();
        gauge.inc();
        Ok(UploadPermit { _permit: permit, gauge })
    }

    /// Counts an upload's end in `spillway_uploads_total{outcome}`.
    pub fn upload_ended<T>(&self, started: std::time::Instant, result: Result<T>) -> Result<T> {
        let outcome = match &result {
            Ok(_) => Outcome::Committed,
            Err(e) => Outcome::of(e),
        };
        self.metrics.upload_ended(outcome, started.elapsed().as_secs_f64());
        result
    }

    pub async fn get(&self, key: &Key) -> Result<Arc<Record>> {
        let record = if self.index.is_shared() {
            let (index, k) = (self.index.clone(), key.clone());
            blocking(move || index.get(&k)).await?.map(Arc::new)
        } else {
            // A point lookup in SQLite's page cache (or in the index's own
            // cache of rows) takes microseconds, less than a hop to the
            // blocking pool and back; a read never waits for a writer (WAL).
            self.index.get_cached(key)?
        };
        record.ok_or_else(|| Error::no_dataset(key))
    }

    pub async fn list(&self, prefix: String, after: Option<String>, limit: usize) -> Result<Vec<Record>> {
        let index = self.index.clone();
        blocking(move || index.list(&prefix, after.as_deref(), limit)).await
    }

    /// Checks what can be known before the body is read, so a doomed upload
    /// is refused without spooling it: preconditions and key conflicts.
    pub async fn precheck_upload(&self, key: &Key, meta: &UploadMeta) -> Result<()> {
        let check = move |index: &Index, key: &Key, precondition: &Precondition| -> Result<()> {
            precondition.check(index.get(key)?.as_ref())?;
            check_conflicts(index, key)
        };
        if !self.index.is_shared() {
            // A few point lookups in SQLite: cheaper here than a hop to the
            // blocking pool (see `Node::get`).
            return check(&self.index, key, &meta.precondition);
        }
        let (index, k, precondition) = (self.index.clone(), key.clone(), meta.precondition.clone());
        blocking(move || check(&index, &k, &precondition)).await
    }

    /// PUT: stream the body in, then commit it at `key`.
    pub async fn put<R: AsyncRead + Unpin>(&self, key: Key, body: R, meta: UploadMeta) -> Result<(Record, bool)> {
        self.precheck_upload(&key, &meta).await?;
        let received = match self.spooler.spool_to(body, &meta.expected, Some(&key)).await {
            Ok(received) => received,
            Err(e) => return Err(self.lost_to(&key, &meta.precondition, e).await),
        };
        self.commit(key, received, meta).await
    }

    /// An upload dropped by the store because another write to its key won
    /// the race: a conditional request that no longer holds says so (412).
    async fn lost_to(&self, key: &Key, precondition: &Precondition, e: Error) -> Error {
        if !matches!(e, Error::Superseded) {
            return e;
        }
        // The winner may still be between its install and its row: its
        // key's lock waits for it.
        let current = async {
            let _held = self.locks.take(&locks::Claim::key(key), &self.index).await?;
            let (index, k) = (self.index.clone(), key.clone());
            blocking(move || index.get(&k)).await
        };
        match current.await {
            Ok(current) => precondition.check(current.as_ref()).err().unwrap_or(e),
            Err(_) => e,
        }
    }

    /// The commit: re-check the preconditions and conflicts under the lock,
    /// record the intent, install the bytes (a rename + directory fsync; a
    /// CompleteMultipartUpload), write the row. Returns the record and
    /// whether the key is new.
    pub async fn commit(&self, key: Key, received: Received, meta: UploadMeta) -> Result<(Record, bool)> {
        if meta.expected.blake3.is_some_and(|want| want != received.blake3) {
            // A PUT's body was checked as it streamed; a tus upload's whole
            // is known only now.
            return Err(Error::DigestMismatch("the upload's blake3 does not match the one it was created with".into()));
        }
        if let Staged::File(file) = &received.staged {
            if !self.store.remote() && !self.layout.spool_on_data_volume && file.path().starts_with(&self.layout.spool)
            {
                // It will be copied to the data volume first: that needs room too.
                self.spooler.check_space(&self.layout.datasets, received.size)?;
            }
        }
        let info = ObjectInfo {
            size: received.size,
            blake3: received.blake3.to_hex().to_string(),
            content_type: meta.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
        };
        // A copy across volumes, or the parts of a received file, go before
        // the lock, so they never hold up other commits.
        let prepared = match self.store.prepare(&key, received.staged, &info).await {
            Ok(prepared) => prepared,
            Err(e) => return Err(self.lost_to(&key, &meta.precondition, e).await),
        };
        self.install(key, prepared, info, meta).await
    }

    /// Under the commit lock: re-check the preconditions and conflicts,
    /// store the bytes once (reusing a blob of the same bytes), record the
    /// intent, install, write the rows (the new version, the pruned ones),
    /// then free the blobs pruning left unreferenced.
    async fn install(
        &self,
        key: Key,
        prepared: Prepared,
        info: ObjectInfo,
        meta: UploadMeta,
    ) -> Result<(Record, bool)> {
        let claim = locks::Claim::key(&key).and(locks::Name::of_bytes(&info.blake3, info.size));
        let held = self.locks.take(&claim, &self.index).await?;
        let (index, store, metrics, locks) =
            (self.index.clone(), self.store.clone(), self.metrics.clone(), self.locks.clone());
        let retention = crate::index::Retention::of(&self.settings);
        let (record, created, doomed) = blocking(move || {
            let current = index.get(&key)?;
            meta.precondition.check(current.as_ref())?;
            check_conflicts(&index, &key)?;
            let handle = tokio::runtime::Handle::current();
            let kept = index.blob(&info.blake3, info.size)?;
            let mut prepared = handle.block_on(store.reuse(prepared, &info, kept.as_ref()))?;
            let repairs = kept.as_ref().is_some_and(|b| b.corrupt);
            prepared.replace_blob = repairs;
            let mut version = NewVersion {
                key: key.clone(),
                size: info.size,
                blake3: info.blake3.clone(),
                content_type: info.content_type.clone(),
                version: prepared.version.clone().unwrap_or_default(),
                blob_version: String::new(),
                name: meta.name,
                description: meta.description,
                uploaded_by: meta.uploaded_by,
            };
            // Intent, install, then rows: a crash anywhere leaves a state
            // the next start finishes or rolls back (see `resolve_intents`).
            index.begin_while(&Intent::Install(version.clone()), || store.settle(&prepared))?;
            crate::failpoint::delay_key("commit.install", key.as_str());
            match handle.block_on(store.install(&key, prepared, &info)) {
                Ok(installed) => (version.version, version.blob_version) = (installed.version, installed.blob),
                Err(e) => {
                    // What the install made before it failed (a new blob's
                    // name) goes, as a restart would roll it back.
                    if let Err(left) = handle.block_on(store.unmade(&version, kept.as_ref())) {
                        log::warn!("the failed install of `{key}` left its bytes behind: {}", left.cause());
                    }
                    let _ = index.abandon(&key);
                    return Err(e);
                }
            }
            let fresh = Blob {
                blake3: version.blake3.clone(),
                size: version.size,
                version: version.blob_version.clone(),
                corrupt: false,
            };
            let completed = index.complete(&Intent::Install(version), &now(), retention)?;
            let record = completed.record.expect("an install has a record");
            if repairs {
                relink(&index, &locks, store.as_ref(), &fresh, &info)?;
            }
            let old_size = current.as_ref().map_or(0, |r| r.size as i64);
            metrics.catalog_changed(i64::from(current.is_none()), record.size as i64 - old_size);
            Ok((record, current.is_none(), completed.doomed))
        })
        .await?;
        // Freeing takes each blob's lock: not while holding one.
        drop(held);
        self.free(doomed).await;
        Ok((record, created))
    }

    /// Opens a dataset for reading: `want` looks at the record and says
    /// which bytes to read (none, for a 304). The bytes returned are exactly
    /// those the record describes (matched by inode or ETag), so a
    /// concurrent replace never pairs new bytes with an old ETag.
    pub async fn open_dataset(
        &self,
        key: &Key,
        want: impl Fn(&Record) -> Result<Want>,
    ) -> Result<(Arc<Record>, Want, Option<Reader>)> {
        crate::failpoint::delay_key_async("read.open", key.as_str()).await;
        for attempt in 0..4u64 {
            let record = self.get(key).await?;
            if record.corrupt {
                return Err(corrupt(key, record.number));
            }
            let wanted = want(&record)?;
            let range = match &wanted {
                Want::Nothing => return Ok((record, wanted, None)),
                Want::All => None,
                Want::Range(range) => Some(range.clone()),
            };
            if let Some(reader) = self.store.open(&record, key, range).await? {
                return Ok((record, wanted, Some(reader)));
            }
            // A commit or delete is between its bytes and its row: wait for
            // it (here, or on another node sharing the index).
            drop(self.locks.take(&locks::Claim::key(key), &self.index).await?);
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
        }
        log::error!("`{key}`: the stored bytes do not match the index row; run `spillway fsck`");
        Err(Error::internal(format!("stored bytes and index row of `{key}` disagree")))
    }

    pub async fn patch(&self, key: &Key, patch: MetadataPatch) -> Result<Record> {
        let (index, k) = (self.index.clone(), key.clone());
        blocking(move || index.patch(&k, &patch, &now())).await?.ok_or_else(|| Error::no_dataset(key))
    }

    /// Aborts multipart uploads and removes staged objects that failed
    /// uploads left in the object store because it was away when they
    /// failed (the next start would, too).
    pub async fn sweep_store(&self) -> Result<usize> {
        self.store.sweep().await
    }

    /// Removes the key's file, then its row, under the commit lock. Its
    /// versions stay (until pruned) unless `purge`, or versioning is off.
    /// A purge of a key no longer in the catalog removes its versions.
    pub async fn delete(&self, key: &Key, purge: bool) -> Result<()> {
        let held = self.locks.take(&locks::Claim::key(key), &self.index).await?;
        let (index, store, metrics, k) = (self.index.clone(), self.store.clone(), self.metrics.clone(), key.clone());
        let retention = crate::index::Retention::of(&self.settings);
        let doomed = blocking(move || {
            let Some(current) = index.get(&k)? else {
                if purge && !index.versions(&k, None, 1)?.is_empty() {
                    return index.purge_versions(&k);
                }
                return Err(Error::no_dataset(&k));
            };
            let intent = Intent::Remove { key: k.clone(), purge };
            index.begin(&intent)?;
            if let Err(e) = tokio::runtime::Handle::current().block_on(store.remove(&k)) {
                let _ = index.abandon(&k);
                return Err(e);
            }
            let completed = index.complete(&intent, &now(), retention)?;
            metrics.catalog_changed(-1, -(current.size as i64));
            Ok(completed.doomed)
        })
        .await?;
        drop(held);
        self.free(doomed).await;
        Ok(())
    }
}

/// After good bytes replaced a corrupt blob: the other keys whose current
/// file still holds the damaged bytes (on the filesystem, links to the old
/// inode) get the good ones, as the same version. Under the blob's lock,
/// so another key's lock is only tried (taking it would break the order of
/// `locks`): a key busy now keeps its link, which the next scrub reports.
fn relink(index: &Index, locks: &locks::Locks, store: &dyn Store, blob: &Blob, info: &ObjectInfo) -> Result<()> {
    let handle = tokio::runtime::Handle::current();
    for stale in index.stale_links(&blob.blake3, blob.size, &blob.version)? {
        let Ok(key) = Key::parse(&stale) else { continue };
        let Some(_held) = locks.try_take(&locks::Claim::key(&key), index)? else {
            log::warn!("`{key}` is busy: it keeps the damaged bytes of blake3 {} for now", blob.blake3);
            continue;
        };
        let prepared = handle.block_on(store.stage_blob(blob))?;
        let installed = handle.block_on(store.install(&key, prepared, info))?;
        index.set_current_version(&key, &installed.version)?;
        log::info!("`{key}` serves the repaired bytes of blake3 {}", blob.blake3);
    }
    Ok(())
}

/// A key cannot be a dataset if a dataset sits at one of its ancestors, or
/// if datasets sit below it (see `store`).
fn check_conflicts(index: &Index, key: &Key) -> Result<()> {
    if let Some(ancestor) = index.first_existing(key.ancestors())? {
        return Err(Error::Conflict(format!("`{ancestor}` is a dataset, so it cannot also hold `{key}`")));
    }
    if index.first_below(key)?.is_some() {
        return Err(conflict_with_folder(key));
    }
    Ok(())
}
