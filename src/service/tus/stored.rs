//! PATCH of a resumable upload kept in the object store (`store::Parts`),
//! through any node. The request holds the upload's lease; bytes gather in
//! one part buffer (the tail read back first), each whole part is uploaded
//! (several in flight) and recorded in the index as it lands, with its
//! blake3 chaining value. At the end of the body the bytes after the last
//! part go to a new tail object, so the `204` means every acknowledged byte
//! is in the store. The last PATCH sends the last part, completes the
//! multipart upload and commits it like any upload, its blake3 merged from
//! the parts' chaining values (`tree`), no byte read back.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use tokio::io::AsyncRead;
use tokio::sync::OwnedSemaphorePermit;

use super::lease::Lease;
use super::tree::{part_cv, root};
use super::{Patch, UploadInfo};
use crate::access::Caller;
use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::index::{Index, StoredPart, StoredUpload, UploadRow};
use crate::ingest::{ChunkReader, Hashing, Received};
use crate::service::Node;
use crate::store::{Parts, Staged, CHUNK};

type Landing<'a> = Pin<Box<dyn Future<Output = Result<(u64, StoredPart)>> + Send + 'a>>;

/// The parts of one PATCH: the bytes not yet sent, the parts in flight, and
/// what this PATCH uploaded.
struct PartWriter<'a> {
    parts: &'a dyn Parts,
    index: &'a Index,
    lease: &'a Lease,
    id: &'a str,
    part_size: u64,
    /// The upload's length, if known.
    length: Option<u64>,
    in_flight_max: usize,
    multipart: Option<String>,
    /// The bytes after the last part sent, from `base`.
    pending: Vec<u8>,
    _pending_memory: OwnedSemaphorePermit,
    base: u64,
    in_flight: FuturesOrdered<Landing<'a>>,
    /// Recorded in the index as they land, unless the PATCH carries a
    /// checksum: then only once the whole body is verified.
    record_now: bool,
    landed: Vec<(u64, StoredPart)>,
}

