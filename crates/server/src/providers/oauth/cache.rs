//! Access tokens cached per (provider, scope set), with one upstream request at a time per entry
//! and renewal ahead of expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::providers::Failure;

/// Share of a token's lifetime after which a request that uses it also starts a renewal.
const RENEW_AT_FRACTION: f64 = 0.75;
/// Maximum margin before expiry at which a cached token stops being handed out.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// An access token from the token endpoint.
#[derive(Clone)]
pub struct CachedToken {
    pub access_token: Zeroizing<String>,
    pub token_type: String,
    /// The granted scope, when the response names it.
    pub scope: Option<String>,
    /// When the request that obtained it was sent; the lifetime counts from there.
    pub obtained: Instant,
    pub lifetime: Duration,
    pub expires_at: Timestamp,
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

/// Identifies a cache entry: the provider, its scope set, and a digest of its configuration, so
/// that a changed provider never reuses a token obtained under its old settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub provider: String,
    pub scopes: Vec<String>,
    pub config_digest: String,
}

/// The access token cache of every `oauth_client_credentials` provider.
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
