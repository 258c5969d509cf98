//! Conditional requests: entity-tag lists, the preconditions of a write,
//! and what a read wants of the bytes.

use std::ops::RangeInclusive;

use crate::error::{Error, Result};
use crate::index::Record;

/// A conditional request's precondition on the current version.
#[derive(Debug, Clone, Default)]
pub enum Precondition {
    #[default]
    None,
    /// `If-None-Match`: fail when the current ETag is listed (`*`: any).
    IfNoneMatch(EtagList),
    /// `If-Match`: fail unless the current ETag is listed (`*`: any).
    IfMatch(EtagList),
}

#[derive(Debug, Clone)]
pub enum EtagList {
    Any,
    /// `(weak, blake3 hex)` pairs.
    Tags(Vec<(bool, String)>),
}

impl EtagList {
    /// Parses an `If-Match` / `If-None-Match` value.
    pub fn parse(value: &str) -> EtagList {
        if value.trim() == "*" {
            return EtagList::Any;
        }
        EtagList::Tags(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| match t.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, t),
                })
                .map(|(weak, t)| {
                    let tag = t.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(t);
                    (weak, tag.to_ascii_lowercase())
                })
                .collect(),
        )
    }

    /// Strong comparison (RFC 9110 8.8.3.2): `If-Match`; a weak tag never matches.
    pub fn matches_strong(&self, current: Option<&Record>) -> bool {
        self.matches(current, false)
    }

    /// Weak comparison: `If-None-Match`; `W/` is ignored.
    pub fn matches_weak(&self, current: Option<&Record>) -> bool {
        self.matches(current, true)
    }

    fn matches(&self, current: Option<&Record>, weak_ok: bool) -> bool {
        match (self, current) {
            (_, None) => false,
            (EtagList::Any, Some(_)) => true,
            (EtagList::Tags(tags), Some(r)) => tags.iter().any(|(weak, tag)| (weak_ok || !weak) && *tag == r.blake3),
        }
    }
}

impl Precondition {
    pub(super) fn check(&self, current: Option<&Record>) -> Result<()> {
        match self {
            Precondition::None => Ok(()),
            Precondition::IfNoneMatch(tags) if tags.matches_weak(current) => {
                Err(Error::PreconditionFailed("a dataset matching If-None-Match exists at this key".into()))
            }
            Precondition::IfMatch(tags) if !tags.matches_strong(current) => {
                Err(Error::PreconditionFailed("the current dataset does not match If-Match".into()))
            }
            _ => Ok(()),
        }
    }
}

/// What a reader wants of a dataset's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Nothing,
    All,
    Range(RangeInclusive<u64>),
}
