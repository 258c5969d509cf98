//! `Upload-Metadata`: comma-separated `key base64value` pairs.

use base64::Engine;

use super::super::UploadMeta;
use crate::error::{Error, Result};
use crate::key::Key;

/// The metadata pair that makes an upload create its key only (`*`), as
/// `If-None-Match: *` on its creation does: checked when it is created and
/// again when it is committed.
pub const CREATE_ONLY: &str = "ifnonematch";

/// The metadata pair with the blake3 (hex) the whole upload must have.
pub const EXPECTED_BLAKE3: &str = "blake3";

/// `Upload-Metadata`: comma-separated `key base64value` pairs.
#[derive(Debug, Default)]
pub struct Metadata(Vec<(String, Option<String>)>);

impl Metadata {
    pub fn parse(raw: Option<&str>) -> Result<Metadata> {
        let mut pairs = Vec::new();
        for pair in raw.unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut parts = pair.split_whitespace();
            let name = parts.next().unwrap_or_default().to_string();
            let value = match parts.next() {
                None => None,
                Some(b64) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| Error::BadRequest(format!("Upload-Metadata `{name}` is not valid base64")))?;
                    Some(
                        String::from_utf8(bytes)
                            .map_err(|_| Error::BadRequest(format!("Upload-Metadata `{name}` is not valid UTF-8")))?,
                    )
                }
            };
            if parts.next().is_some() {
                return Err(Error::BadRequest(format!("Upload-Metadata pair `{pair}` has extra parts")));
            }
            pairs.push((name, value));
        }
        Ok(Metadata(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    /// `key` wins over `filename`.
    pub(super) fn key(&self) -> Result<Option<Key>> {
        match self.get("key").or_else(|| self.get("filename")) {
            Some(k) => Ok(Some(Key::parse(k)?)),
            None => Ok(None),
        }
    }

    /// What the commit records; `owner` is the token that created the
    /// upload (`""` on an open node).
    /// The blake3 the whole upload must have (`blake3`, hex): a client
    /// that hashed its file first lets the node refuse to commit other
    /// bytes, with no checksum per PATCH.
    pub fn expected_blake3(&self) -> Result<Option<blake3::Hash>> {
        self.get(EXPECTED_BLAKE3)
            .map(|hex| {
                blake3::Hash::from_hex(hex)
                    .map_err(|_| Error::BadRequest(format!("Upload-Metadata `{EXPECTED_BLAKE3}` is not 64 hex digits")))
            })
            .transpose()
    }

    pub(super) fn upload_meta(&self, owner: &str) -> UploadMeta {
        let create_only = self.get(CREATE_ONLY) == Some("*");
        UploadMeta {
            expected: crate::ingest::Expected { blake3: self.expected_blake3().ok().flatten(), ..Default::default() },
            precondition: if create_only {
                crate::service::Precondition::IfNoneMatch(crate::service::EtagList::Any)
            } else {
                crate::service::Precondition::None
            },
            content_type: self.get("filetype").filter(|t| !t.is_empty()).map(str::to_owned),
            name: self.get("name").map(str::to_owned),
            description: self.get("description").map(str::to_owned),
            uploaded_by: Some(owner.to_owned()).filter(|o| !o.is_empty()),
        }
    }
}
