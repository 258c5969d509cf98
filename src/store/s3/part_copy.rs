//! Server-side copies, whole or in parts. Up to `s3.copy_part_threshold`
//! an object is copied by one CopyObject; a larger one (AWS S3 refuses a
//! CopyObject past 5 GiB) by a multipart upload at the destination, with
//! the copy's content type and metadata, filled by UploadPartCopy requests
//! (`x-amz-copy-source-range`, and `x-amz-copy-source-if-match` so that
//! every part comes from the same version of the source) and completed;
//! aborted on any failure, and noted by the tracker while open, so that a
//! crash leaves nothing the next start does not abort.

use futures_util::stream::{FuturesUnordered, StreamExt};
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};

use super::copy::{copy_source, copy_with_metadata, part_etag, send_copy, CopyRequest};
use super::metadata::attributes;
use super::{s3_error, S3Store};
use crate::error::{Error, Result};
use crate::store::ObjectInfo;

/// UploadPartCopy requests in flight per copy (they move no bytes through
/// the node).
const COPY_PARTS_IN_FLIGHT: usize = 4;
/// Copy parts are the threshold's size, but no larger than this (unless
/// 10,000 parts need it): a failed part is retried whole, and one request
/// must finish within the HTTP client's timeout.
const COPY_PART_MAX: u64 = 1 << 30;
/// S3's limits: parts per upload, bytes per part.
const MAX_PARTS: u64 = 10_000;
const MAX_PART_SIZE: u64 = 5 << 30;

impl S3Store {
    /// Copies `from` to `to` server-side, with `info`'s content type and
    /// metadata (or, `None`, `from`'s own). `size`, what `from` should
    /// hold, chooses one CopyObject or a copy in parts.
    pub(super) async fn copy_object(&self, from: &Path, to: &Path, size: u64, info: Option<&ObjectInfo>) -> Result<()> {
        if size > self.copy_part_threshold {
            return self.copy_in_parts(from, to, info).await;
        }
        self.copy_whole(from, to, info).await
    }

    async fn copy_whole(&self, from: &Path, to: &Path, info: Option<&ObjectInfo>) -> Result<()> {
        match info {
            Some(info) => copy_with_metadata(&self.store, &self.bucket, from, to, info).await,
            None => match self.store.copy(from, to).await {
                Ok(()) => Ok(()),
                Err(object_store::Error::NotFound { .. }) => Err(missing()),
                Err(e) => Err(s3_error(e)),
            },
        }
    }

    async fn copy_in_parts(&self, from: &Path, to: &Path, info: Option<&ObjectInfo>) -> Result<()> {
        let head = match self.store.get_opts(from, GetOptions { head: true, ..Default::default() }).await {
            Ok(head) => head,
            Err(object_store::Error::NotFound { .. }) => return Err(missing()),
            Err(e) => return Err(s3_error(e)),
        };
        let size = head.meta.size;
        if size <= self.copy_part_threshold {
            return self.copy_whole(from, to, info).await;
        }
        let attributes = match info {
            Some(info) => attributes(info),
            None => head.attributes,
        };
        let part = copy_part_size(size, self.copy_part_threshold);
        let count = size.div_ceil(part);
        let mut headers = vec![("x-amz-copy-source", copy_source(&self.bucket, from))];
        if let Some(etag) = head.meta.e_tag {
            headers.push(("x-amz-copy-source-if-match", etag));
        }
        let mut pending = self.open_pending(to.clone(), attributes).await?;
        let (location, id) = pending.target();
        let (location, id) = (location.clone(), id.to_owned());
        let copy_part = |idx: u64| {
            let first = idx * part;
            let last = (first + part).min(size) - 1;
            let mut headers = headers.clone();
            headers.push(("x-amz-copy-source-range", format!("bytes={first}-{last}")));
            let query = vec![("partNumber", (idx + 1).to_string()), ("uploadId", id.clone())];
            let request = CopyRequest { to: &location, query, headers };
            async move { (idx, send_copy(&self.store, &request).await.and_then(|body| part_etag(&body))) }
        };
        // At most COPY_PARTS_IN_FLIGHT at once; after a failure none is
        // started and those running are waited for, then the upload aborted.
        let mut running = FuturesUnordered::new();
        let mut failure = None;
        let mut next = 0;
        loop {
            while failure.is_none() && next < count && running.len() < COPY_PARTS_IN_FLIGHT {
                running.push(copy_part(next));
                next += 1;
            }
            match running.next().await {
                Some((idx, Ok(etag))) => pending.set_part(idx as usize, PartId { content_id: etag }),
                Some((_, Err(e))) => {
                    failure.get_or_insert(e);
                }
                None => break,
            }
        }
        if let Some(failure) = failure {
            pending.abort().await;
            return Err(failure.into_error(from, to));
        }
        pending.complete_in_place().await?;
        log::info!("object store: copied {from} to {to} in {count} parts of {} MiB", part >> 20);
        Ok(())
    }
}

fn missing() -> Error {
    Error::NotFound("the object to copy is missing in the store".into())
}

/// The part size of a copy of `size` bytes in parts: the threshold's, at
/// most [`COPY_PART_MAX`], larger (whole MiB) if 10,000 parts need it, and
/// never past S3's 5 GiB.
fn copy_part_size(size: u64, threshold: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let fits = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    threshold.min(COPY_PART_MAX).max(fits).min(MAX_PART_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_parts_fit_the_limits() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        assert_eq!(copy_part_size(12 * MIB, 5 * MIB), 5 * MIB);
        assert_eq!(copy_part_size(6 * GIB, 5 * GIB), GIB);
        // 5 TiB, S3's largest object, in 5 MiB parts would be too many.
        let part = copy_part_size(5 << 40, 5 * MIB);
        assert!((5u64 << 40).div_ceil(part) <= MAX_PARTS && part.is_multiple_of(MIB), "{part}");
        assert!(copy_part_size(u64::MAX / 2, 5 * GIB) <= MAX_PART_SIZE);
    }
}
