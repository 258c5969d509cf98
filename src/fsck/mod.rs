//! Offline checks of a data directory: `spillway fsck` compares the index
//! with the files (and the spool), `--repair` fixes what is safe, and
//! `spillway reindex` rebuilds the index from the files alone, or, with
//! `storage = "s3"`, from the bucket (list + object metadata; an object
//! whose metadata carries no blake3 is read through and hashed).
//!
//! Both take the data directory's lock, so they never run beside the node
//! of that directory. With a shared (PostgreSQL) index, stop every node
//! before a reindex.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use walkdir::WalkDir;

use crate::config::{IndexKind, Settings, StorageKind};
use crate::datadir::{DataLock, Layout};
use crate::error::{Error, Result};
use crate::index::{Index, NewVersion, Record};
use crate::key::Key;
use crate::timestamp::now;

mod blobs;

/// One disagreement between the index, the files and the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A row whose file is gone. Repair: drop the row.
    MissingFile { key: String },
    /// A complete file (only fsynced files are ever renamed in) with no row.
    /// Repair: index it.
    UnindexedFile { key: String },
    /// A file below `datasets/` whose path is not a valid key. Not repaired:
    /// someone put it there by hand; move it away or rename it.
    InvalidName { path: PathBuf },
    /// Size or content differs from the row (a crash between the rename and
    /// the row update of a replace). Repair: the row follows the file.
    Mismatch { key: String, index: (u64, String), disk: (u64, String) },
    /// A spool or staging file of an upload that never finished. Repair: delete.
    StraySpool { path: PathBuf },
    /// A symlink below the data directory. The node never follows one (its
    /// keys answer `409 symlink-refused`). Not repaired: someone put it
    /// there by hand, and where it points is theirs to judge.
    Symlink { path: PathBuf },
    /// A version whose bytes have no blob. Not repaired: restore the
    /// index from its backup, or `reindex` (which drops history).
    VersionWithoutBlob { key: String, number: i64 },
    /// A blob row whose file is gone or is not the one it names (another
    /// inode or size: edited in place, or removed by hand). Repair: the
    /// versions that need it, which can never be read, go with it, unless
    /// one is current.
    MissingBlob { blake3: String, size: u64 },
    /// A blob no version refers to. Repair: remove it.
    UnreferencedBlob { blake3: String, size: u64 },
    /// A file in `blobs/` no row names (a crash between its link and its
    /// row). Repair: delete it.
    StrayBlob { path: PathBuf },
}

