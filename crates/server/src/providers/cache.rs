//! Credentials from upstream token services, cached per (provider, scope set, subject), with one
//! upstream request at a time per entry and renewal ahead of expiry.
//!
//! Concurrent requests for one entry send one upstream request: the first takes the entry's lock
//! and the others wait for its result. Three quarters into a credential's lifetime, a request
//! that uses it starts a renewal in the background, so workloads keep getting the cached
//! credential without waiting while the new one is fetched.
//!
//! A failed upstream request makes the entry back off for 1 s, doubling with each further
//! failure up to 60 s, with jitter. Meanwhile requests get the last failure at once and no
//! renewal starts, so a failing token endpoint is not called at the rate workloads ask.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::log_streams::RetryPolicy;
use crate::providers::Failure;

/// Share of a token's lifetime after which a request that uses it also starts a renewal.
const RENEW_AT_FRACTION: f64 = 0.75;
/// Maximum margin before expiry at which a cached token stops being handed out.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Waits between upstream requests of an entry whose last request failed.
const UPSTREAM_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
    alert_after: Duration::MAX,
};

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
    /// The last failed request, so requests that waited for it share its result and later ones
    /// wait for the backoff instead of each trying again.
    last_failure: Mutex<Option<LastFailure>>,
}

/// The last failed upstream request of an entry.
struct LastFailure {
    /// When the request ended.
    at: Instant,
    failure: Failure,
    /// Failed requests in a row, this one included.
    in_a_row: u32,
    /// Before this instant no new upstream request is sent.
    retry_at: Instant,
}

impl Entry {
    /// Returns the current token if it is still usable.
    pub fn usable(&self) -> Option<CachedToken> {
        let guard = self
            .token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().filter(|token| token.is_usable()).cloned()
    }

