//! Server settings: from `mayfly server` flags or a TOML file whose unknown keys are rejected.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use mayfly_domain::duration::Seconds;
use serde::Deserialize;

/// Default listen address of the HTTP API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8750";
/// Default trust domain of a dev server.
pub const DEV_TRUST_DOMAIN: &str = "mayfly.local";

/// Why settings were rejected.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The settings file is not valid TOML or has an unknown or mistyped key.
    #[error("invalid settings file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A setting has a value outside its allowed range.
    #[error("invalid setting {field} = {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// Everything a server needs to start. Every field has a default suitable for `--dev`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Directory of the SQLite database, the workload socket, the admin token file and (in dev
    /// mode) the key-encryption key.
    pub data_dir: PathBuf,
    /// Issuer URL, the `iss` of every token; defaults to `http(s)://<listen address>`.
    pub issuer: Option<String>,
    /// Trust domain of the SPIFFE IDs this server issues.
    pub trust_domain: Option<String>,
    /// Dev mode: generate a key-encryption key in the data directory when none is configured.
    /// Set only by the `--dev` flag, never by a settings file, so a production file cannot
    /// switch it on by accident.
    #[serde(skip)]
    pub dev: bool,
    /// TLS for the API listener.
    pub tls: Option<TlsSettings>,
    /// File holding the base64 key-encryption key that protects signing keys at rest.
    pub kek_file: Option<PathBuf>,
    /// Environment variable holding the base64 key-encryption key (read once at start).
    pub kek_env: Option<String>,
    /// How often a new signing key is activated.
    pub key_rotation_period: Seconds,
    /// Days audit events are kept, from 1 to 365.
    pub audit_retention_days: u32,
    /// A signed checkpoint is written after this many audit events...
    pub checkpoint_every_events: u32,
    /// ...or after this long, whichever comes first (when there are new events).
    pub checkpoint_interval: Seconds,
    /// Reverse proxies whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Path of the workload socket; defaults to `<data_dir>/workload.sock`.
    pub workload_socket: Option<PathBuf>,
    /// Largest executable hashed for unix attestation, in bytes; larger ones get no `sha256`.
    pub max_hashed_executable_bytes: u64,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Maximum wait between two delivery attempts of a failing log stream. The first retry
    /// waits 500ms, and each failure doubles the wait up to this maximum.
    pub log_stream_max_backoff: Seconds,
    /// A log stream that keeps failing for this long raises an alert (an audit event of kind
    /// `alert`), once per run of failures.
    pub log_stream_alert_after: Seconds,
    /// MaxMind-format database (GeoIP2 or GeoLite2, City or Country) that resolves source
    /// addresses to countries and subdivisions for `geo` access conditions and
    /// `unexpected_location` alert rules. Read once at start.
    pub geoip_database: Option<PathBuf>,
    /// Lifetime of each SPIFFE X.509 CA certificate. A successor takes over once half of it has
    /// passed.
    pub x509_ca_ttl: Seconds,
    /// How long a new X.509 CA is published in the trust bundle before it signs.
    pub x509_ca_publish_ahead: Seconds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8750)),
            data_dir: PathBuf::from("./mayfly-data"),
            issuer: None,
            trust_domain: None,
            dev: false,
            tls: None,
            kek_file: None,
            kek_env: None,
            key_rotation_period: Seconds(86_400),
            audit_retention_days: 90,
            checkpoint_every_events: 1000,
            checkpoint_interval: Seconds(60),
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            workload_socket: None,
            max_hashed_executable_bytes: 512 * 1024 * 1024,
            log_format: LogFormat::Text,
            log_stream_max_backoff: Seconds(60),
            log_stream_alert_after: Seconds(300),
            geoip_database: None,
            x509_ca_ttl: Seconds(30 * 86_400),
            x509_ca_publish_ahead: Seconds(3600),
        }
    }
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| SettingsError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }

    /// Checks ranges that the types alone do not enforce.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=365).contains(&self.audit_retention_days) {
            return Err(SettingsError::Invalid {
                field: "audit_retention_days",
                value: self.audit_retention_days.to_string(),
                reason: "must be between 1 and 365 days".to_string(),
            });
        }
        if self.key_rotation_period.as_secs() < 2 * 3600 + 600 {
            return Err(SettingsError::Invalid {
                field: "key_rotation_period",
                value: self.key_rotation_period.to_string(),
                reason: "must be at least 2h10m: a new key is published an hour before it signs and the previous one stays until its tokens expire".to_string(),
            });
        }
        if self.checkpoint_every_events == 0 {
            return Err(SettingsError::Invalid {
                field: "checkpoint_every_events",
                value: "0".to_string(),
                reason: "must be at least 1".to_string(),
            });
        }
        // A zero period would panic the checkpoint timer, so the range starts at one second.
        if !(1..=86_400).contains(&self.checkpoint_interval.as_secs()) {
            return Err(SettingsError::Invalid {
                field: "checkpoint_interval",
                value: self.checkpoint_interval.to_string(),
                reason: "must be between 1s and 24h".to_string(),
            });
        }
        if self.max_body_bytes < 1024 {
            return Err(SettingsError::Invalid {
                field: "max_body_bytes",
                value: self.max_body_bytes.to_string(),
                reason: "must be at least 1024".to_string(),
            });
        }
        if !(1..=3600).contains(&self.log_stream_max_backoff.as_secs()) {
            return Err(SettingsError::Invalid {
                field: "log_stream_max_backoff",
                value: self.log_stream_max_backoff.to_string(),
                reason: "must be between 1s and 1h".to_string(),
            });
        }
        if !(1..=86_400).contains(&self.log_stream_alert_after.as_secs()) {
            return Err(SettingsError::Invalid {
                field: "log_stream_alert_after",
                value: self.log_stream_alert_after.to_string(),
                reason: "must be between 1s and 24h".to_string(),
            });
        }
        if !(3600..=5 * 365 * 86_400).contains(&self.x509_ca_ttl.as_secs()) {
            return Err(SettingsError::Invalid {
                field: "x509_ca_ttl",
                value: self.x509_ca_ttl.to_string(),
                reason: "must be between 1h and 1825d".to_string(),
            });
        }
        let publish_ahead = self.x509_ca_publish_ahead.as_secs();
        if publish_ahead == 0 || publish_ahead.saturating_mul(2) > self.x509_ca_ttl.as_secs() / 2 {
            return Err(SettingsError::Invalid {
                field: "x509_ca_publish_ahead",
                value: self.x509_ca_publish_ahead.to_string(),
                reason: format!(
                    "must be at least 1s and at most a quarter of x509_ca_ttl ({}), so a new CA is published well before the active one is replaced",
                    self.x509_ca_ttl
                ),
            });
        }
        if let Some(issuer) = &self.issuer
            && !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        {
            return Err(SettingsError::Invalid {
                field: "issuer",
                value: issuer.clone(),
                reason: "must be an http:// or https:// URL".to_string(),
            });
        }
        Ok(())
    }

    /// Returns the issuer URL: the configured one without a trailing `/`, or one derived from the listen
    /// address (`localhost` replaces an unspecified address).
    pub fn issuer_url(&self) -> String {
        if let Some(issuer) = &self.issuer {
            return issuer.trim_end_matches('/').to_string();
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => "localhost".to_string(),
            IpAddr::V6(ip) if ip.is_unspecified() => "localhost".to_string(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!("{scheme}://{host}:{}", self.listen.port())
    }

    pub fn workload_socket_path(&self) -> PathBuf {
        self.workload_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("workload.sock"))
    }
}