impl Finding {
    pub fn repairable(&self) -> bool {
        !matches!(self, Finding::InvalidName { .. } | Finding::Symlink { .. } | Finding::VersionWithoutBlob { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::MissingFile { key } => write!(f, "row without file: `{key}`"),
            Finding::UnindexedFile { key } => write!(f, "file without row: `{key}`"),
            Finding::InvalidName { path } => {
                write!(f, "file whose path is not a valid key: {}", path.display())
            }
            Finding::Mismatch { key, index, disk } => write!(
                f,
                "`{key}` differs: index says {} bytes, blake3 {}; disk has {} bytes, blake3 {}",
                index.0, index.1, disk.0, disk.1
            ),
            Finding::StraySpool { path } => write!(f, "stray spool file: {}", path.display()),
            Finding::Symlink { path } => write!(f, "symlink below the data directory: {}", path.display()),
            Finding::VersionWithoutBlob { key, number } => {
                write!(f, "version {number} of `{key}` has no stored blob")
            }
            Finding::MissingBlob { blake3, size } => {
                write!(f, "blob {blake3} ({size} bytes) is missing or holds other bytes")
            }
            Finding::UnreferencedBlob { blake3, size } => {
                write!(f, "blob {blake3} ({size} bytes) backs no version")
            }
            Finding::StrayBlob { path } => write!(f, "stray blob file: {}", path.display()),
        }
    }
}

/// The result of a check.
#[derive(Debug, Default)]
pub struct Report {
    pub checked: u64,
    pub findings: Vec<Finding>,
    pub repaired: usize,
}

/// Compares index, files and spool; with `repair`, fixes what is safe.
pub fn fsck(settings: &Settings, repair: bool) -> Result<Report> {
    if settings.storage == StorageKind::S3 {
        return Err(Error::BadRequest(
            "fsck checks the filesystem store; with storage = \"s3\", `spillway reindex` rebuilds the index from the bucket"
                .into(),
        ));
    }
    let layout = Layout::prepare(settings).map_err(Error::internal)?;
    let _lock = DataLock::acquire(&layout)?;
    let index = Index::open_configured(settings, &layout.index_file)?;
    let mut report = Report::default();

    let mut rows: BTreeMap<String, Record> = BTreeMap::new();
    index.for_each(|r| {
        rows.insert(r.key.clone(), r);
    })?;
    let files = dataset_files(&layout)?;
    let progress = progress_bar(files.iter().map(|f| f.size).sum(), "checking");

    for file in &files {
        let Some(key) = &file.key else {
            report.findings.push(Finding::InvalidName { path: file.path.clone() });
            continue;
        };
        report.checked += 1;
        let disk_hash = hash_file(&file.path, &progress)?;
        match rows.remove(key.as_str()) {
            None => report.findings.push(Finding::UnindexedFile { key: key.to_string() }),
            Some(row) if row.size != file.size || row.blake3 != disk_hash => {
                report.findings.push(Finding::Mismatch {
                    key: key.to_string(),
                    index: (row.size, row.blake3),
                    disk: (file.size, disk_hash),
                });
            }
            Some(row) if row.version != file.inode.to_string() && repair => {
                // Harmless (an index restored or rebuilt elsewhere): refresh.
                keep_as_blob(&layout, key, file, &disk_hash)?;
                index.upsert(
                    &found_version(key, file, disk_hash, Some(&row)),
                    &row.updated_at,
                    crate::index::Retention::of(settings),
                )?;
            }
            Some(_) => {}
        }
    }
    progress.finish_and_clear();
    report.findings.extend(rows.into_keys().map(|key| Finding::MissingFile { key }));
    report
        .findings
        .extend(layout.spool_files().map_err(Error::internal)?.into_iter().map(|path| Finding::StraySpool { path }));
    report.findings.extend(symlinks(&layout.root)?.into_iter().map(|path| Finding::Symlink { path }));
    blobs::check(&index, &layout, &mut report)?;

    if repair {
        for finding in &report.findings {
            if repair_one(&index, &layout, settings, &files, finding)? {
                report.repaired += 1;
            }
        }
    }
    Ok(report)
}

fn repair_one(
    index: &Index,
    layout: &Layout,
    settings: &Settings,
    files: &[FoundFile],
    finding: &Finding,
) -> Result<bool> {
    let file_of = |key: &str| files.iter().find(|f| f.key.as_ref().is_some_and(|k| k.as_str() == key));
    match finding {
        Finding::MissingFile { key } => {
            index.delete(&Key::parse(key)?)?;
        }
        Finding::UnindexedFile { key } | Finding::Mismatch { key, .. } => {
            let file = file_of(key).ok_or_else(|| Error::internal("file vanished during fsck"))?;
            let key = Key::parse(key)?;
            let hash = hash_file(&file.path, &ProgressBar::hidden())?;
            let current = index.get(&key)?;
            keep_as_blob(layout, &key, file, &hash)?;
            index.upsert(
                &found_version(&key, file, hash, current.as_ref()),
                &now(),
                crate::index::Retention::of(settings),
            )?;
        }
        Finding::StraySpool { path } => std::fs::remove_file(path).map_err(Error::internal)?,
        Finding::InvalidName { .. } | Finding::Symlink { .. } => return Ok(false),
        blob => return blobs::repair(index, layout, blob),
    }
    Ok(true)
}

fn found_version(key: &Key, file: &FoundFile, blake3: String, row: Option<&Record>) -> NewVersion {
    NewVersion {
        key: key.clone(),
        size: file.size,
        blake3,
        content_type: row.map_or_else(|| "application/octet-stream".into(), |r| r.content_type.clone()),
        version: file.inode.to_string(),
        blob_version: file.inode.to_string(),
        name: None,
        description: None,
        uploaded_by: None,
    }
}

/// Links a dataset's file found on disk as the blob of its bytes, so that
/// the version the index is given has its blob.
fn keep_as_blob(layout: &Layout, key: &Key, file: &FoundFile, blake3: &str) -> Result<()> {
    let opened = layout.open_dataset(key)?.ok_or_else(|| Error::internal("file vanished during fsck"))?;
    layout.keep_file_as_blob(key, &opened, blake3, file.size)
}

/// Rebuilds the index from the store: the files below `datasets/`, hashing
/// each one, or the bucket's objects. Metadata (name, description, tags,
/// content type, created_at) of keys the old index still knows is kept; the
/// rest gets defaults. An SQLite index is built beside the old one and
/// renamed over it, a PostgreSQL one is replaced in one transaction, so a
/// failed rebuild leaves the old index in place.
pub fn reindex(settings: &Settings) -> Result<Report> {
    let layout = Layout::prepare(settings).map_err(Error::internal)?;
    let _lock = DataLock::acquire(&layout)?;
    let mut old: BTreeMap<String, Record> = BTreeMap::new();
    let old_index = match settings.index {
        IndexKind::Postgres => Some(Index::open_configured(settings, &layout.index_file)?),
        IndexKind::Sqlite if layout.index_file.exists() => Index::open(&layout.index_file)
            .inspect_err(|e| eprintln!("spillway: the old index cannot be read ({e}); metadata starts afresh"))
            .ok(),
        IndexKind::Sqlite => None,
    };
    if let Some(index) = &old_index {
        if let Err(e) = index.for_each(|r| drop(old.insert(r.key.clone(), r))) {
            eprintln!("spillway: the old index cannot be read ({e}); metadata starts afresh");
        }
    }
    let mut report = Report::default();
    let found = match settings.storage {
        StorageKind::Fs => found_files(&layout, &mut report)?,
        StorageKind::S3 => found_objects(settings, &layout)?,
    };
    report.checked = found.len() as u64;
    let stamp = now();
    let versions: Vec<NewVersion> = found
        .into_iter()
        .map(|(key, size, version, blake3, content_type)| {
            let row = old.get(key.as_str());
            NewVersion {
                content_type: row
                    .map(|r| r.content_type.clone())
                    .or(content_type)
                    .unwrap_or_else(|| "application/octet-stream".into()),
                name: row.map(|r| r.name.clone()),
                description: row.and_then(|r| r.description.clone()),
                key,
                size,
                blake3,
                // On the filesystem the key's file is its blob; an object
                // store's blob is copied at the node's next start.
                blob_version: if settings.storage == StorageKind::Fs { version.clone() } else { String::new() },
                uploaded_by: None,
                version,
            }
        })
        .collect();
    match old_index {
        Some(index) if index.is_shared() => index.replace_all(&versions, &old, &stamp)?,
        _ => {
            drop(old_index);
            let fresh_path = layout.root.join("index.sqlite.rebuild");
            remove_database(&fresh_path)?;
            let fresh = Index::open(&fresh_path)?;
            fresh.replace_all(&versions, &old, &stamp)?;
            drop(fresh);
            remove_database(&layout.index_file)?;
            std::fs::rename(&fresh_path, &layout.index_file).map_err(Error::internal)?;
            crate::datadir::fsync_dir(&layout.root).map_err(Error::internal)?;
        }
    }
    Ok(report)
}

/// A dataset found in the store: key, size, version, blake3, content type.
type FoundRow = (Key, u64, String, String, Option<String>);

fn found_files(layout: &Layout, report: &mut Report) -> Result<Vec<FoundRow>> {
    report.findings.extend(symlinks(&layout.datasets)?.into_iter().map(|path| Finding::Symlink { path }));
    let files = dataset_files(layout)?;
    let progress = progress_bar(files.iter().map(|f| f.size).sum(), "hashing");
    let mut found = Vec::with_capacity(files.len());
    for file in files {
        let Some(key) = file.key.clone() else {
            report.findings.push(Finding::InvalidName { path: file.path.clone() });
            continue;
        };
        let hash = hash_file(&file.path, &progress)?;
        // The file becomes the blob of its bytes: version 1 of its key.
        keep_as_blob(layout, &key, &file, &hash)?;
        found.push((key, file.size, file.inode.to_string(), hash, None));
    }
    progress.finish_and_clear();
    Ok(found)
}

/// The bucket's objects, with the blake3 their metadata holds, or (for an
/// object written without it: streamed or directly uploaded) read through.
fn found_objects(settings: &Settings, layout: &Layout) -> Result<Vec<FoundRow>> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(Error::internal)?;
    let store = crate::store::open(settings, &std::sync::Arc::new(layout.clone()), None)?;
    let progress = progress_bar(0, "hashing");
    let found = runtime.block_on(store.inventory(&|bytes| progress.inc(bytes)))?;
    progress.finish_and_clear();
    Ok(found.into_iter().map(|f| (f.key, f.size, f.version, f.blake3.unwrap_or_default(), f.content_type)).collect())
}

