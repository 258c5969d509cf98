//! One file sent over tus 1.0.0, resumably: the state machine that drives
//! an upload through creation, `HEAD` and `PATCH` (see [`super`] for the
//! steps), and the checks at its end.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use reqwest::Url;

use super::file::{hashed_stream, last_piece, read_chunk, Prefix};
use super::tus::{self, TusInfo};
use super::UploadArgs;
use crate::client::progress::Progress;
use crate::client::state::{mtime_ns, unix_now, StateFile, UploadEntry};
use crate::client::{backoff, human_size, is_connect_error, is_network_error, parse_key, ApiError, Node};

/// What a resumable upload did.
pub struct Sent {
    /// The committed dataset's blake3 (equal to the file's).
    pub blake3: String,
    /// Bytes an earlier run had sent (not sent by this one).
    pub resumed_from: u64,
}

/// A file to send: the path as named, its canonical path, and the key.
pub struct Resumable<'a> {
    pub node: &'a Node,
    pub args: &'a UploadArgs,
    pub state: Option<&'a StateFile>,
    pub shown: String,
    pub path: &'a Path,
    pub key: String,
    pub content_type: Option<String>,
}

impl Resumable<'_> {
    /// How the state file finds this upload (or one of its parts) again.
    pub(super) fn entry(&self, (size, mtime): (u64, u64), part: Option<String>) -> UploadEntry {
        UploadEntry {
            path: self.path.to_string_lossy().into_owned(),
            size,
            mtime_ns: mtime,
            server: self.node.base().to_string(),
            key: self.key.clone(),
            upload_url: String::new(),
            created_at: unix_now(),
            part,
        }
    }

    /// Sends the file (resuming a remembered upload of it) and checks that
    /// the node stored exactly its bytes.
    pub async fn send(self, progress: Progress) -> Result<Sent> {
        let mut file = File::open(self.path).with_context(|| format!("cannot open {}", self.shown))?;
        let metadata = file.metadata().with_context(|| format!("cannot read {}", self.shown))?;
        let size = metadata.len();
        let mtime = mtime_ns(metadata.modified().context("the file has no modification time")?);
        let entry = self.entry((size, mtime), None);
        let mut upload = Upload {
            node: self.node,
            args: self.args,
            shown: self.shown.clone(),
            key: self.key,
            content_type: self.content_type,
            size,
            state: self.state,
            entry,
            progress,
            resumed_from: 0,
            part: None,
            part_url: None,
            prefix: Some(Prefix::default()),
        };
        let result = upload.run(&mut file).await;
        if result.is_err() {
            upload.progress.abandon();
        }
        let (blake3, local) = result?;

        check_stored(self.path, &self.shown, (size, mtime), &upload.key, &blake3, &local)?;
        upload.progress.finish();
        Ok(Sent { blake3, resumed_from: upload.resumed_from })
    }
}

/// What to do after a failed request.
enum Recovery {
    /// Wait, ask the node for the offset, go on.
    Retry { after: Option<u64> },
    /// The node no longer knows the upload: create a new one.
    Restart,
    /// Give up with this error.
    Fatal,
}

/// A PATCH that was answered but moved the offset not at all.
#[derive(Debug, thiserror::Error)]
#[error("the node took none of the chunk at offset {0}")]
struct NoProgress(u64);

fn recovery(e: &anyhow::Error) -> Recovery {
    if e.is::<NoProgress>() {
        return Recovery::Retry { after: None };
    }
    if let Some(api) = e.downcast_ref::<ApiError>() {
        return match api.status.as_u16() {
            404 | 410 => Recovery::Restart,
            // An offset mismatch is retried (after a HEAD); a key conflict
            // or a digest mismatch at the commit is final.
            409 if api.code.is_none() || api.code_is("offset-mismatch") => Recovery::Retry { after: None },
            408 | 423 | 429 | 460 | 500 | 502 | 503 | 504 => Recovery::Retry { after: api.retry_after },
            _ => Recovery::Fatal,
        };
    }
    if is_network_error(e) {
        return Recovery::Retry { after: None };
    }
    Recovery::Fatal
}

