//! Configuration: one figment, extracted and validated once at start.
//!
//! Order: built-in defaults, then `Rocket.toml` (profiles), then `ROCKET_*`
//! and finally `SPILLWAY_*` environment variables.

use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Serialized};
use figment::Figment;
use rocket::data::ByteUnit;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Datasets, the index and (by default) the spool live below it.
    pub data_dir: PathBuf,
    /// Where uploads spill while in flight; `data_dir/spool` when unset.
    pub spool_dir: Option<PathBuf>,
    /// In-memory spool per upload before it spills to disk.
    pub spool_memory: ByteUnit,
    /// In-memory spool across all uploads; past it uploads spill at once.
    pub spool_memory_budget: ByteUnit,
    /// Spilled uploads and resumable uploads' files are written around the
    /// page cache (`O_DIRECT`) where the filesystem allows it.
    pub direct_writes: bool,
    pub max_dataset_size: ByteUnit,
    /// Free space to keep on each volume.
    pub disk_reserve: ByteUnit,
    /// Seconds without body bytes before an upload is aborted, and that a
    /// response may wait for its client to take bytes before the
    /// connection is closed (Rocket reads it from the same figment,
    /// vendor/rocket/PATCHES.md).
    pub stall_timeout: u64,
    /// Seconds to receive a request's headers (an idle keep-alive
    /// connection included) before the connection is closed. Rocket reads
    /// it from the same figment (vendor/rocket/PATCHES.md).
    pub header_timeout: u64,
    /// Uploads in flight at once.
    pub max_uploads: usize,
    /// Seconds a resumable upload lives after its creation or last PATCH.
    pub upload_expiry: u64,
    /// Seconds a request writing a resumable upload kept in an object store
    /// holds it without renewing (it renews every second): how long a
    /// client resuming through another node waits when the writer's node died.
    pub tus_lease: u64,
    /// Bearer tokens; none means the node is open (and loopback only).
    pub tokens: Vec<crate::access::TokenConfig>,
    /// Secret for signed URLs; generated and kept in `data_dir` when unset.
    pub signing_key: Option<String>,
    /// Browser origins allowed by CORS (the node's own page needs none).
    pub cors_origins: Vec<String>,
    /// `Host` values an open node answers besides loopback names
    /// (`name` any port, or `name:port`); see `http::host`.
    pub allowed_hosts: Vec<String>,
    /// Serve without tokens on a non-loopback address (not recommended).
    pub allow_open_on_network: bool,
    /// `/metrics` needs a `read` token.
    pub metrics_token: bool,
    /// Where datasets' bytes live: `fs` (below `data_dir`) or `s3`.
    pub storage: StorageKind,
    /// The S3-compatible store (`storage = "s3"`).
    pub s3: S3Settings,
    /// The catalog: `sqlite` (in `data_dir`) or `postgres` (shared by nodes).
    pub index: IndexKind,
    /// `postgres://user:password@host:port/database` (`index = "postgres"`).
    pub postgres_url: Option<String>,
    /// TLS to PostgreSQL: `disable` or `require` (the server's certificate
    /// checked against the operating system's CAs).
    pub postgres_tls: PostgresTls,
    /// How long a new connection to PostgreSQL (TCP, TLS, authentication)
    /// may take before the index counts as unavailable: with the server
    /// gone, it is about how long a request takes to answer 503.
    pub postgres_connect_timeout: Span,
    /// Resumable uploads open at once, in total (with a shared index,
    /// across its nodes).
    pub max_open_uploads: u64,
    /// Resumable uploads open at once per token.
    pub max_open_uploads_per_token: u64,
    /// Versions kept per key, the current one included; 0 turns
    /// versioning off (a replace or delete frees the old bytes at once).
    pub keep_versions: u64,
    /// How long a version is kept after it stopped being current.
    pub keep_versions_for: Span,
    /// How often the background scrub re-reads every blob; unset: never.
    pub scrub_every: Option<Span>,
    /// The background scrub's read rate, in MB/s.
    pub scrub_rate: u64,
}