/// Removes an SQLite database and its WAL and shared-memory files.
fn remove_database(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::internal(e)),
        }
    }
    Ok(())
}

struct FoundFile {
    path: PathBuf,
    key: Option<Key>,
    size: u64,
    inode: u64,
}

fn dataset_files(layout: &Layout) -> Result<Vec<FoundFile>> {
    let mut files = Vec::new();
    for entry in WalkDir::new(&layout.datasets).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(Error::internal)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let meta = entry.metadata().map_err(Error::internal)?;
        files.push(FoundFile {
            key: layout.key_of(entry.path()),
            path: entry.into_path(),
            size: meta.len(),
            inode: meta.ino(),
        });
    }
    Ok(files)
}

/// Every symlink below `dir` (none is followed).
fn symlinks(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(Error::internal)?;
        if entry.path_is_symlink() {
            found.push(entry.into_path());
        }
    }
    Ok(found)
}

fn hash_file(path: &Path, progress: &ProgressBar) -> Result<String> {
    let file = File::open(path).map_err(Error::internal)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(progress.wrap_read(file)).map_err(Error::internal)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// A byte-count progress bar on a terminal; nothing when stderr is not one.
fn progress_bar(total: u64, verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(&format!(
        "{verb} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
    ))
    .expect("valid template");
    bar.set_style(style);
    bar
}
