//! The client's small state file: the tus upload URL of each unfinished
//! upload, and the ETag of each unfinished download's `.part` file, so that
//! a client that crashed (or was killed) resumes where the node is.
//!
//! Where: `$SPILLWAY_STATE_DIR/uploads.json`, else
//! `$XDG_STATE_HOME/spillway/uploads.json`, else
//! `~/.local/state/spillway/uploads.json`. The format (version 1):
//!
//! ```json
//! {
//!   "version": 1,
//!   "uploads": [
//!     {"path": "/abs/canonical/file.bin", "size": 314572800, "mtime_ns": 1764316800123456789,
//!      "server": "http://127.0.0.1:8000", "key": "raw/file.bin",
//!      "upload_url": "http://127.0.0.1:8000/uploads/0123...", "created_at": 1764316800}
//!   ],
//!   "downloads": [
//!     {"part": "/abs/out.bin.part", "server": "http://127.0.0.1:8000", "key": "raw/file.bin",
//!      "etag": "<blake3 hex>", "created_at": 1764316800}
//!   ]
//! }
//! ```
//!
//! An upload entry matches only the same canonical path, size and
//! modification time (and the same node and key): a file that changed starts
//! a new upload. Entries are removed on success; entries older than
//! [`MAX_AGE`] are dropped (the node expires unfinished uploads long before).
//! Every change re-reads the file and replaces it atomically (write to a
//! temporary file, rename), so two clients at once lose at most an entry,
//! never the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "uploads.json";
const VERSION: u32 = 1;
/// Changes made by the tasks of one process (`upload --parallel`) go one at
/// a time, so that none undoes another's (between processes, see above).
static CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Entries older than this (seconds) are dropped when the file is written.
pub const MAX_AGE: u64 = 30 * 24 * 60 * 60;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    uploads: Vec<UploadEntry>,
    #[serde(default)]
    downloads: Vec<DownloadEntry>,
}

/// An unfinished upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadEntry {
    /// The canonical path of the local file.
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// The node's base URL.
    pub server: String,
    pub key: String,
    /// The tus upload's absolute URL.
    pub upload_url: String,
    /// Unix seconds.
    pub created_at: u64,
    /// A part of the file sent as a tus partial upload: `I/N` (absent for
    /// a whole file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
}

impl UploadEntry {
    fn same_upload(&self, other: &UploadEntry) -> bool {
        self.part == other.part
            && self.path == other.path
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.server == other.server
            && self.key == other.key
    }
}

/// An unfinished download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadEntry {
    /// The absolute path of the `.part` file.
    pub part: String,
    pub server: String,
    pub key: String,
    /// The ETag (blake3) of the version the `.part` file holds a prefix of.
    pub etag: String,
    pub created_at: u64,
}

