//! Credentials from upstream token services, cached per (provider, scope set, subject), with one
//! upstream request at a time per entry and renewal ahead of expiry.
//!
//! Concurrent requests for one entry send one upstream request: the first takes the entry's lock
//! and the others wait for its result. Three quarters into a credential's lifetime, a request
//! that uses it starts a renewal in the background, so workloads keep getting the cached
//! credential without waiting while the new one is fetched.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::providers::Failure;

/// Share of a token's lifetime after which a request that uses it also starts a renewal.
const RENEW_AT_FRACTION: f64 = 0.75;
/// Maximum margin before expiry at which a cached token stops being handed out.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// A credential from an upstream token service.
#[derive(Clone)]
pub struct CachedToken {
    /// The access token, or the session token of AWS credentials.
    pub access_token: Zeroizing<String>,
    /// More fields of the credential, such as AWS's `access_key_id` and `secret_access_key`.
    pub extra: Vec<(&'static str, Zeroizing<String>)>,
    pub token_type: String,
    /// The granted scope, when the response names it.
    pub scope: Option<String>,
    /// When the request that obtained it was sent; the lifetime counts from there.
    pub obtained: Instant,
    pub lifetime: Duration,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("access_token", &"(redacted)")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    /// Tells whether the token may still be handed out: until a tenth of its lifetime (at most
    /// 30 seconds, at least one) before it expires, so that a workload has time to use it.
    pub fn is_usable(&self) -> bool {
        let margin = (self.lifetime / 10).clamp(Duration::from_secs(1), MAX_EXPIRY_MARGIN);
        self.obtained.elapsed() + margin < self.lifetime
    }

    /// Tells whether a renewal should start, three quarters into the lifetime.
    pub fn renewal_due(&self) -> bool {
        self.obtained.elapsed() >= self.lifetime.mul_f64(RENEW_AT_FRACTION)
    }
}

/// A cache entry: the current token, and the lock that lets one request at a time reach the
/// token endpoint.
#[derive(Default)]
pub struct Entry {
    token: Mutex<Option<CachedToken>>,
    /// Held while a request to the token endpoint is in flight.
    pub fetching: Arc<tokio::sync::Mutex<()>>,
    /// The last failed request and when it ended, so requests that waited for it share its
    /// result instead of each trying again.
    last_failure: Mutex<Option<(Instant, Failure)>>,
}

impl Entry {
    /// Returns the current token if it is still usable.
    pub fn usable(&self) -> Option<CachedToken> {
        let guard = self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().filter(|token| token.is_usable()).cloned()
    }

    pub fn store(&self, token: CachedToken) {
        *self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(token);
        *self.last_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    pub fn record_failure(&self, failure: Failure) {
        *self.last_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), failure));
    }

    /// Returns the failure of a request that ended after `since`.
    pub fn failure_since(&self, since: Instant) -> Option<Failure> {
        let guard = self.last_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().filter(|(at, _)| *at >= since).map(|(_, failure)| failure.clone())
    }
}

/// Identifies a cache entry: the provider, its scope set, the workload a federated credential
/// names (empty otherwise), and a digest of the provider's configuration, so that a changed
/// provider never reuses a credential obtained under its old settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub provider: String,
    pub scopes: Vec<String>,
    pub subject: String,
    pub config_digest: String,
}

impl CacheKey {
    /// Builds the key of `provider` (its configuration serialized as `config`).
    pub fn new(provider: &str, scopes: Vec<String>, subject: &str, config: &impl serde::Serialize) -> CacheKey {
        let config = serde_json::to_vec(config).unwrap_or_default();
        CacheKey {
            provider: provider.to_string(),
            scopes,
            subject: subject.to_string(),
            config_digest: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config)),
        }
    }
}

/// One upstream request for a cache entry; called again for each renewal.
pub type Fetch = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<CachedToken, Failure>> + Send>> + Send + Sync>;

/// Returns the entry's usable credential, or runs `fetch` once for every caller waiting on the
/// entry. The flag is true when the credential came from the cache.
pub async fn cached_or_fetch(cache: &TokenCache, key: &CacheKey, fetch: Fetch) -> Result<(CachedToken, bool), Failure> {
    let entry = cache.entry(key);

    if let Some(token) = entry.usable() {
        if token.renewal_due() {
            spawn_renewal(key.provider.clone(), entry.clone(), fetch);
        }
        return Ok((token, true));
    }

    let waited_from = Instant::now();
    let _fetching = entry.fetching.lock().await;
    if let Some(token) = entry.usable() {
        return Ok((token, true));
    }
    if let Some(failure) = entry.failure_since(waited_from) {
        return Err(failure);
    }

    let result = fetch().await;
    record_outcome(&key.provider, result.is_ok());
    match result {
        Ok(token) => {
            entry.store(token.clone());
            Ok((token, false))
        }
        Err(failure) => {
            entry.record_failure(failure.clone());
            Err(failure)
        }
    }
}

fn spawn_renewal(provider: String, entry: Arc<Entry>, fetch: Fetch) {
    // A renewal already in flight, or a request fetching for a caller, makes this one unneeded.
    let Ok(fetching) = entry.fetching.clone().try_lock_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _fetching = fetching;
        let result = fetch().await;
        record_outcome(&provider, result.is_ok());
        match result {
            Ok(token) => {
                tracing::debug!(credential_provider = %provider, "upstream credential renewed ahead of expiry");
                entry.store(token);
            }
            Err(failure) => {
                tracing::warn!(credential_provider = %provider, reason = %failure.reason, "upstream credential renewal failed; the cached one is used until it expires");
                entry.record_failure(failure);
            }
        }
    });
}

fn record_outcome(provider: &str, success: bool) {
    let outcome = if success { "success" } else { "failure" };
    metrics::counter!("mayfly_upstream_token_requests_total", "credential_provider" => provider.to_string(), "outcome" => outcome).increment(1);
}

/// The cache of every provider that fetches credentials from an upstream token service.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<CacheKey, Arc<Entry>>>,
}

impl TokenCache {
    /// Returns the entry for `key`, creating it and dropping the provider's entries from older
    /// configurations.
    pub fn entry(&self, key: &CacheKey) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = entries.get(key) {
            return entry.clone();
        }
        entries.retain(|existing, _| existing.provider != key.provider || existing.scopes != key.scopes);
        let entry = Arc::new(Entry::default());
        entries.insert(key.clone(), entry.clone());
        entry
    }
}
