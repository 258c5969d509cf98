//! What we keep in an object's metadata, and how we read its ETag.

use object_store::{Attribute, Attributes};

use crate::store::ObjectInfo;

/// The user metadata key (`x-amz-meta-blake3`) holding the blake3 of the
/// object's bytes, when it was known as the object was written.
pub(super) const BLAKE3_META: &str = "blake3";
/// The user metadata key (`x-amz-meta-size`) holding the size in bytes.
const SIZE_META: &str = "size";

/// Content type and blake3 as object attributes.
pub(super) fn attributes(info: &ObjectInfo) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, info.content_type.clone().into());
    attributes.insert(Attribute::Metadata(BLAKE3_META.into()), info.blake3.clone().into());
    attributes.insert(Attribute::Metadata(SIZE_META.into()), info.size.to_string().into());
    attributes
}

/// An ETag without quotes or weakness marker: the version we keep.
pub(super) fn etag(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or_default().trim();
    raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"').to_owned()
}
