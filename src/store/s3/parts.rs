//! Resumable uploads kept in the bucket (see [`crate::store::Parts`]): under
//! `{prefix}/tus/{id}/`, the multipart upload at `data` and tails at
//! `tail-{uuid}`. A tail's name is new at every write, so a writer that
//! lost its lease and wakes late can never overwrite the tail the index
//! names.

use bytes::Bytes;
use futures_util::stream::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::OwnedSemaphorePermit;

use super::multipart::multipart_error;
use super::staged::StagedObject;
use super::{s3_error, S3Staged, S3Store};
use crate::error::Result;
use crate::store::{Native, Parts, Reader, Staged};

impl S3Store {
    fn upload_dir(&self, id: &str) -> Path {
        self.prefix.clone().join("tus").join(id)
    }

    fn upload_data(&self, id: &str) -> Path {
        self.upload_dir(id).join("data")
    }
}

#[async_trait::async_trait]
impl Parts for S3Store {
    fn part_size(&self) -> u64 {
        (self.part_size as u64).next_power_of_two()
    }

    async fn part_memory(&self) -> OwnedSemaphorePermit {
        self.memory_for(Parts::part_size(self)).await
    }

    async fn open_parts(&self, id: &str) -> Result<String> {
        self.store.create_multipart(&self.upload_data(id)).await.map_err(s3_error)
    }

    async fn put_part(&self, id: &str, multipart: &str, number: u64, data: Bytes) -> Result<String> {
        let part = self
            .store
            .put_part(&self.upload_data(id), &multipart.to_owned(), number as usize, PutPayload::from(data))
            .await
            .map_err(multipart_error)?;
        Ok(part.content_id)
    }

    async fn put_tail(&self, id: &str, data: Bytes) -> Result<String> {
        let name = format!("tail-{}", uuid::Uuid::new_v4().simple());
        self.store.put(&self.upload_dir(id).join(name.as_str()), PutPayload::from(data)).await.map_err(s3_error)?;
        Ok(name)
    }

    async fn get_tail(&self, id: &str, tail: &str) -> Result<Bytes> {
        let result = self.store.get(&self.upload_dir(id).join(tail)).await.map_err(s3_error)?;
        result.bytes().await.map_err(s3_error)
    }

    async fn remove_tail(&self, id: &str, tail: &str) {
        if let Err(e) = self.delete(&self.upload_dir(id).join(tail)).await {
            log::warn!("removing a spent tail of upload {id}: {}", e.cause());
        }
    }

    async fn finish_parts(&self, id: &str, multipart: &str, parts: Vec<String>) -> Result<Staged> {
        self.keep_parts(id, multipart, parts).await?;
        let path = self.upload_data(id);
        let object = StagedObject { path: Some(path), store: self.store.clone(), tracker: None, _live: None };
        Ok(Staged::Native(Native::new(S3Staged::Object(object))))
    }

    async fn keep_parts(&self, id: &str, multipart: &str, parts: Vec<String>) -> Result<()> {
        let parts = parts.into_iter().map(|content_id| PartId { content_id }).collect();
        let path = self.upload_data(id);
        self.store.complete_multipart(&path, &multipart.to_owned(), parts).await.map_err(multipart_error)?;
        Ok(())
    }

    async fn read_kept(&self, id: &str) -> Result<Reader> {
        let result = self.store.get(&self.upload_data(id)).await.map_err(s3_error)?;
        let stream = result.into_stream().map_err(std::io::Error::other);
        Ok(Reader(Box::new(tokio_util::io::StreamReader::new(stream))))
    }

    async fn discard(&self, id: &str, multipart: Option<&str>) -> Result<()> {
        if let Some(multipart) = multipart {
            match self.store.abort_multipart(&self.upload_data(id), &multipart.to_owned()).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_error(e)),
            }
        }
        let objects: Vec<_> = self.store.list(Some(&self.upload_dir(id))).try_collect().await.map_err(s3_error)?;
        for object in objects {
            self.delete(&object.location).await?;
        }
        Ok(())
    }
}
