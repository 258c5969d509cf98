//! Resumable uploads: the tus 1.0.0 protocol's state and rules, as methods
//! of the [`Node`]. HTTP framing lives in `http::tus`.
//!
//! An upload in progress is a row in the index (`uploads`) and a data file
//! `uploads/<id>` on the data volume. Its offset is that file's length: a
//! PATCH appends through the same writer thread as a PUT and fsyncs before it
//! answers `204`, so an acknowledged offset survives a crash, and a PATCH
//! that breaks off keeps (and fsyncs) what arrived. The blake3 state of each
//! upload is kept in memory between PATCHes; after a restart the prefix is
//! rehashed once from the file. When the last byte arrives the file becomes
//! a [`Received`] upload and goes through [`Node::commit`], exactly like a PUT
//! (`commit`).
//!
//! With an object store that keeps parts (S3), an upload is kept there
//! instead, as it arrives, and any node sharing the index can continue it
//! (`stored`).
//!
//! An upload belongs to the token that created it (its row's `owner`): to
//! any other but an admin it does not exist. The in-memory side (one PATCH
//! at a time, the running hashes) is in `slots`; the caps on open uploads
//! in `admission`.

mod admission;
mod commit;
mod ending;
mod lease;
mod metadata;
mod slots;
mod stored;
mod tree;

use std::io::Read;

use rustix::fs::OFlags;
use tokio::io::AsyncRead;

use super::Node;
use crate::access::Caller;
use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::index::{Record, UploadRow};
use crate::ingest::{ChunkReader, Digest, DirectFile, Hashing, OpenFile, Received, Writer};
use crate::key::Key;
use crate::store::Staged;
use crate::timestamp::now;
use crate::timestamp::unix_now;
pub use metadata::{Metadata, CREATE_ONLY};
pub use slots::Resumable;
use slots::{take, HashState};

pub const TUS_VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation";
pub const CHECKSUM_ALGORITHMS: &str = "sha1,md5,sha256";

/// `Upload-Concat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    None,
    Partial,
    /// The ids of the partial uploads, in order.
    Final(Vec<String>),
}

impl Concat {
    fn as_str(&self) -> &'static str {
        match self {
            Concat::None => "none",
            Concat::Partial => "partial",
            Concat::Final(_) => "final",
        }
    }
}

/// A `POST /uploads`.
#[derive(Debug, Clone)]
pub struct Creation {
    /// `None` with `Upload-Defer-Length: 1`.
    pub length: Option<u64>,
    pub metadata: Option<String>,
    pub concat: Concat,
}

/// One `PATCH` (or the body of a creation-with-upload).
pub struct Patch<R> {
    pub offset: u64,
    /// `Upload-Length`, to settle a deferred length.
    pub length: Option<u64>,
    /// `Upload-Checksum` of this chunk.
    pub checksum: Option<Digest>,
    /// `X-Blake3`: the whole upload's blake3, sent with the PATCH that
    /// completes it by a client that hashed while it sent (so it could not
    /// name it at creation); checked before the commit.
    pub blake3: Option<blake3::Hash>,
    /// `Content-Length`, which must reach the upload's end with `X-Blake3`.
    pub content_length: Option<u64>,
    pub body: R,
}

/// What the responses and `HEAD` report.
#[derive(Debug, Clone)]
pub struct UploadInfo {
    pub id: String,
    pub length: Option<u64>,
    pub offset: u64,
    pub metadata: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    pub concat: String,
    /// The dataset, once the upload was committed.
    pub record: Option<Record>,
}

/// Best effort: fsyncs an upload's data file (after its writer failed).
fn sync_upload_file(layout: &crate::datadir::Layout, id: &str) {
    let synced = layout.open_upload(id, OFlags::RDONLY).and_then(|f| f.sync_data().map_err(Error::internal));
    if let Err(e) = synced {
        log::error!("syncing upload {id} after a failed write: {}", e.cause());
    }
}

