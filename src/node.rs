//! The node: coordinates the byte store (`store`), the catalog (`index`) and
//! the upload pipeline (`upload`). HTTP handlers call these methods and
//! nothing below them. Mutations of the catalog and the data directory
//! (install, delete) are serialised by one commit lock; uploads stream in
//! parallel and only take the lock for the short install + index step.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use serde::Deserialize;
use tokio::io::AsyncRead;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::index::{Index, Intent, MetadataPatch, NewVersion, Record};
use crate::key::Key;
use crate::metrics::{Metrics, Outcome};
use crate::store::{conflict_with_folder, DataLock, Layout};
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
#[derive(Debug, Clone, Default, Deserialize)]
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
    pub settings: Settings,
    pub layout: Arc<Layout>,
    pub index: Index,
    pub spooler: Spooler,
    pub metrics: Arc<Metrics>,
    pub access: crate::access::Access,
    pub tus: crate::tus::Resumable,
    commit_lock: Mutex<()>,
    uploads: Arc<Semaphore>,
    _lock: DataLock,
}

impl Node {
    /// Prepares the data directory, sweeps what a previous run left in the
    /// spool, opens the index and runs the cheap start-up reconcile.
    pub fn open(settings: Settings) -> Result<Node> {
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
        let index = Index::open(&layout.index_file)?;
        let metrics = Arc::new(Metrics::new());
        let access = crate::access::Access::new(&settings.tokens, settings.signing_key.as_deref(), &layout.root)?;
        let spooler = Spooler {
            layout: layout.clone(),
            budget: MemoryBudget::new(settings.spool_memory_budget.as_u64() as usize),
            spool_memory: settings.spool_memory.as_u64() as usize,
            max_size: settings.max_dataset_size.as_u64(),
            stall_timeout: settings.stall_timeout(),
            disk_reserve: settings.disk_reserve.as_u64(),
            received_bytes: metrics.upload_bytes.clone(),
        };
        let node = Node {
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
    fn resolve_intents(&self) -> Result<()> {
        for intent in self.index.pending_intents()? {
            match &intent {
                Intent::Install(v) if self.layout.inode_of(&v.key) == Some(v.inode) => {
                    log::warn!("finishing the interrupted commit of `{}`", v.key);
                    self.index.complete(&intent, &now())?;
                }
                Intent::Install(v) => {
                    log::warn!("rolling back the interrupted commit of `{}`", v.key);
                    self.index.abandon(&v.key)?;
                }
                Intent::Remove(key) if self.layout.inode_of(key).is_none() => {
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
    /// (`spillway fsck` explains and repairs them).
    fn reconcile_on_start(&self) -> Result<()> {
        let (mut checked, mut problems) = (0u64, 0u64);
        self.index.for_each(|record| {
            checked += 1;
            let Ok(key) = Key::parse(&record.key) else {
                return;
            };
            match std::fs::metadata(self.layout.dataset_path(&key)) {
                Ok(m) if m.is_file() && m.len() == record.size => {}
                Ok(m) => {
                    problems += 1;
                    log::warn!("reconcile: `{key}` is {} bytes on disk, {} in the index", m.len(), record.size);
                }
                Err(_) => {
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
    pub fn readiness(&self) -> Vec<(&'static str, Option<String>)> {
        let writable = |dir: &std::path::Path| match tempfile::Builder::new()
            .prefix(crate::store::SPOOL_PREFIX)
            .tempfile_in(dir)
        {
            Ok(_) => None,
            Err(e) => {
                // The client sees the kind of failure; the path goes to the log.
                log::warn!("readiness: cannot write in {}: {e}", dir.display());
                Some(format!("cannot write: {}", std::io::Error::from(e.kind())))
            }
        };
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
        vec![
            (
                "index",
                self.index.ping().err().map(|e| {
                    log::warn!("readiness: the index does not answer: {}", e.cause());
                    "it does not answer; the cause is in the log".to_string()
                }),
            ),
            ("data directory", writable(&self.layout.staging)),
            ("spool directory", writable(&self.layout.spool)),
            ("data volume", space(&self.layout.datasets)),
            ("spool volume", space(&self.layout.spool)),
        ]
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
        let spooled = self.spooler.spool(body, &meta.expected).await?;
        self.commit(key, spooled, meta).await
    }

    /// The commit: re-check the preconditions and conflicts under the lock,
    /// install the fsynced file (rename + directory fsync), write the row.
    /// Returns the record and whether the key is new.
    pub async fn commit(&self, key: Key, spooled: Spooled, meta: UploadMeta) -> Result<(Record, bool)> {
        if !self.layout.spool_on_data_volume && spooled.file.path().starts_with(&self.layout.spool) {
            // It will be copied to the data volume first: that needs room too.
            self.spooler.check_space(&self.layout.datasets, spooled.size)?;
        }
        // A copy across volumes (a spool of its own) happens before the lock,
        // so it never holds up other commits.
        let layout = self.layout.clone();
        let file = blocking(move || layout.to_data_volume(spooled.file)).await?;
        let _guard = self.commit_lock.lock().await;
        let (index, layout, metrics) = (self.index.clone(), self.layout.clone(), self.metrics.clone());
        blocking(move || {
            let current = index.get(&key)?;
            meta.precondition.check(current.as_ref())?;
            check_conflicts(&index, &key)?;
            let version = NewVersion {
                key: key.clone(),
                size: spooled.size,
                blake3: spooled.blake3.to_hex().to_string(),
                content_type: meta.content_type.unwrap_or_else(|| "application/octet-stream".into()),
                inode: file.as_file().metadata()?.ino(),
                name: meta.name,
                description: meta.description,
            };
            // Intent, rename, then row: a crash anywhere leaves a state the
            // next start finishes or rolls back (see `resolve_intents`).
            let intent = Intent::Install(version);
            index.begin(&intent)?;
            if let Err(e) = layout.place(file, &key) {
                let _ = index.abandon(&key);
                return Err(e);
            }
            let record = index.complete(&intent, &now())?.expect("an install has a record");
            let old_size = current.as_ref().map_or(0, |r| r.size as i64);
            metrics.catalog_changed(i64::from(current.is_none()), record.size as i64 - old_size);
            Ok((record, current.is_none()))
        })
        .await
    }

    /// Opens a dataset for reading, with the record that describes exactly
    /// the opened file (matched by inode, so a concurrent replace never pairs
    /// new bytes with an old ETag).
    pub async fn open_dataset(&self, key: &Key) -> Result<(File, Record)> {
        for attempt in 0..2 {
            let (index, layout, k) = (self.index.clone(), self.layout.clone(), key.clone());
            let found = blocking(move || -> Result<Option<(File, Record)>> {
                let Some(record) = index.get(&k)? else {
                    return Err(Error::no_dataset(&k));
                };
                let file = match File::open(layout.dataset_path(&k)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::internal(e)),
                };
                let meta = file.metadata()?;
                let matches = meta.ino() == record.inode && meta.len() == record.size;
                Ok(matches.then_some((file, record)))
            })
            .await?;
            if let Some(found) = found {
                return Ok(found);
            }
            if attempt == 0 {
                // A commit or delete is between its file and its row: wait for it.
                drop(self.commit_lock.lock().await);
            }
        }
        log::error!("`{key}`: the file on disk does not match its index row; run `spillway fsck`");
        Err(Error::internal(format!("file and index row of `{key}` disagree")))
    }

    pub async fn patch(&self, key: &Key, patch: MetadataPatch) -> Result<Record> {
        let (index, k) = (self.index.clone(), key.clone());
        blocking(move || index.patch(&k, &patch, &now())).await?.ok_or_else(|| Error::no_dataset(key))
    }

    pub async fn acknowledge(&self, key: &Key, ack: Acknowledge) -> Result<Record> {
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

    /// Removes the file (atomically, then its row) under the commit lock.
    pub async fn delete(&self, key: &Key) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        let (index, layout, metrics, k) = (self.index.clone(), self.layout.clone(), self.metrics.clone(), key.clone());
        blocking(move || {
            let Some(current) = index.get(&k)? else {
                return Err(Error::no_dataset(&k));
            };
            let intent = Intent::Remove(k.clone());
            index.begin(&intent)?;
            layout.remove(&k)?;
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

/// Runs blocking work (SQLite, fsync, rename) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
}

/// Now, as the RFC 3339 UTC timestamps of the records (second precision).
pub fn now() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc().format(&format).expect("timestamp formats")
}
