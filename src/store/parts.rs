//! Resumable uploads whose bytes a store keeps as they arrive, so that any
//! node can continue one and none is lost with the node that began it.
//!
//! An upload is a multipart upload of whole parts of [`Parts::part_size`]
//! bytes (a power of two, so that each part is a blake3 subtree), plus a
//! *tail* object for the bytes after the last whole part: object stores take
//! no part below their minimum but the last, so a PATCH that ends mid-part
//! leaves its bytes there, and the next PATCH reads them back (at most one
//! part) and sends them on in front of its own. Every object of an upload
//! lives under its own prefix, which [`Parts::discard`] empties.

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::{Reader, Staged};
use crate::error::Result;

#[async_trait::async_trait]
pub trait Parts: Send + Sync {
    /// The size of every part but the last: a power of two, at least the
    /// store's minimum part size.
    fn part_size(&self) -> u64;

    /// Memory for one part buffer, from the store's part memory budget.
    async fn part_memory(&self) -> OwnedSemaphorePermit;

    /// Opens upload `id`'s multipart upload; returns its id.
    async fn open_parts(&self, id: &str) -> Result<String>;

    /// Uploads part `number` (from 0); returns what completing needs of it.
    async fn put_part(&self, id: &str, multipart: &str, number: u64, data: Bytes) -> Result<String>;

    /// Stores the bytes after the last part in a new object; returns its name.
    async fn put_tail(&self, id: &str, data: Bytes) -> Result<String>;

    async fn get_tail(&self, id: &str, tail: &str) -> Result<Bytes>;

    /// Removes a tail the index no longer names (best effort).
    async fn remove_tail(&self, id: &str, tail: &str);

    /// Completes the multipart upload of `parts` (in order) into one object,
    /// staged for the commit.
    async fn finish_parts(&self, id: &str, multipart: &str, parts: Vec<String>) -> Result<Staged>;

    /// Completes the multipart upload of `parts` into one object that stays
    /// under the upload's prefix (a partial upload, read back when a final
    /// upload concatenates it).
    async fn keep_parts(&self, id: &str, multipart: &str, parts: Vec<String>) -> Result<()>;

    /// The bytes of a partial upload [`Parts::keep_parts`] completed.
    async fn read_kept(&self, id: &str) -> Result<Reader>;

    /// Aborts the multipart upload, if any, and removes every object of the
    /// upload (a termination, an expiry).
    async fn discard(&self, id: &str, multipart: Option<&str>) -> Result<()>;
}
