//! Credential providers at request time: each turns a granted request into a credential.

pub mod cache;
mod federation;
pub mod oauth;
mod static_secret;

use jiff::Timestamp;
use mayfly_crypto::jwt_svid::{JwtSvidClaims, mint, new_jti};
use mayfly_domain::decide::Grant;
use mayfly_domain::duration::Seconds;
use mayfly_domain::resources::{
    CredentialProvider, JwtSvidProvider, SigningAlgorithm, X509SvidProvider,
};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::keys::KeyRing;
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
    /// More fields of the credential for the response, such as AWS's `access_key_id`.
    pub fields: Vec<(String, String)>,
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
        Failure {
            reason,
            audit: Map::new(),
        }
    }
}

/// The receiver of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The workload itself, through `POST /v1/credentials` or an agent's socket.
    Workload,
    /// An agent's proxy, which injects the credential into the workload's request and never
    /// hands it to the workload.
    Proxy,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Workload => "workload",
            Delivery::Proxy => "proxy",
        }
    }
}

/// Produces the credential of the grant's provider; `audience_override` replaces the audiences of
/// a JWT-SVID (Workload API requests name audiences).
pub async fn produce(
    state: &AppState,
    grant: &Grant<'_>,
    audience_override: Option<&[String]>,
    delivery: Delivery,
    now: Timestamp,
) -> Result<Issued, Failure> {
    match grant.credential_provider {
        CredentialProvider::JwtSvid(provider) => {
            let audience = audience_override.unwrap_or(&provider.audience);
            jwt_svid(state, grant, provider, audience, now).map_err(Failure::from)
        }
        CredentialProvider::StaticSecret(provider) => {
            static_secret::produce(state, provider, delivery).map_err(Failure::from)
        }
        CredentialProvider::OauthClientCredentials(provider) => {
            oauth::produce(state, provider).await
        }
        CredentialProvider::FederatedTokenExchange(provider) => {
            federation::produce(state, grant, provider, now).await
        }
        CredentialProvider::X509Svid(provider) => Err(Failure::from(format!(
            "x509_svid credential provider {:?} needs a CSR; X.509-SVIDs are issued only through an agent",
            provider.name
        ))),
    }
}

/// The HTTP client and the credential cache of every provider that calls an upstream token
/// service.
pub struct UpstreamClient {
    pub http: reqwest::Client,
    pub cache: cache::TokenCache,
}

impl UpstreamClient {
    pub fn new() -> UpstreamClient {
        // Each request sets its own timeout from its provider; this one bounds connecting.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        UpstreamClient {
            http,
            cache: cache::TokenCache::default(),
        }
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        UpstreamClient::new()
    }
}

/// Builds the [`Issued`] of a credential from an upstream token service. Its `token_id` is a
/// digest of the token, which lets operators correlate without logging the token.
fn upstream_issued(
    credential_type: &'static str,
    token: &cache::CachedToken,
    cached: bool,
    mut audit: Map<String, Value>,
) -> Issued {
    use sha2::Digest;

    let digest = sha2::Sha256::digest(token.access_token.as_bytes());
    audit.insert("cached".into(), json!(cached));
    audit.insert("token_type".into(), json!(token.token_type));
    audit.insert("granted_scope".into(), json!(token.scope));
    Issued {
        credential_type,
        token: token.access_token.clone(),
        token_id: format!("sha256:{}", hex::encode(&digest[..8])),
        username: None,
        expires_at: Some(token.expires_at),
        fields: token
            .extra
            .iter()
            .map(|(name, value)| ((*name).to_string(), value.to_string()))
            .collect(),
        audit,
    }
}

/// Signs a JWT-SVID for the grant; `audience` is the provider's own, or the subset a Workload API
/// caller asked for.
fn jwt_svid(
    state: &AppState,
    grant: &Grant<'_>,
    provider: &JwtSvidProvider,
    audience: &[String],
    now: Timestamp,
) -> Result<Issued, String> {
    let svid = mint_svid(
        &state.keys,
        &state.issuer,
        &grant.spiffe_id,
        audience,
        provider.ttl,
        provider.algorithm,
        now,
    )?;
    Ok(Issued {
        credential_type: "jwt_svid",
        token: Zeroizing::new(svid.token),
        token_id: svid.jti,
        username: None,
        expires_at: Some(svid.expires_at),
        fields: Vec::new(),
        audit: Map::new(),
    })
}

/// Field of [`Issued::fields`] that carries the X.509-SVID chain: base64 DER certificates,
/// leaf first, separated by commas.
pub const X509_CHAIN_FIELD: &str = "x509_svid_chain";
/// Field of [`Issued::fields`] that names the CA that signed an X.509-SVID.
pub const X509_AUTHORITY_FIELD: &str = "x509_authority";

/// Signs an X.509-SVID for the grant's SPIFFE ID from `csr`. The `token` is the chain as PEM.
pub fn x509_svid(
    state: &AppState,
    grant: &Grant<'_>,
    provider: &X509SvidProvider,
    csr: &[u8],
    now: Timestamp,
) -> Result<Issued, String> {
    use base64::Engine as _;

    let signed = state
        .x509
        .sign(csr, &grant.spiffe_id, provider.ttl.as_duration(), now)
        .map_err(|error| error.to_string())?;
    let chain: Vec<&[u8]> = signed.chain.iter().map(Vec::as_slice).collect();
    let encoded: Vec<String> = signed
        .chain
        .iter()
        .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
        .collect();
    let mut audit = Map::new();
    audit.insert("serial".into(), json!(signed.serial));
    audit.insert("x509_authority".into(), json!(signed.authority));
    Ok(Issued {
        credential_type: "x509_svid",
        token: Zeroizing::new(mayfly_crypto::x509::certificates_pem(&chain)),
        token_id: signed.serial,
        username: None,
        expires_at: Some(signed.expires_at),
        fields: vec![
            (X509_CHAIN_FIELD.to_string(), encoded.join(",")),
            (X509_AUTHORITY_FIELD.to_string(), signed.authority),
        ],
        audit,
    })
}

/// A JWT-SVID just signed.
pub struct MintedSvid {
    pub token: String,
    pub jti: String,
    pub expires_at: Timestamp,
}

/// Signs a JWT-SVID for `spiffe_id` with the active key of `algorithm`.
pub fn mint_svid(
    keys: &KeyRing,
    issuer: &str,
    spiffe_id: &str,
    audience: &[String],
    ttl: Seconds,
    algorithm: SigningAlgorithm,
    now: Timestamp,
) -> Result<MintedSvid, String> {
    let algorithm = signing_algorithm(algorithm);
    let keys = keys.current();
    let key = keys
        .active(algorithm)
        .ok_or_else(|| format!("no active {} signing key", algorithm.as_str()))?;
    let iat = now.as_second();
    let exp = iat + i64::try_from(ttl.as_secs()).unwrap_or(300);
    let jti = new_jti().map_err(|error| format!("generating a token id failed: {error}"))?;
    let claims = JwtSvidClaims {
        sub: spiffe_id.to_string(),
        aud: audience.to_vec(),
        exp,
        iat,
        iss: issuer.to_string(),
        jti: jti.clone(),
    };
    let token = mint(key, &claims).map_err(|error| format!("signing failed: {error}"))?;
    let expires_at = Timestamp::from_second(exp).map_err(|error| error.to_string())?;
    Ok(MintedSvid {
        token,
        jti,
        expires_at,
    })
}
