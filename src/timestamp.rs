//! The one timestamp format of records and answers: RFC 3339, UTC, whole
//! seconds (`2026-11-28T08:00:00Z`).

use time::OffsetDateTime;

pub fn format(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC).format(&format).expect("timestamp formats")
}

pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// Now in Unix seconds: expiry times and when versions were replaced.
pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now in Unix milliseconds: leases, which last seconds.
pub fn unix_now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
