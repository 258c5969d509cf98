//! Uploads through the node: multipart uploads fed part by part, from a
//! local file or from the body as it streams, completed or aborted.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{Attributes, PutMultipartOptions, PutPayload};
use tempfile::NamedTempFile;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::bucket::Bucket;
use super::metadata::{attributes, etag};
use super::staged::StagedObject;
use super::tracker::{LiveGuard, Tracker, STAGED_OBJECT};
use super::{s3_error, S3Store, MIB};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::ObjectInfo;

impl S3Store {
    /// Opens a multipart upload at `location`, noted by the tracker.
    async fn open_multipart(&self, location: Path, attributes: Attributes) -> Result<Multipart> {
        let options = PutMultipartOptions { attributes, ..Default::default() };
        let id = self.store.create_multipart_opts(&location, options).await.map_err(s3_error)?;
        let upload = Multipart {
            store: self.store.clone(),
            location,
            _live: self.live.hold(id.clone()),
            id,
            tracker: self.tracker.clone(),
        };
        if let Some(tracker) = &self.tracker {
            if let Err(e) = tracker.note(&upload.id, &upload.location).await {
                abort(upload).await;
                return Err(e);
            }
        }
        Ok(upload)
    }

    /// Opens a multipart upload at `location` whose parts the caller puts
    /// there itself (server-side part copies); aborted if dropped unfinished.
    pub(super) async fn open_pending(&self, location: Path, attributes: Attributes) -> Result<PendingUpload> {
        let upload = self.open_multipart(location, attributes).await?;
        Ok(PendingUpload { upload: Some(upload), parts: Vec::new() })
    }

    async fn part_permit(&self) -> OwnedSemaphorePermit {
        self.memory_for(self.part_size as u64).await
    }

    /// Memory for a buffer of `bytes` from the part budget (at most all of it).
    pub(super) async fn memory_for(&self, bytes: u64) -> OwnedSemaphorePermit {
        let mib = ((bytes / MIB as u64) as u32).min(self.part_budget_mib);
        self.part_memory.clone().acquire_many_owned(mib).await.expect("the part semaphore is never closed")
    }

    /// Starts a multipart upload at the key's object, to be fed while the
    /// body streams. Nothing appears at the key until the commit completes it.
    pub(super) async fn part_sink(&self, key: &Key) -> Result<PartSink> {
        let upload = self.open_multipart(self.upload_location(key), Attributes::new()).await?;
        let (tx, rx) = mpsc::channel(1);
        let (done_tx, done) = oneshot::channel();
        let in_flight = self.parts_in_flight;
        tokio::spawn(async move {
            let _ = done_tx.send(upload_parts(upload, rx, in_flight).await);
        });
        Ok(PartSink {
            buf: Vec::new(),
            permit: None,
            part_size: self.part_size,
            tx: Some(tx),
            done: Some(done),
            pending: None,
            memory: self.part_memory.clone(),
            handle: tokio::runtime::Handle::current(),
        })
    }

    /// Uploads a complete local file as a multipart upload (not completed).
    pub(super) async fn upload_file(&self, key: &Key, file: NamedTempFile, info: &ObjectInfo) -> Result<PendingUpload> {
        let upload = self.open_multipart(self.upload_location(key), attributes(info)).await?;
        let (tx, rx) = mpsc::channel(1);
        let uploader = tokio::spawn(upload_parts(upload, rx, self.parts_in_flight));
        let mut reader = tokio::fs::File::from_std(file.reopen().map_err(Error::internal)?);
        loop {
            let permit = self.part_permit().await;
            let mut part = Vec::with_capacity(self.part_size);
            (&mut reader).take(self.part_size as u64).read_to_end(&mut part).await.map_err(Error::internal)?;
            if part.is_empty() {
                break;
            }
            if tx.send(Part::Data(part.into(), permit)).await.is_err() {
                break;
            }
        }
        let _ = tx.send(Part::Finish).await;
        drop(tx);
        uploader.await.map_err(|e| Error::internal(format!("part uploader failed: {e}")))?
    }
}

