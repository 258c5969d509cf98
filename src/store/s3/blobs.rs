//! Versions in the bucket: each distinct content is kept once as a blob
//! object, `{prefix}/blobs/{blake3}.{size}`, copied server-side from the
//! key's object when it is installed (never downloaded and re-uploaded).
//! An older version is read from its blob; a restore copies the blob back
//! to the key.

use object_store::path::Path;

use super::S3Store;
use crate::error::{Error, Result};
use crate::index::Blob;
use crate::store::ObjectInfo;

impl S3Store {
    /// Where the blob of these bytes lives.
    pub(super) fn blob_object(&self, blake3: &str, size: u64) -> Path {
        self.prefix.clone().join("blobs").join(format!("{blake3}.{size}"))
    }

    /// Keeps the bytes just installed at `object` as their blob, unless a
    /// good blob of them is there already; the blob's version.
    pub(super) async fn keep_blob(&self, object: &Path, info: &ObjectInfo, replace: bool) -> Result<String> {
        let blob = self.blob_object(&info.blake3, info.size);
        if !replace {
            if let Some((size, version, _)) = self.head(&blob).await? {
                if size == info.size {
                    return Ok(version);
                }
            }
        }
        self.copy_object(object, &blob, info.size, Some(info)).await?;
        let (_, version, _) =
            self.head(&blob).await?.ok_or_else(|| Error::internal("a blob vanished right after its copy"))?;
        Ok(version)
    }

    /// The blob's object, if it still holds the version the index knows.
    pub(super) async fn blob_if_current(&self, blob: &Blob) -> Result<Option<Path>> {
        let path = self.blob_object(&blob.blake3, blob.size);
        Ok(match self.head(&path).await? {
            Some((size, version, _)) if version == blob.version && size == blob.size => Some(path),
            _ => None,
        })
    }
}
