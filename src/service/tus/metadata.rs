//! `Upload-Metadata`: comma-separated `key base64value` pairs.

use base64::Engine;

use super::super::UploadMeta;
use crate::error::{Error, Result};
use crate::key::Key;

/// The metadata pair that makes an upload create its key only (`*`), as
/// `If-None-Match: *` on its creation does: checked when it is created and
/// again when it is committed.
pub const CREATE_ONLY: &str = "ifnonematch";

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
    pub(super) fn upload_meta(&self, owner: &str) -> UploadMeta {
        let create_only = self.get(CREATE_ONLY) == Some("*");
        UploadMeta {
            precondition: if create_only {
                crate::service::Precondition::IfNoneMatch(crate::service::EtagList::Any)
            } else {
                crate::service::Precondition::None
            },
            content_type: self.get("filetype").filter(|t| !t.is_empty()).map(str::to_owned),
            name: self.get("name").map(str::to_owned),
            description: self.get("description").map(str::to_owned),
            uploaded_by: Some(owner.to_owned()).filter(|o| !o.is_empty()),
            ..UploadMeta::default()
        }
    }
}