    pub fn store(&self, token: CachedToken) {
        *self
            .token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(token);
        *self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    pub fn record_failure(&self, failure: Failure) {
        let mut guard = self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let in_a_row = guard
            .as_ref()
            .map_or(0, |last| last.in_a_row)
            .saturating_add(1);
        let at = Instant::now();
        let retry_at = at + UPSTREAM_RETRY.delay(in_a_row);
        *guard = Some(LastFailure {
            at,
            failure,
            in_a_row,
            retry_at,
        });
    }

    /// Returns the failure of a request that ended after `since`.
    pub fn failure_since(&self, since: Instant) -> Option<Failure> {
        let guard = self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .as_ref()
            .filter(|last| last.at >= since)
            .map(|last| last.failure.clone())
    }

    /// Returns the last failure while the entry is backing off, with the wait added to its
    /// reason and audit detail.
    pub fn backing_off(&self) -> Option<Failure> {
        let guard = self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = guard.as_ref()?;
        let wait = last.retry_at.checked_duration_since(Instant::now())?;
        let mut failure = last.failure.clone();
        failure.reason = format!(
            "{} ({} failed upstream requests in a row; next attempt in {} ms)",
            failure.reason,
            last.in_a_row,
            wait.as_millis()
        );
        failure.audit.insert(
            "upstream_backoff_ms".to_string(),
            serde_json::Value::from(wait.as_millis() as u64),
        );
        Some(failure)
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
    pub fn new(
        provider: &str,
        scopes: Vec<String>,
        subject: &str,
        config: &impl serde::Serialize,
    ) -> CacheKey {
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
pub type Fetch = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<CachedToken, Failure>> + Send>> + Send + Sync,
>;

/// Returns the entry's usable credential, or runs `fetch` once for every caller waiting on the
/// entry. The flag is true when the credential came from the cache.
pub async fn cached_or_fetch(
    cache: &TokenCache,
    key: &CacheKey,
    fetch: Fetch,
) -> Result<(CachedToken, bool), Failure> {
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
    if let Some(failure) = entry.backing_off() {
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
    if entry.backing_off().is_some() {
        return;
    }
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
    /// Returns the entry for `key`. Creating it drops the entry of the same provider, scope set
    /// and subject under an older configuration of the provider.
    pub fn entry(&self, key: &CacheKey) -> Arc<Entry> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = entries.get(key) {
            return entry.clone();
        }
        entries.retain(|existing, _| {
            existing.provider != key.provider
                || existing.scopes != key.scopes
                || existing.subject != key.subject
        });
        let entry = Arc::new(Entry::default());
        entries.insert(key.clone(), entry.clone());
        entry
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn token(lifetime: Duration) -> CachedToken {
        CachedToken {
            access_token: Zeroizing::new(format!("token-{}", lifetime.as_millis())),
            extra: Vec::new(),
            token_type: "Bearer".to_string(),
            scope: None,
            obtained: Instant::now(),
            lifetime,
            expires_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn counting_fetch(calls: Arc<AtomicUsize>, result: Result<Duration, &'static str>) -> Fetch {
        Arc::new(move || {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                result
                    .map(token)
                    .map_err(|reason| Failure::from(reason.to_string()))
            })
        })
    }

    fn key(subject: &str, digest: &str) -> CacheKey {
        CacheKey {
            provider: "p".into(),
            scopes: vec!["a".into()],
            subject: subject.into(),
            config_digest: digest.into(),
        }
    }

    #[tokio::test]
    async fn waiters_share_one_fetch() {
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting_fetch(calls.clone(), Ok(Duration::from_secs(600)));

        let results = concurrent_requests(&key("s", "d"), &fetch, 8).await;

        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            results
                .iter()
                .filter(|result| matches!(result, Ok((_, false))))
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn waiters_share_one_failure() {
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting_fetch(calls.clone(), Err("upstream down"));

        let results = concurrent_requests(&key("s", "d"), &fetch, 8).await;

        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(Result::is_err));
    }

    #[tokio::test]
    async fn expired_token_is_fetched_again() {
        let cache = TokenCache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        // A 1-second lifetime leaves no usable time after the 1-second minimum margin.
        let fetch = counting_fetch(calls.clone(), Ok(Duration::from_secs(1)));

        cached_or_fetch(&cache, &key("s", "d"), fetch.clone())
            .await
            .unwrap();
        let (_, cached) = cached_or_fetch(&cache, &key("s", "d"), fetch)
            .await
            .unwrap();

        assert!(!cached);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failure_backs_off_fetches() {
        let cache = TokenCache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting_fetch(calls.clone(), Err("upstream down"));

        cached_or_fetch(&cache, &key("s", "d"), fetch.clone())
            .await
            .unwrap_err();
        let failure = cached_or_fetch(&cache, &key("s", "d"), fetch.clone())
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            failure
                .reason
                .starts_with("upstream down (1 failed upstream requests in a row"),
            "{}",
            failure.reason
        );
        assert!(failure.audit.contains_key("upstream_backoff_ms"));

        // The first failure's wait is at most the 1-second initial delay.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        cached_or_fetch(&cache, &key("s", "d"), fetch)
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_renewal_backs_off() {
        let cache = TokenCache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = counting_fetch(calls.clone(), Err("upstream down"));
        let mut aging = token(Duration::from_secs(600));
        // Four fifths into its lifetime: usable, and due for renewal.
        aging.obtained = Instant::now()
            .checked_sub(Duration::from_secs(480))
            .unwrap();
        cache.entry(&key("s", "d")).store(aging);

        cached_or_fetch(&cache, &key("s", "d"), fetch.clone())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let (_, cached) = cached_or_fetch(&cache, &key("s", "d"), fetch.clone())
                .await
                .unwrap();
            assert!(cached);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        tokio::time::sleep(Duration::from_millis(1000)).await;
        cached_or_fetch(&cache, &key("s", "d"), fetch)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn subjects_keep_separate_entries() {
        let cache = TokenCache::default();
        let first = cache.entry(&key("workload-a", "d"));
        first.store(token(Duration::from_secs(600)));

        cache.entry(&key("workload-b", "d"));
        assert!(Arc::ptr_eq(&first, &cache.entry(&key("workload-a", "d"))));

        // A new configuration digest replaces the subject's old entry.
        cache.entry(&key("workload-a", "d2"));
        assert!(!Arc::ptr_eq(&first, &cache.entry(&key("workload-a", "d"))));
    }

    /// Runs `count` concurrent requests for `key` on separate tasks.
    async fn concurrent_requests(
        key: &CacheKey,
        fetch: &Fetch,
        count: usize,
    ) -> Vec<Result<(CachedToken, bool), Failure>> {
        let cache = Arc::new(TokenCache::default());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (cache, key, fetch) = (cache.clone(), key.clone(), fetch.clone());
            tasks.spawn(async move { cached_or_fetch(&cache, &key, fetch).await });
        }
        tasks.join_all().await
    }
}
