//! The `federated_token_exchange` credential provider: Mayfly acts as the OIDC identity provider a
//! target trusts. It mints a JWT-SVID for the calling workload and exchanges it at the target's
//! token service for the target's own credential.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Seconds;
use crate::error::FieldError;
use crate::oauth::{DEFAULT_TOKEN_TIMEOUT, MAX_TOKEN_TIMEOUT};
use crate::resources::{MAX_CREDENTIAL_TTL, MIN_CREDENTIAL_TTL, SigningAlgorithm};

/// Lifetime of the JWT-SVID presented to the token service when the provider sets none.
pub const DEFAULT_SVID_TTL: Seconds = Seconds(120);
/// Session duration requested from AWS STS when the provider sets none.
pub const DEFAULT_AWS_DURATION: Seconds = Seconds(3600);

/// The protocol of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeForm {
    /// OAuth 2.0 Token Exchange (RFC 8693), the JWT-SVID as `subject_token` of type
    /// `urn:ietf:params:oauth:token-type:jwt`.
    Rfc8693,
    /// The client credentials grant with the JWT-SVID as `client_assertion` (RFC 7523), as
    /// Microsoft Entra workload identity federation expects.
    ClientAssertion,
    /// AWS STS `AssumeRoleWithWebIdentity`, returning temporary AWS credentials.
    AwsSts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedTokenExchangeProvider {
    pub name: String,
    pub exchange: ExchangeForm,
    /// The token service: a token endpoint, or the STS endpoint such as
    /// `https://sts.amazonaws.com/`.
    pub token_url: String,
    /// The `aud` of the JWT-SVID: the audience the target's federation trust expects, such as
    /// `api://AzureADTokenExchange` or `sts.amazonaws.com`.
    pub svid_audience: Vec<String>,
    #[serde(default = "default_svid_ttl")]
    pub svid_ttl: Seconds,
    #[serde(default)]
    pub algorithm: SigningAlgorithm,
    /// `client_assertion`: the application (client) id at the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `rfc8693` and `client_assertion`: sent space-separated as `scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `rfc8693`: the `audience` parameter, naming the service the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `rfc8693`: the `resource` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `rfc8693`: the `requested_token_type` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_token_type: Option<String>,
    /// `aws_sts`: the ARN of the role to assume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `aws_sts`: the role session name. Default: `mayfly-` and the client workload's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// `aws_sts`: the session duration, 15m to 12h; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Seconds>,
    /// More form parameters for `rfc8693` and `client_assertion` requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_params: BTreeMap<String, String>,
    /// Timeout of one request to the token service.
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
}

fn default_svid_ttl() -> Seconds {
    DEFAULT_SVID_TTL
}

fn default_timeout() -> Seconds {
    DEFAULT_TOKEN_TIMEOUT
}

/// Form parameters that the exchange itself sets, so `extra_params` may not override them.
const RESERVED_PARAMS: [&str; 12] = [
    "grant_type",
    "client_id",
    "client_assertion",
    "client_assertion_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "scope",
    "audience",
    "resource",
    "requested_token_type",
];