/// An error of a part upload or a completion. Its upload gone means it was
/// dropped by the store: Garage drops an unfinished multipart upload of a key
/// when another write to that key lands (with `stage_uploads = false`).
pub(super) fn multipart_error(e: object_store::Error) -> Error {
    match &e {
        object_store::Error::NotFound { .. } => {
            log::warn!("object store dropped a multipart upload: {e}");
            Error::Superseded
        }
        _ => s3_error(e),
    }
}

enum Part {
    Data(Bytes, OwnedSemaphorePermit),
    Finish,
}

/// An open multipart upload: where, its id, and who noted it.
struct Multipart {
    store: Arc<Bucket>,
    location: Path,
    id: String,
    tracker: Option<Tracker>,
    _live: LiveGuard,
}

/// Uploads parts as they come, at most `in_flight` at once. The upload is
/// aborted unless every part was sent and uploaded.
async fn upload_parts(upload: Multipart, mut rx: mpsc::Receiver<Part>, in_flight: usize) -> Result<PendingUpload> {
    let mut pending = PendingUpload { upload: Some(upload), parts: Vec::new() };
    let mut running = FuturesUnordered::new();
    let mut finished = false;
    let mut next = 0usize;
    while let Some(part) = rx.recv().await {
        let (data, permit) = match part {
            Part::Data(data, permit) => (data, permit),
            Part::Finish => {
                finished = true;
                break;
            }
        };
        while running.len() >= in_flight {
            if let Some(result) = running.next().await {
                let (idx, part): (usize, PartId) = result?;
                pending.set_part(idx, part);
            }
        }
        let upload = pending.upload.as_ref().expect("the upload is live");
        let (store, location, id, idx) = (upload.store.clone(), upload.location.clone(), upload.id.clone(), next);
        next += 1;
        running.push(async move {
            let result = store.put_part(&location, &id, idx, PutPayload::from(data)).await.map_err(multipart_error);
            drop(permit);
            result.map(|part| (idx, part))
        });
    }
    while let Some(result) = running.next().await {
        let (idx, part) = result?;
        pending.set_part(idx, part);
    }
    if !finished {
        // The writer went away: the upload was abandoned; `pending` aborts.
        return Err(Error::internal("upload abandoned"));
    }
    Ok(pending)
}

/// A multipart upload whose parts are all uploaded. Dropped without
/// [`PendingUpload::complete`], it is aborted, so no parts are orphaned.
pub(super) struct PendingUpload {
    upload: Option<Multipart>,
    parts: Vec<Option<PartId>>,
}

impl PendingUpload {
    /// Where the upload is open, and its id.
    pub(super) fn target(&self) -> (&Path, &str) {
        let upload = self.upload.as_ref().expect("the upload is live");
        (&upload.location, &upload.id)
    }

    /// Part `idx` (from 0) is uploaded as `part`.
    pub(super) fn set_part(&mut self, idx: usize, part: PartId) {
        if self.parts.len() <= idx {
            self.parts.resize(idx + 1, None);
        }
        self.parts[idx] = Some(part);
    }

    /// Completes the upload; it is aborted if that fails.
    async fn complete_parts(mut self) -> Result<(Multipart, String)> {
        let upload = self.upload.take().expect("the upload is live");
        let parts: Option<Vec<PartId>> = std::mem::take(&mut self.parts).into_iter().collect();
        let Some(parts) = parts else {
            abort(upload).await;
            return Err(Error::internal("a part of the multipart upload is missing"));
        };
        match upload.store.complete_multipart(&upload.location, &upload.id, parts).await {
            Ok(result) => Ok((upload, etag(result.e_tag.as_deref()))),
            Err(e) => {
                abort(upload).await;
                Err(multipart_error(e))
            }
        }
    }

