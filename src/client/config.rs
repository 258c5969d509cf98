//! Which node the client talks to, and with which token. The first of these
//! that names a URL wins:
//!
//! 1. `--url` (then the environment, `SPILLWAY_URL`);
//! 2. the chosen profile (`--profile`, `SPILLWAY_PROFILE`, else `default`) of
//!    the client config file: `$SPILLWAY_CONFIG`, else
//!    `$XDG_CONFIG_HOME/spillway/config.toml`, else
//!    `~/.config/spillway/config.toml`; a profile is a table with `url` and
//!    `token`;
//! 3. where a node started in the working directory would listen: its own
//!    settings (`Rocket.toml`, `SPILLWAY_ADDRESS`, `SPILLWAY_PORT`);
//! 4. `http://127.0.0.1:8000`.
//!
//! The token is `--token` (then `SPILLWAY_TOKEN`), else the profile's; a
//! profile's token goes only to that profile's URL (or to any, when the
//! profile names none), so `--url` to another node does not leak it.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use figment::providers::{Format, Toml};
use figment::Figment;
use serde::Deserialize;

use super::Connection;

/// The built-in default, when nothing names a node.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";
const DEFAULT_PROFILE: &str = "default";

/// A node's URL and token, and where the URL came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub url: String,
    pub token: Option<String>,
    pub source: String,
}

/// A profile of the client config file.
#[derive(Debug, Default, Deserialize)]
struct Profile {
    url: Option<String>,
    token: Option<String>,
}

/// The client config file's path (it may not exist).
pub fn config_path() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty("SPILLWAY_CONFIG")
        .or_else(|| non_empty("XDG_CONFIG_HOME").map(|d| d.join("spillway/config.toml")))
        .or_else(|| non_empty("HOME").map(|h| h.join(".config/spillway/config.toml")))
}

/// Resolves the connection in the documented order.
pub fn resolve(connection: &Connection) -> Result<Resolved> {
    let profile_name = connection.profile.clone().unwrap_or_else(|| DEFAULT_PROFILE.to_string());
    let profile = read_profile(&profile_name, connection.profile.is_some())?;
    let flag_token = connection.token.clone().filter(|t| !t.trim().is_empty());
    let (url, source) = if let Some(url) = connection.url.as_deref().filter(|u| !u.trim().is_empty()) {
        (normalize(url), "--url / SPILLWAY_URL".to_string())
    } else if let Some(url) = &profile.url {
        (normalize(url), format!("profile `{profile_name}` of {}", shown_config_path()))
    } else if let Some((url, source)) = node_settings() {
        (url, source)
    } else {
        (DEFAULT_URL.to_string(), "the built-in default".to_string())
    };
    let profile_token = profile.token.filter(|t| !t.trim().is_empty()).filter(|_| match &profile.url {
        Some(profile_url) => same_url(&normalize(profile_url), &url),
        None => true,
    });
    Ok(Resolved { url, token: flag_token.or(profile_token), source })
}

/// `host:port` (no scheme) is taken as `http://host:port`.
pub fn normalize(raw: &str) -> String {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    with_scheme.trim_end_matches('/').to_string()
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

fn shown_config_path() -> String {
    config_path().map_or_else(|| "the client config file".to_string(), |p| p.display().to_string())
}

/// The chosen profile; an empty one when the file does not exist and no
/// profile was asked for by name.
fn read_profile(name: &str, asked: bool) -> Result<Profile> {
    let Some(path) = config_path() else { return Ok(Profile::default()) };
    if !path.exists() {
        if asked && name != DEFAULT_PROFILE {
            anyhow::bail!("no profile `{name}`: the client config file {} does not exist", path.display());
        }
        return Ok(Profile::default());
    }
    let figment = Figment::from(Toml::file_exact(&path).nested());
    let known = figment.profiles().any(|p| p.as_str().as_str().eq_ignore_ascii_case(name));
    if !known {
        if asked && name != DEFAULT_PROFILE {
            anyhow::bail!("the client config file {} has no profile `{name}`", path.display());
        }
        return Ok(Profile::default());
    }
    figment.select(name).extract().with_context(|| format!("the client config file {} is not valid", path.display()))
}

/// Where a node started in the working directory would listen, if its
/// settings say anything other than the defaults' own address and port.
fn node_settings() -> Option<(String, String)> {
    let figment = crate::config::Settings::figment();
    let address: IpAddr = figment.extract_inner("address").ok()?;
    let port: u16 = figment.extract_inner("port").ok()?;
    // Port 0 is "any free port": nothing to connect to.
    if port == 0 {
        return None;
    }
    let source = ["port", "address"]
        .iter()
        .filter_map(|key| figment.find_metadata(key))
        .filter(|m| !m.name.contains("default"))
        .map(|m| match &m.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            _ => m.name.to_string(),
        })
        .next()?;
    let host = match address {
        a if a.is_unspecified() && a.is_ipv4() => "127.0.0.1".to_string(),
        a if a.is_unspecified() => "[::1]".to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    Some((format!("http://{host}:{port}"), format!("{source}, the node settings of the working directory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_a_url() {
        assert_eq!(normalize("files.lan:8000"), "http://files.lan:8000");
        assert_eq!(normalize("https://files.lan/"), "https://files.lan");
        assert_eq!(normalize(" 127.0.0.1:9 "), "http://127.0.0.1:9");
    }
}
