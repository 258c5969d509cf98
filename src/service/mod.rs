//! The node: coordinates the byte store (`store`: the filesystem or an
//! object store), the catalog (`index`) and the upload pipeline (`upload`).
//! HTTP handlers call these methods and nothing below them. Mutations of the
//! catalog and the store (install, delete) are serialised by one commit
//! lock (and, with a shared PostgreSQL index, by a cluster-wide one); uploads
//! stream in parallel and only take the lock for the short install + index
//! step.

pub mod tus;

use std::ops::RangeInclusive;
use std::sync::Arc;

use serde::Deserialize;
use tokio::io::AsyncRead;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::blocking::blocking;
use crate::config::{Settings, StorageKind};
use crate::datadir::{conflict_with_folder, DataLock, Layout};
use crate::error::{Error, Result};
use crate::index::{Index, Intent, MetadataPatch, NewVersion, Record};
use crate::key::Key;
use crate::metrics::{Metrics, Outcome};
use crate::store::fs::{writable, FsStore};
use crate::store::s3::{S3Store, Tracker};
use crate::store::{Check, ObjectInfo, Reader, Staged, Store};
use crate::timestamp::now;
use crate::upload::{Expected, MemoryBudget, Spooled, Spooler};

/// A conditional request's precondition on the current version.
#[derive(Debug, Clone, Default)]
pub enum Precondition {
    #[default]
    None,
    /// `If-None-Match`: fail when the current ETag is listed (`*`: any).
    IfNoneMatch(EtagList),
    /// `If-Match`: fail unless the current ETag is listed (`*`: any).
    IfMatch(EtagList),
}

#[derive(Debug, Clone)]
pub enum EtagList {
    Any,
    /// `(weak, blake3 hex)` pairs.
    Tags(Vec<(bool, String)>),
}

impl EtagList {
    /// Parses an `If-Match` / `If-None-Match` value.
    pub fn parse(value: &str) -> EtagList {
        if value.trim() == "*" {
            return EtagList::Any;
        }
        EtagList::Tags(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| match t.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, t),
                })
                .map(|(weak, t)| {
                    let tag = t.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(t);
                    (weak, tag.to_ascii_lowercase())
                })
                .collect(),
        )
    }

    /// Strong comparison (RFC 9110 8.8.3.2): `If-Match`; a weak tag never matches.
    pub fn matches_strong(&self, current: Option<&Record>) -> bool {
        self.matches(current, false)
    }

    /// Weak comparison: `If-None-Match`; `W/` is ignored.
    pub fn matches_weak(&self, current: Option<&Record>) -> bool {
        self.matches(current, true)
    }

    fn matches(&self, current: Option<&Record>, weak_ok: bool) -> bool {
        match (self, current) {
            (_, None) => false,
            (EtagList::Any, Some(_)) => true,
            (EtagList::Tags(tags), Some(r)) => tags.iter().any(|(weak, tag)| (weak_ok || !weak) && *tag == r.blake3),
        }
    }
}

