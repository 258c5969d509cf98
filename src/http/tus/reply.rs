//! What a tus answer says in its headers: an upload's state (`Upload-*`,
//! and once it is committed the dataset's `ETag` and `Content-Location`),
//! and the server's capabilities (`Tus-*`) for `OPTIONS`.

use rocket::http::{Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};

use crate::http::openapi::responses::TusMisdirected;
use crate::service::tus::{UploadInfo, CHECKSUM_ALGORITHMS, EXTENSIONS, TUS_VERSION};

/// A tus answer: a status and the upload's headers.
pub struct Reply {
    status: Status,
    info: UploadInfo,
    /// A HEAD's answer is not to be cached, and also says what the upload
    /// was created with (metadata, concatenation).
    head: bool,
}

impl Reply {
    /// `201`: a new upload, with its `Location`.
    pub fn created(info: UploadInfo) -> Reply {
        Reply { status: Status::Created, info, head: false }
    }

    /// `200` to a HEAD.
    pub fn head(info: UploadInfo) -> Reply {
        Reply { status: Status::Ok, info, head: true }
    }

    /// `204` to a PATCH.
    pub fn patched(info: UploadInfo) -> Reply {
        Reply { status: Status::NoContent, info, head: false }
    }
}

impl<'r> Responder<'r, 'static> for Reply {
    fn respond_to(self, _req: &'r Request<'_>) -> response::Result<'static> {
        let Reply { status, info, head } = self;
        let mut response = Response::build();
        response.status(status);
        if status == Status::Created {
            response.header(Header::new("Location", format!("/uploads/{}", info.id)));
        }
        response.header(Header::new("Upload-Offset", info.offset.to_string()));
        match info.length {
            Some(length) => response.header(Header::new("Upload-Length", length.to_string())),
            None => response.header(Header::new("Upload-Defer-Length", "1")),
        };
        response.header(Header::new("Upload-Expires", http_date(info.expires_at)));
        if head {
            response.header(Header::new("Cache-Control", "no-store"));
            if let Some(metadata) = info.metadata {
                response.header(Header::new("Upload-Metadata", metadata));
            }
            if info.concat != "none" {
                response.header(Header::new("Upload-Concat", info.concat));
            }
        }
        if let Some(record) = info.record {
            // The committed dataset: where it is and what it hashes to.
            response.header(Header::new("ETag", record.etag()));
            response.header(Header::new("Content-Location", record.path));
        }
        response.ok()
    }
}

fn http_date(unix: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(unix).ok().and_then(|t| t.format(&format).ok()).unwrap_or_default()
}

/// The answer to `OPTIONS`: what this server supports.
pub struct Discovery {
    pub max_size: u64,
}

/// What a [`Discovery`] answer is, in the document (only utoipa reads it).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum DiscoveryResponses {
    /// The tus capabilities.
    #[response(status = 204)]
    Capabilities,
    #[response(status = 421)]
    Misdirected(#[ref_response] TusMisdirected),
}

impl<'r> Responder<'r, 'static> for Discovery {
    fn respond_to(self, _req: &'r Request<'_>) -> response::Result<'static> {
        Response::build()
            .status(Status::NoContent)
            .header(Header::new("Tus-Version", TUS_VERSION))
            .header(Header::new("Tus-Extension", EXTENSIONS))
            .header(Header::new("Tus-Max-Size", self.max_size.to_string()))
            .header(Header::new("Tus-Checksum-Algorithm", CHECKSUM_ALGORITHMS))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
