//! Credential providers at request time: each turns a granted request into a credential.

pub mod oauth;
mod static_secret;

use jiff::Timestamp;
use mayfly_crypto::jwt_svid::{JwtSvidClaims, mint, new_jti};
use mayfly_domain::decide::Grant;
use mayfly_domain::resources::{CredentialProvider, JwtSvidProvider};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::state::{AppState, signing_algorithm};

/// A credential ready to return, with what its audit event records about it.
pub struct Issued {
    /// `jwt_svid`, `api_key`, `password`, ...
    pub credential_type: &'static str,
    pub token: Zeroizing<String>,
    /// An identifier of the credential safe to log: a `jti`, or a secret's fingerprint.
    pub token_id: String,
    /// The username to present with a password.
    pub username: Option<String>,
    /// `None` for a credential valid until an operator rotates it.
    pub expires_at: Option<Timestamp>,
    /// Extra fields for the audit event, without any secret.
    pub audit: Map<String, Value>,
}

/// Why a provider produced no credential: the denial reason and fields for the audit event, such
/// as an upstream `error` code. Neither may contain a secret or an upstream response body.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    pub audit: Map<String, Value>,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure { reason, audit: Map::new() }
    }
}

/// Produces the credential of the grant's provider.
pub async fn produce(state: &AppState, grant: &Grant<'_>, now: Timestamp) -> Result<Issued, Failure> {
    match grant.credential_provider {
        CredentialProvider::JwtSvid(provider) => jwt_svid(state, grant, provider, now).map_err(Failure::from),
        CredentialProvider::StaticSecret(provider) => static_secret::produce(state, provider).map_err(Failure::from),
        CredentialProvider::OauthClientCredentials(provider) => oauth::produce(state, provider, now).await,
    }
}

fn jwt_svid(state: &AppState, grant: &Grant<'_>, provider: &JwtSvidProvider, now: Timestamp) -> Result<Issued, String> {
    let algorithm = signing_algorithm(provider.algorithm);
    let keys = state.keys.current();
    let key = keys.active(algorithm).ok_or_else(|| format!("no active {} signing key", algorithm.as_str()))?;
    let iat = now.as_second();
    let exp = iat + i64::try_from(provider.ttl.as_secs()).unwrap_or(300);
    let jti = new_jti().map_err(|error| format!("generating a token id failed: {error}"))?;
    let claims = JwtSvidClaims {
        sub: grant.spiffe_id.clone(),
        aud: provider.audience.clone(),
        exp,
        iat,
        iss: state.issuer.clone(),
        jti: jti.clone(),
    };
    let token = mint(key, &claims).map_err(|error| format!("signing failed: {error}"))?;
    let expires_at = Timestamp::from_second(exp).map_err(|error| error.to_string())?;
    Ok(Issued {
        credential_type: "jwt_svid",
        token: Zeroizing::new(token),
        token_id: jti,
        username: None,
        expires_at: Some(expires_at),
        audit: Map::new(),
    })
}