impl<'a> PartWriter<'a> {
    async fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(chunk);
        while self.part_ready() {
            self.send_part().await?;
        }
        while let Some(Some(landed)) = self.in_flight.next().now_or_never() {
            self.landed(landed?).await?;
        }
        Ok(())
    }

    /// Whether the first `part_size` pending bytes go as a part now. Never
    /// the part holding the upload's last byte: that one goes with the
    /// commit, so the last bytes are never a lone whole part, whose hash a
    /// chaining value cannot finish (`tree::root`), and a body that breaks
    /// off after its last byte can still give that byte back. So a part is
    /// sent once a byte follows it; with the length known, as soon as it is
    /// whole (a PATCH that ends on a part boundary leaves no tail object).
    fn part_ready(&self) -> bool {
        let pending = self.pending.len() as u64;
        match self.length {
            Some(length) => pending >= self.part_size && self.base + self.part_size < length,
            None => pending > self.part_size,
        }
    }

    async fn send_part(&mut self) -> Result<()> {
        while self.in_flight.len() >= self.in_flight_max {
            let landed = self.in_flight.next().await.expect("parts are in flight")?;
            self.landed(landed).await?;
        }
        let multipart = self.multipart().await?;
        let size = self.part_size as usize;
        let memory = self.next_buffer().await?;
        let mut rest = Vec::with_capacity(size + CHUNK);
        rest.extend_from_slice(&self.pending[size..]);
        self.pending.truncate(size);
        let data = std::mem::replace(&mut self.pending, rest);
        let permit = std::mem::replace(&mut self._pending_memory, memory);
        let (offset, number) = (self.base, self.base / self.part_size);
        self.base += self.part_size;
        let (parts, id) = (self.parts, self.id);
        self.in_flight.push_back(Box::pin(async move {
            let (cv, data) = blocking(move || Ok((part_cv(offset, &data), data))).await?;
            let etag = parts.put_part(id, &multipart, number, Bytes::from(data)).await?;
            drop(permit);
            Ok((number, StoredPart { etag, cv: blake3::Hash::from_bytes(cv).to_hex().to_string() }))
        }));
        Ok(())
    }

    /// Memory for the next part buffer. The parts in flight hold the rest
    /// of the budget, so they are driven meanwhile: one of them landing
    /// frees its buffer.
    async fn next_buffer(&mut self) -> Result<OwnedSemaphorePermit> {
        let parts = self.parts;
        loop {
            if self.in_flight.is_empty() {
                return Ok(parts.part_memory().await);
            }
            let landed = tokio::select! {
                memory = parts.part_memory() => return Ok(memory),
                landed = self.in_flight.next() => landed.expect("parts are in flight")?,
            };
            self.landed(landed).await?;
        }
    }

    /// The upload's multipart upload, opened (and noted under the lease)
    /// with its first part.
    async fn multipart(&mut self) -> Result<String> {
        if let Some(multipart) = &self.multipart {
            return Ok(multipart.clone());
        }
        let multipart = self.parts.open_parts(self.id).await?;
        let (index, id, token, m) =
            (self.index.clone(), self.id.to_owned(), self.lease.token().to_owned(), multipart.clone());
        if !blocking(move || index.set_multipart(&id, &token, &m)).await? {
            let _ = self.parts.discard(self.id, Some(&multipart)).await;
            return Err(Error::TakenOver);
        }
        self.multipart = Some(multipart.clone());
        Ok(multipart)
    }

    async fn landed(&mut self, (number, part): (u64, StoredPart)) -> Result<()> {
        if self.record_now {
            // In order: FuturesOrdered yields the parts so.
            self.record(number, &part).await?;
        }
        self.landed.push((number, part));
        Ok(())
    }

    async fn record(&mut self, number: u64, part: &StoredPart) -> Result<()> {
        let end = (number + 1) * self.part_size;
        let (index, id, token, p) =
            (self.index.clone(), self.id.to_owned(), self.lease.token().to_owned(), part.clone());
        if !blocking(move || index.record_part(&id, &token, number, &p, end)).await? {
            return Err(Error::TakenOver);
        }
        Ok(())
    }

    /// Every part sent so far, in order: the recorded ones, then this PATCH's.
    fn every_part<'s>(&'s self, stored: &'s StoredUpload) -> impl Iterator<Item = &'s StoredPart> {
        stored.parts.iter().chain(self.landed.iter().map(|(_, part)| part))
    }

    /// Sends the pending bytes as the last part; returns the multipart
    /// upload, every part's ETag in order, and the last part's bytes.
    async fn send_last(&mut self, stored: &StoredUpload) -> Result<(String, Vec<String>, Bytes)> {
        let mut etags: Vec<String> = self.every_part(stored).map(|part| part.etag.clone()).collect();
        let multipart = self.multipart().await?;
        let last = Bytes::from(std::mem::take(&mut self.pending));
        etags.push(self.parts.put_part(self.id, &multipart, self.base / self.part_size, last.clone()).await?);
        Ok((multipart, etags, last))
    }

    /// Waits for every part in flight.
    async fn land_all(&mut self) -> Result<()> {
        while let Some(landed) = self.in_flight.next().await {
            self.landed(landed?).await?;
        }
        Ok(())
    }
}

impl Node {
    /// `PATCH /uploads/{id}` of an upload kept in the store.
    pub(super) async fn stored_patch<R: AsyncRead + Unpin>(
        &self,
        id: &str,
        patch: Patch<R>,
        caller: &Caller,
    ) -> Result<UploadInfo> {
        let lease = Lease::take(&self.index, id, self.tus_lease()).await?;
        let answer = self.patch_leased(id, patch, caller, &lease).await;
        lease.release().await;
        answer
    }