/// A duration: `30d`, `12h`, `5m`, `2s` (or any humantime form such as
/// `1h 30m`), or plain seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(secs) => Ok(Span(Duration::from_secs(secs))),
            Raw::Text(text) => match text.trim().parse::<u64>() {
                Ok(secs) => Ok(Span(Duration::from_secs(secs))),
                Err(_) => humantime::parse_duration(text.trim()).map(Span).map_err(|e| {
                    serde::de::Error::custom(format!("`{text}` is not a duration (30d, 12h, 5m, 2s or seconds): {e}"))
                }),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Fs,
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresTls {
    Disable,
    Require,
}

/// How downloads of an S3-stored dataset are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Downloads {
    /// Streamed through the node (Range, ETag and conditional requests as usual).
    Proxy,
    /// `307` to a presigned GET on the store.
    Redirect,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Settings {
    /// `http(s)://host:port` of the S3 API; unset means AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), as Garage and MinIO want.
    pub path_style: bool,
    /// Objects live below this prefix of the bucket (`""`: the whole bucket).
    pub prefix: String,
    pub downloads: Downloads,
    /// Seconds a presigned upload or download URL stays valid by default.
    pub presign_expiry: u64,
    /// Multipart parts being uploaded at once, per upload.
    pub parts_in_flight: usize,
    /// Upload into a private staging object and copy it to the key at the
    /// commit. Garage needs it (it drops an upload still in progress when
    /// its key is written); `false` uploads at the key and completes the
    /// upload at the commit, with no copy (AWS S3, MinIO; CopyObject on AWS
    /// stops at 5 GiB).
    pub stage_uploads: bool,
    /// Memory for part buffers across all uploads; uploads wait for it.
    pub part_memory_budget: ByteUnit,
    /// Server-side copies of objects larger than this are made in parts
    /// (UploadPartCopy, parts of this size up to 1 GiB) rather than by one
    /// CopyObject, which AWS S3 refuses past 5 GiB. From 5 MiB to 5 GiB.
    pub copy_part_threshold: ByteUnit,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
            prefix: String::new(),
            downloads: Downloads::Proxy,
            presign_expiry: 3600,
            parts_in_flight: 2,
            stage_uploads: true,
            part_memory_budget: ByteUnit::Mebibyte(512),
            copy_part_threshold: ByteUnit::Gibibyte(5),
        }
    }
}

impl S3Settings {
    /// The multipart part size: `max_dataset_size` fits in 10,000 parts,
    /// and a part is at least 8 MiB (rounded up to whole MiB).
    pub fn part_size(&self, max_dataset_size: u64) -> usize {
        const MIB: u64 = 1 << 20;
        let needed = max_dataset_size.div_ceil(10_000).div_ceil(MIB) * MIB;
        needed.max(8 * MIB) as usize
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("data"),
            spool_dir: None,
            spool_memory: ByteUnit::Mebibyte(8),
            spool_memory_budget: ByteUnit::Mebibyte(256),
            direct_writes: true,
            max_dataset_size: ByteUnit::Gibibyte(100),
            disk_reserve: ByteUnit::Gibibyte(1),
            stall_timeout: 60,
            header_timeout: 30,
            max_uploads: 64,
            upload_expiry: 24 * 60 * 60,
            tus_lease: 10,
            tokens: Vec::new(),
            signing_key: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            allow_open_on_network: false,
            metrics_token: false,
            storage: StorageKind::Fs,
            s3: S3Settings::default(),
            index: IndexKind::Sqlite,
            postgres_url: None,
            postgres_tls: PostgresTls::Disable,
            postgres_connect_timeout: Span(Duration::from_millis(500)),
            max_open_uploads: 10_000,
            max_open_uploads_per_token: 1_000,
            keep_versions: 10,
            keep_versions_for: Span(Duration::from_secs(30 * 24 * 60 * 60)),
            scrub_every: None,
            scrub_rate: 100,
        }
    }
}

impl Settings {
    /// The figment every entry point reads: Rocket's own (defaults,
    /// `Rocket.toml`, `ROCKET_*`) with our defaults joined underneath and
    /// `SPILLWAY_*` on top.
    pub fn figment() -> Figment {
        rocket::Config::figment()
            .join(Serialized::defaults(Settings::default()))
            .merge(Env::prefixed("SPILLWAY_").ignore(&["PROFILE"]).split("__").global())
    }

