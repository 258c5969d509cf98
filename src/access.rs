//! Who may do what: bearer tokens with scopes, and signed URLs.
//!
//! Tokens come from configuration (`tokens`), each `{name, token, scopes}`;
//! `token` may be stored as `sha256:<hex>` of the secret. A presented token
//! is hashed and compared with every configured hash in constant time.
//! Scopes nest: `admin` includes `write`, which includes `read`.
//!
//! A signed URL carries `expires` (Unix seconds), optional `max_size` and
//! `sig`: base64url(HMAC-SHA256(signing_key, "METHOD\nkey\nexpires\nmax_size")).
//! It grants exactly its method on exactly its key until it expires.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::key::{encode_query_value, Key};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

/// One entry of the `tokens` setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// The secret, or `sha256:<64 hex>` of it.
    pub token: String,
    pub scopes: Vec<Scope>,
}

struct Token {
    name: String,
    hash: [u8; 32],
    scope: Scope,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No tokens are configured: the node is open (loopback only).
    Open,
    Token {
        name: String,
        scope: Scope,
    },
    /// No `Authorization` header.
    Anonymous,
    /// A token that matches none configured.
    Unknown,
}

impl Caller {
    /// Allows the call if the caller holds `scope` (or the node is open).
    pub fn require(&self, scope: Scope) -> Result<()> {
        match self {
            Caller::Open => Ok(()),
            Caller::Token { scope: held, .. } if *held >= scope => Ok(()),
            Caller::Token { name, scope: held } => {
                Err(Error::Forbidden(format!("token `{name}` has scope {held:?}; this needs {scope:?}")))
            }
            Caller::Anonymous => Err(Error::Unauthorized("this needs a bearer token".into())),
            Caller::Unknown => Err(Error::Unauthorized("the bearer token is not known".into())),
        }
    }
}

impl Caller {
    /// The owner of an upload this caller creates: its token's name (`""`
    /// on an open node, where nothing is owned).
    pub fn owner_name(&self) -> &str {
        match self {
            Caller::Token { name, .. } => name,
            _ => "",
        }
    }

    /// Who uploads, for a version's `uploaded_by`: the token's name, none
    /// on an open node.
    pub fn uploader(&self) -> Option<String> {
        Some(self.owner_name()).filter(|n| !n.is_empty()).map(str::to_owned)
    }

    /// Whether this caller may touch an upload `owner` created: its creator
    /// or an admin may, and anyone on an open node. An upload without an
    /// owner (made while the node was open) is an admin's to finish.
    pub fn may_touch(&self, owner: &str) -> bool {
        match self {
            Caller::Open | Caller::Token { scope: Scope::Admin, .. } => true,
            Caller::Token { name, .. } => !owner.is_empty() && name == owner,
            Caller::Anonymous | Caller::Unknown => false,
        }
    }
}

/// The parameters of a signed URL, as they arrived.
#[derive(Debug, Clone, Default)]
pub struct SignedParams {
    pub expires: Option<String>,
    pub max_size: Option<String>,
    pub sig: Option<String>,
    /// The version of a download; signed with the rest when the URL was
    /// minted for one (`None`: the current bytes, whatever they are then).
    pub version: Option<String>,
}

impl SignedParams {
    pub fn present(&self) -> bool {
        self.expires.is_some() || self.sig.is_some() || self.max_size.is_some()
    }
}

/// What a valid signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedGrant {
    pub max_size: Option<u64>,
}

pub struct Access {
    tokens: Vec<Token>,
    signing_key: Vec<u8>,
}

/// The file holding the generated signing key, inside `data_dir`.
pub const SIGNING_KEY_FILE: &str = "signing.key";