pub fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Node {
    fn expires_at(&self) -> i64 {
        unix_now() + self.settings.upload_expiry as i64
    }

    /// `POST /uploads`: the upload belongs to `caller`.
    pub async fn tus_create(&self, creation: Creation, caller: &Caller) -> Result<UploadInfo> {
        let metadata = Metadata::parse(creation.metadata.as_deref())?;
        metadata.expected_blake3()?;
        let key = match creation.concat {
            Concat::Partial => None,
            _ => Some(metadata.key()?.ok_or_else(|| {
                Error::BadRequest("Upload-Metadata needs a `key` (or `filename`) for the dataset".into())
            })?),
        };
        if let Some(key) = &key {
            self.precheck_upload(key, &metadata.upload_meta("")).await?;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let row = UploadRow {
            id: id.clone(),
            length: creation.length,
            metadata: creation.metadata.clone(),
            key: key.as_ref().map(|k| k.to_string()),
            concat: creation.concat.as_str().into(),
            created_at: now(),
            expires_at: self.expires_at(),
            completed: false,
            node: self.node_id.clone(),
            owner: caller.owner_name().to_owned(),
            stored_offset: None,
            part_size: None,
        };
        if let Concat::Final(parts) = &creation.concat {
            let key = key.expect("final uploads have a key");
            return self.tus_concatenate(row, parts, key, metadata, caller).await;
        }
        let mut row = row;
        let parts = self.store.parts();
        if let Some(parts) = parts {
            stored::keep_in_store(&mut row, parts);
        }
        if let Some(length) = creation.length {
            if length > self.spooler.max_size {
                return Err(Error::TooLarge { limit: self.spooler.max_size });
            }
            if parts.is_none() {
                self.spooler.check_space(&self.layout.uploads, length)?;
            }
        }
        let (layout, index, caps) = (self.layout.clone(), self.index.clone(), admission::Caps::of(&self.settings));
        let r = row.clone();
        let local = parts.is_none();
        blocking(move || {
            if !local {
                return index.create_upload_admitted(&r, unix_now(), |open| caps.admit(open, &r.owner));
            }
            layout.open_upload(&r.id, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL)?.sync_all()?;
            layout.sync_uploads_dir()?;
            let admitted = index.create_upload_admitted(&r, unix_now(), |open| caps.admit(open, &r.owner));
            if admitted.is_err() {
                // No row: the file would only be swept at the next start.
                let _ = layout.remove_upload_file(&r.id);
            }
            admitted
        })
        .await?;
        self.metrics.tus_event("created");
        if row.length == Some(0) && row.concat == "none" {
            // Nothing to send: clients (tus-js-client, Uppy) send no PATCH
            // for an empty file, so it is complete now.
            let record = if local {
                let path = self.layout.upload_path(&row.id);
                self.tus_commit(&row, path, 0, blake3::Hasher::new(), None).await?
            } else {
                let received = Received { staged: Staged::Memory(Vec::new()), size: 0, blake3: blake3::hash(&[]) };
                self.tus_commit_received(&row, received, None).await?
            };
            return Ok(self.info_of(&row, 0, Some(record)));
        }
        Ok(self.info_of(&row, 0, None))
    }

    fn info_of(&self, row: &UploadRow, offset: u64, record: Option<Record>) -> UploadInfo {
        UploadInfo {
            id: row.id.clone(),
            length: row.length,
            offset,
            metadata: row.metadata.clone(),
            expires_at: row.expires_at,
            concat: row.concat.clone(),
            record,
        }
    }

    /// The upload's row, if `caller` may touch it; to anyone else it does
    /// not exist (the answer says nothing an unknown id's would not).
    async fn upload_row(&self, id: &str, caller: &Caller) -> Result<UploadRow> {
        let missing = || Error::NotFound(format!("no upload `{id}`"));
        if !is_upload_id(id) {
            return Err(missing());
        }
        let (index, i) = (self.index.clone(), id.to_owned());
        let row = blocking(move || index.get_upload(&i)).await?.ok_or_else(missing)?;
        if !caller.may_touch(&row.owner) {
            return Err(missing());
        }
        if row.expires_at < unix_now() {
            return Err(Error::Gone(format!("upload `{id}` expired")));
        }
        let local = row.stored_offset.is_none();
        if local && !row.completed && !row.node.is_empty() && row.node != self.node_id {
            // Nodes sharing an index keep uploads in progress on their own
            // disks: a balancer should route `/uploads/{id}` by id. A retry
            // may reach the right node.
            log::warn!("upload `{id}` is in progress on node {}, not this one", row.node);
            return Err(Error::Unavailable("the node holding this upload", format!("upload `{id}` is elsewhere")));
        }
        Ok(row)
    }

    /// The upload's offset: its data file's length (or what the store
    /// holds), or its length once done.
    async fn offset_of(&self, row: &UploadRow) -> Result<u64> {
        if row.completed {
            return Ok(row.length.unwrap_or(0));
        }
        if let Some(offset) = row.stored_offset {
            return Ok(offset);
        }
        let (layout, id) = (self.layout.clone(), row.id.clone());
        match blocking(move || layout.upload_len(&id)).await? {
            Some(len) => Ok(len),
            None => Err(Error::Gone(format!("the bytes of upload `{}` are gone", row.id))),
        }
    }

    /// `HEAD /uploads/{id}`.
    /// Like tusd, a HEAD takes the upload over from a PATCH still holding it
    /// (a client asking for the offset is about to resume; the holder is
    /// most likely a dead connection), so the offset it reports is final.
    pub async fn tus_info(&self, id: &str, caller: &Caller) -> Result<UploadInfo> {
        let row = self.upload_row(id, caller).await?;
        if row.stored_offset.is_some() && !row.completed {
            lease::wait_free(&self.index, id, self.tus_lease()).await?;
        }
        let slot = self.tus.slot(id);
        let local = row.stored_offset.is_none() && !row.completed;
        let _held = if local { Some(take(&slot).await?) } else { None };
        // Read again under the lock: a PATCH may have finished meanwhile.
        let row = self.upload_row(id, caller).await?;
        let offset = self.offset_of(&row).await?;
        let record = match (&row.key, row.completed) {
            (Some(key), true) => self.get(&Key::parse(key)?).await.ok().map(std::sync::Arc::unwrap_or_clone),
            _ => None,
        };
        Ok(self.info_of(&row, offset, record))
    }

    /// `PATCH /uploads/{id}`: appends a chunk; commits the dataset when the
    /// last byte is in.
    pub async fn tus_patch<R: AsyncRead + Unpin>(
        &self,
        id: &str,
        patch: Patch<R>,
        caller: &Caller,
    ) -> Result<UploadInfo> {
        let mut row = self.upload_row(id, caller).await?;
        let sent = patch.blake3;
        if row.concat == "final" {
            return Err(Error::Forbidden("a final (concatenated) upload takes no PATCH".into()));
        }
        if row.stored_offset.is_some() {
            return self.stored_patch(id, patch, caller).await;
        }
        let slot = self.tus.slot(id);
        let (mut state, cancel) = take(&slot).await?;
        // Read again under the lock: the PATCH we waited for may have
        // completed (and committed) the upload.
        row = self.upload_row(id, caller).await?;
        let offset = self.offset_of(&row).await?;
        self.settle_patch(&mut row, &patch, offset).await?;
        if row.completed {
            // Nothing more to take; a repeated final PATCH just learns so.
            self.nothing_past_the_end(patch.body).await?;
            return self.tus_info(id, caller).await;
        }
        let limit = row.length.unwrap_or(self.spooler.max_size) - offset;
        self.spooler.check_space(&self.layout.uploads, row.length.map_or(0, |l| l - offset))?;

        // The running blake3, rehashed from the file after a restart.
        let hasher = match state.take() {
            Some(s) if s.offset == offset => s.hasher,
            _ => self.rehash(id, offset).await?,
        };
        let file = self.layout.open_upload(id, OFlags::WRONLY | OFlags::APPEND)?;
        let checksum: Vec<Digest> = patch.checksum.into_iter().collect();
        let algorithms: Vec<_> = checksum.iter().map(|d| d.algorithm).collect();
        let file = OpenFile { file, dir: self.layout.uploads.clone() };
        let file = DirectFile::new(file, offset, self.spooler.direct_writes);
        let mut writer = Writer::start(file, Hashing::new(hasher.clone(), &algorithms));
        let mut body = ChunkReader::new(patch.body, self.spooler.stall_timeout, limit, self.metrics.tus_bytes.clone());
        // A deferred length is not known to fit: the reserve is watched as
        // for a PUT of unknown size.
        let mut space = self.spooler.watch_space();
        let received: Result<()> = async {
            loop {
                let chunk = tokio::select! {
                    chunk = body.next_chunk(writer.buffer()) => chunk?,
                    _ = cancel.cancelled() => return Err(Error::TakenOver),
                };
                match chunk {
                    Some(chunk) => writer.send(chunk).await?,
                    None => return Ok(()),
                }
                space.check(&self.layout.uploads, body.received)?;
            }
        }
        .await;
        // Whatever arrived is made durable, even when the body broke off
        // (but nothing more is written to a volume out of space).
        let rest = body.take_pending();
        let keep_partial =
            checksum.is_empty() && !matches!(received, Err(Error::TooLarge { .. } | Error::InsufficientStorage(_)));
        if received.is_err() && !rest.is_empty() && keep_partial {
            writer.send(rest).await?;
        }
        let mut written = match writer.finish().await {
            Ok(written) => written,
            Err(e) => {
                // The writer stopped (a full volume): what it did write is
                // the offset a HEAD reports, so it is made durable too.
                sync_upload_file(&self.layout, id);
                return Err(e);
            }
        };
        let mut new_offset = offset + written.size;
        let mut hasher_after = written.hashing.blake3.clone();
        let verdict = match received {
            Err(e) => Err(e),
            Ok(()) => written
                .hashing
                .verify(&checksum)
                .map_err(|_| Error::ChecksumMismatch(algorithms.first().map_or("", |a| a.name()).to_string())),
        };
        // A chunk that cannot be verified, or that was refused as too large,
        // is not kept at all; otherwise every byte that arrived stays.
        let refused = matches!(verdict, Err(Error::TooLarge { .. })) || !checksum.is_empty();
        if verdict.is_err() && refused && written.size > 0 {
            written.target.inner().file.set_len(offset).map_err(Error::internal)?;
            written.target.inner().file.sync_data().map_err(Error::internal)?;
            new_offset = offset;
            hasher_after = hasher;
        }
        // A broken body that still brought every byte: real clients (tus-js-
        // client, tuspy) take `offset == length` for done and send nothing
        // more, but an upload is completed only by a body that ended well.
        // Keep all but the last byte: the client resends it, and that clean
        // PATCH completes the upload. (The next PATCH rehashes the file.)
        if verdict.is_err() && !refused && row.length == Some(new_offset) && new_offset > offset {
            new_offset -= 1;
            written.target.inner().file.set_len(new_offset).map_err(Error::internal)?;
            written.target.inner().file.sync_data().map_err(Error::internal)?;
            *state = None;
        } else {
            *state = Some(HashState { hasher: hasher_after.clone(), offset: new_offset });
        }
        verdict?;

        let expires_at = self.expires_at();
        let (index, i) = (self.index.clone(), id.to_owned());
        blocking(move || index.touch_upload(&i, expires_at)).await?;
        row.expires_at = expires_at;

        if row.length != Some(new_offset) {
            return Ok(self.info_of(&row, new_offset, None));
        }
        drop(written);
        *state = None;
        let record = if row.concat == "partial" {
            None
        } else {
            let result = self.tus_commit(&row, self.layout.upload_path(id), new_offset, hasher_after, sent).await;
            drop(state);
            self.tus.forget(id);
            Some(result?)
        };
        Ok(self.info_of(&row, new_offset, record))
    }

    /// The body of a PATCH to a completed upload: empty, or refused (413)
    /// at its first byte, which would be past the upload's length, as on
    /// an upload still open.
    async fn nothing_past_the_end<R: AsyncRead + Unpin>(&self, body: R) -> Result<()> {
        let mut body = ChunkReader::new(body, self.spooler.stall_timeout, 0, self.metrics.tus_bytes.clone());
        body.next_chunk(Vec::new()).await.map(drop)
    }

    /// Checks a PATCH's offset against the upload's, and settles a deferred
    /// length with its `Upload-Length`.
    async fn settle_patch<R>(&self, row: &mut UploadRow, patch: &Patch<R>, offset: u64) -> Result<()> {
        if patch.offset != offset {
            return Err(Error::OffsetMismatch { current: offset, sent: patch.offset });
        }
        let ends_at = patch.content_length.map(|n| offset + n);
        if patch.blake3.is_some() && (ends_at.is_none() || ends_at != row.length.or(patch.length)) {
            return Err(Error::BadRequest(
                "X-Blake3 names the whole upload's blake3: send it with the PATCH whose Content-Length reaches \
                 Upload-Length"
                    .into(),
            ));
        }
        match (row.length, patch.length) {
            (Some(known), Some(sent)) if known != sent => {
                return Err(Error::BadRequest(format!("Upload-Length is {known}, not {sent}")));
            }
            (None, Some(sent)) => {
                if sent < offset {
                    return Err(Error::BadRequest(format!("Upload-Length {sent} is below the offset {offset}")));
                }
                if sent > self.spooler.max_size {
                    return Err(Error::TooLarge { limit: self.spooler.max_size });
                }
                let (index, i) = (self.index.clone(), row.id.clone());
                blocking(move || index.set_upload_length(&i, sent)).await?;
                row.length = Some(sent);
            }
            _ => {}
        }
        Ok(())
    }

    /// Rehashes the first `offset` bytes of an upload (once after a restart).
    async fn rehash(&self, id: &str, offset: u64) -> Result<blake3::Hasher> {
        if offset > 0 {
            log::info!("upload {id}: rehashing the {offset} bytes received before a restart");
        }
        let (layout, id) = (self.layout.clone(), id.to_owned());
        blocking(move || {
            let mut hasher = blake3::Hasher::new();
            let file = layout.open_upload(&id, OFlags::RDONLY)?;
            let mut reader = file.take(offset);
            std::io::copy(&mut reader, &mut hasher).map_err(Error::internal)?;
            Ok(hasher)
        })
        .await
    }
}