impl Precondition {
    fn check(&self, current: Option<&Record>) -> Result<()> {
        match self {
            Precondition::None => Ok(()),
            Precondition::IfNoneMatch(tags) if tags.matches_weak(current) => {
                Err(Error::PreconditionFailed("a dataset matching If-None-Match exists at this key".into()))
            }
            Precondition::IfMatch(tags) if !tags.matches_strong(current) => {
                Err(Error::PreconditionFailed("the current dataset does not match If-Match".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Everything about an upload except its bytes.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub content_type: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub precondition: Precondition,
    pub expected: Expected,
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
    /// The object store, when datasets live in one.
    s3: Option<Arc<S3Store>>,
    /// Names this node among nodes sharing an index.
    node_id: String,
    spooler: Spooler,
    metrics: Arc<Metrics>,
    access: crate::access::Access,
    tus: crate::service::tus::Resumable,
    commit_lock: Mutex<()>,
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
    pub async fn spool<R: AsyncRead + Unpin + Send>(&self, body: R, expected: &Expected) -> Result<Spooled> {
        self.spooler.spool(body, expected).await
    }

    /// The Prometheus exposition, with the gauges read now.
    pub fn render_metrics(&self) -> String {
        let free = |dir: &std::path::Path| Layout::free_space(dir).ok();
        let volumes = [("data", free(&self.layout.datasets)), ("spool", free(&self.layout.spool))];
        self.metrics.tus_in_memory.set(self.tus.in_memory() as i64);
        self.metrics.render(self.spooler.budget.used(), &volumes)
    }

    /// A URL that lets a client without a token do `method` on `key` until
    /// `expires` (Unix seconds): the node's own signed URL, or with an
    /// object store, for an upload, a presigned PUT straight to the store.
    pub async fn signed_url(
        &self,
        method: &'static str,
        key: &Key,
        expires: i64,
        expires_in: u64,
        max_size: Option<u64>,
    ) -> Result<String> {
        if method == "PUT" && self.s3.is_some() {
            return self.direct_upload_url(key, expires_in, max_size).await;
        }
        let query = self.access.sign(method, key, expires, max_size);
        Ok(format!("{}?{query}", key.url_path()))
    }

    /// Where to send a download instead of serving it, when the store
    /// serves downloads itself (`s3.downloads = "redirect"`).
    pub async fn download_redirect(&self, key: &Key) -> Result<Option<String>> {
        if self.settings.s3.downloads != crate::config::Downloads::Redirect {
            return Ok(None);
        }
        self.direct_download_url(key, self.settings.s3.presign_expiry).await
    }

    /// Prepares the data directory, sweeps what a previous run left in the
    /// spool, opens the index and runs the cheap start-up reconcile.
    pub async fn open(settings: Settings) -> Result<Node> {
        // Opening blocks (SQLite, PostgreSQL's client, the file system): a
        // blocking thread does it, driving the store's calls to completion.
        blocking(move || Node::open_blocking(settings)).await
    }

    fn open_blocking(settings: Settings) -> Result<Node> {
        let layout =
            Arc::new(Layout::prepare(&settings).map_err(|e| {
                Error::internal(format!("preparing data directory {}: {e}", settings.data_dir.display()))
            })?);
        let lock = DataLock::acquire(&layout)?;
        let swept = layout.sweep_leftovers().map_err(Error::internal)?;
        if !swept.is_empty() {
            log::warn!("removed {} leftover spool file(s) of a previous run", swept.len());
            for path in &swept {
                log::info!("  removed {}", path.display());
            }
        }
        let index = Index::open_configured(&settings, &layout.index_file)?;
        let node_id = node_id(&layout)?;
        let s3 = match settings.storage {
            StorageKind::S3 => {
                let tracker = Tracker { index: index.clone(), node: node_id.clone() };
                let s3 = S3Store::new(&settings, Some(tracker))?;
                let aborted = s3.abort_left_open(&index, &node_id)?;
                if aborted > 0 {
                    log::warn!("aborted {aborted} multipart upload(s) a previous run left open");
                }
                Some(Arc::new(s3))
            }
            StorageKind::Fs => None,
        };
        let store: Arc<dyn Store> = match &s3 {
            Some(s3) => s3.clone(),
            None => Arc::new(FsStore { layout: layout.clone() }),
        };
        let metrics = Arc::new(Metrics::new());
        let mut signing_key = settings.signing_key.clone().filter(|k| !k.is_empty());
        if signing_key.is_none() && index.is_shared() {
            // Nodes sharing an index share the key their signed URLs use.
            signing_key = Some(index.setting_or_insert("signing_key", &crate::access::random_key()?)?);
        }
        let access = crate::access::Access::new(&settings.tokens, signing_key.as_deref(), &layout.root)?;
        let spooler = Spooler {
            layout: layout.clone(),
            budget: MemoryBudget::new(settings.spool_memory_budget.as_u64() as usize),
            spool_memory: settings.spool_memory.as_u64() as usize,
            max_size: settings.max_dataset_size.as_u64(),
            stall_timeout: settings.stall_timeout(),
            disk_reserve: settings.disk_reserve.as_u64(),
            received_bytes: metrics.upload_bytes.clone(),
            objects: s3.clone(),
        };
        log::info!(
            "store: {}; index: {}",
            match &s3 {
                Some(s3) => format!("S3 bucket `{}` (parts of {} MiB)", s3.bucket(), s3.part_size() >> 20),
                None => format!("files below {}", layout.datasets.display()),
            },
            if index.is_shared() { "PostgreSQL (shared)" } else { "SQLite" }
        );
        let node = Node {
            node_id,
            store,
            s3,
            uploads: Arc::new(Semaphore::new(settings.max_uploads)),
            settings,
            layout,
            index,
            spooler,
            metrics,
            access,
            tus: Default::default(),
            commit_lock: Mutex::new(()),
            _lock: lock,
        };
        node.resolve_intents()?;
        node.reconcile_on_start()?;
        let (count, bytes) = node.index.count()?;
        node.metrics.set_catalog(count, bytes);
        let orphans = node.sweep_orphan_upload_files()?;
        if !orphans.is_empty() {
            log::warn!("removed {} resumable-upload file(s) without a row", orphans.len());
        }
        Ok(node)
    }

    /// Finishes or rolls back what a crash interrupted: an install whose file
    /// is in place (same inode) gets its row; one whose rename never
    /// happened is dropped; a removal is finished if its file is gone.
    /// Runs on a blocking thread. With a shared index it holds the
    /// cluster-wide commit lock, so no other node's commit is in flight and
    /// every intent left is one a crash interrupted.
    fn resolve_intents(&self) -> Result<()> {
        let _cluster = self.index.commit_lock()?;
        let handle = tokio::runtime::Handle::current();
        for intent in self.index.pending_intents()? {
            match &intent {
                Intent::Install(v) => {
                    let current = self.index.get(&v.key)?;
                    match handle.block_on(self.store.landed(v, current.as_ref()))? {
                        Some(version) => {
                            log::warn!("finishing the interrupted commit of `{}`", v.key);
                            let landed = Intent::Install(NewVersion { version, ..v.clone() });
                            self.index.complete(&landed, &now())?;
                        }
                        None => {
                            log::warn!("rolling back the interrupted commit of `{}`", v.key);
                            self.index.abandon(&v.key)?;
                        }
                    }
                }
                Intent::Remove(key) if handle.block_on(self.store.version_of(key))?.is_none() => {
                    log::warn!("finishing the interrupted delete of `{key}`");
                    self.index.complete(&intent, &now())?;
                }
                Intent::Remove(key) => {
                    log::warn!("rolling back the interrupted delete of `{key}`");
                    self.index.abandon(key)?;
                }
            }
        }
        Ok(())
    }

    /// Existence and size of every indexed file; mismatches are logged
    /// (`spillway fsck` explains and repairs them). Filesystem store only:
    /// an object store is checked by `spillway reindex`.
    fn reconcile_on_start(&self) -> Result<()> {
        if self.s3.is_some() {
            return Ok(());
        }
        let (mut checked, mut problems) = (0u64, 0u64);
        self.index.for_each(|record| {
            checked += 1;
            let Ok(key) = Key::parse(&record.key) else {
                return;
            };
            match self.layout.stat_of(&key) {
                Some(stat) if stat.st_size as u64 == record.size => {}
                Some(stat) => {
                    problems += 1;
                    log::warn!("reconcile: `{key}` is {} bytes on disk, {} in the index", stat.st_size, record.size);
                }
                None => {
                    problems += 1;
                    log::warn!("reconcile: `{key}` is indexed but its file is missing");
                }
            }
        })?;
        if problems > 0 {
            log::warn!("reconcile: {problems} of {checked} datasets disagree with the index; run `spillway fsck`");
        } else {
            log::info!("reconcile: {checked} datasets match the index");
        }
        Ok(())
    }

    /// Readiness checks, each with its problem if it fails.
    /// Runs on a blocking thread (it drives the store's checks).
    pub fn readiness(&self) -> Vec<Check> {
        let space = |dir: &std::path::Path| match Layout::free_space(dir) {
            Ok(free) if free < self.spooler.disk_reserve => {
                Some(format!("{free} bytes free, below the reserve of {}", self.spooler.disk_reserve))
            }
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

    pub async fn get(&self, key: &Key) -> Result<Record> {
        let (index, k) = (self.index.clone(), key.clone());
        blocking(move || index.get(&k)).await?.ok_or_else(|| Error::no_dataset(key))
    }

    pub async fn list(&self, prefix: String, after: Option<String>, limit: usize) -> Result<Vec<Record>> {
        let index = self.index.clone();
        blocking(move || index.list(&prefix, after.as_deref(), limit)).await
    }

    /// Checks what can be known before the body is read, so a doomed upload
    /// is refused without spooling it: preconditions and key conflicts.
    pub async fn precheck_upload(&self, key: &Key, meta: &UploadMeta) -> Result<()> {
        let (index, k) = (self.index.clone(), key.clone());
        let current = blocking(move || index.get(&k)).await?;
        meta.precondition.check(current.as_ref())?;
        let (index, k) = (self.index.clone(), key.clone());
        blocking(move || check_conflicts(&index, &k)).await
    }

    /// PUT: stream the body in, then commit it at `key`.
    pub async fn put<R: AsyncRead + Unpin>(&self, key: Key, body: R, meta: UploadMeta) -> Result<(Record, bool)> {
        self.precheck_upload(&key, &meta).await?;
        let spooled = match self.spooler.spool_to(body, &meta.expected, Some(&key)).await {
            Ok(spooled) => spooled,
            Err(e) => return Err(self.lost_to(&key, &meta.precondition, e).await),
        };
        self.commit(key, spooled, meta).await
    }

    /// An upload dropped by the store because another write to its key won
    /// the race: a conditional request that no longer holds says so (412).
    async fn lost_to(&self, key: &Key, precondition: &Precondition, e: Error) -> Error {
        if !matches!(e, Error::Superseded) {
            return e;
        }
        // The winner may still be between its install and its row: the
        // commit lock waits for it.
        let _guard = self.commit_lock.lock().await;
        let (index, k) = (self.index.clone(), key.clone());
        let current = blocking(move || {
            let _cluster = index.commit_lock()?;
            index.get(&k)
        });
        match current.await {
            Ok(current) => precondition.check(current.as_ref()).err().unwrap_or(e),
            Err(_) => e,
        }
    }

    /// The commit: re-check the preconditions and conflicts under the lock,
    /// record the intent, install the bytes (a rename + directory fsync; a
    /// CompleteMultipartUpload), write the row. Returns the record and
    /// whether the key is new.
    pub async fn commit(&self, key: Key, spooled: Spooled, meta: UploadMeta) -> Result<(Record, bool)> {
        if let Staged::File(file) = &spooled.staged {
            if self.s3.is_none() && !self.layout.spool_on_data_volume && file.path().starts_with(&self.layout.spool) {
                // It will be copied to the data volume first: that needs room too.
                self.spooler.check_space(&self.layout.datasets, spooled.size)?;
            }
        }
        let info = ObjectInfo {
            size: spooled.size,
            blake3: spooled.blake3.to_hex().to_string(),
            content_type: meta.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
        };
        // A copy across volumes, or the parts of a spooled file, go before
        // the lock, so they never hold up other commits.
        let prepared = match self.store.prepare(&key, spooled.staged, &info).await {
            Ok(prepared) => prepared,
            Err(e) => return Err(self.lost_to(&key, &meta.precondition, e).await),
        };
        let _guard = self.commit_lock.lock().await;
        let (index, store, metrics) = (self.index.clone(), self.store.clone(), self.metrics.clone());
        blocking(move || {
            let _cluster = index.commit_lock()?;
            let current = index.get(&key)?;
            meta.precondition.check(current.as_ref())?;
            check_conflicts(&index, &key)?;
            let mut version = NewVersion {
                key: key.clone(),
                size: info.size,
                blake3: info.blake3.clone(),
                content_type: info.content_type.clone(),
                version: prepared.version.clone().unwrap_or_default(),
                name: meta.name,
                description: meta.description,
            };
            // Intent, install, then row: a crash anywhere leaves a state the
            // next start finishes or rolls back (see `resolve_intents`).
            index.begin(&Intent::Install(version.clone()))?;
            match tokio::runtime::Handle::current().block_on(store.install(&key, prepared, &info)) {
                Ok(installed) => version.version = installed,
                Err(e) => {
                    let _ = index.abandon(&key);
                    return Err(e);
                }
            }
            let record = index.complete(&Intent::Install(version), &now())?.expect("an install has a record");
            let old_size = current.as_ref().map_or(0, |r| r.size as i64);
            metrics.catalog_changed(i64::from(current.is_none()), record.size as i64 - old_size);
            Ok((record, current.is_none()))
        })
        .await
    }

    /// Opens a dataset for reading: `want` looks at the record and says
    /// which bytes to read (none, for a 304). The bytes returned are exactly
    /// those the record describes (matched by inode or ETag), so a
    /// concurrent replace never pairs new bytes with an old ETag.
    pub async fn open_dataset(
        &self,
        key: &Key,
        want: impl Fn(&Record) -> Result<Want>,
    ) -> Result<(Record, Want, Option<Reader>)> {
        for attempt in 0..4u64 {
            let record = self.get(key).await?;
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
            drop(self.commit_lock.lock().await);
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
        }
        log::error!("`{key}`: the stored bytes do not match the index row; run `spillway fsck`");
        Err(Error::internal(format!("stored bytes and index row of `{key}` disagree")))
    }

    pub async fn patch(&self, key: &Key, patch: MetadataPatch) -> Result<Record> {
        let (index, k) = (self.index.clone(), key.clone());
        blocking(move || index.patch(&k, &patch, &now())).await?.ok_or_else(|| Error::no_dataset(key))
    }

    pub async fn acknowledge(&self, key: &Key, ack: Acknowledge) -> Result<Record> {
        if let Some(s3) = &self.s3 {
            self.acknowledge_direct(s3, key, &ack).await?;
        }
        let record = self.get(key).await?;
        if let Some(expected) = &ack.blake3 {
            if !expected.eq_ignore_ascii_case(&record.blake3) {
                return Err(Error::StoredDigestMismatch(format!(
                    "the stored dataset's blake3 is {}, not {expected}",
                    record.blake3
                )));
            }
        }
        self.patch(key, ack.metadata).await
    }

    /// A direct upload waiting at the key's incoming object is verified
    /// (size, blake3: the node reads it through) and committed like any
    /// upload. Nothing waiting: nothing to do.
    async fn acknowledge_direct(&self, s3: &S3Store, key: &Key, ack: &Acknowledge) -> Result<()> {
        let incoming = s3.incoming(key);
        let Some((_, uploaded, content_type)) = s3.head(&incoming).await? else {
            return Ok(());
        };
        // Check, hash and install one private copy, never the incoming
        // object itself, which the client may still overwrite.
        let Some((object, size)) = s3.stage_copy(&incoming).await? else {
            return Ok(());
        };
        let limit = self.direct_upload_limit(key).await?;
        if size > limit {
            s3.delete_if_unchanged(&incoming, &uploaded).await?;
            return Err(Error::TooLarge { limit });
        }
        let (blake3, read) = s3.hash_object(object.path()).await?;
        if read != size {
            return Err(Error::Unavailable("the object store", format!("read {read} of {size} bytes")));
        }
        if let Some(expected) = &ack.blake3 {
            if !expected.eq_ignore_ascii_case(&blake3.to_hex()) {
                s3.delete_if_unchanged(&incoming, &uploaded).await?;
                return Err(Error::StoredDigestMismatch(format!(
                    "the uploaded object's blake3 is {}, not {expected}",
                    blake3.to_hex()
                )));
            }
        }
        let meta = UploadMeta {
            content_type: content_type.filter(|t| !t.is_empty()),
            name: ack.metadata.name.clone(),
            description: ack.metadata.description.clone(),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let committed = self.commit(key.clone(), Spooled { staged: Staged::Object(object), size, blake3 }, meta).await;
        self.upload_ended(started, committed)?;
        s3.delete_if_unchanged(&incoming, &uploaded).await
    }

    /// The size limit of a direct upload to `key`: the upload URL's
    /// `max_size` (kept in the index when it was minted), or the node's.
    async fn direct_upload_limit(&self, key: &Key) -> Result<u64> {
        let (index, name) = (self.index.clone(), direct_upload_setting(key));
        let granted = blocking(move || index.granted(&name)).await?;
        let max = self.settings.max_dataset_size.as_u64();
        Ok(granted.and_then(|g| g.parse::<u64>().ok()).map_or(max, |g| g.min(max)))
    }

    /// Aborts multipart uploads and removes staged objects that failed
    /// uploads left in the object store because it was away when they
    /// failed (the next start would, too).
    pub async fn sweep_store(&self) -> Result<usize> {
        let Some(s3) = self.s3.clone() else {
            return Ok(0);
        };
        let (index, node) = (self.index.clone(), self.node_id.clone());
        blocking(move || s3.abort_left_open(&index, &node)).await
    }

    /// A presigned PUT straight to the object store (the key's incoming
    /// object), for `POST /datasets/{key}/upload-url` with an S3 store.
    async fn direct_upload_url(&self, key: &Key, expires_in: u64, max_size: Option<u64>) -> Result<String> {
        let s3 = self.s3.as_ref().ok_or_else(|| Error::internal("direct uploads need an object store"))?;
        let (index, name) = (self.index.clone(), direct_upload_setting(key));
        let value = max_size.map_or_else(String::new, |m| m.to_string());
        blocking(move || index.grant(&name, &value, std::time::Duration::from_secs(expires_in))).await?;
        s3.presign("PUT", &s3.incoming(key), std::time::Duration::from_secs(expires_in)).await
    }

    /// A presigned GET of the dataset's object (downloads = "redirect").
    async fn direct_download_url(&self, key: &Key, expires_in: u64) -> Result<Option<String>> {
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        self.get(key).await?;
        s3.presign("GET", &s3.object(key), std::time::Duration::from_secs(expires_in)).await.map(Some)
    }

    /// Removes the bytes, then the row, under the commit lock.
    pub async fn delete(&self, key: &Key) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        let (index, store, metrics, k) = (self.index.clone(), self.store.clone(), self.metrics.clone(), key.clone());
        blocking(move || {
            let _cluster = index.commit_lock()?;
            let Some(current) = index.get(&k)? else {
                return Err(Error::no_dataset(&k));
            };
            let intent = Intent::Remove(k.clone());
            index.begin(&intent)?;
            if let Err(e) = tokio::runtime::Handle::current().block_on(store.remove(&k)) {
                let _ = index.abandon(&k);
                return Err(e);
            }
            index.complete(&intent, &now())?;
            metrics.catalog_changed(-1, -(current.size as i64));
            Ok(())
        })
        .await
    }
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

/// What a reader wants of a dataset's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Nothing,
    All,
    Range(RangeInclusive<u64>),
}

fn direct_upload_setting(key: &Key) -> String {
    format!("direct-upload:{key}")
}

/// This node's name among nodes sharing an index (its resumable uploads'
/// bytes and its open multipart uploads are its own): a random id kept in
/// `data_dir/node.id`, made at the first start, so it outlives restarts and
/// container re-creations as long as the data directory does.
fn node_id(layout: &Layout) -> Result<String> {
    let path = layout.root.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::internal(format!("reading {}: {e}", path.display()))),
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut staged = layout.new_staging_file()?;
    std::io::Write::write_all(&mut staged, id.as_bytes())?;
    staged.as_file().sync_all()?;
    staged.persist(&path).map_err(|e| Error::internal(e.error))?;
    crate::datadir::fsync_dir(&layout.root)?;
    Ok(id)
}
