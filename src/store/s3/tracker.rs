//! Which multipart uploads and staged objects are open: noted in the index
//! for the next start, and held in memory for the sweeper.

use std::sync::Arc;

use object_store::path::Path;

use crate::error::Result;
use crate::index::Index;

/// The tracker ids in use in this process.
#[derive(Debug, Clone, Default)]
pub(super) struct Live(Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl Live {
    pub(super) fn hold(&self, id: String) -> LiveGuard {
        self.0.lock().expect("live set").insert(id.clone());
        LiveGuard { live: self.clone(), id }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.0.lock().expect("live set").contains(id)
    }
}

/// Removes its id from the live set when dropped.
pub(super) struct LiveGuard {
    pub(super) live: Live,
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
    pub(super) async fn note(&self, id: &str, path: &Path) -> Result<()> {
        let (index, node, id, path) = (self.index.clone(), self.node.clone(), id.to_owned(), path.to_string());
        crate::blocking::blocking(move || index.note_multipart(&id, &path, &node)).await
    }

    pub(super) async fn forget(&self, id: &str) -> Result<()> {
        let (index, id) = (self.index.clone(), id.to_owned());
        crate::blocking::blocking(move || index.forget_multipart(&id)).await
    }

    /// The upload became a staged object: noted as `object:{path}` now.
    pub(super) async fn completed(&self, id: &str, path: &Path) -> Result<()> {
        let (index, node, id, path) = (self.index.clone(), self.node.clone(), id.to_owned(), path.to_string());
        crate::blocking::blocking(move || {
            index.forget_multipart(&id)?;
            index.note_multipart(&format!("{STAGED_OBJECT}{path}"), &path, &node)
        })
        .await
    }
}

/// How the tracker notes a staged object (not a multipart upload).
pub(super) const STAGED_OBJECT: &str = "object:";
