//! `oauth_client_credentials`: access tokens from the target's authorization server, cached per
//! (provider, scope set).
//!
//! Concurrent requests for one cache entry send one token request: the first takes the entry's
//! lock and the others wait for its result. Three quarters into a token's lifetime, a request
//! that uses it starts a renewal in the background, so workloads keep getting the cached token
//! without waiting while the new one is fetched.

mod cache;
mod token_request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use mayfly_domain::oauth::OauthClientCredentialsProvider;
use serde_json::{Map, json};
use sha2::{Digest, Sha256};

pub use cache::{CacheKey, CachedToken, TokenCache};
pub use token_request::{ClientCredential, sign_assertion};

use super::{Failure, Issued};
use crate::secrets;
use crate::state::{AppState, signing_algorithm};

/// The HTTP client and the token cache of every `oauth_client_credentials` provider.
pub struct OauthClient {
    http: reqwest::Client,
    cache: TokenCache,
}

impl OauthClient {
    pub fn new() -> OauthClient {
        // Each request sets its own timeout from the provider; this one bounds connecting.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        OauthClient { http, cache: TokenCache::default() }
    }
}

impl Default for OauthClient {
    fn default() -> Self {
        OauthClient::new()
    }
}

/// Returns a cached access token, or fetches one with the client credentials grant.
pub(super) async fn produce(state: &AppState, provider: &OauthClientCredentialsProvider, now: Timestamp) -> Result<Issued, Failure> {
    let key = cache_key(provider);
    let entry = state.oauth.cache.entry(&key);

    if let Some(token) = entry.usable() {
        if token.renewal_due() {
            match client_credential(state, provider) {
                Ok(credential) => spawn_renewal(state.oauth.http.clone(), provider.clone(), credential, entry.clone()),
                Err(failure) => tracing::warn!(credential_provider = %provider.name, reason = %failure.reason, "access token renewal not started"),
            }
        }
        return Ok(issued(provider, &token, true));
    }

    let waited_from = Instant::now();
    let _fetching = entry.fetching.lock().await;
    if let Some(token) = entry.usable() {
        return Ok(issued(provider, &token, true));
    }
    if let Some(failure) = entry.failure_since(waited_from) {
        return Err(failure);
    }

    let credential = client_credential(state, provider)?;
    let result = token_request::request_token(&state.oauth.http, provider, &credential, now).await;
    record_outcome(provider, result.is_ok());
    match result {
        Ok(token) => {
            entry.store(token.clone());
            Ok(issued(provider, &token, false))
        }
        Err(failure) => {
            entry.record_failure(failure.clone());
            Err(failure)
        }
    }
}

fn cache_key(provider: &OauthClientCredentialsProvider) -> CacheKey {
    let config = serde_json::to_vec(provider).unwrap_or_default();
    CacheKey {
        provider: provider.name.clone(),
        scopes: provider.scope_set(),
        config_digest: hex::encode(Sha256::digest(&config)),
    }
}

/// Opens the client secret or picks the active signing key, as `client_auth` requires.
fn client_credential(state: &AppState, provider: &OauthClientCredentialsProvider) -> Result<ClientCredential, Failure> {
    if provider.client_auth.uses_secret() {
        let sealed = provider
            .sealed_client_secret
            .as_ref()
            .ok_or_else(|| Failure::from(format!("oauth provider {:?} has no stored client_secret", provider.name)))?;
        let secret = secrets::open(state.keys.kek(), &provider.name, "client_secret", sealed).map_err(|error| Failure::from(error.to_string()))?;
        return Ok(ClientCredential::Secret(secret));
    }
    let algorithm = signing_algorithm(provider.algorithm);
    let keys = state.keys.current();
    let key = keys.active(algorithm).ok_or_else(|| Failure::from(format!("no active {} signing key for the client assertion", algorithm.as_str())))?;
    Ok(ClientCredential::Key(key.clone()))
}

fn spawn_renewal(http: reqwest::Client, provider: OauthClientCredentialsProvider, credential: ClientCredential, entry: Arc<cache::Entry>) {
    // A renewal already in flight, or a request fetching for a caller, makes this one unneeded.
    let Ok(fetching) = entry.fetching.clone().try_lock_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _fetching = fetching;
        let result = token_request::request_token(&http, &provider, &credential, crate::clock::now()).await;
        record_outcome(&provider, result.is_ok());
        match result {
            Ok(token) => {
                tracing::debug!(credential_provider = %provider.name, "access token renewed ahead of expiry");
                entry.store(token);
            }
            Err(failure) => {
                tracing::warn!(credential_provider = %provider.name, reason = %failure.reason, "access token renewal failed; the cached token is used until it expires");
                entry.record_failure(failure);
            }
        }
    });
}

fn record_outcome(provider: &OauthClientCredentialsProvider, success: bool) {
    let outcome = if success { "success" } else { "failure" };
    metrics::counter!("mayfly_oauth_token_requests_total", "credential_provider" => provider.name.clone(), "outcome" => outcome).increment(1);
}

fn issued(provider: &OauthClientCredentialsProvider, token: &CachedToken, cached: bool) -> Issued {
    let digest = Sha256::digest(token.access_token.as_bytes());
    let mut audit = Map::new();
    audit.insert("token_url".into(), json!(provider.token_url));
    audit.insert("client_auth".into(), json!(provider.client_auth));
    audit.insert("cached".into(), json!(cached));
    audit.insert("token_type".into(), json!(token.token_type));
    audit.insert("granted_scope".into(), json!(token.scope));
    Issued {
        credential_type: "access_token",
        token: token.access_token.clone(),
        token_id: format!("sha256:{}", hex::encode(&digest[..8])),
        username: None,
        expires_at: Some(token.expires_at),
        audit,
    }
}
