//! `oidc` trust providers: verifying evidence tokens from other issuers against their keys, which
//! are inline, fetched from a `jwks_uri`, or found through OIDC discovery.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mayfly_crypto::evidence::{EvidenceRules, verify_evidence};
use mayfly_crypto::jwk::{VerifyingKey, parse_jwk_set};
use mayfly_domain::config::Config;
use mayfly_domain::decide::{Attestation, rules_match};
use mayfly_domain::resources::{KeySource, OidcTrustProvider, TrustProvider};
use serde_json::Value;

/// How long fetched keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(300);
/// Shortest time between two fetches from the same key source after a refresh or a failed fetch,
/// so tokens with unknown `kid`s or an unreachable issuer cannot make the server hammer the issuer.
const MIN_REFETCH: Duration = Duration::from_secs(30);
/// Largest JWKS or discovery document read, in bytes.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Characters of an unknown issuer copied into a rejection.
const MAX_SHOWN_ISSUER_CHARS: usize = 96;

/// The outcome of checking a bearer token against every `oidc` trust provider.
pub struct OidcOutcome {
    pub attestations: Vec<Attestation>,
    /// Earliest expiry of the accepted token, Unix seconds.
    pub expires_at: i64,
    /// Why each provider whose issuer matched rejected the token, for the audit event.
    pub rejections: Vec<String>,
}

/// The keys last fetched from one key source, and its last failed fetch.
#[derive(Default)]
struct KeySlot {
    keys: Option<(Arc<Vec<VerifyingKey>>, Instant)>,
    failure: Option<(String, Instant)>,
}

/// Fetches and caches issuers' keys.
pub struct OidcVerifier {
    client: reqwest::Client,
    /// One slot per key source. A request holds the slot's lock while it fetches, so concurrent
    /// requests wait for that fetch instead of starting their own.
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<KeySlot>>>>,
    /// Parsed inline key sets, keyed by provider name and the key set's JSON text, so a changed
    /// key set never matches an entry parsed from the old one.
    inline: Mutex<HashMap<String, Arc<Vec<VerifyingKey>>>>,
}

