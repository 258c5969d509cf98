//! The responses the handlers' `#[utoipa::path]` attributes name: one type
//! per entry of `components/responses` in `openapi/protocol.json`
//! (`response = openapi::NotFound`), and the sets of them that several
//! operations answer alike (`responses(openapi::AccessErrors, ...)`), so
//! that what such operations share is written once.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::openapi::{Ref, RefOr, Response};

/// The shared responses the handlers name (`response = openapi::NotFound`):
/// `components/responses` in `openapi/protocol.json`.
macro_rules! shared_responses {
    ($($name:ident),* $(,)?) => {$(
        pub struct $name;

        impl<'s> utoipa::ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), shared_response(stringify!($name)))
            }
        }
    )*};
}

/// The response's description; the whole response (its headers are
/// `$ref`s, which utoipa's `Response` cannot hold) is merged in by
/// [`document`](super::document).
fn shared_response(name: &str) -> RefOr<Response> {
    let protocol: Value = serde_json::from_str(super::PROTOCOL).expect("openapi/protocol.json is JSON");
    let response = protocol["components"]["responses"].get(name).unwrap_or_else(|| panic!("no response {name}"));
    RefOr::T(Response::new(response["description"].as_str().unwrap_or_default()))
}

shared_responses!(
    BadRequest,
    Busy,
    Conflict,
    CorruptData,
    Forbidden,
    HeadBadRequest,
    HeadConflict,
    HeadForbidden,
    HeadMisdirected,
    HeadNotFound,
    HeadRangeNotSatisfiable,
    HeadTusConflict,
    HeadTusForbidden,
    HeadTusGone,
    HeadTusLocked,
    HeadTusMisdirected,
    HeadTusNotFound,
    HeadTusUnauthorized,
    HeadTusUnavailable,
    HeadTusUnsupportedVersion,
    HeadUnauthorized,
    HeadUnavailable,
    InsufficientStorage,
    Misdirected,
    NotFound,
    NotImplemented,
    NotReady,
    PreconditionFailed,
    RangeNotSatisfiable,
    RedirectToStore,
    RequestTimeout,
    TooLarge,
    TusBadRequest,
    TusBusy,
    TusChecksumMismatch,
    TusConflict,
    TusForbidden,
    TusGone,
    TusInsufficientStorage,
    TusLocked,
    TusMisdirected,
    TusNotFound,
    TusNotImplemented,
    TusRequestTimeout,
    TusTooLarge,
    TusTooManyOpenUploads,
    TusUnauthorized,
    TusUnavailable,
    TusUnsupportedMediaType,
    TusUnsupportedVersion,
    Unauthorized,
    Unavailable
);

/// A set of shared responses, by status: the same `$ref`s that
/// `(status = 401, response = Unauthorized)` would give, for operations to
/// list at once. Of a status listed twice in one operation utoipa keeps the
/// last silently, so an operation never names two sets that share one.
macro_rules! response_sets {
    ($($(#[$doc:meta])* $set:ident { $($status:literal => $response:ident),* $(,)? })*) => {$(
        $(#[$doc])*
        pub struct $set;

        impl utoipa::IntoResponses for $set {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$((
                    $status.to_string(),
                    Ref::from_response_name(<$response as utoipa::ToResponse>::response().0).into(),
                )),*])
            }
        }
    )*};
}

response_sets! {
    /// What any request that needs a token may be refused with: no token
    /// or an unknown one; too small a scope, a signed URL that does not fit
    /// or has expired, or an open node's cross-origin write; a `Host` an
    /// open node does not answer to.
    AccessErrors { 401 => Unauthorized, 403 => Forbidden, 421 => Misdirected }

    /// A request about the dataset at a key: the key is not valid (or
    /// another header is not), no dataset is there, the index or the store
    /// does not answer.
    DatasetErrors { 400 => BadRequest, 404 => NotFound, 503 => Unavailable }

    /// A dataset's bytes coming in (PUT, form): how an upload fails
    /// besides access.
    UploadErrors {
        400 => BadRequest,
        408 => RequestTimeout,
        409 => Conflict,
        412 => PreconditionFailed,
        413 => TooLarge,
        501 => NotImplemented,
        503 => Busy,
        507 => InsufficientStorage,
    }

    /// A tus request that reaches for an upload (or, for a final
    /// concatenation, its parts): a token, its owner, an upload not yet
    /// expired, tus 1.0.0, this node.
    TusAccessErrors {
        401 => TusUnauthorized,
        403 => TusForbidden,
        404 => TusNotFound,
        410 => TusGone,
        412 => TusUnsupportedVersion,
        421 => TusMisdirected,
    }

    /// A tus request with bytes (a PATCH, a creation with an upload): how
    /// the bytes fail besides access.
    TusBodyErrors {
        400 => TusBadRequest,
        408 => TusRequestTimeout,
        409 => TusConflict,
        413 => TusTooLarge,
        460 => TusChecksumMismatch,
        501 => TusNotImplemented,
        503 => TusBusy,
        507 => TusInsufficientStorage,
    }
}

/// `GET /health`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Health {
    status: String,
}

/// `GET /ready`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    status: String,
}