    /// Completes an upload where it is open (at its key under the commit
    /// lock, or a part copy's destination): the object appears; returns its
    /// version.
    pub(super) async fn complete_in_place(self) -> Result<String> {
        let (upload, version) = self.complete_parts().await?;
        if let Some(tracker) = &upload.tracker {
            if let Err(e) = tracker.forget(&upload.id).await {
                log::warn!("forgetting a completed multipart upload: {}", e.cause());
            }
        }
        Ok(version)
    }

    /// Completes an upload opened at a staging object.
    pub(super) async fn complete(self) -> Result<StagedObject> {
        let (upload, _) = self.complete_parts().await?;
        let live = upload._live.live.clone();
        let object = StagedObject {
            path: Some(upload.location.clone()),
            store: upload.store.clone(),
            tracker: upload.tracker.clone(),
            _live: Some(live.hold(format!("{STAGED_OBJECT}{}", upload.location))),
        };
        if let Some(tracker) = &upload.tracker {
            tracker.completed(&upload.id, &upload.location).await?;
        }
        Ok(object)
    }

    /// Aborts the upload now (rather than in the background, as a drop does).
    pub(super) async fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            abort(upload).await;
        }
    }
}

async fn abort(upload: Multipart) {
    match upload.store.abort_multipart(&upload.location, &upload.id).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
            if let Some(tracker) = &upload.tracker {
                let _ = tracker.forget(&upload.id).await;
            }
        }
        // Still noted: the next start tries again.
        Err(e) => log::warn!("aborting a multipart upload: {e}"),
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(abort(upload));
            }
        }
    }
}

/// The writer thread's end of a streaming upload: fills part buffers and
/// hands them to the uploader task (blocking while the parts in flight and
/// the global part memory are spent, so a slow store slows the client).
pub(super) struct PartSink {
    buf: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    part_size: usize,
    tx: Option<mpsc::Sender<Part>>,
    done: Option<oneshot::Receiver<Result<PendingUpload>>>,
    pending: Option<PendingUpload>,
    memory: Arc<Semaphore>,
    handle: tokio::runtime::Handle,
}

impl PartSink {
    fn send_part(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let permit = self.permit.take().expect("a filled buffer holds a permit");
        let sent = self.tx.as_ref().is_some_and(|tx| tx.blocking_send(Part::Data(data.into(), permit)).is_ok());
        if !sent {
            return Err(self.failure());
        }
        Ok(())
    }

    /// The uploader stopped: its error, carried through `io::Error`.
    fn failure(&mut self) -> io::Error {
        self.tx = None;
        let error = match self.done.take().map(|done| done.blocking_recv()) {
            Some(Ok(Err(e))) => e,
            _ => Error::internal("the part uploader stopped"),
        };
        io::Error::other(error)
    }
}

impl crate::store::Streaming for PartSink {
    /// Every part uploaded, the upload ready to complete (after `sync`).
    fn finish(mut self: Box<Self>) -> Result<crate::store::Staged> {
        let pending = self.pending.take().ok_or_else(|| Error::internal("the multipart upload was not finished"))?;
        Ok(crate::store::Staged::Native(crate::store::Native::new(super::S3Staged::Multipart(pending))))
    }
}

impl Write for PartSink {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            if self.permit.is_none() {
                let memory = self.memory.clone();
                let mib = (self.part_size / MIB) as u32;
                let permit = self.handle.block_on(memory.acquire_many_owned(mib)).map_err(io::Error::other)?;
                self.permit = Some(permit);
                self.buf.reserve_exact(self.part_size);
            }
            let n = (self.part_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.part_size {
                self.send_part()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::store::Target for PartSink {
    /// Sends the last part and waits until every part is uploaded.
    fn sync(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let finished = self.tx.take().is_some_and(|tx| tx.blocking_send(Part::Finish).is_ok());
        let done = self.done.take().map(|done| done.blocking_recv());
        match done {
            Some(Ok(Ok(pending))) if finished => {
                self.pending = Some(pending);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(io::Error::other(e)),
            _ => Err(io::Error::other(Error::internal("the part uploader stopped"))),
        }
    }

    fn dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}