impl OidcVerifier {
    pub fn new() -> OidcVerifier {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        OidcVerifier {
            client,
            keys: Mutex::new(HashMap::new()),
            inline: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every fetched key set; called when trust providers change.
    pub fn clear(&self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
        if let Ok(mut inline) = self.inline.lock() {
            inline.clear();
        }
    }

    /// Verifies `token` with every `oidc` trust provider whose issuer equals the token's
    /// (unverified) `iss`; the signature and every claim are then checked with that provider's
    /// keys and rules.
    pub async fn verify(&self, config: &Config, token: &str, now: i64) -> OidcOutcome {
        let mut outcome = OidcOutcome {
            attestations: Vec::new(),
            expires_at: i64::MAX,
            rejections: Vec::new(),
        };
        let issuer = unverified_issuer(token);

        for provider in config.trust_providers.values() {
            let TrustProvider::Oidc(provider) = provider else {
                continue;
            };
            if issuer.as_deref() != Some(provider.issuer.as_str()) {
                continue;
            }
            match self.verify_with(provider, token, now).await {
                Ok((claims, expires_at)) => {
                    let attributes = claims_to_attributes(&claims);
                    if !rules_match(&provider.required_claims, &attributes) {
                        outcome.rejections.push(format!(
                            "trust provider {:?}: the token lacks a required claim value",
                            provider.name
                        ));
                        continue;
                    }
                    outcome.expires_at = outcome.expires_at.min(expires_at);
                    outcome.attestations.push(Attestation {
                        trust_provider: provider.name.clone(),
                        attributes,
                    });
                }
                Err(reason) => outcome
                    .rejections
                    .push(format!("trust provider {:?}: {reason}", provider.name)),
            }
        }

        if outcome.attestations.is_empty() && outcome.rejections.is_empty() {
            // The issuer comes from an unverified token: only its start goes to the audit event.
            let shown = match issuer {
                Some(issuer) if issuer.chars().count() > MAX_SHOWN_ISSUER_CHARS => {
                    format!(
                        "{:?}...",
                        issuer
                            .chars()
                            .take(MAX_SHOWN_ISSUER_CHARS)
                            .collect::<String>()
                    )
                }
                Some(issuer) => format!("{issuer:?}"),
                None => "(none)".to_string(),
            };
            outcome
                .rejections
                .push(format!("no oidc trust provider has issuer {shown}"));
        }
        outcome
    }

    async fn verify_with(
        &self,
        provider: &OidcTrustProvider,
        token: &str,
        now: i64,
    ) -> Result<(serde_json::Map<String, Value>, i64), String> {
        let mut rules = EvidenceRules::new(provider.issuer.clone(), provider.audience.clone());
        if let Some(leeway) = provider.leeway {
            rules.leeway_seconds = i64::try_from(leeway.as_secs()).unwrap_or(60);
        }

        let keys = self.keys_for(provider, false).await?;
        match verify_evidence(token, &keys, &rules, now) {
            Ok(verified) => Ok((verified.claims, verified.expires_at)),
            Err(mayfly_crypto::evidence::EvidenceError::Jws(
                mayfly_crypto::jws::JwsError::UnknownKid { .. },
            )) if !matches!(provider.key_source(), Some(KeySource::Inline(_))) => {
                // The issuer may have rotated its keys: fetch once more, within the rate limit.
                let keys = self.keys_for(provider, true).await?;
                verify_evidence(token, &keys, &rules, now)
                    .map(|v| (v.claims, v.expires_at))
                    .map_err(|e| e.to_string())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    async fn keys_for(
        &self,
        provider: &OidcTrustProvider,
        refresh: bool,
    ) -> Result<Arc<Vec<VerifyingKey>>, String> {
        let source = provider
            .key_source()
            .ok_or_else(|| "no key source configured".to_string())?;
        if let KeySource::Inline(jwks) = source {
            // Parsing validates every public key, which costs more than the lookup.
            let cache_key = format!("{}\ninline {jwks}", provider.name);
            if let Some(keys) = self
                .inline
                .lock()
                .ok()
                .and_then(|inline| inline.get(&cache_key).cloned())
            {
                return Ok(keys);
            }
            let keys = Arc::new(parse_jwk_set(jwks).0);
            if let Ok(mut inline) = self.inline.lock() {
                // Bounded by the number of trust providers, but a long-running server could see
                // many edits between clears.
                if inline.len() > 1024 {
                    inline.clear();
                }
                inline.insert(cache_key, keys.clone());
            }
            return Ok(keys);
        }

        let slot = self.slot(key_cache_key(provider, &source));
        let mut slot = slot.lock().await;
        if let Some((keys, fetched_at)) = &slot.keys {
            let age = fetched_at.elapsed();
            let fresh = age < KEYS_TTL && !refresh;
            let throttled = refresh && age < MIN_REFETCH;
            if fresh || throttled {
                return Ok(keys.clone());
            }
        }
        if let Some((reason, failed_at)) = &slot.failure
            && failed_at.elapsed() < MIN_REFETCH
        {
            return match &slot.keys {
                Some((keys, _)) => Ok(keys.clone()),
                None => Err(format!(
                    "{reason}; the next fetch waits until {}s after this failure",
                    MIN_REFETCH.as_secs()
                )),
            };
        }

        let fetched = match source {
            KeySource::Uri(uri) => self.fetch_jwks(uri).await,
            _ => self.discover(&provider.issuer).await,
        };
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                slot.keys = Some((keys.clone(), Instant::now()));
                slot.failure = None;
                Ok(keys)
            }
            Err(reason) => {
                slot.failure = Some((reason.clone(), Instant::now()));
                match &slot.keys {
                    // Keep using the last good keys while the issuer is unreachable.
                    Some((keys, _)) => {
                        tracing::warn!(trust_provider = %provider.name, reason = %reason, "key fetch failed; using the keys fetched before");
                        Ok(keys.clone())
                    }
                    None => Err(reason),
                }
            }
        }
    }

    /// Returns the slot of a key source, creating it on first use.
    fn slot(&self, key: String) -> Arc<tokio::sync::Mutex<KeySlot>> {
        let mut slots = match self.keys.lock() {
            Ok(slots) => slots,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.entry(key).or_default().clone()
    }

    async fn discover(&self, issuer: &str) -> Result<Vec<VerifyingKey>, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let document = self.get_json(&url).await?;
        let advertised = document.get("issuer").and_then(Value::as_str);
        if advertised != Some(issuer) {
            let advertised = advertised.map_or_else(
                || "no issuer".to_string(),
                |advertised| format!("issuer {advertised:?}"),
            );
            return Err(format!(
                "discovery document at {url} names {advertised}, expected {issuer:?}"
            ));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("discovery document at {url} has no jwks_uri"))?;
        self.fetch_jwks(jwks_uri).await
    }

    async fn fetch_jwks(&self, url: &str) -> Result<Vec<VerifyingKey>, String> {
        let document = self.get_json(url).await?;
        let (keys, skipped) = parse_jwk_set(&document);
        if !skipped.is_empty() {
            tracing::debug!(url, skipped = ?skipped, "skipped unusable keys in a JWK set");
        }
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|error| format!("fetching {url} failed: {error}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "fetching {url} returned HTTP {}",
                response.status().as_u16()
            ));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("reading {url} failed: {error}"))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        serde_json::from_slice(&body).map_err(|error| format!("{url} is not valid JSON: {error}"))
    }
}

impl Default for OidcVerifier {
    fn default() -> Self {
        OidcVerifier::new()
    }
}

/// Returns the key under which a provider's fetched keys are cached: its name and where the keys
/// come from. A fetch that was still running when the provider moved to another key source stores
/// its keys under the old source, where no later verification looks.
fn key_cache_key(provider: &OidcTrustProvider, source: &KeySource<'_>) -> String {
    match source {
        KeySource::Uri(uri) => format!("{}\njwks_uri {uri}", provider.name),
        _ => format!("{}\ndiscovery {}", provider.name, provider.issuer),
    }
}

/// Reads `iss` from a token without verifying it, only to pick the trust providers that will.
fn unverified_issuer(token: &str) -> Option<String> {
    if token.len() > 64 * 1024 {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// Flattens claims into attributes: strings, numbers and booleans as their text, arrays as
/// several values; nested objects are skipped.
pub fn claims_to_attributes(
    claims: &serde_json::Map<String, Value>,
) -> BTreeMap<String, Vec<String>> {
    let scalar = |value: &Value| match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    };
    let mut attributes = BTreeMap::new();
    for (name, value) in claims {
        let values: Vec<String> = match value {
            Value::Array(items) => items.iter().filter_map(scalar).collect(),
            other => scalar(other).into_iter().collect(),
        };
        if !values.is_empty() {
            attributes.insert(name.clone(), values);
        }
    }
    attributes
}
