//! The bucket's two clients: object_store's, and the pooled HTTP client it
//! shares with our own CopyObject and UploadPartCopy.

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, RetryConfig};

use crate::config::S3Settings;
use crate::error::{Error, Result};

/// The bucket through object_store, plus the same pooled HTTP client for
/// the calls object_store lacks (a CopyObject that replaces metadata, an
/// UploadPartCopy of a byte range).
#[derive(Debug)]
pub(super) struct Bucket {
    api: AmazonS3,
    pub(super) http: reqwest::Client,
}

impl Bucket {
    pub(super) fn new(s3: &S3Settings) -> Result<Bucket> {
        // One pooled client for object_store and for our copies, so
        // both trust the same (the operating system's) certificates.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::internal(format!("cannot set up the HTTP client: {e}")))?;
        let mut builder = AmazonS3Builder::new()
            .with_region(&s3.region)
            .with_bucket_name(&s3.bucket)
            .with_virtual_hosted_style_request(!s3.path_style)
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .with_http_connector(SharedClient(http.clone()))
            // A store that is down answers 503 soon, rather than after the
            // crate's default three minutes of retries.
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..Default::default() });
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &s3.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &s3.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let api = builder.build().map_err(|e| Error::internal(format!("the S3 settings do not work: {e}")))?;
        Ok(Bucket { api, http })
    }
}

impl std::ops::Deref for Bucket {
    type Target = AmazonS3;

    fn deref(&self) -> &AmazonS3 {
        &self.api
    }
}

/// Hands object_store our client instead of one it would build itself.
#[derive(Debug)]
struct SharedClient(reqwest::Client);

impl object_store::client::HttpConnector for SharedClient {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}