    /// Extracts and checks the settings; the message names the bad key.
    pub fn from_figment(figment: &Figment) -> Result<Settings, String> {
        let settings: Settings =
            figment.extract().map_err(|e| e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("spool_memory", self.spool_memory.as_u64()),
            ("max_dataset_size", self.max_dataset_size.as_u64()),
            ("stall_timeout", self.stall_timeout),
            ("header_timeout", self.header_timeout),
            ("max_uploads", self.max_uploads as u64),
            ("upload_expiry", self.upload_expiry),
            ("tus_lease", self.tus_lease),
            ("max_open_uploads", self.max_open_uploads),
            ("max_open_uploads_per_token", self.max_open_uploads_per_token),
            ("postgres_connect_timeout", self.postgres_connect_timeout.0.as_millis() as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("invalid value for key `{key}`: it must be greater than 0"));
            }
        }
        if self.spool_memory_budget < self.spool_memory {
            return Err(format!(
                "invalid value for key `spool_memory_budget`: {} is less than spool_memory ({})",
                self.spool_memory_budget, self.spool_memory
            ));
        }
        if self.storage == StorageKind::S3 {
            if self.s3.bucket.is_empty() {
                return Err("invalid value for key `s3.bucket`: storage = \"s3\" needs a bucket".into());
            }
            if self.s3.parts_in_flight == 0 {
                return Err("invalid value for key `s3.parts_in_flight`: it must be greater than 0".into());
            }
            let part = self.s3.part_size(self.max_dataset_size.as_u64()) as u64;
            if self.s3.part_memory_budget.as_u64() < part {
                return Err(format!(
                    "invalid value for key `s3.part_memory_budget`: it must hold at least one part ({part} bytes)"
                ));
            }
            // A copy part is at least 5 MiB (S3's smallest part) and one
            // CopyObject at most 5 GiB (S3's largest).
            let threshold = self.s3.copy_part_threshold;
            if threshold < ByteUnit::Mebibyte(5) || threshold > ByteUnit::Gibibyte(5) {
                return Err(format!(
                    "invalid value for key `s3.copy_part_threshold`: {threshold} is not between 5 MiB and 5 GiB"
                ));
            }
        }
        if self.index == IndexKind::Postgres && self.postgres_url.as_deref().is_none_or(str::is_empty) {
            return Err("invalid value for key `postgres_url`: index = \"postgres\" needs a URL".into());
        }
        if let Some(bad) = self.allowed_hosts.iter().find(|h| h.is_empty() || h.contains(['/', ' ', '\t', ','])) {
            return Err(format!(
                "invalid value for key `allowed_hosts`: `{bad}` is not a host name (`files.lan` or `files.lan:8000`)"
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("invalid value for key `data_dir`: it is empty".into());
        }
        Ok(())
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.stall_timeout)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| self.data_dir.join("spool"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_from_strings_and_numbers() {
        let figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(("spool_memory", "4 MiB"))
            .merge(("max_dataset_size", 1024));
        let s = Settings::from_figment(&figment).unwrap();
        assert_eq!(s.spool_memory.as_u64(), 4 << 20);
        assert_eq!(s.max_dataset_size.as_u64(), 1024);
    }

    #[test]
    fn part_size_fits_ten_thousand_parts() {
        let s3 = S3Settings::default();
        assert_eq!(s3.part_size(1 << 30), 8 << 20);
        let p = s3.part_size(100 << 30);
        assert!(p as u64 * 10_000 >= 100 << 30 && p % (1 << 20) == 0, "{p}");
        assert!(s3.part_size(5 << 40) as u64 * 10_000 >= 5 << 40);
    }

    #[test]
    fn bad_values_name_their_key() {
        let figment = Figment::from(Serialized::defaults(Settings::default())).merge(("spool_memory", "lots"));
        let err = Settings::from_figment(&figment).unwrap_err();
        assert!(err.contains("spool_memory"), "{err}");

        let figment = Figment::from(Serialized::defaults(Settings::default())).merge(("max_uploads", 0));
        let err = Settings::from_figment(&figment).unwrap_err();
        assert!(err.contains("max_uploads"), "{err}");

        for key in ["max_open_uploads", "max_open_uploads_per_token"] {
            let figment = Figment::from(Serialized::defaults(Settings::default())).merge((key, 0));
            let err = Settings::from_figment(&figment).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
        let figment =
            Figment::from(Serialized::defaults(Settings::default())).merge(("allowed_hosts", ["http://files.lan/"]));
        let err = Settings::from_figment(&figment).unwrap_err();
        assert!(err.contains("allowed_hosts"), "{err}");

        for bad in ["4 MiB", "6 GiB"] {
            let figment = Figment::from(Serialized::defaults(Settings::default()))
                .merge(("storage", "s3"))
                .merge(("s3.bucket", "b"))
                .merge(("s3.copy_part_threshold", bad));
            let err = Settings::from_figment(&figment).unwrap_err();
            assert!(err.contains("`s3.copy_part_threshold`"), "{bad}: {err}");
        }
    }
}