    async fn patch_leased<R: AsyncRead + Unpin>(
        &self,
        id: &str,
        patch: Patch<R>,
        caller: &Caller,
        lease: &Lease,
    ) -> Result<UploadInfo> {
        let parts = self.store.parts().ok_or_else(|| Error::internal("this store keeps no resumable upload"))?;
        // Read again under the lease: the offset is now ours to move.
        let mut row = self.upload_row(id, caller).await?;
        let stored = self.stored_state(id).await?;
        let offset = if row.completed { row.length.unwrap_or(0) } else { stored.offset };
        self.settle_patch(&mut row, &patch, offset).await?;
        let sent = patch.blake3;
        if row.completed {
            self.nothing_past_the_end(patch.body).await?;
            return Ok(self.info_of(&row, offset, None));
        }
        let limit = row.length.unwrap_or(self.spooler.max_size) - offset;
        let part_size = stored.part_size;
        let mut tail = Vec::with_capacity(part_size as usize + CHUNK);
        let memory = parts.part_memory().await;
        if let Some(name) = &stored.tail {
            tail.extend_from_slice(&parts.get_tail(id, name).await?);
        }
        let base = offset - tail.len() as u64;
        if base != stored.parts.len() as u64 * part_size {
            return Err(Error::internal(format!("upload {id}: its tail does not end at its offset")));
        }
        let checksum: Vec<_> = patch.checksum.into_iter().collect();
        let algorithms: Vec<_> = checksum.iter().map(|d| d.algorithm).collect();
        let mut checks = (!checksum.is_empty()).then(|| Hashing::digests(&algorithms));
        let mut writer = PartWriter {
            parts,
            index: &self.index,
            lease,
            id,
            part_size,
            length: row.length,
            in_flight_max: self.settings.s3.parts_in_flight.max(1),
            multipart: stored.multipart.clone(),
            pending: tail,
            _pending_memory: memory,
            base,
            in_flight: FuturesOrdered::new(),
            record_now: checksum.is_empty(),
            landed: Vec::new(),
        };
        let mut body = ChunkReader::new(patch.body, self.spooler.stall_timeout, limit, self.metrics.tus_bytes.clone());
        let received: Result<()> = async {
            loop {
                let chunk = tokio::select! {
                    biased;
                    _ = lease.stopped() => return Err(Error::TakenOver),
                    chunk = body.next_chunk(Vec::new()) => chunk?,
                };
                let Some(chunk) = chunk else { return Ok(()) };
                if let Some(checks) = &mut checks {
                    checks.update(&chunk);
                }
                writer.push(&chunk).await?;
            }
        }
        .await;
        let verdict = match (received, &mut checks) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(checks)) => checks
                .verify(&checksum)
                .map_err(|_| Error::ChecksumMismatch(algorithms.first().map_or("", |a| a.name()).to_string())),
            (Ok(()), None) => Ok(()),
        };
        // As on one node: a chunk that cannot be verified, or that was too
        // large, is not kept; otherwise every byte that arrived is.
        let refused = !checksum.is_empty() || matches!(verdict, Err(Error::TooLarge { .. }));
        if !refused {
            if verdict.is_err() {
                writer.pending.extend_from_slice(&body.take_pending());
            }
            writer.land_all().await?;
        }
        let end = writer.base + writer.pending.len() as u64;
        if verdict.is_ok() && row.length == Some(end) && row.concat == "partial" {
            writer.land_all().await?;
            self.keep_partial(&mut writer, &stored).await?;
            row.completed = true;
            return Ok(self.info_of(&row, end, None));
        }
        if verdict.is_ok() && row.length == Some(end) {
            if !writer.record_now {
                writer.land_all().await?;
            }
            let received = self.finish_stored(&mut writer, &stored).await?;
            // Held through the commit: a HEAD meanwhile waits for it.
            let record = self.tus_commit_received(&row, received, sent).await;
            if let Err(e) = parts.discard(id, None).await {
                log::warn!("upload {id}: removing its objects: {}", e.cause());
            }
            return Ok(self.info_of(&row, end, Some(record?)));
        }
        let verdict = match verdict {
            Err(e) if refused => return Err(e),
            verdict => verdict,
        };
        if !writer.record_now {
            writer.land_all().await?;
            let landed = std::mem::take(&mut writer.landed);
            for (number, part) in &landed {
                writer.record(*number, part).await?;
            }
        }
        // A broken body that still brought every byte keeps all but the
        // last: an upload completes only by a body that ended well (see the
        // same rule for a file).
        if verdict.is_err() && row.length == Some(end) {
            writer.pending.pop();
        }
        let offset = self.store_tail(&mut writer, &stored).await?;
        let expires_at = self.expires_at();
        let (index, i) = (self.index.clone(), id.to_owned());
        blocking(move || index.touch_upload(&i, expires_at)).await?;
        row.expires_at = expires_at;
        verdict?;
        Ok(self.info_of(&row, offset, None))
    }

    /// Keeps the bytes after the last part in a new tail object (or none)
    /// and records it; returns the offset now durable.
    async fn store_tail(&self, writer: &mut PartWriter<'_>, stored: &StoredUpload) -> Result<u64> {
        let offset = writer.base + writer.pending.len() as u64;
        if offset == stored.offset && writer.base == stored.parts.len() as u64 * writer.part_size {
            // Nothing new arrived: the recorded tail still holds these bytes.
            return Ok(offset);
        }
        let tail = match writer.pending.is_empty() {
            true => None,
            false => Some(writer.parts.put_tail(writer.id, Bytes::copy_from_slice(&writer.pending)).await?),
        };
        let (index, id, token, t) =
            (self.index.clone(), writer.id.to_owned(), writer.lease.token().to_owned(), tail.clone());
        if !blocking(move || index.record_tail(&id, &token, offset, t.as_deref())).await? {
            if let Some(tail) = &tail {
                writer.parts.remove_tail(writer.id, tail).await;
            }
            return Err(Error::TakenOver);
        }
        if let Some(old) = &stored.tail {
            writer.parts.remove_tail(writer.id, old).await;
        }
        Ok(offset)
    }

    /// Sends the last part, completes the multipart upload and merges the
    /// blake3 of the whole.
    async fn finish_stored(&self, writer: &mut PartWriter<'_>, stored: &StoredUpload) -> Result<Received> {
        let size = writer.base + writer.pending.len() as u64;
        if size == 0 {
            // A deferred length settled at 0: no part to complete.
            return Ok(Received { staged: Staged::Memory(Vec::new()), size, blake3: blake3::hash(&[]) });
        }
        let cvs = writer
            .every_part(stored)
            .map(|part| Ok(*blake3::Hash::from_hex(&part.cv).map_err(Error::internal)?.as_bytes()))
            .collect::<Result<Vec<_>>>()?;
        let (multipart, etags, last) = writer.send_last(stored).await?;
        let part_size = writer.part_size;
        let blake3 = blocking(move || {
            root(&cvs, part_size, &last).ok_or_else(|| Error::internal("a lone part ends the upload"))
        })
        .await?;
        let staged = writer.parts.finish_parts(writer.id, &multipart, etags).await?;
        Ok(Received { staged, size, blake3 })
    }

    /// Completes a partial upload into one object kept in the store, which
    /// a final upload through any node reads back.
    async fn keep_partial(&self, writer: &mut PartWriter<'_>, stored: &StoredUpload) -> Result<()> {
        let (multipart, etags, _) = writer.send_last(stored).await?;
        writer.parts.keep_parts(writer.id, &multipart, etags).await?;
        let (index, id) = (self.index.clone(), writer.id.to_owned());
        blocking(move || index.complete_upload(&id)).await?;
        if let Some(tail) = &stored.tail {
            writer.parts.remove_tail(writer.id, tail).await;
        }
        Ok(())
    }

    async fn stored_state(&self, id: &str) -> Result<StoredUpload> {
        let (index, i) = (self.index.clone(), id.to_owned());
        blocking(move || index.stored_upload(&i))
            .await?
            .ok_or_else(|| Error::internal(format!("upload {id} is not kept in the store")))
    }

    pub(super) fn tus_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.tus_lease)
    }

    /// Removes an upload kept in the store, and its row, once no request
    /// writes it; `false` if one does.
    pub(super) async fn remove_stored(&self, id: &str) -> Result<bool> {
        let Ok(lease) = Lease::take(&self.index, id, self.tus_lease()).await else {
            return Ok(false);
        };
        let removed = self.remove_stored_now(id).await;
        lease.release().await;
        removed.map(|()| true)
    }

    /// Removes an upload kept in the store, and its row (a completed
    /// partial, which no request writes any more).
    pub(super) async fn remove_stored_now(&self, id: &str) -> Result<()> {
        let parts = self.store.parts().ok_or_else(|| Error::internal("this store keeps no resumable upload"))?;
        let stored = self.stored_state(id).await?;
        parts.discard(id, stored.multipart.as_deref()).await?;
        let (index, i) = (self.index.clone(), id.to_owned());
        blocking(move || index.delete_upload(&i)).await.map(drop)
    }
}

/// What a row needs to become an upload kept in the store.
pub(super) fn keep_in_store(row: &mut UploadRow, parts: &dyn Parts) {
    row.stored_offset = Some(0);
    row.part_size = Some(parts.part_size());
}
