//! How many resumable uploads may be open at once. Each one holds a file
//! and a row until it finishes, is terminated or expires, so creations are
//! capped: `max_open_uploads` in all, `max_open_uploads_per_token` for each
//! token. The counts are read in the transaction that inserts the row (see
//! `Index::create_upload_admitted`), so racing creations never pass a cap.

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::index::OpenUploads;

/// The caps, from the settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    total: u64,
    per_token: u64,
}

impl Caps {
    pub(super) fn of(settings: &Settings) -> Caps {
        Caps { total: settings.max_open_uploads, per_token: settings.max_open_uploads_per_token }
    }

    /// Whether an upload of `owner` (`""`: an open node) may open beside `open`.
    pub(super) fn admit(self, open: OpenUploads, owner: &str) -> Result<()> {
        // An open node has no tokens to tell apart: it counts against the total only.
        if !owner.is_empty() && open.owner >= self.per_token {
            return Err(Error::TooManyOpenUploads { limit: self.per_token, whose: "for this token" });
        }
        if open.total >= self.total {
            return Err(Error::TooManyOpenUploads { limit: self.total, whose: "in total" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_token() {
        let caps = Caps::of(&Settings { max_open_uploads: 3, max_open_uploads_per_token: 2, ..Settings::default() });
        assert!(caps.admit(OpenUploads { total: 2, owner: 1 }, "a").is_ok());
        let per_token = caps.admit(OpenUploads { total: 2, owner: 2 }, "a").unwrap_err();
        assert!(matches!(per_token, Error::TooManyOpenUploads { limit: 2, whose: "for this token" }), "{per_token}");
        let total = caps.admit(OpenUploads { total: 3, owner: 0 }, "b").unwrap_err();
        assert!(matches!(total, Error::TooManyOpenUploads { limit: 3, whose: "in total" }), "{total}");
        // An open node: one owner, counted against the total only.
        assert!(caps.admit(OpenUploads { total: 2, owner: 2 }, "").is_ok());
        assert!(caps.admit(OpenUploads { total: 3, owner: 3 }, "").is_err());
    }
}