impl Access {
    /// `signing_key` from configuration, else the one kept in the data
    /// directory (generated, mode 0600, on first start).
    pub fn new(tokens: &[TokenConfig], signing_key: Option<&str>, data_dir: &Path) -> Result<Access> {
        let tokens = tokens.iter().map(parse_token).collect::<Result<Vec<_>>>()?;
        let signing_key = match signing_key {
            Some(k) if !k.is_empty() => k.as_bytes().to_vec(),
            _ => load_or_create_key(&data_dir.join(SIGNING_KEY_FILE))?,
        };
        Ok(Access { tokens, signing_key })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Resolves an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Caller {
        if self.is_open() {
            return Caller::Open;
        }
        let Some(value) = authorization else { return Caller::Anonymous };
        // The scheme is case-insensitive (RFC 9110 §11.1): `BEARER` too.
        let presented =
            value.trim().split_once([' ', '\t']).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        let Some((_, presented)) = presented else { return Caller::Unknown };
        let hash: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        // Compare with every token, so timing says nothing about which.
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.hash.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        match found {
            Some(t) => Caller::Token { name: t.name.clone(), scope: t.scope },
            None => Caller::Unknown,
        }
    }

    fn mac(&self, method: &str, key: &Key, expires: i64, max_size: Option<u64>, version: Option<&str>) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.signing_key).expect("HMAC takes any key length");
        let max = max_size.map(|m| m.to_string()).unwrap_or_default();
        mac.update(format!("{method}\n{key}\n{expires}\n{max}").as_bytes());
        // Only URLs for a version sign one, so URLs minted before versions
        // keep their signatures.
        if let Some(version) = version {
            mac.update(format!("\nversion={version}").as_bytes());
        }
        mac
    }

    /// The query string of a signed URL for `method` on `key` (and, for a
    /// download, one version of it).
    pub fn sign(&self, method: &str, key: &Key, expires: i64, max_size: Option<u64>, version: Option<i64>) -> String {
        let version = version.map(|v| v.to_string());
        let mac = self.mac(method, key, expires, max_size, version.as_deref());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let mut query = format!("expires={expires}");
        if let Some(max) = max_size {
            query.push_str(&format!("&max_size={max}"));
        }
        if let Some(version) = version {
            query.push_str(&format!("&version={version}"));
        }
        query.push_str(&format!("&sig={}", encode_query_value(&sig)));
        query
    }

    /// Checks a signed URL for `method` on `key` at time `now`.
    pub fn verify(&self, method: &str, key: &Key, params: &SignedParams, now: i64) -> Result<SignedGrant> {
        let forbidden = || Error::Forbidden("the signed URL is not valid for this request".into());
        let expires: i64 = params.expires.as_deref().and_then(|e| e.parse().ok()).ok_or_else(forbidden)?;
        let max_size = match params.max_size.as_deref() {
            None => None,
            Some(m) => Some(m.parse::<u64>().map_err(|_| forbidden())?),
        };
        let sig = params.sig.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok()).ok_or_else(forbidden)?;
        let version = params.version.as_deref();
        self.mac(method, key, expires, max_size, version).verify_slice(&sig).map_err(|_| forbidden())?;
        if expires < now {
            return Err(Error::Expired("the signed URL has expired".into()));
        }
        Ok(SignedGrant { max_size })
    }
}

fn parse_token(t: &TokenConfig) -> Result<Token> {
    let bad = |why: &str| Error::internal(format!("invalid value for key `tokens`: token `{}` {why}", t.name));
    if t.name.trim().is_empty() {
        // The name owns the token's resumable uploads: it must say who.
        return Err(bad("has an empty name"));
    }
    let scope = t.scopes.iter().copied().max().ok_or_else(|| bad("has no scopes"))?;
    let hash = match t.token.strip_prefix("sha256:") {
        // A SHA-256 is 32 bytes like a blake3 hash: blake3's hex parsing
        // serves for both (the bytes are not a blake3).
        Some(hex) => blake3::Hash::from_hex(hex).map_err(|_| bad("is `sha256:` but not 64 hex digits"))?.into(),
        None if t.token.len() < 8 => return Err(bad("is shorter than 8 characters")),
        None => Sha256::digest(t.token.as_bytes()).into(),
    };
    Ok(Token { name: t.name.clone(), hash, scope })
}

/// A fresh signing key: 32 random bytes, as hex.
pub fn random_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("no randomness for a signing key: {e}")))?;
    Ok(blake3::Hash::from_bytes(bytes).to_hex().to_string())
}

