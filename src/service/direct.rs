//! Signed and presigned URLs, and direct uploads to an object store: a URL
//! minted for a client, and the acknowledge that checks and commits what
//! the client put there.

use super::{Acknowledge, Node, UploadMeta};

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::index::Record;
use crate::ingest::Received;
use crate::key::Key;
use crate::store::Direct;

impl Node {
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
        version: Option<i64>,
    ) -> Result<String> {
        if method == "PUT" && self.store.direct().is_some() {
            return self.direct_upload_url(key, expires_in, max_size).await;
        }
        if let Some(number) = version {
            // A URL for a version names bytes that exist: not a number the
            // key may reach later.
            let (index, k) = (self.index.clone(), key.clone());
            if blocking(move || index.version(&k, number)).await?.is_none() {
                return Err(Error::NotFound(format!("`{key}` has no version {number}")));
            }
        }
        let query = self.access.sign(method, key, expires, max_size, version);
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

    pub async fn acknowledge(&self, key: &Key, ack: Acknowledge) -> Result<Record> {
        if let Some(direct) = self.store.direct() {
            self.acknowledge_direct(direct, key, &ack).await?;
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
    async fn acknowledge_direct(&self, direct: &dyn Direct, key: &Key, ack: &Acknowledge) -> Result<()> {
        let limit = self.direct_upload_limit(key).await?;
        let Some(incoming) = direct.take(key, limit).await? else {
            return Ok(());
        };
        if let Some(expected) = &ack.blake3 {
            if !expected.eq_ignore_ascii_case(&incoming.blake3.to_hex()) {
                let actual = incoming.blake3.to_hex();
                direct.refuse(key, incoming).await?;
                return Err(Error::StoredDigestMismatch(format!(
                    "the uploaded object's blake3 is {actual}, not {expected}"
                )));
            }
        }
        let (size, blake3, uploaded) = (incoming.size, incoming.blake3, incoming.uploaded);
        let meta = UploadMeta {
            content_type: incoming.content_type.filter(|t| !t.is_empty()),
            name: ack.metadata.name.clone(),
            description: ack.metadata.description.clone(),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let committed = self.commit(key.clone(), Received { staged: incoming.staged, size, blake3 }, meta).await;
        self.upload_ended(started, committed)?;
        direct.release(key, &uploaded).await
    }

    /// The size limit of a direct upload to `key`: the upload URL's
    /// `max_size` (kept in the index when it was minted), or the node's.
    async fn direct_upload_limit(&self, key: &Key) -> Result<u64> {
        let (index, name) = (self.index.clone(), direct_upload_setting(key));
        let granted = blocking(move || index.granted(&name)).await?;
        let max = self.settings.max_dataset_size.as_u64();
        Ok(granted.and_then(|g| g.parse::<u64>().ok()).map_or(max, |g| g.min(max)))
    }

    /// A presigned PUT straight to the object store (the key's incoming
    /// object), for `POST /datasets/{key}/upload-url` with an S3 store.
    async fn direct_upload_url(&self, key: &Key, expires_in: u64, max_size: Option<u64>) -> Result<String> {
        let direct = self.store.direct().ok_or_else(|| Error::internal("this store takes no direct uploads"))?;
        let (index, name) = (self.index.clone(), direct_upload_setting(key));
        let value = max_size.map_or_else(String::new, |m| m.to_string());
        let expires_in = std::time::Duration::from_secs(expires_in);
        blocking(move || index.grant(&name, &value, expires_in)).await?;
        direct.upload_url(key, expires_in).await
    }

    /// A presigned GET of the dataset's object (downloads = "redirect").
    async fn direct_download_url(&self, key: &Key, expires_in: u64) -> Result<Option<String>> {
        let Some(direct) = self.store.direct() else {
            return Ok(None);
        };
        self.get(key).await?;
        direct.download_url(key, std::time::Duration::from_secs(expires_in)).await.map(Some)
    }
}

fn direct_upload_setting(key: &Key) -> String {
    format!("direct-upload:{key}")
}
