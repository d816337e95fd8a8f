//! The agent's settings file (`mayfly agent --config FILE`): TOML with the same keys as the
//! command-line flags, and unknown keys rejected.

use std::path::{Path, PathBuf};

use mayfly_domain::duration::Seconds;
use serde::Deserialize;

use crate::run::AgentSettings;

/// Errors while reading the settings file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("agent settings file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("agent settings file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A duration is not written like `30s`, `5m` or `1h`.
    #[error("agent settings file {path}: {key} {value:?}: {reason}")]
    Duration {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// The settings file. Every key is optional; command-line flags override the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Base URL of the server.
    pub server: Option<String>,
    /// File that contains a one-time join token, read only when no valid credential is stored.
    pub join_token_file: Option<PathBuf>,
    /// Directory that keeps the agent's credential.
    pub data_dir: Option<PathBuf>,
    /// Path of the Workload API socket.
    pub socket: Option<PathBuf>,
    /// Path of the HTTP credential socket.
    pub http_socket: Option<PathBuf>,
    /// PEM file of the CA certificates for the server's HTTPS certificate.
    pub server_ca: Option<PathBuf>,
    /// Timeout of each request to the server, such as `5s`.
    pub server_timeout: Option<String>,
    /// How often the JWT bundle is fetched, such as `30s`.
    pub bundle_refresh: Option<String>,
    /// Maximum number of cached JWT-SVIDs.
    pub max_cached_svids: Option<usize>,
    /// Largest executable that is hashed for attestation, in bytes.
    pub max_hashed_executable_bytes: Option<u64>,
    /// Loopback address and port of the credential-injecting proxy, such as `127.0.0.1:8181`.
    pub proxy_listen: Option<String>,
    /// File the proxy writes its interception CA bundle to.
    pub proxy_ca_bundle: Option<PathBuf>,
    /// PEM file of the CA certificates for the server workloads' HTTPS certificates.
    pub proxy_upstream_ca: Option<PathBuf>,
    /// How often the proxy fetches the server workloads' hosts and ports, such as `30s`.
    pub proxy_targets_refresh: Option<String>,
    /// Maximum number of injection events spooled while the server does not accept them.
    pub proxy_max_spooled_events: Option<usize>,
}

/// Errors in the proxy's listen address.
#[derive(Debug, thiserror::Error)]
pub enum ProxyListenError {
    /// The value is not an address and port.
    #[error("{key} {value:?}: not an address and port such as 127.0.0.1:8181")]
    Invalid { key: String, value: String },
    /// The address is not a loopback address.
    #[error(
        "{key} {value:?}: the proxy listens on loopback only (127.0.0.0/8 or [::1]), since it attests callers through this host's /proc"
    )]
    NotLoopback { key: String, value: String },
}

