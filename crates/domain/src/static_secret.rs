//! The `static_secret` credential provider: an API key or a username and password for a target
//! that accepts nothing better, stored encrypted.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::secret::{SealedSecret, SecretString};

/// Maximum length of a static secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSecretProvider {
    pub name: String,
    /// Set for a username and password; the value is then the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Write-only: the API key or password. The server replaces it with `sealed_value` before
    /// storing; a write without it keeps the value already stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretString>,
    /// Set by the server, never by a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_value: Option<SealedSecret>,
    /// Return the value to workloads through `POST /v1/credentials`. Off by default, so only the
    /// agent's proxy injects it and the workload never receives it.
    #[serde(
        default,
        deserialize_with = "crate::scalar::boolean",
        skip_serializing_if = "is_false"
    )]
    pub allow_workload_delivery: bool,
}

impl StaticSecretProvider {
    /// `password` with a username, `api_key` without one.
    pub fn credential_type(&self) -> &'static str {
        if self.username.is_some() {
            "password"
        } else {
            "api_key"
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(username) = &self.username
            && (username.is_empty()
                || username.contains(':')
                || username.chars().any(char::is_control))
        {
            return Err(FieldError::new(
                "username",
                username,
                "must be non-empty, without ':' or control characters (it goes into HTTP basic authentication)",
            ));
        }
        if let Some(value) = &self.value {
            if value.expose().is_empty() {
                return Err(FieldError::new("value", "", "must not be empty"));
            }
            if value.expose().len() > MAX_SECRET_BYTES {
                return Err(FieldError::new(
                    "value",
                    "",
                    &format!(
                        "must be at most {MAX_SECRET_BYTES} bytes, got {}",
                        value.expose().len()
                    ),
                ));
            }
            if value.expose().chars().any(|c| c == '\r' || c == '\n') {
                return Err(FieldError::new(
                    "value",
                    "",
                    "must not contain line breaks (it goes into an HTTP header)",
                ));
            }
        }
        Ok(())
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}