impl FederatedTokenExchangeProvider {
    /// Returns `aws_credentials` for STS, `access_token` for the OAuth forms.
    pub fn credential_type(&self) -> &'static str {
        match self.exchange {
            ExchangeForm::AwsSts => "aws_credentials",
            ExchangeForm::Rfc8693 | ExchangeForm::ClientAssertion => "access_token",
        }
    }

    /// Returns the scopes sorted and without duplicates.
    pub fn scope_set(&self) -> Vec<String> {
        let mut scopes = self.scopes.clone();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// Returns the AWS session duration, the configured one or the default.
    pub fn aws_duration(&self) -> Seconds {
        self.duration.unwrap_or(DEFAULT_AWS_DURATION)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        crate::resources::validate_url("token_url", &self.token_url)?;
        if self.svid_audience.is_empty()
            || self
                .svid_audience
                .iter()
                .any(|audience| audience.trim().is_empty())
        {
            return Err(FieldError::new(
                "svid_audience",
                "",
                "must list at least one non-empty audience",
            ));
        }
        if self.svid_ttl < MIN_CREDENTIAL_TTL || self.svid_ttl > Seconds(3600) {
            return Err(FieldError::new(
                "svid_ttl",
                &self.svid_ttl.to_string(),
                "must be between 10s and 1h",
            ));
        }
        if self.timeout > MAX_TOKEN_TIMEOUT || self.timeout.as_secs() == 0 {
            return Err(FieldError::new(
                "timeout",
                &self.timeout.to_string(),
                "must be between 1s and 60s",
            ));
        }
        if let Some(scope) = self
            .scopes
            .iter()
            .find(|scope| scope.is_empty() || scope.contains(char::is_whitespace))
        {
            return Err(FieldError::new(
                "scopes",
                scope,
                "each scope must be non-empty and without spaces",
            ));
        }
        if let Some(name) = self
            .extra_params
            .keys()
            .find(|name| RESERVED_PARAMS.contains(&name.as_str()))
        {
            return Err(FieldError::new(
                &format!("extra_params.{name}"),
                name,
                "is set by the exchange itself",
            ));
        }
        match self.exchange {
            ExchangeForm::Rfc8693 => Ok(()),
            ExchangeForm::ClientAssertion => match &self.client_id {
                Some(client_id) if !client_id.is_empty() => Ok(()),
                _ => Err(FieldError::new(
                    "client_id",
                    "",
                    "is required with exchange: client_assertion",
                )),
            },
            ExchangeForm::AwsSts => self.validate_aws(),
        }
    }

    fn validate_aws(&self) -> Result<(), FieldError> {
        match &self.role_arn {
            Some(arn) if arn.starts_with("arn:") && !arn.contains(char::is_whitespace) => {}
            Some(arn) => {
                return Err(FieldError::new(
                    "role_arn",
                    arn,
                    "must be an ARN such as arn:aws:iam::123456789012:role/reports",
                ));
            }
            None => {
                return Err(FieldError::new(
                    "role_arn",
                    "",
                    "is required with exchange: aws_sts",
                ));
            }
        }
        if let Some(name) = &self.session_name
            && !is_aws_session_name(name)
        {
            return Err(FieldError::new(
                "session_name",
                name,
                "must be 2 to 64 characters of letters, digits and +=,.@_-",
            ));
        }
        let duration = self.aws_duration();
        if duration < Seconds(900) || duration > Seconds(43_200) || duration > MAX_CREDENTIAL_TTL {
            return Err(FieldError::new(
                "duration",
                &duration.to_string(),
                "must be between 15m and 12h",
            ));
        }
        if !self.scopes.is_empty()
            || self.audience.is_some()
            || self.resource.is_some()
            || !self.extra_params.is_empty()
        {
            return Err(FieldError::new(
                "scopes",
                "",
                "scopes, audience, resource and extra_params do not apply to exchange: aws_sts",
            ));
        }
        Ok(())
    }
}

/// Checks AWS's role session name rule: 2 to 64 characters of `[\w+=,.@-]`.
pub fn is_aws_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::resources::CredentialProvider;

    fn validate(yaml: &str) -> Result<(), String> {
        let provider: CredentialProvider = serde_yaml_ng::from_str(yaml).unwrap();
        provider.validate().map_err(|error| error.field)
    }

    const BASE: &str = "{name: fed, kind: federated_token_exchange, token_url: \"https://sts.example/\", svid_audience: [sts.amazonaws.com]";

    #[test]
    fn aws_sts_needs_role_arn() {
        assert_eq!(
            validate(&format!("{BASE}, exchange: aws_sts}}")),
            Err("role_arn".to_string())
        );
        assert_eq!(
            validate(&format!(
                "{BASE}, exchange: aws_sts, role_arn: \"arn:aws:iam::1:role/r\"}}"
            )),
            Ok(())
        );
    }

    #[test]
    fn aws_sts_duration_is_bounded() {
        let yaml = format!(
            "{BASE}, exchange: aws_sts, role_arn: \"arn:aws:iam::1:role/r\", duration: 5m}}"
        );
        assert_eq!(validate(&yaml), Err("duration".to_string()));
    }

    #[test]
    fn client_assertion_needs_client_id() {
        assert_eq!(
            validate(&format!("{BASE}, exchange: client_assertion}}")),
            Err("client_id".to_string())
        );
    }

    #[test]
    fn invalid_session_name_is_rejected() {
        let yaml = format!(
            "{BASE}, exchange: aws_sts, role_arn: \"arn:aws:iam::1:role/r\", session_name: \"a b\"}}"
        );
        assert_eq!(validate(&yaml), Err("session_name".to_string()));
    }
}
