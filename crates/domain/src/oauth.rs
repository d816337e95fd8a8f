//! The `oauth_client_credentials` credential provider: an access token from the target's OAuth
//! authorization server, fetched with the client credentials grant (RFC 6749 section 4.4).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Seconds;
use crate::error::FieldError;
use crate::resources::SigningAlgorithm;
use crate::secret::{SealedSecret, SecretString};

/// Default timeout of one token request.
pub const DEFAULT_TOKEN_TIMEOUT: Seconds = Seconds(10);
/// Maximum timeout of one token request.
pub const MAX_TOKEN_TIMEOUT: Seconds = Seconds(60);

/// Form parameters that the grant itself sets, so `extra_params` may not override them.
pub const RESERVED_PARAMS: [&str; 8] = [
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "audience",
    "resource",
];

/// Client authentication method at the token endpoint (RFC 6749 section 2.3, RFC 7523 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP basic authentication with the client id and secret.
    ClientSecretBasic,
    /// The client id and secret as form parameters.
    ClientSecretPost,
    /// A JWT assertion signed with Mayfly's active key; the authorization server verifies it
    /// through Mayfly's JWKS, so no secret is shared.
    PrivateKeyJwt,
}

impl ClientAuth {
    pub fn uses_secret(self) -> bool {
        !matches!(self, ClientAuth::PrivateKeyJwt)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OauthClientCredentialsProvider {
    pub name: String,
    /// The authorization server's token endpoint.
    pub token_url: String,
    pub client_id: String,
    pub client_auth: ClientAuth,
    /// Sent space-separated as `scope`; the cache keeps one token per provider and scope set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Sent as `audience`, a parameter several authorization servers use to pick the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Sent as `resource` (RFC 8707).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// More form parameters for the token request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_params: BTreeMap<String, String>,
    /// Write-only, for the `client_secret_*` methods. The server replaces it with
    /// `sealed_client_secret` before storing; a write without it keeps the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretString>,
    /// Set by the server, never by a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_client_secret: Option<SealedSecret>,
    /// The `aud` of a `private_key_jwt` assertion. Default: `token_url`. Set it to the
    /// authorization server's issuer identifier where the server expects that instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion_audience: Option<String>,
    /// Algorithm of the `private_key_jwt` assertion.
    #[serde(default)]
    pub algorithm: SigningAlgorithm,
    /// Timeout of one token request, connection included.
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
}

fn default_timeout() -> Seconds {
    DEFAULT_TOKEN_TIMEOUT
}

impl OauthClientCredentialsProvider {
    /// Returns the scopes sorted and without duplicates: the scope set that keys the token cache.
    pub fn scope_set(&self) -> Vec<String> {
        let mut scopes = self.scopes.clone();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// Returns the `aud` claim of a `private_key_jwt` assertion.
    pub fn assertion_audience(&self) -> &str {
        self.assertion_audience
            .as_deref()
            .unwrap_or(&self.token_url)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        crate::resources::validate_url("token_url", &self.token_url)?;
        if self.client_id.is_empty() {
            return Err(FieldError::new("client_id", "", "must not be empty"));
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
        if !self.client_auth.uses_secret() && self.client_secret.is_some() {
            return Err(FieldError::new(
                "client_secret",
                "",
                "must not be set with client_auth: private_key_jwt, which signs an assertion instead",
            ));
        }
        if let Some(secret) = &self.client_secret
            && secret.expose().is_empty()
        {
            return Err(FieldError::new("client_secret", "", "must not be empty"));
        }
        if let Some(name) = self
            .extra_params
            .keys()
            .find(|name| RESERVED_PARAMS.contains(&name.as_str()))
        {
            return Err(FieldError::new(
                &format!("extra_params.{name}"),
                name,
                "is set by the grant itself; use the provider's own field where there is one",
            ));
        }
        if let Some(audience) = &self.assertion_audience
            && audience.is_empty()
        {
            return Err(FieldError::new(
                "assertion_audience",
                "",
                "must not be empty",
            ));
        }
        if self.timeout > MAX_TOKEN_TIMEOUT || self.timeout.as_secs() == 0 {
            return Err(FieldError::new(
                "timeout",
                &self.timeout.to_string(),
                "must be between 1s and 60s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use crate::resources::CredentialProvider;

    fn parse(yaml: &str) -> CredentialProvider {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const BASE: &str = "{name: reports, kind: oauth_client_credentials, token_url: \"https://login.example/token\", client_id: reports";

    #[test]
    fn valid_provider_passes() {
        let provider = parse(&format!(
            "{BASE}, client_auth: private_key_jwt, scopes: [\"reports:read\"]}}"
        ));
        assert_eq!(provider.validate(), Ok(()));
        assert_eq!(provider.credential_type(), "access_token");
    }

    #[test]
    fn client_secret_with_private_key_jwt_is_rejected() {
        let provider = parse(&format!(
            "{BASE}, client_auth: private_key_jwt, client_secret: s3cret}}"
        ));
        assert_eq!(provider.validate().unwrap_err().field, "client_secret");
    }

    #[test]
    fn extra_params_cannot_override_the_grant() {
        let provider = parse(&format!(
            "{BASE}, client_auth: client_secret_post, extra_params: {{grant_type: password}}}}"
        ));
        assert_eq!(
            provider.validate().unwrap_err().field,
            "extra_params.grant_type"
        );
    }

    #[test]
    fn scope_with_space_is_rejected() {
        let provider = parse(&format!(
            "{BASE}, client_auth: client_secret_basic, scopes: [\"a b\"]}}"
        ));
        assert_eq!(provider.validate().unwrap_err().field, "scopes");
    }

    #[test]
    fn token_url_must_be_http() {
        let provider = parse(
            "{name: r, kind: oauth_client_credentials, token_url: \"ftp://x\", client_id: r, client_auth: client_secret_basic}",
        );
        assert_eq!(provider.validate().unwrap_err().field, "token_url");
    }

    #[test]
    fn scope_set_is_sorted_and_deduplicated() {
        let CredentialProvider::OauthClientCredentials(provider) = parse(&format!(
            "{BASE}, client_auth: private_key_jwt, scopes: [b, a, b]}}"
        )) else {
            panic!("not an oauth provider");
        };
        assert_eq!(provider.scope_set(), vec!["a", "b"]);
    }
}
