//! Configuration: built-in defaults < config file < `SCIMD_*` environment < command-line flags.
//! Loaded once in `main` and passed down; nothing reads the environment later.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    pub bind: String,
    pub public_url: String,
    pub log_format: LogFormat,
    pub secret_key: Secret,
    pub secret_key_file: String,
    pub database: DatabaseConfig,
    pub scim: ScimConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub audit: AuditConfig,
    pub sync: SyncConfig,
    pub session: SessionConfig,
}

/// A configuration value that must never be printed; Debug shows whether it is set.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(unset)" } else { "Secret(..)" })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub last_used_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub retention_days: u32,
}

/// Pull sync in `scimd serve`: the scheduler, and the leases that let one instance at a time run
/// a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    pub scheduler: bool,
    pub scheduler_tick_secs: u64,
    pub lease_ttl_secs: u64,
}

/// Browser sessions after SAML sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub ttl_secs: u64,
    pub secure_cookies: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub pool_size: u32,
    pub acquire_timeout_secs: u64,
    /// SQLite: how much of the database file reading connections map (see `store::conn`).
    pub sqlite_mmap_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimConfig {
    pub default_page_size: u32,
    pub max_page_size: u32,
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://scimd.db".into(),
            bind: "127.0.0.1:8080".into(),
            public_url: String::new(),
            log_format: LogFormat::Pretty,
            secret_key: Secret::default(),
            secret_key_file: String::new(),
            database: DatabaseConfig { pool_size: 16, acquire_timeout_secs: 5, sqlite_mmap_mib: 1024 },
            scim: ScimConfig { default_page_size: 100, max_page_size: 200, max_body_bytes: 1024 * 1024 },
            auth: AuthConfig { last_used_interval_secs: 60 },
            rate_limit: RateLimitConfig { requests_per_second: 100, burst: 200 },
            audit: AuditConfig { retention_days: 365 },
            sync: SyncConfig { scheduler: true, scheduler_tick_secs: 30, lease_ttl_secs: 120 },
            session: SessionConfig { ttl_secs: 8 * 3600, secure_cookies: true },
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
}

const ENV_PREFIX: &str = "SCIMD_";
/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &["SCIMD_CONFIG"];

impl Config {
    /// Layers the sources. A missing file is an error only when it was named explicitly.
    pub fn load(file: &Path, file_named_explicitly: bool, overrides: &Overrides) -> Result<Config> {
        if file_named_explicitly && !file.exists() {
            return Err(Error::Config(format!("config file {} does not exist", file.display())));
        }
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed(ENV_PREFIX).split("__").filter(|key| !is_ignored_env(key.as_str())))
            .merge(Serialized::defaults(overrides));
        let config: Config =
            figment.extract().map_err(|e| Error::Config(format!("configuration: {}", describe(e))))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.scim.max_page_size == 0 {
            return Err(Error::Config("scim.max_page_size must be at least 1".into()));
        }
        if self.database.pool_size == 0 {
            return Err(Error::Config("database.pool_size must be at least 1".into()));
        }
        if self.rate_limit.requests_per_second > 0 && self.rate_limit.burst == 0 {
            return Err(Error::Config("rate_limit.burst must be at least 1 when a rate limit is set".into()));
        }
        if self.sync.scheduler_tick_secs == 0 {
            return Err(Error::Config("sync.scheduler_tick_secs must be at least 1".into()));
        }
        if self.sync.lease_ttl_secs == 0 {
            return Err(Error::Config("sync.lease_ttl_secs must be at least 1".into()));
        }
        if self.session.ttl_secs == 0 {
            return Err(Error::Config("session.ttl_secs must be at least 1".into()));
        }
        if !self.public_url.is_empty() && url::Url::parse(&self.public_url).is_err() {
            return Err(Error::Config(format!("public_url '{}' is not an absolute URL", self.public_url)));
        }
        Ok(())
    }

    /// The key sealing importer secrets, from `secret_key` or `secret_key_file`; `None` when
    /// neither is set.
    pub fn secret_key(&self) -> Result<Option<crate::encryption::SecretKey>> {
        let text = match (self.secret_key.0.is_empty(), self.secret_key_file.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => {
                return Err(Error::Config(
                    "both secret_key (SCIMD_SECRET_KEY) and secret_key_file are set: set only one".into(),
                ))
            }
            (false, true) => self.secret_key.0.clone(),
            (true, false) => std::fs::read_to_string(&self.secret_key_file).map_err(|e| {
                Error::Config(format!("cannot read secret_key_file {}: {e}", self.secret_key_file))
            })?,
        };
        crate::encryption::SecretKey::from_hex(&text).map(Some)
    }

    /// Base URL for `meta.location`, without a trailing slash.
    pub fn base_url(&self, bound: Option<std::net::SocketAddr>) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.trim_end_matches('/').to_string();
        }
        match bound {
            Some(addr) => format!("http://{addr}"),
            None => format!("http://{}", self.bind),
        }
    }

    /// `SCIMD_*` variables that match no configuration key: probably typos, worth a warning.
    pub fn unknown_env_vars() -> Vec<String> {
        std::env::vars_os()
            .filter_map(|(key, _)| key.into_string().ok())
            .filter(|key| key.starts_with(ENV_PREFIX) && !ENV_NOT_CONFIG.contains(&key.as_str()))
            .filter(|key| !is_known_key(&key[ENV_PREFIX.len()..]))
            .collect()
    }
}

fn is_ignored_env(key: &str) -> bool {
    ENV_NOT_CONFIG.iter().any(|name| name[ENV_PREFIX.len()..].eq_ignore_ascii_case(key))
}

fn is_known_key(key: &str) -> bool {
    let Ok(defaults) = serde_json::to_value(Config::default()) else { return false };
    let mut node = &defaults;
    for part in key.to_ascii_lowercase().split("__") {
        match node.get(part) {
            Some(next) => node = next,
            None => return false,
        }
    }
    !node.is_object()
}

fn describe(error: figment::Error) -> String {
    error.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_file_matches_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let from_file: Config = Figment::from(Toml::file(&path)).extract().unwrap();
        assert_eq!(
            serde_json::to_value(from_file).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
    }

    #[test]
    fn the_secret_key_comes_from_one_place_and_is_never_printed() {
        let mut config = Config::default();
        assert!(config.secret_key().unwrap().is_none());
        config.secret_key = Secret("ab".repeat(32));
        assert!(config.secret_key().unwrap().is_some());
        assert!(!format!("{config:?}").contains("abab"));
        config.secret_key_file = "/nonexistent".into();
        assert!(config.secret_key().unwrap_err().to_string().contains("only one"));
        config.secret_key = Secret::default();
        assert!(config.secret_key().unwrap_err().to_string().contains("/nonexistent"));
    }

    #[test]
    fn known_env_keys_are_recognised() {
        assert!(is_known_key("DATABASE_URL"));
        assert!(is_known_key("SCIM__MAX_PAGE_SIZE"));
        assert!(!is_known_key("SCIM"));
        assert!(!is_known_key("DATABSE_URL"));
    }
}
