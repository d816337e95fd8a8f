//! `oauth_client_credentials`: access tokens from the target's authorization server, cached per
//! (provider, scope set).

mod token_request;

use std::sync::Arc;

use mayfly_domain::oauth::OauthClientCredentialsProvider;
use serde_json::{Map, json};

use token_request::ClientCredential;
pub use token_request::{JWT_BEARER_ASSERTION, Upstream, rejected, sanitize_error_code};

use super::cache::{CacheKey, CachedToken, Fetch, cached_or_fetch};
use super::{Failure, Issued};
use crate::keys::KeyRing;
use crate::secrets;
use crate::state::{AppState, signing_algorithm};

/// Returns a cached access token, or fetches one with the client credentials grant.
pub(super) async fn produce(
    state: &AppState,
    provider: &OauthClientCredentialsProvider,
) -> Result<Issued, Failure> {
    let key = CacheKey::new(&provider.name, provider.scope_set(), "", provider);
    let http = state.upstream.http.clone();
    let keys = state.keys.clone();
    let owned = Arc::new(provider.clone());
    // The secret is opened, or the signing key picked, only when a request goes upstream.
    let fetch: Fetch = Arc::new(move || {
        let (http, keys, provider) = (http.clone(), keys.clone(), owned.clone());
        Box::pin(async move {
            let credential = client_credential(&keys, &provider)?;
            token_request::request_token(&http, &provider, &credential, crate::clock::now()).await
        })
    });
    let (token, cached) = cached_or_fetch(&state.upstream.cache, &key, fetch).await?;
    Ok(issued(provider, &token, cached))
}

/// Opens the client secret or picks the active signing key, as `client_auth` requires.
fn client_credential(
    keys: &KeyRing,
    provider: &OauthClientCredentialsProvider,
) -> Result<ClientCredential, Failure> {
    if provider.client_auth.uses_secret() {
        let sealed = provider.sealed_client_secret.as_ref().ok_or_else(|| {
            Failure::from(format!(
                "oauth provider {:?} has no stored client_secret",
                provider.name
            ))
        })?;
        let secret = secrets::open(keys.kek(), &provider.name, "client_secret", sealed)
            .map_err(|error| Failure::from(error.to_string()))?;
        return Ok(ClientCredential::Secret(secret));
    }
    let algorithm = signing_algorithm(provider.algorithm);
    let key_set = keys.current();
    let key = key_set.active(algorithm).ok_or_else(|| {
        Failure::from(format!(
            "no active {} signing key for the client assertion",
            algorithm.as_str()
        ))
    })?;
    Ok(ClientCredential::Key(key.clone()))
}

fn issued(provider: &OauthClientCredentialsProvider, token: &CachedToken, cached: bool) -> Issued {
    let mut audit = Map::new();
    audit.insert("token_url".into(), json!(provider.token_url));
    audit.insert("client_auth".into(), json!(provider.client_auth));
    super::upstream_issued("access_token", token, cached, audit)
}
