//! `S3Store` as the node's [`Store`].

use std::io;
use std::ops::RangeInclusive;

use bytes::Bytes;
use futures_util::stream::TryStreamExt;
use object_store::{GetOptions, GetRange, ObjectStore, PutOptions, PutPayload};
use tokio::io::AsyncReadExt;

use super::metadata::{attributes, etag};
use super::{s3_error, S3Staged, S3Store};
use crate::error::{Error, Result};
use crate::index::{Blob, NewVersion, Record};
use crate::key::Key;
use crate::store::{
    Check, Direct, Found, Installed, Native, ObjectInfo, Parts, Prepared, Reader, Staged, Store, Streaming,
};

#[async_trait::async_trait]
impl Store for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn describe(&self) -> String {
        format!("S3 bucket `{}` (parts of {} MiB)", self.bucket, self.part_size >> 20)
    }

    fn remote(&self) -> bool {
        true
    }

    async fn stream_to(&self, key: &Key) -> Result<Box<dyn Streaming>> {
        Ok(Box::new(self.part_sink(key).await?))
    }

    fn direct(&self) -> Option<&dyn Direct> {
        Some(self)
    }

    fn parts(&self) -> Option<&dyn Parts> {
        Some(self)
    }

    async fn sweep(&self) -> Result<usize> {
        self.abort_left_open().await
    }

    async fn inventory(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<Vec<Found>> {
        let mut found = self.list_datasets().await?;
        for object in found.iter_mut().filter(|o| o.blake3.is_none()) {
            let (hash, _) = self.hash_object(&self.object(&object.key)).await?;
            progress(object.size);
            object.blake3 = Some(hash.to_hex().to_string());
        }
        Ok(found)
    }

    async fn prepare(&self, key: &Key, staged: Staged, info: &ObjectInfo) -> Result<Prepared> {
        let staged = match staged {
            // Small enough for one PUT: read it into memory.
            Staged::File(file) if info.size <= self.part_size as u64 => {
                let mut bytes = Vec::with_capacity(info.size as usize);
                tokio::fs::File::from_std(file.reopen().map_err(Error::internal)?)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(Error::internal)?;
                return Ok(Prepared::new(Staged::Memory(vec![bytes]), None));
            }
            Staged::File(file) => S3Staged::Multipart(self.upload_file(key, file, info).await?),
            Staged::Memory(chunks) => return Ok(Prepared::new(Staged::Memory(chunks), None)),
            Staged::Native(native) => native.take::<S3Staged>()?,
        };
        let staged = match staged {
            // Completed outside the lock: a staging object is private.
            S3Staged::Multipart(pending) if self.stage_uploads => S3Staged::Object(pending.complete().await?),
            other => other,
        };
        Ok(Prepared::new(Staged::Native(Native::new(staged)), None))
    }

    async fn install(&self, key: &Key, prepared: Prepared, info: &ObjectInfo) -> Result<Installed> {
        let location = self.object(key);
        let version = match prepared.staged {
            Staged::Memory(chunks) => {
                let payload: PutPayload = chunks.into_iter().map(Bytes::from).collect();
                let options = PutOptions { attributes: attributes(info), ..Default::default() };
                let result = self.store.put_opts(&location, payload, options).await.map_err(s3_error)?;
                etag(result.e_tag.as_deref())
            }
            Staged::Native(native) => match native.take::<S3Staged>()? {
                S3Staged::Object(object) => object.install(self, &location, info).await?,
                S3Staged::Multipart(pending) => pending.complete_in_place().await?,
                S3Staged::Blob(blob) => {
                    self.copy_object(&blob, &location, info.size, Some(info)).await?;
                    let (_, version, _) =
                        self.head(&location).await?.ok_or_else(|| Error::internal("a restored object vanished"))?;
                    let blob = self.head(&blob).await?.map(|(_, v, _)| v).unwrap_or_default();
                    return Ok(Installed { version, blob });
                }
            },
            Staged::File(_) => return Err(Error::internal("a file must be prepared before it is installed")),
        };
        let blob = self.keep_blob(&location, info, prepared.replace_blob).await?;
        Ok(Installed { version, blob })
    }

    async fn landed(&self, intent: &NewVersion, current: Option<&Record>) -> Result<Option<Installed>> {
        let Some((size, version, _)) = self.head(&self.object(&intent.key)).await? else {
            return Ok(None);
        };
        // Same bytes as the row's: the install never happened (or put back
        // the same bytes, which the row already describes).
        if current.is_some_and(|r| r.version == version) || size != intent.size {
            return Ok(None);
        }
        let info = ObjectInfo { size, blake3: intent.blake3.clone(), content_type: intent.content_type.clone() };
        let blob = self.keep_blob(&self.object(&intent.key), &info, false).await?;
        Ok(Some(Installed { version, blob }))
    }

    async fn unmade(&self, _intent: &NewVersion, _kept: Option<&Blob>) -> Result<()> {
        // A blob is copied only after its key's object is in place: an
        // install rolled back made none.
        Ok(())
    }

    async fn stage_blob(&self, blob: &Blob) -> Result<Prepared> {
        let path =
            self.blob_if_current(blob).await?.ok_or_else(|| Error::NotFound("the stored bytes are gone".into()))?;
        Ok(Prepared::new(Staged::Native(Native::new(S3Staged::Blob(path))), None))
    }

    async fn open_blob(&self, blob: &Blob, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>> {
        let path = self.blob_object(&blob.blake3, blob.size);
        self.open_object(&path, Some(&blob.version), blob.size, range).await
    }

    async fn remove_blob(&self, blob: &Blob) -> Result<()> {
        match self.blob_if_current(blob).await? {
            Some(path) => self.delete(&path).await,
            None => Ok(()),
        }
    }

    async fn adopt(&self, key: &Key, record: &Record) -> Result<String> {
        let info =
            ObjectInfo { size: record.size, blake3: record.blake3.clone(), content_type: record.content_type.clone() };
        self.keep_blob(&self.object(key), &info, false).await
    }

    async fn version_of(&self, key: &Key) -> Result<Option<String>> {
        Ok(self.head(&self.object(key)).await?.map(|(_, version, _)| version))
    }

    async fn open(&self, record: &Record, key: &Key, range: Option<RangeInclusive<u64>>) -> Result<Option<Reader>> {
        // The blob first: a replace overwrites the key's object, and an
        // object store may end a GET of the overwritten object early
        // (Garage drops the old version's block list), while the blob of
        // these bytes is never overwritten with other bytes. Rows from
        // before versions have no blob until adopted: the key's object.
        let blob = self.blob_object(&record.blake3, record.size);
        if let Some(reader) = self.open_object(&blob, None, record.size, range.clone()).await? {
            return Ok(Some(reader));
        }
        self.open_object(&self.object(key), Some(&record.version), record.size, range).await
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        self.delete(&self.object(key)).await
    }

    async fn checks(&self) -> Vec<Check> {
        // A HEAD of an object that never exists: "not found" is an answer.
        let probe = self.prefix.clone().join(".spillway-ready");
        let problem = match self.head(&probe).await {
            Ok(_) => None,
            Err(_) => Some("it does not answer; the cause is in the log".to_string()),
        };
        vec![("object store", problem)]
    }
}

impl S3Store {
    /// An object's bytes (or a range), if it is still the `version` the
    /// index knows (any version of a blob: its name says its bytes).
    async fn open_object(
        &self,
        path: &object_store::path::Path,
        version: Option<&str>,
        size: u64,
        range: Option<RangeInclusive<u64>>,
    ) -> Result<Option<Reader>> {
        let options = GetOptions {
            range: range.filter(|_| size > 0).map(|r| GetRange::Bounded(*r.start()..*r.end() + 1)),
            ..Default::default()
        };
        let result = match self.store.get_opts(path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s3_error(e)),
        };
        let other_version = version.is_some_and(|v| etag(result.meta.e_tag.as_deref()) != v);
        if other_version || result.meta.size != size {
            return Ok(None);
        }
        let stream = result.into_stream().map_err(io::Error::other);
        Ok(Some(Reader(Box::new(tokio_util::io::StreamReader::new(stream)))))
    }
}
