//! Direct transfers: clients put and get bytes at the store itself with
//! presigned URLs, and the node checks and commits what they put there.

use async_trait::async_trait;

use super::Staged;
use crate::error::Result;
use crate::key::Key;

/// A direct upload waiting at a key, taken over by the node: a private
/// copy (what the client does to its upload from now on changes nothing),
/// read through and hashed.
pub struct Incoming {
    pub staged: Staged,
    pub size: u64,
    pub blake3: blake3::Hash,
    pub content_type: Option<String>,
    /// The client's upload as it was taken, for [`Direct::release`].
    pub uploaded: String,
}

#[async_trait]
pub trait Direct: Send + Sync {
    /// A presigned PUT to the key's incoming place.
    async fn upload_url(&self, key: &Key, expires_in: std::time::Duration) -> Result<String>;

    /// A presigned GET of the key's dataset.
    async fn download_url(&self, key: &Key, expires_in: std::time::Duration) -> Result<String>;

    /// The direct upload waiting for `key`, copied and hashed; `None` when
    /// nothing waits. One larger than `limit` is released and refused
    /// (`413`) before it is read.
    async fn take(&self, key: &Key, limit: u64) -> Result<Option<Incoming>>;

    /// Removes the client's upload, unless it was replaced after `take`.
    async fn release(&self, key: &Key, uploaded: &str) -> Result<()>;

    /// A taken upload refused: its private copy is removed, then the
    /// client's upload is [released](Direct::release), both before the
    /// refusal is answered.
    async fn refuse(&self, key: &Key, incoming: Incoming) -> Result<()>;
}
