//! Opening the node: the data directory, the index, the store, and the
//! start-up recovery (interrupted commits resolved, the catalog reconciled).

use super::Node;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::blocking::blocking;
use crate::config::Settings;
use crate::datadir::{DataLock, Layout};
use crate::error::{Error, Result};
use crate::index::{Index, Intent, NewVersion};
use crate::ingest::{MemoryBudget, Spooler};
use crate::key::Key;
use crate::metrics::Metrics;
use crate::timestamp::now;

impl Node {
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
        let store = crate::store::open(&settings, &layout, Some((index.clone(), node_id.clone())))?;
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
            direct_writes: settings.direct_writes,
            max_size: settings.max_dataset_size.as_u64(),
            stall_timeout: settings.stall_timeout(),
            disk_reserve: settings.disk_reserve.as_u64(),
            received_bytes: metrics.upload_bytes.clone(),
            store: store.clone(),
        };
        log::info!(
            "store: {}; index: {}",
            store.describe(),
            if index.is_shared() { "PostgreSQL (shared)" } else { "SQLite" }
        );
        let node = Node {
            node_id,
            store,
            uploads: Arc::new(Semaphore::new(settings.max_uploads)),
            settings,
            layout,
            index,
            spooler,
            metrics,
            access,
            tus: Default::default(),
            locks: Default::default(),
            _lock: lock,
        };
        node.resolve_intents()?;
        let handle = tokio::runtime::Handle::current();
        let freed = handle.block_on(node.prune_versions())?;
        if freed > 0 {
            log::info!("freed {freed} stored blob(s) no version refers to");
        }
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
    /// whole catalog's lock, so no other node's commit is in flight and
    /// every intent left is one a crash interrupted.
    fn resolve_intents(&self) -> Result<()> {
        let handle = tokio::runtime::Handle::current();
        let _held = handle.block_on(self.locks.take(&super::locks::Claim::all(), &self.index))?;
        for intent in self.index.pending_intents()? {
            match &intent {
                Intent::Install(v) => {
                    let current = self.index.get(&v.key)?;
                    match handle.block_on(self.store.landed(v, current.as_ref()))? {
                        Some(installed) => {
                            log::warn!("finishing the interrupted commit of `{}`", v.key);
                            let landed = Intent::Install(NewVersion {
                                version: installed.version,
                                blob_version: installed.blob,
                                ..v.clone()
                            });
                            // What it doomed is freed with the rest at start.
                            self.index.complete(&landed, &now(), crate::index::Retention::of(&self.settings))?;
                        }
                        None => {
                            log::warn!("rolling back the interrupted commit of `{}`", v.key);
                            let kept = self.index.blob(&v.blake3, v.size)?;
                            handle.block_on(self.store.unmade(v, kept.as_ref()))?;
                            self.index.abandon(&v.key)?;
                        }
                    }
                }
                Intent::Remove { key, .. } if handle.block_on(self.store.version_of(key))?.is_none() => {
                    log::warn!("finishing the interrupted delete of `{key}`");
                    self.index.complete(&intent, &now(), crate::index::Retention::of(&self.settings))?;
                }
                Intent::Remove { key, .. } => {
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
        if self.store.remote() {
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