fn load_or_create_key(path: &Path) -> Result<Vec<u8>> {
    match fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => return Err(Error::internal(format!("{} is too short to be a signing key", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::internal(format!("reading {}: {e}", path.display()))),
    }
    let key = random_key()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::internal(format!("creating {}: {e}", path.display())))?;
    file.write_all(key.as_bytes()).and_then(|_| file.sync_all()).map_err(Error::internal)?;
    log::info!("generated a signing key for signed URLs in {}", path.display());
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let tokens = vec![
            TokenConfig { name: "r".into(), token: "reader-secret".into(), scopes: vec![Scope::Read] },
            TokenConfig {
                name: "a".into(),
                token: format!("sha256:{:x}", Sha256::digest(b"admin-secret")),
                scopes: vec![Scope::Admin],
            },
        ];
        Access::new(&tokens, Some("k".repeat(32).as_str()), Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn tokens_and_scopes() {
        let a = access();
        assert_eq!(a.authenticate(None), Caller::Anonymous);
        assert_eq!(a.authenticate(Some("Bearer nope")), Caller::Unknown);
        assert_eq!(
            a.authenticate(Some("Bearer reader-secret")),
            Caller::Token { name: "r".into(), scope: Scope::Read }
        );
        let admin = a.authenticate(Some("Bearer admin-secret"));
        assert!(admin.require(Scope::Write).is_ok());
        assert!(a.authenticate(Some("Bearer reader-secret")).require(Scope::Write).is_err());
    }

    #[test]
    fn hashed_tokens_are_64_hex_digits() {
        let config = |token: String| TokenConfig { name: "h".into(), token, scopes: vec![Scope::Read] };
        let hex = format!("{:x}", Sha256::digest(b"hashed-secret"));
        for good in [hex.clone(), hex.to_ascii_uppercase()] {
            let a = Access::new(&[config(format!("sha256:{good}"))], Some("k"), Path::new("/nonexistent")).unwrap();
            assert_eq!(
                a.authenticate(Some("Bearer hashed-secret")),
                Caller::Token { name: "h".into(), scope: Scope::Read }
            );
        }
        for bad in [&hex[..62], &format!("{hex}00"), &format!("+{}", &hex[1..]), &format!("{}g", &hex[..63])] {
            assert!(
                Access::new(&[config(format!("sha256:{bad}"))], Some("k"), Path::new("/nonexistent")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn uploads_belong_to_a_token_name() {
        let writer = Caller::Token { name: "w".into(), scope: Scope::Write };
        assert!(writer.may_touch("w") && !writer.may_touch("v") && !writer.may_touch(""));
        assert!(Caller::Token { name: "a".into(), scope: Scope::Admin }.may_touch("w"));
        assert!(Caller::Open.may_touch("") && Caller::Open.may_touch("w"));
        let nameless = TokenConfig { name: " ".into(), token: "a-long-secret".into(), scopes: vec![Scope::Write] };
        assert!(Access::new(&[nameless], Some("k"), Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn signatures_bind_every_field() {
        let a = access();
        let key = Key::parse("a/b").unwrap();
        let query = a.sign("PUT", &key, 2000, Some(10), None);
        let params = |q: &str| {
            let mut p = SignedParams::default();
            for (k, v) in q.split('&').filter_map(|kv| kv.split_once('=')) {
                let v = percent_encoding::percent_decode_str(v).decode_utf8().unwrap().to_string();
                match k {
                    "expires" => p.expires = Some(v),
                    "max_size" => p.max_size = Some(v),
                    "sig" => p.sig = Some(v),
                    _ => {}
                }
            }
            p
        };
        assert!(a.verify("PUT", &key, &params(&query), 1000).is_ok());
        assert!(matches!(a.verify("PUT", &key, &params(&query), 3000), Err(Error::Expired(_))));
        assert!(a.verify("GET", &key, &params(&query), 1000).is_err());
        assert!(a.verify("PUT", &Key::parse("a/c").unwrap(), &params(&query), 1000).is_err());
        assert!(a.verify("PUT", &key, &params(&query.replace("max_size=10", "max_size=11")), 1000).is_err());
        assert!(a.verify("PUT", &key, &params(&query.replace("expires=2000", "expires=2001")), 1000).is_err());
    }
}
