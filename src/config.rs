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
    pub max_dataset_size: ByteUnit,
    /// Free space to keep on each volume.
    pub disk_reserve: ByteUnit,
    /// Seconds without body bytes before an upload is aborted.
    pub stall_timeout: u64,
    /// Uploads in flight at once.
    pub max_uploads: usize,
    /// Seconds a resumable upload lives after its creation or last PATCH.
    pub upload_expiry: u64,
    /// Bearer tokens; none means the node is open (and loopback only).
    pub tokens: Vec<crate::access::TokenConfig>,
    /// Secret for signed URLs; generated and kept in `data_dir` when unset.
    pub signing_key: Option<String>,
    /// Browser origins allowed by CORS (the node's own page needs none).
    pub cors_origins: Vec<String>,
    /// Serve without tokens on a non-loopback address (not recommended).
    pub allow_open_on_network: bool,
    /// `/metrics` needs a `read` token.
    pub metrics_token: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("data"),
            spool_dir: None,
            spool_memory: ByteUnit::Mebibyte(8),
            spool_memory_budget: ByteUnit::Mebibyte(256),
            max_dataset_size: ByteUnit::Gibibyte(100),
            disk_reserve: ByteUnit::Gibibyte(1),
            stall_timeout: 60,
            max_uploads: 64,
            upload_expiry: 24 * 60 * 60,
            tokens: Vec::new(),
            signing_key: None,
            cors_origins: Vec::new(),
            allow_open_on_network: false,
            metrics_token: false,
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
            .merge(Env::prefixed("SPILLWAY_").ignore(&["PROFILE"]).global())
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
            ("max_uploads", self.max_uploads as u64),
            ("upload_expiry", self.upload_expiry),
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
    fn bad_values_name_their_key() {
        let figment = Figment::from(Serialized::defaults(Settings::default())).merge(("spool_memory", "lots"));
        let err = Settings::from_figment(&figment).unwrap_err();
        assert!(err.contains("spool_memory"), "{err}");

        let figment = Figment::from(Serialized::defaults(Settings::default())).merge(("max_uploads", 0));
        let err = Settings::from_figment(&figment).unwrap_err();
        assert!(err.contains("max_uploads"), "{err}");
    }
}