/// After an upload: the file must not have changed under us (the hash
/// covers what was read, but a resumed prefix came from an earlier run),
/// and the node must have stored the bytes the file hashes to.
pub(super) fn check_stored(
    path: &std::path::Path,
    shown: &str,
    (size, mtime): (u64, u64),
    key: &str,
    blake3: &str,
    local: &str,
) -> Result<()> {
    let now = std::fs::metadata(path).context("the file went away during the upload")?;
    if now.len() != size || mtime_ns(now.modified()?) != mtime {
        anyhow::bail!("{shown} changed while it was being uploaded; the node stored what was read (blake3 {blake3})");
    }
    if blake3 != local {
        anyhow::bail!("blake3 mismatch: the node stored {blake3} at `{key}`, the file hashes to {local}");
    }
    Ok(())
}

/// One upload in progress: of a whole file, or (`part`) of one byte range
/// of it, a tus partial upload to be concatenated ([`super::parts`]).
pub(super) struct Upload<'a> {
    pub(super) node: &'a Node,
    pub(super) args: &'a UploadArgs,
    /// The file as the user named it, for messages.
    pub(super) shown: String,
    pub(super) key: String,
    pub(super) content_type: Option<String>,
    pub(super) size: u64,
    pub(super) state: Option<&'a StateFile>,
    pub(super) entry: UploadEntry,
    pub(super) progress: Progress,
    /// Where this run started: the node's offset when it resumed.
    pub(super) resumed_from: u64,
    /// A part: where its bytes start in the file (the whole file is hashed
    /// elsewhere, and the upload is not committed on its own).
    pub(super) part: Option<u64>,
    /// A part's upload URL, once every byte of it is in.
    pub(super) part_url: Option<Url>,
    /// The blake3 of the file's bytes so far (not for a part: the whole
    /// file is hashed elsewhere), hashed as they go out; the last PATCH
    /// carries the whole, which the node checks before it commits.
    pub(super) prefix: Option<Prefix>,
}

/// The next step of the upload's state machine.
enum Step {
    /// Create a new upload on the node.
    Create,
    /// Ask the node where the upload is (`HEAD`).
    Sync,
    /// Send the next chunk.
    Send,
}