/// Parses the proxy's listen address given as `key` (the flag or settings key, for the error).
pub fn parse_proxy_listen(
    key: &str,
    value: &str,
) -> Result<std::net::SocketAddr, ProxyListenError> {
    let address: std::net::SocketAddr = value.parse().map_err(|_| ProxyListenError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
    })?;
    if !address.ip().is_loopback() {
        return Err(ProxyListenError::NotLoopback {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(address)
}

impl AgentFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<AgentFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
    }

    /// Copies the file's durations and limits into `settings`.
    pub fn apply_limits(
        &self,
        path: &Path,
        settings: &mut AgentSettings,
    ) -> Result<(), ConfigError> {
        let duration = |key: &'static str, value: &String| {
            let invalid = |reason: String| ConfigError::Duration {
                path: path.to_path_buf(),
                key,
                value: value.clone(),
                reason,
            };
            let parsed = Seconds::parse(value)
                .map(Seconds::as_duration)
                .map_err(|error| invalid(error.to_string()))?;
            if parsed.is_zero() {
                return Err(invalid("must be longer than 0s, such as 5s".to_string()));
            }
            Ok(parsed)
        };
        if let Some(value) = &self.server_timeout {
            settings.server_timeout = duration("server_timeout", value)?;
        }
        if let Some(value) = &self.bundle_refresh {
            settings.bundle_refresh = duration("bundle_refresh", value)?;
        }
        if let Some(value) = self.max_cached_svids {
            settings.max_cached_svids = value;
        }
        if let Some(value) = self.max_hashed_executable_bytes {
            settings.max_hashed_executable_bytes = value;
        }
        if let Some(proxy) = settings.proxy.as_mut() {
            if let Some(value) = &self.proxy_targets_refresh {
                proxy.targets_refresh = duration("proxy_targets_refresh", value)?;
            }
            if let Some(value) = self.proxy_max_spooled_events {
                proxy.max_spooled_events = value;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn settings_file_parses_every_key() {
        let file: AgentFile = toml::from_str(
            r#"
            server = "https://mayfly.example:8750"
            join_token_file = "/etc/mayfly/join-token"
            data_dir = "/var/lib/mayfly-agent"
            socket = "/run/mayfly/agent.sock"
            http_socket = "/run/mayfly/credential.sock"
            server_ca = "/etc/mayfly/ca.pem"
            server_timeout = "10s"
            bundle_refresh = "1m"
            max_cached_svids = 100
            max_hashed_executable_bytes = 1024
            proxy_listen = "127.0.0.1:8181"
            proxy_ca_bundle = "/etc/mayfly/proxy-ca.pem"
            proxy_upstream_ca = "/etc/mayfly/upstream-ca.pem"
            proxy_targets_refresh = "10s"
            proxy_max_spooled_events = 50
            "#,
        )
        .unwrap();
        let mut settings = AgentSettings::new(String::new(), PathBuf::new(), PathBuf::new());
        settings.proxy = Some(crate::proxy::ProxySettings::new(
            "127.0.0.1:8181".parse().unwrap(),
            Path::new("/var/lib/mayfly-agent"),
        ));
        file.apply_limits(Path::new("agent.toml"), &mut settings)
            .unwrap();
        assert_eq!(file.server.as_deref(), Some("https://mayfly.example:8750"));
        assert_eq!(settings.server_timeout.as_secs(), 10);
        assert_eq!(settings.bundle_refresh.as_secs(), 60);
        assert_eq!(settings.max_cached_svids, 100);
        assert_eq!(settings.max_hashed_executable_bytes, 1024);
        assert_eq!(
            file.http_socket.as_deref(),
            Some(Path::new("/run/mayfly/credential.sock"))
        );
        assert_eq!(file.proxy_listen.as_deref(), Some("127.0.0.1:8181"));
        let proxy = settings.proxy.unwrap();
        assert_eq!(proxy.targets_refresh.as_secs(), 10);
        assert_eq!(proxy.max_spooled_events, 50);
    }

    #[test]
    fn proxy_listen_rejects_non_loopback() {
        let error = parse_proxy_listen("--proxy-listen", "0.0.0.0:8181").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("--proxy-listen"), "{message}");
        assert!(message.contains("0.0.0.0:8181"), "{message}");
    }

    #[test]
    fn proxy_listen_rejects_invalid_address() {
        let error = parse_proxy_listen("proxy_listen", "localhost").unwrap_err();
        assert!(error.to_string().contains("\"localhost\""), "{error}");
        assert!(parse_proxy_listen("proxy_listen", "[::1]:8181").is_ok());
    }

    #[test]
    fn settings_file_rejects_unknown_key() {
        let parsed = toml::from_str::<AgentFile>("servr = \"https://mayfly.example\"\n");
        assert!(parsed.unwrap_err().to_string().contains("servr"));
    }

    #[test]
    fn settings_file_rejects_zero_durations() {
        for key in ["server_timeout", "bundle_refresh"] {
            let file: AgentFile = toml::from_str(&format!("{key} = \"0s\"\n")).unwrap();
            let mut settings = AgentSettings::new(String::new(), PathBuf::new(), PathBuf::new());
            let error = file
                .apply_limits(Path::new("agent.toml"), &mut settings)
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{error}");
            assert!(error.contains("must be longer than 0s"), "{error}");
        }
    }

    #[test]
    fn settings_file_rejects_bad_duration() {
        let file: AgentFile = toml::from_str("server_timeout = \"soon\"\n").unwrap();
        let mut settings = AgentSettings::new(String::new(), PathBuf::new(), PathBuf::new());
        let error = file
            .apply_limits(Path::new("agent.toml"), &mut settings)
            .unwrap_err();
        assert!(error.to_string().contains("server_timeout"), "{error}");
    }
}
