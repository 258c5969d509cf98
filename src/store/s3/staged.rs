//! Complete private objects waiting to be copied to their key.

use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::bucket::Bucket;
use super::metadata::etag;
use super::tracker::{LiveGuard, Tracker, STAGED_OBJECT};
use super::{s3_error, S3Store};
use crate::error::{Error, Result};
use crate::store::ObjectInfo;

impl S3Store {
    /// A private copy of `from` (a direct upload's incoming object), made
    /// server-side: what the node then checks and hashes is exactly what it
    /// installs, whatever the client does to `from` meanwhile. `None` when
    /// `from` is gone (another acknowledge took it). `size`: what `from`
    /// held when last seen (it chooses a copy in parts).
    pub(super) async fn stage_copy(&self, from: &Path, size: u64) -> Result<Option<(StagedObject, u64)>> {
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
        match self.copy_object(from, &path, size, None).await {
            Ok(()) => {}
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let size = self.store.head(&path).await.map_err(s3_error)?.size;
        Ok(Some((object, size)))
    }
}

/// A complete private object (a finished staged upload, or the copy of a
/// direct upload) waiting to be copied to its key; deleted if dropped.
pub(super) struct StagedObject {
    pub(super) path: Option<Path>,
    pub(super) store: Arc<Bucket>,
    pub(super) tracker: Option<Tracker>,
    pub(super) _live: Option<LiveGuard>,
}

impl StagedObject {
    pub(super) fn path(&self) -> &Path {
        self.path.as_ref().expect("the object is live")
    }

    /// Copies it to `to` (server-side, with `info` as the copy's content
    /// type and metadata) and removes it; the copy's version.
    pub(super) async fn install(mut self, s3: &S3Store, to: &Path, info: &ObjectInfo) -> Result<String> {
        let from = self.path.take().expect("the object is live");
        let copied = s3.copy_object(&from, to, info.size, Some(info)).await;
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

    /// Deletes it now, rather than in the background as a drop does: for
    /// a refusal that must leave nothing behind by the time it is answered.
    pub(super) async fn discard(mut self) {
        if let Some(path) = self.path.take() {
            discard(self.store.clone(), path, self.tracker.clone()).await;
        }
    }
}

async fn discard(store: Arc<Bucket>, path: Path, tracker: Option<Tracker>) {
    // A test slows this to tell an awaited removal from a background one.
    crate::failpoint::hold("s3.staged.discard");
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