impl Upload<'_> {
    /// Runs the upload to its end; returns the node's blake3 and the local one.
    pub(super) async fn run(&mut self, file: &mut File) -> Result<(String, String)> {
        let mut upload_url: Option<Url> = self.remembered();
        let mut step = if upload_url.is_some() { Step::Sync } else { Step::Create };
        let mut offset = 0u64;
        let mut etag: Option<String> = None;
        let mut failures = 0u32;
        // Whether an empty PATCH at the end was answered (see `Step::Send`).
        let mut probed_end = false;
        let mut chunk = Bytes::new();
        let mut chunk_start = 0u64;
        let mut resumed_noted = false;
        // Whether a request of this run has succeeded.
        let mut contacted = false;

        while etag.is_none() {
            if self.part.is_some() && offset >= self.size && upload_url.is_some() && !matches!(step, Step::Sync) {
                // A part is complete when its last byte is in; the final
                // upload commits the whole.
                self.part_url = upload_url;
                return Ok((String::new(), String::new()));
            }
            let attempt: Result<()> = match step {
                Step::Create => self.create().await.map(|(url, info)| {
                    upload_url = Some(url);
                    offset = info.offset;
                    etag = info.etag;
                    step = Step::Send;
                }),
                Step::Sync => {
                    let url = upload_url.as_ref().expect("an upload to sync");
                    match tus::head(self.node, url).await {
                        Ok(info) if info.length.is_some_and(|l| l != self.size) => {
                            // Not an upload of this file (any more).
                            self.forget();
                            step = Step::Create;
                            continue;
                        }
                        Ok(info) => {
                            if !resumed_noted && info.offset > 0 && info.offset < self.size {
                                resumed_noted = true;
                                self.progress.note(&format!(
                                    "upload {}: resuming at {} of {} ({url})",
                                    self.key,
                                    human_size(info.offset),
                                    human_size(self.size)
                                ));
                                self.progress.resume_at(info.offset);
                                self.resumed_from = info.offset;
                            }
                            offset = info.offset;
                            etag = info.etag;
                            step = Step::Send;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Step::Send if offset >= self.size && probed_end => {
                    // Every byte is in but the node names no dataset (it
                    // was replaced or removed since): ask the catalog.
                    break;
                }
                Step::Send if self.part.is_none() && offset < self.size => {
                    // All but the last piece in one request: the node
                    // fsyncs once, and keeps what arrived if it breaks off.
                    let url = upload_url.as_ref().expect("an upload to send to");
                    let last = last_piece(self.size, self.args.chunk_size);
                    let sent = if offset < last {
                        self.stream(file, url, (offset, last)).await
                    } else {
                        self.send_last(file, url, offset).await
                    };
                    match sent {
                        Ok(info) if info.offset <= offset && info.etag.is_none() => Err(NoProgress(offset).into()),
                        Ok(info) => {
                            failures = 0;
                            offset = info.offset;
                            etag = info.etag;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Step::Send => {
                    let url = upload_url.as_ref().expect("an upload to send to");
                    // At the end, an empty PATCH learns the outcome: it
                    // commits an empty (or fully received, uncommitted)
                    // upload, and a completed one answers with its ETag.
                    let end = self.size.min(offset + self.args.chunk_size);
                    if chunk_start != offset || chunk.len() as u64 != end - offset {
                        let base = self.part.unwrap_or(0);
                        chunk = read_chunk(file, base + offset, base + end)?;
                        chunk_start = offset;
                    }
                    match tus::patch(self.node, url, offset, chunk.clone(), None, &self.progress).await {
                        Ok(info) if info.offset <= offset && info.etag.is_none() && !chunk.is_empty() => {
                            Err(NoProgress(offset).into())
                        }
                        Ok(info) => {
                            failures = 0;
                            probed_end |= chunk.is_empty();
                            offset = info.offset;
                            etag = info.etag;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            self.progress.set(offset);
            let Err(e) = attempt else {
                contacted = true;
                continue;
            };
            let wait = match (recovery(&e), &step) {
                // The node was never reached in this run: say so at once
                // rather than after a minute of retries.
                _ if !contacted && is_connect_error(&e) => return Err(e),
                (Recovery::Fatal, _) | (Recovery::Restart, Step::Create) => {
                    return Err(e.context(format!("upload of {} failed", self.shown)));
                }
                (Recovery::Restart, Step::Sync) => {
                    self.forget();
                    self.progress
                        .note(&format!("upload {}: the node no longer knows the upload; starting over", self.key));
                    step = Step::Create;
                    offset = 0;
                    None
                }
                // A PATCH that found no upload: a HEAD confirms (a PATCH
                // that raced a committing one may see it gone).
                (Recovery::Restart, Step::Send) => {
                    step = Step::Sync;
                    None
                }
                (Recovery::Retry { after }, Step::Create) => after,
                (Recovery::Retry { after }, _) => {
                    step = Step::Sync;
                    after
                }
            };
            failures += 1;
            if failures > self.args.transfer.retries {
                return Err(e.context(format!("giving up after {failures} failed attempts")));
            }
            let wait = wait.map_or_else(|| backoff(failures), |s| std::time::Duration::from_secs(s.min(60)));
            self.progress.note(&format!(
                "upload {}: {}; retrying in {:.1} s ({failures} of {})",
                self.key,
                crate::client::one_line(&format!("{e:#}")),
                wait.as_secs_f64(),
                self.args.transfer.retries
            ));
            tokio::time::sleep(wait).await;
        }

        let local = match self.part {
            Some(_) => String::new(),
            None => self.prefix_at(file, self.size).await?.hex(),
        };
        // The upload is over on the node's side, whatever we find now.
        self.forget();
        let blake3 = match etag {
            Some(etag) => etag,
            None => self.node.record(&parse_key(&self.key)?).await?.blake3,
        };
        Ok((blake3, local))
    }

    /// The blake3 of the file's first `at` bytes, hashing what is missing.
    async fn prefix_at(&mut self, file: &File, at: u64) -> Result<Prefix> {
        let (prefix, file) = (self.prefix.take().unwrap_or_default(), file.try_clone()?);
        let prefix = tokio::task::spawn_blocking(move || prefix.advance(&file, at)).await??;
        self.prefix = Some(prefix.clone());
        Ok(prefix)
    }

    /// `PATCH` of the file's bytes `offset..end`, streamed and hashed.
    async fn stream(&mut self, file: &File, url: &Url, (offset, end): (u64, u64)) -> Result<TusInfo> {
        let prefix = Arc::new(Mutex::new(Some(self.prefix_at(file, offset).await?)));
        let body = hashed_stream(file.try_clone()?, (offset, end), prefix.clone());
        let answer = tus::patch_from(self.node, url, body, (offset, end), &self.progress).await;
        self.prefix = prefix.lock().expect("the prefix lock").take();
        answer
    }

    /// `PATCH` of the file's last bytes, from `offset`, with its blake3.
    async fn send_last(&mut self, file: &mut File, url: &Url, offset: u64) -> Result<TusInfo> {
        let mut whole = self.prefix_at(file, offset).await?;
        let chunk = read_chunk(file, offset, self.size)?;
        whole.update(&chunk);
        let info = tus::patch(self.node, url, offset, chunk, Some(&whole.hex()), &self.progress).await?;
        self.prefix = Some(whole);
        Ok(info)
    }

    /// The remembered upload URL for this file, node and key.
    fn remembered(&self) -> Option<Url> {
        let state = self.state.as_ref()?;
        match state.find_upload(&self.entry) {
            Ok(found) => found.and_then(|e| Url::parse(&e.upload_url).ok()),
            Err(e) => {
                eprintln!("spillway: warning: {e:#}");
                None
            }
        }
    }

    fn remember(&self, url: &Url) {
        if let Some(state) = &self.state {
            let entry = UploadEntry { upload_url: url.to_string(), created_at: unix_now(), ..self.entry.clone() };
            if let Err(e) = state.remember_upload(&entry) {
                self.progress.note(&format!("spillway: warning: {e:#}; this upload cannot resume after a crash"));
            }
        }
    }

    pub(super) fn forget(&self) {
        if let Some(state) = &self.state {
            if let Err(e) = state.forget_upload(&self.entry) {
                self.progress.note(&format!("spillway: warning: {e:#}"));
            }
        }
    }

    /// `POST /uploads`: a new upload; its URL is remembered at once.
    async fn create(&self) -> Result<(Url, TusInfo)> {
        let (url, info) = match self.part {
            Some(_) => tus::create(self.node, Some(self.size), &[], Some("partial")).await?,
            None => tus::create(self.node, Some(self.size), &self.metadata(), None).await?,
        };
        self.remember(&url);
        Ok((url, info))
    }

    /// `Upload-Metadata` of the dataset: its key, name, description, type.
    pub(super) fn metadata(&self) -> Vec<(&'static str, &str)> {
        let mut metadata = vec![("key", self.key.as_str())];
        let optional =
            [("name", &self.args.name), ("description", &self.args.description), ("filetype", &self.content_type)];
        metadata.extend(optional.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))));
        if self.args.no_clobber {
            // The node checks it when the upload is created and committed.
            metadata.push(("ifnonematch", "*"));
        }
        metadata
    }
}