/// The state file (its path; the contents are read afresh on each call).
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at its usual place (see the module's documentation).
    pub fn locate() -> Result<StateFile> {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = if let Some(dir) = non_empty("SPILLWAY_STATE_DIR") {
            dir
        } else if let Some(dir) = non_empty("XDG_STATE_HOME") {
            dir.join("spillway")
        } else if let Some(home) = non_empty("HOME") {
            home.join(".local/state/spillway")
        } else {
            anyhow::bail!("no place for the state file: set SPILLWAY_STATE_DIR (or HOME)");
        };
        Ok(StateFile { path: dir.join(FILE_NAME) })
    }

    /// A state file at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Contents> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("the state file {} is not valid; remove it", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read the state file {}", self.path.display())),
        }
    }

    fn store(&self, mut contents: Contents) -> Result<()> {
        let now = unix_now();
        contents.version = VERSION;
        contents.uploads.retain(|e| now.saturating_sub(e.created_at) < MAX_AGE);
        contents.downloads.retain(|e| now.saturating_sub(e.created_at) < MAX_AGE);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let mut temp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot write in the state directory {}", dir.display()))?;
        let mut bytes = serde_json::to_vec_pretty(&contents)?;
        bytes.push(b'\n');
        temp.write_all(&bytes)?;
        temp.as_file().sync_all()?;
        temp.persist(&self.path).with_context(|| format!("cannot replace the state file {}", self.path.display()))?;
        Ok(())
    }

    /// The remembered upload for this file, node and key, if any.
    pub fn find_upload(&self, wanted: &UploadEntry) -> Result<Option<UploadEntry>> {
        Ok(self.load()?.uploads.into_iter().find(|e| e.same_upload(wanted)))
    }

    /// Remembers an upload (replacing any entry for the same file, node and key).
    pub fn remember_upload(&self, entry: &UploadEntry) -> Result<()> {
        let _one_at_a_time = CHANGES.lock().unwrap_or_else(|e| e.into_inner());
        let mut contents = self.load()?;
        contents.uploads.retain(|e| !e.same_upload(entry));
        contents.uploads.push(entry.clone());
        self.store(contents)
    }

    /// Forgets the upload for this file, node and key.
    pub fn forget_upload(&self, entry: &UploadEntry) -> Result<()> {
        let _one_at_a_time = CHANGES.lock().unwrap_or_else(|e| e.into_inner());
        let mut contents = self.load()?;
        let before = contents.uploads.len();
        contents.uploads.retain(|e| !e.same_upload(entry));
        if contents.uploads.len() == before {
            return Ok(());
        }
        self.store(contents)
    }

    /// The remembered download into this `.part` file from this node and key.
    pub fn find_download(&self, part: &str, server: &str, key: &str) -> Result<Option<DownloadEntry>> {
        Ok(self.load()?.downloads.into_iter().find(|e| e.part == part && e.server == server && e.key == key))
    }

    /// Remembers a download (one entry per `.part` file).
    pub fn remember_download(&self, entry: &DownloadEntry) -> Result<()> {
        let _one_at_a_time = CHANGES.lock().unwrap_or_else(|e| e.into_inner());
        let mut contents = self.load()?;
        contents.downloads.retain(|e| e.part != entry.part);
        contents.downloads.push(entry.clone());
        self.store(contents)
    }

    /// Forgets the download into this `.part` file.
    pub fn forget_download(&self, part: &str) -> Result<()> {
        let _one_at_a_time = CHANGES.lock().unwrap_or_else(|e| e.into_inner());
        let mut contents = self.load()?;
        let before = contents.downloads.len();
        contents.downloads.retain(|e| e.part != part);
        if contents.downloads.len() == before {
            return Ok(());
        }
        self.store(contents)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A modification time as nanoseconds since the Unix epoch (0 before it).
pub fn mtime_ns(modified: SystemTime) -> u64 {
    modified.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, url: &str) -> UploadEntry {
        UploadEntry {
            path: path.into(),
            size: 10,
            mtime_ns: 5,
            server: "http://n".into(),
            key: "k".into(),
            upload_url: url.into(),
            created_at: unix_now(),
            part: None,
        }
    }

    #[test]
    fn remembers_finds_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::at(dir.path().join("sub/uploads.json"));
        let a = entry("/a", "http://n/uploads/1");
        assert_eq!(state.find_upload(&a).unwrap(), None);
        state.remember_upload(&a).unwrap();
        state.remember_upload(&entry("/b", "http://n/uploads/2")).unwrap();
        assert_eq!(state.find_upload(&a).unwrap().unwrap().upload_url, "http://n/uploads/1");
        // Another mtime is another file.
        assert_eq!(state.find_upload(&UploadEntry { mtime_ns: 6, ..a.clone() }).unwrap(), None);
        // Remembering again replaces.
        state.remember_upload(&entry("/a", "http://n/uploads/3")).unwrap();
        assert_eq!(state.find_upload(&a).unwrap().unwrap().upload_url, "http://n/uploads/3");
        state.forget_upload(&a).unwrap();
        assert_eq!(state.find_upload(&a).unwrap(), None);
        assert!(state.find_upload(&entry("/b", "")).unwrap().is_some());

        let d = DownloadEntry {
            part: "/x.part".into(),
            server: "http://n".into(),
            key: "x".into(),
            etag: "e".into(),
            created_at: unix_now(),
        };
        state.remember_download(&d).unwrap();
        assert_eq!(state.find_download("/x.part", "http://n", "x").unwrap(), Some(d));
        state.forget_download("/x.part").unwrap();
        assert_eq!(state.find_download("/x.part", "http://n", "x").unwrap(), None);
        let text = fs::read_to_string(state.path()).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn old_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::at(dir.path().join("uploads.json"));
        let old = UploadEntry { created_at: unix_now() - MAX_AGE - 1, ..entry("/old", "u") };
        state.remember_upload(&old).unwrap();
        assert_eq!(state.find_upload(&old).unwrap(), None);
    }
}
