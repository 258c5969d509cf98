//! Direct uploads and downloads: presigned URLs on the bucket, and taking
//! over what a client uploaded to `{prefix}/incoming/{key}`.

use std::time::Duration;

use super::{S3Staged, S3Store};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::{Direct, Incoming, Native, Staged};

#[async_trait::async_trait]
impl Direct for S3Store {
    async fn upload_url(&self, key: &Key, expires_in: Duration) -> Result<String> {
        self.presign("PUT", &self.incoming(key), expires_in).await
    }

    async fn download_url(&self, key: &Key, expires_in: Duration) -> Result<String> {
        self.presign("GET", &self.object(key), expires_in).await
    }

    async fn take(&self, key: &Key, limit: u64) -> Result<Option<Incoming>> {
        let incoming = self.incoming(key);
        let Some((seen, uploaded, content_type)) = self.head(&incoming).await? else {
            return Ok(None);
        };
        // Check, hash and install one private copy, never the incoming
        // object itself, which the client may still overwrite.
        let Some((object, size)) = self.stage_copy(&incoming, seen).await? else {
            return Ok(None);
        };
        if size > limit {
            object.discard().await;
            self.delete_if_unchanged(&incoming, &uploaded).await?;
            return Err(Error::TooLarge { limit });
        }
        let (blake3, read) = self.hash_object(object.path()).await?;
        if read != size {
            return Err(Error::Unavailable("the object store", format!("read {read} of {size} bytes")));
        }
        let staged = Staged::Native(Native::new(S3Staged::Object(object)));
        Ok(Some(Incoming { staged, size, blake3, content_type, uploaded }))
    }

    async fn release(&self, key: &Key, uploaded: &str) -> Result<()> {
        self.delete_if_unchanged(&self.incoming(key), uploaded).await
    }

    async fn refuse(&self, key: &Key, incoming: Incoming) -> Result<()> {
        if let Staged::Native(native) = incoming.staged {
            if let Ok(S3Staged::Object(object)) = native.take::<S3Staged>() {
                object.discard().await;
            }
        }
        self.release(key, &incoming.uploaded).await
    }
}
