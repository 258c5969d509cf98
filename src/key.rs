//! Dataset keys: the one validated newtype every route and store uses.
//!
//! Rules (from the API contract): 1 to 1024 bytes of UTF-8, segments split by
//! `/` of 1 to 255 bytes each, no empty, `.` or `..` segment, no leading or
//! trailing `/`, no `\`, no C0 control, DEL or C1 control. A key is only ever
//! built by [`Key::parse`] or [`Key::from_raw_path`], so holding a `Key`
//! means every rule held.

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Why a key was refused; the text becomes the problem's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key: the key is empty")]
    Empty,
    #[error("invalid key: the key is {0} bytes long; at most 1024 are allowed")]
    TooLong(usize),
    #[error("invalid key: the key must not start or end with `/`")]
    EdgeSlash,
    #[error("invalid key: the key has an empty segment (`//`)")]
    EmptySegment,
    #[error("invalid key: a segment is {0} bytes long; at most 255 are allowed")]
    SegmentTooLong(usize),
    #[error("invalid key: `.` and `..` segments are not allowed")]
    DotSegment,
    #[error("invalid key: `\\` is not allowed")]
    Backslash,
    #[error("invalid key: control characters (U+{0:04X}) are not allowed")]
    Control(u32),
    #[error("invalid key: the key is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Validates an already-decoded key.
    pub fn parse(key: &str) -> Result<Key, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(key.len()));
        }
        if key.starts_with('/') || key.ends_with('/') {
            return Err(KeyError::EdgeSlash);
        }
        if let Some(c) = key.chars().find(|c| is_forbidden_control(*c)) {
            return Err(KeyError::Control(c as u32));
        }
        if key.contains('\\') {
            return Err(KeyError::Backslash);
        }
        for segment in key.split('/') {
            match segment {
                "" => return Err(KeyError::EmptySegment),
                "." | ".." => return Err(KeyError::DotSegment),
                s if s.len() > MAX_SEGMENT_BYTES => return Err(KeyError::SegmentTooLong(s.len())),
                _ => {}
            }
        }
        Ok(Key(key.to_owned()))
    }

    /// Builds a key from the raw (still percent-encoded) remainder of a URL
    /// path. Each segment is decoded exactly once; an encoded slash (`%2F`)
    /// means `/`, so it can never hide a separator inside a segment.
    pub fn from_raw_path(raw: &str) -> Result<Key, KeyError> {
        let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| KeyError::NotUtf8)?;
        Key::parse(&decoded)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments, each a single, safe path component.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment: the default display name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Every proper prefix that ends at a segment boundary: `a`, `a/b` for
    /// `a/b/c`. A dataset at any of them would have to be a directory.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }

    /// The URL path where the bytes are served, each segment percent-encoded.
    pub fn url_path(&self) -> String {
        format!("/data/{}", encode_path(&self.0))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_forbidden_control(c: char) -> bool {
    let c = c as u32;
    c < 0x20 || (0x7f..=0x9f).contains(&c)
}

/// Characters escaped in a path segment (RFC 3986 pchar minus `/`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encodes a `/`-separated path, keeping the separators.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, SEGMENT).to_string()
}

/// Characters escaped in a query value.
const QUERY_VALUE: &AsciiSet = &SEGMENT.add(b'&').add(b'=').add(b'+').add(b';');

pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in ["a", "employees.csv", "sales/2024/q1.csv", "..a", "a..", "naïve/日本.txt", "%2e"] {
            assert_eq!(Key::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn rejects_each_rule() {
        let long_segment = "x".repeat(256);
        let long_key = vec!["y".repeat(200); 6].join("/");
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("/a", KeyError::EdgeSlash),
            ("a/", KeyError::EdgeSlash),
            ("a//b", KeyError::EmptySegment),
            ("a/./b", KeyError::DotSegment),
            ("..", KeyError::DotSegment),
            ("a\\b", KeyError::Backslash),
            ("a\0b", KeyError::Control(0)),
            ("a\u{7f}", KeyError::Control(0x7f)),
            ("a\u{85}", KeyError::Control(0x85)),
            (&long_segment, KeyError::SegmentTooLong(256)),
            (&long_key, KeyError::TooLong(1205)),
        ];
        for (key, err) in cases {
            assert_eq!(Key::parse(key).unwrap_err(), *err, "{key:?}");
        }
    }

    #[test]
    fn decodes_once() {
        assert_eq!(Key::from_raw_path("%252e").unwrap().as_str(), "%2e");
        assert_eq!(Key::from_raw_path("a%2Fb").unwrap().as_str(), "a/b");
        assert_eq!(Key::from_raw_path("%2e%2e").unwrap_err(), KeyError::DotSegment);
        assert_eq!(Key::from_raw_path("a%2F%2Fb").unwrap_err(), KeyError::EmptySegment);
        assert_eq!(Key::from_raw_path("%C0%AE").unwrap_err(), KeyError::NotUtf8);
    }

    #[test]
    fn ancestors_and_paths() {
        let key = Key::parse("a b/c?/d").unwrap();
        assert_eq!(key.ancestors().collect::<Vec<_>>(), ["a b", "a b/c?"]);
        assert_eq!(key.url_path(), "/data/a%20b/c%3F/d");
        assert_eq!(key.file_name(), "d");
    }
}
