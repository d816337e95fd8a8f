//! The `--target HOST:PORT` argument of `mayfly credential get`.

use std::fmt;

/// An invalid `--target` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The text has no `:PORT` suffix.
    #[error(
        "invalid target {0:?}: expected HOST:PORT, such as payments.internal.example:443 or [::1]:8443"
    )]
    MissingPort(String),
    /// The host part is empty or contains characters that no host name or IP address has.
    #[error("invalid target {0:?}: the host must be a DNS name or an IP address")]
    InvalidHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("invalid target {0:?}: the port must be a number from 1 to 65535")]
    InvalidPort(String),
}

/// A server workload addressed by host and port instead of by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// DNS name or IP address; an IPv6 address is kept without its brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `HOST:PORT` or `[IPV6]:PORT`.
pub fn parse_target(text: &str) -> Result<Target, TargetError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| TargetError::InvalidHost(text.to_string()))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| TargetError::MissingPort(text.to_string()))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(TargetError::InvalidHost(text.to_string()));
        }
        (host, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| TargetError::MissingPort(text.to_string()))?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-');
        if !valid_host {
            return Err(TargetError::InvalidHost(text.to_string()));
        }
        (host, port)
    };

    let valid_digits = !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit());
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| valid_digits && *port != 0);
    let port = port.ok_or_else(|| TargetError::InvalidPort(text.to_string()))?;
    Ok(Target {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        let target = parse_target("payments.internal.example:443");
        assert_eq!(
            target,
            Ok(Target {
                host: "payments.internal.example".to_string(),
                port: 443
            })
        );
    }

    #[test]
    fn parses_ipv4_and_bracketed_ipv6() {
        assert_eq!(
            parse_target("10.0.0.5:8443"),
            Ok(Target {
                host: "10.0.0.5".to_string(),
                port: 8443
            })
        );
        assert_eq!(
            parse_target("[::1]:8443"),
            Ok(Target {
                host: "::1".to_string(),
                port: 8443
            })
        );
    }

    #[test]
    fn display_restores_brackets() {
        let target = Target {
            host: "fe80::1".to_string(),
            port: 443,
        };
        assert_eq!(target.to_string(), "[fe80::1]:443");
    }

    #[test]
    fn missing_port_is_rejected() {
        for text in ["api.local", "[::1]", ""] {
            assert!(
                matches!(parse_target(text), Err(TargetError::MissingPort(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bad_ports_are_rejected() {
        for text in [
            "api.local:0",
            "api.local:65536",
            "api.local:",
            "api.local:+443",
            "api.local:https",
        ] {
            assert!(
                matches!(parse_target(text), Err(TargetError::InvalidPort(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bad_hosts_are_rejected() {
        for text in [
            ":443",
            "api local:443",
            "::1:443",
            "api/../x:443",
            "[not-ipv6]:443",
            "[::1:443",
        ] {
            assert!(
                matches!(parse_target(text), Err(TargetError::InvalidHost(_))),
                "{text:?}"
            );
        }
    }
}
