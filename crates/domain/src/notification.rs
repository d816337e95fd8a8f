//! Notification targets: places outside the server that receive each fired alert whose rule
//! names them in `notify`.
//!
//! The only kind so far is `webhook`, which receives one JSON document per alert with HTTP POST.
//! Its secret is write-only like the secrets of credential providers: an operator writes
//! `secret`, the server stores `sealed_secret` in its place, and reads show only whether it is
//! set and its fingerprint.

use serde::{Deserialize, Serialize};

use crate::duration::Seconds;
use crate::error::FieldError;
use crate::log_stream::{validate_header_name, validate_http_url};
use crate::resources::validate_name;
use crate::secret::{SealedSecret, SecretString};

/// Time one send may take before it counts as failed, when the target sets none.
pub const DEFAULT_NOTIFY_TIMEOUT: Seconds = Seconds(10);
/// Maximum send timeout a target may configure: 5 minutes.
pub const MAX_NOTIFY_TIMEOUT: Seconds = Seconds(300);
/// Maximum length of a target's secret, in bytes.
pub const MAX_TARGET_SECRET_BYTES: usize = 4096;

/// The kind of a notification target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// One HTTP POST with a JSON body per alert.
    Webhook,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Webhook => "webhook",
        }
    }
}

/// The way a webhook target presents its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetAuth {
    /// No secret is sent, and none is stored.
    #[default]
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// The header named by `header`, carrying the secret as its whole value.
    Header,
}

impl TargetAuth {
    pub fn uses_secret(self) -> bool {
        self != TargetAuth::None
    }
}

/// A notification target resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationTarget {
    pub name: String,
    pub kind: TargetKind,
    /// The `http://` or `https://` URL each alert is posted to.
    pub url: String,
    /// `none` (default), `bearer` or `header`.
    #[serde(default, skip_serializing_if = "is_default_auth")]
    pub auth: TargetAuth,
    /// With `auth: header`: the header's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Write-only: the bearer token or header value. The server replaces it with
    /// `sealed_secret` before storing; a write without it keeps the value already stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretString>,
    /// Set by the server, never by a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<SealedSecret>,
    /// Maximum time one send may take, 10s by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Seconds>,
}

fn is_default_auth(auth: &TargetAuth) -> bool {
    *auth == TargetAuth::default()
}

impl NotificationTarget {
    /// Returns the send timeout in force.
    pub fn send_timeout(&self) -> Seconds {
        self.timeout.unwrap_or(DEFAULT_NOTIFY_TIMEOUT)
    }

    /// Checks the target on its own. The server checks that a secret exists when `auth` needs
    /// one, because only the server has the stored value.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;
        validate_http_url("url", Some(&self.url))?;
        match (self.auth, self.header.as_deref()) {
            (TargetAuth::Header, Some(header)) => validate_header_name(header)?,
            (TargetAuth::Header, None) => {
                return Err(FieldError::new(
                    "header",
                    "",
                    "is required with auth: header",
                ));
            }
            (_, Some(_)) => {
                return Err(FieldError::new(
                    "header",
                    "",
                    "is only used with auth: header",
                ));
            }
            (_, None) => {}
        }
        if let Some(secret) = &self.secret {
            let text = secret.expose();
            if !self.auth.uses_secret() {
                return Err(FieldError::new(
                    "secret",
                    "",
                    "is only used with auth: bearer or auth: header",
                ));
            }
            if text.is_empty() {
                return Err(FieldError::new("secret", "", "must not be empty"));
            }
            if text.len() > MAX_TARGET_SECRET_BYTES {
                return Err(FieldError::new(
                    "secret",
                    "",
                    &format!(
                        "must be at most {MAX_TARGET_SECRET_BYTES} bytes, got {}",
                        text.len()
                    ),
                ));
            }
            if text.chars().any(char::is_control) {
                return Err(FieldError::new(
                    "secret",
                    "",
                    "must not contain control characters (it goes into an HTTP header)",
                ));
            }
        }
        if let Some(timeout) = self.timeout
            && (timeout.as_secs() == 0 || timeout > MAX_NOTIFY_TIMEOUT)
        {
            return Err(FieldError::new(
                "timeout",
                &timeout.to_string(),
                "must be between 1s and 5m",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target(yaml: &str) -> Result<NotificationTarget, String> {
        serde_yaml_ng::from_str(yaml).map_err(|error| error.to_string())
    }

    fn field_at_fault(yaml: &str) -> String {
        target(yaml)
            .unwrap()
            .validate()
            .err()
            .map(|error| error.field)
            .unwrap_or_default()
    }

    #[test]
    fn webhook_with_bearer_secret_is_valid() {
        let parsed = target("{name: pager, kind: webhook, url: https://pager.example/hook, auth: bearer, secret: s3, timeout: 5s}").unwrap();
        assert_eq!(parsed.validate(), Ok(()));
        assert_eq!(parsed.send_timeout(), Seconds(5));
    }

    #[test]
    fn invalid_fields_are_named() {
        assert_eq!(
            field_at_fault("{name: p, kind: webhook, url: ftp://x.example}"),
            "url"
        );
        assert_eq!(
            field_at_fault(
                "{name: p, kind: webhook, url: http://x.example, auth: header, secret: s}"
            ),
            "header"
        );
        assert_eq!(
            field_at_fault("{name: p, kind: webhook, url: http://x.example, header: X-Key}"),
            "header"
        );
        assert_eq!(
            field_at_fault("{name: p, kind: webhook, url: http://x.example, secret: s}"),
            "secret"
        );
        assert_eq!(
            field_at_fault(
                "{name: p, kind: webhook, url: http://x.example, auth: bearer, secret: \"a\\nb\"}"
            ),
            "secret"
        );
        assert_eq!(
            field_at_fault("{name: p, kind: webhook, url: http://x.example, timeout: 10m}"),
            "timeout"
        );
        assert_eq!(
            field_at_fault("{name: P, kind: webhook, url: http://x.example}"),
            "name"
        );
    }

    #[test]
    fn unknown_kind_and_field_are_rejected() {
        assert!(target("{name: p, kind: email, url: http://x.example}").is_err());
        assert!(target("{name: p, kind: webhook, url: http://x.example, colour: red}").is_err());
    }

    #[test]
    fn debug_hides_secret() {
        let parsed = target("{name: p, kind: webhook, url: http://x.example, auth: bearer, secret: top-secret-value}").unwrap();
        assert!(!format!("{parsed:?}").contains("top-secret-value"));
    }
}
