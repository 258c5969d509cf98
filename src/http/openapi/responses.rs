//! The responses the handlers' `#[utoipa::path]` attributes name: one type
//! per entry of `components/responses` in `openapi/protocol.json`
//! (`response = openapi::NotFound`).

use serde_json::Value;
use utoipa::openapi::{RefOr, Response};

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
