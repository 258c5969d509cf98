//! What a client says the bytes must hash to (RFC 9530 fields, tus checksums,
//! X-Blake3), and the hashing that checks it while the bytes pass.

use base64::Engine;
use digest::DynDigest;

use crate::error::{Error, Result};

/// A digest algorithm a client may send besides blake3: RFC 9530 fields
/// (`sha-256`, `sha-512`) and tus checksums (`sha1`, `md5`, `sha256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Md5,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// Names of RFC 9530's digest algorithm registry.
    pub fn from_http(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "sha-256" => Some(Algorithm::Sha256),
            "sha-512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// Names of the tus checksum extension.
    pub fn from_tus(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Algorithm::Sha1),
            "md5" => Some(Algorithm::Md5),
            "sha256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Md5 => "md5",
            Algorithm::Sha256 => "sha-256",
            Algorithm::Sha512 => "sha-512",
        }
    }

    fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            Algorithm::Sha1 => Box::new(sha1::Sha1::default()),
            Algorithm::Md5 => Box::new(md5::Md5::default()),
            Algorithm::Sha256 => Box::new(sha2::Sha256::default()),
            Algorithm::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }
}

/// A digest the client sent, to compare with what arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algorithm: Algorithm,
    pub value: Vec<u8>,
}

/// What the client promised about the body.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    /// `Content-Length`: a shorter body is a truncated upload.
    pub length: Option<u64>,
    /// A tighter size limit than `max_dataset_size` (a signed URL's).
    pub limit: Option<u64>,
    pub digests: Vec<Digest>,
    pub blake3: Option<blake3::Hash>,
}

impl Expected {
    /// Reads `Content-Digest` / `Repr-Digest` (RFC 9530) and `X-Blake3`.
    /// Algorithms we do not know are ignored, as the RFC allows.
    pub fn with_digests(mut self, digest_fields: &[&str], x_blake3: Option<&str>) -> Result<Expected> {
        for field in digest_fields {
            for member in field.split(',') {
                let Some((name, value)) = member.trim().split_once('=') else {
                    return Err(Error::BadRequest(format!("malformed digest field member `{member}`")));
                };
                let Some(algorithm) = Algorithm::from_http(name.trim()) else {
                    continue;
                };
                let b64 = value.trim().strip_prefix(':').and_then(|v| v.strip_suffix(':')).ok_or_else(|| {
                    Error::BadRequest(format!("the {name} digest must be a byte sequence (:base64:)"))
                })?;
                let value = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| Error::BadRequest(format!("the {name} digest is not valid base64")))?;
                if value.len() != algorithm.hasher().output_size() {
                    return Err(Error::BadRequest(format!("the {name} digest has the wrong length")));
                }
                self.digests.push(Digest { algorithm, value });
            }
        }
        if let Some(hex) = x_blake3 {
            let hash = blake3::Hash::from_hex(hex.trim())
                .map_err(|_| Error::BadRequest("X-Blake3 must be 64 hex digits".into()))?;
            self.blake3 = Some(hash);
        }
        Ok(self)
    }

    pub(super) fn algorithms(&self) -> Vec<Algorithm> {
        self.digests.iter().map(|d| d.algorithm).collect()
    }
}

/// The hashes computed while bytes pass: blake3 over the whole upload, and
/// any digests the client asked us to check.
pub struct Hashing {
    pub blake3: blake3::Hasher,
    /// Whether `blake3` takes the bytes (not when only the digests are wanted).
    whole: bool,
    extra: Vec<(Algorithm, Box<dyn DynDigest + Send>)>,
}

impl Hashing {
    /// Continues `blake3` (a fresh hasher, or the state of a resumed upload)
    /// and starts the given extra digests.
    pub fn new(blake3: blake3::Hasher, algorithms: &[Algorithm]) -> Hashing {
        Hashing { blake3, whole: true, extra: algorithms.iter().map(|a| (*a, a.hasher())).collect() }
    }

    /// Only the given digests: a chunk's checksum, where the upload's blake3
    /// is computed elsewhere.
    pub fn digests(algorithms: &[Algorithm]) -> Hashing {
        Hashing { whole: false, ..Hashing::new(blake3::Hasher::new(), algorithms) }
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.whole {
            self.blake3.update(data);
        }
        for (_, h) in &mut self.extra {
            h.update(data);
        }
    }

    /// Checks each expected digest against what arrived.
    pub fn verify(&mut self, expected: &[Digest]) -> Result<()> {
        for want in expected {
            let got = self.extra.iter_mut().find(|(a, _)| *a == want.algorithm).map(|(_, h)| h.finalize_reset());
            if got.as_deref() != Some(&want.value[..]) {
                return Err(Error::DigestMismatch(format!(
                    "the body's {} does not match the digest sent",
                    want.algorithm.name()
                )));
            }
        }
        Ok(())
    }
}

/// Checks X-Blake3 against what arrived; returns the blake3.
pub(super) fn check_blake3(hashing: &mut Hashing, expected: &Expected) -> Result<blake3::Hash> {
    let blake3 = hashing.blake3.finalize();
    if expected.blake3.is_some_and(|d| d != blake3) {
        return Err(Error::DigestMismatch("the body's blake3 does not match X-Blake3".into()));
    }
    Ok(blake3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_fields_parse() {
        let e = Expected::default()
            .with_digests(&["sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, md5=:xx:"], None)
            .unwrap();
        assert_eq!(e.digests.len(), 1);
        assert_eq!(e.digests[0].algorithm, Algorithm::Sha256);
        assert!(Expected::default().with_digests(&["sha-256=abc"], None).is_err());
        assert!(Expected::default().with_digests(&[], Some("zz")).is_err());
    }
}
