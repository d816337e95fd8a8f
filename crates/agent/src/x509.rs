//! X.509-SVIDs for attested processes: key generation, the CSR sent to the server, the cache of
//! issued SVIDs with their renewal, and the trust domain's X.509 bundle.
//!
//! The agent generates each workload's ECDSA P-256 key pair itself and sends only a CSR, so the
//! private key never leaves the host. Entries are keyed like the JWT-SVID cache (a structured key
//! of the attested attributes, which include the pid). Each entry has a watch channel that every
//! open FetchX509SVID stream of that process reads. While at least one stream listens, a task
//! renews the SVID at 40 to 60 percent of its lifetime (at random), and at once when the server
//! switches to another CA, and sends each new SVID to the streams. A renewal that fails keeps
//! the current SVID in use and is retried with backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::cache::CacheKey;
use crate::client::{ClientError, IssuedX509Certificates, ServerClient, X509BundleBody};
use crate::identity::Identity;

/// Entries within this long of expiry are not returned.
const EXPIRY_MARGIN: SignedDuration = SignedDuration::from_secs(5);

/// Maximum wait between two attempts of a failing renewal.
const MAX_RENEW_BACKOFF: Duration = Duration::from_secs(30);

/// An X.509-SVID with its private key.
pub struct X509Svid {
    pub spiffe_id: String,
    /// DER certificates, leaf first, without the self-signed CA, which is in the bundle.
    pub chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub private_key_pkcs8: Zeroizing<Vec<u8>>,
    /// Id of the CA that signed the leaf.
    pub authority: Option<String>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// When the renewal is due.
    pub refresh_at: Timestamp,
}

impl std::fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("private_key_pkcs8", &"<redacted>")
            .field("authority", &self.authority)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Errors while obtaining an X.509-SVID.
#[derive(Debug, thiserror::Error)]
pub enum X509SvidError {
    /// The key pair or the CSR could not be generated.
    #[error("generating the workload key pair or CSR failed: {0}")]
    Generate(String),
    /// The server call failed or denied the request.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server's response is not a usable certificate chain.
    #[error("invalid X.509-SVID response: {0}")]
    InvalidResponse(String),
}

/// Generates a key pair, sends its CSR to the server for the process with `attributes`, and
/// returns the SVID with its key.
pub async fn fetch_svid(
    client: &ServerClient,
    identity: &Identity,
    attributes: &BTreeMap<String, Vec<String>>,
) -> Result<X509Svid, X509SvidError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|error| X509SvidError::Generate(error.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|error| X509SvidError::Generate(error.to_string()))?;

    let (credential, _) = identity.credential().await;
    let issued = client
        .x509_svid(&credential, attributes, csr.der().as_ref())
        .await?;
    svid_from(issued, Zeroizing::new(key.serialize_der()))
}

fn svid_from(
    issued: IssuedX509Certificates,
    private_key_pkcs8: Zeroizing<Vec<u8>>,
) -> Result<X509Svid, X509SvidError> {
    let leaf = issued
        .certificates
        .first()
        .ok_or_else(|| X509SvidError::InvalidResponse("no certificate".to_string()))?;
    let leaf = base64::engine::general_purpose::STANDARD
        .decode(leaf)
        .map_err(|error| X509SvidError::InvalidResponse(format!("certificate: {error}")))?;
    let lifetime = (issued.expires_at - issued.issued_at)
        .as_secs_f64()
        .max(0.0);
    let fraction = rand::random_range(0.4..0.6);
    let refresh_at = issued.issued_at + SignedDuration::from_secs_f64(lifetime * fraction);
    Ok(X509Svid {
        spiffe_id: issued.spiffe_id,
        chain: vec![leaf],
        private_key_pkcs8,
        authority: issued.x509_authority,
        issued_at: issued.issued_at,
        expires_at: issued.expires_at,
        refresh_at,
    })
}

struct Entry {
    sender: watch::Sender<Arc<X509Svid>>,
    renewing: bool,
}

/// The result of a subscription.
pub struct Subscription {
    pub receiver: watch::Receiver<Arc<X509Svid>>,
    /// True when the caller must start the entry's renewal task.
    pub start_renewal: bool,
}

/// A bounded cache of X.509-SVIDs, one watch channel per entry.
pub struct X509Cache {
    max_entries: usize,
    entries: Mutex<HashMap<CacheKey, Entry>>,
}

impl X509Cache {
    /// Builds a cache that keeps at most `max_entries` SVIDs.
    pub fn new(max_entries: usize) -> X509Cache {
        X509Cache {
            max_entries: max_entries.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to the entry `key` when it contains an SVID valid at `now`.
    pub fn subscribe(&self, key: &CacheKey, now: Timestamp) -> Option<Subscription> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get_mut(key)?;
        if entry.sender.borrow().expires_at - EXPIRY_MARGIN <= now {
            entries.remove(key);
            return None;
        }
        let start_renewal = !entry.renewing;
        entry.renewing = true;
        Some(Subscription {
            receiver: entry.sender.subscribe(),
            start_renewal,
        })
    }

    /// Stores `svid` under `key` and subscribes to it. When the cache is full, expired entries go
    /// first, then the one that expires soonest.
    pub fn insert(&self, key: CacheKey, svid: X509Svid, now: Timestamp) -> Subscription {
        let svid = Arc::new(svid);
        let Ok(mut entries) = self.entries.lock() else {
            let (_, receiver) = watch::channel(svid);
            return Subscription {
                receiver,
                start_renewal: false,
            };
        };
        if let Some(entry) = entries.get_mut(&key) {
            entry.sender.send_replace(svid);
            let start_renewal = !entry.renewing;
            entry.renewing = true;
            return Subscription {
                receiver: entry.sender.subscribe(),
                start_renewal,
            };
        }
        if entries.len() >= self.max_entries {
            entries.retain(|_, entry| entry.sender.borrow().expires_at - EXPIRY_MARGIN > now);
            if entries.len() >= self.max_entries
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.sender.borrow().expires_at)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&soonest);
            }
        }
        let (sender, receiver) = watch::channel(svid);
        entries.insert(
            key,
            Entry {
                sender,
                renewing: true,
            },
        );
        Subscription {
            receiver,
            start_renewal: true,
        }
    }

    /// Returns the SVID of `key`, or `None` when the entry is gone.
    fn current(&self, key: &CacheKey) -> Option<Arc<X509Svid>> {
        let entries = self.entries.lock().ok()?;
        entries.get(key).map(|entry| entry.sender.borrow().clone())
    }

    /// Sends `svid` to the streams of `key`.
    fn replace(&self, key: &CacheKey, svid: X509Svid) {
        if let Ok(entries) = self.entries.lock()
            && let Some(entry) = entries.get(key)
        {
            entry.sender.send_replace(Arc::new(svid));
        }
    }

    /// Ends the renewal of `key` when no stream listens, and reports whether it ended.
    fn stop_if_unwatched(&self, key: &CacheKey) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return true;
        };
        match entries.get_mut(key) {
            None => true,
            Some(entry) if entry.sender.receiver_count() == 0 => {
                entry.renewing = false;
                true
            }
            Some(_) => false,
        }
    }

    /// Returns the number of entries.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|entries| entries.len())
            .unwrap_or(0)
    }

    /// Returns whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The server client, identity, cache and bundle receiver of the renewal tasks.
#[derive(Clone)]
pub struct Renewer {
    pub client: ServerClient,
    pub identity: Arc<Identity>,
    pub cache: Arc<X509Cache>,
    pub bundles: watch::Receiver<Option<Arc<X509Bundle>>>,
}

impl Renewer {
    /// Renews the SVID of `key` while a stream listens: when its refresh time comes, and when
    /// the bundle names another active CA than the one that signed it.
    pub async fn run(mut self, key: CacheKey, attributes: BTreeMap<String, Vec<String>>) {
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        loop {
            let Some(svid) = self.cache.current(&key) else {
                return;
            };
            let wait = (svid.refresh_at - Timestamp::now())
                .max(SignedDuration::ZERO)
                .unsigned_abs();
            let rotated = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                changed = self.bundles.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let active = self.bundles.borrow().as_ref().and_then(|bundle| bundle.active_authority.clone());
                    if active.is_none() || active == svid.authority {
                        continue;
                    }
                    true
                }
            };
            if self.cache.stop_if_unwatched(&key) {
                return;
            }
            match fetch_svid(&self.client, &self.identity, &attributes).await {
                Ok(renewed) => {
                    if failing {
                        tracing::info!(spiffe_id = %renewed.spiffe_id, "renewing an X.509-SVID recovered");
                    }
                    tracing::debug!(spiffe_id = %renewed.spiffe_id, rotated, authority = ?renewed.authority, "X.509-SVID renewed");
                    self.cache.replace(&key, renewed);
                    backoff = Duration::from_secs(1);
                    failing = false;
                }
                Err(error) => {
                    // NOTE: a denial (the policy was removed or disabled) is retried like any
                    // failure, so open streams keep the last SVID until it expires.
                    if failing {
                        tracing::debug!(error = %error, "renewing an X.509-SVID failed again");
                    } else {
                        tracing::warn!(error = %error, spiffe_id = %svid.spiffe_id, "renewing an X.509-SVID failed; the current one stays in use until it expires");
                    }
                    failing = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RENEW_BACKOFF);
                }
            }
        }
    }
}

/// The trust domain's X.509 bundle: its SPIFFE ID, the CA that signs, and the published CA
/// certificates (DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Bundle {
    pub trust_domain_id: String,
    pub active_authority: Option<String>,
    pub certificates: Vec<Vec<u8>>,
}

impl X509Bundle {
    /// Returns the certificates concatenated, as the Workload API carries a bundle.
    pub fn concatenated(&self) -> Vec<u8> {
        self.certificates.concat()
    }
}

/// Converts the server's response into a bundle; PEM blocks other than certificates are skipped.
pub fn bundle_from(body: &X509BundleBody) -> Result<X509Bundle, String> {
    let mut certificates = Vec::new();
    let mut block: Option<String> = None;
    for line in body.certificates_pem.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            block = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let text = block.take().unwrap_or_default();
            let der = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|error| format!("certificates_pem: invalid base64: {error}"))?;
            certificates.push(der);
        } else if let Some(text) = block.as_mut() {
            text.push_str(line);
        }
    }
    Ok(X509Bundle {
        trust_domain_id: format!("spiffe://{}", body.trust_domain),
        active_authority: body.active_authority.clone(),
        certificates,
    })
}

/// Fetches the X.509 bundle every `interval` and publishes it when it changed.
pub async fn refresh_bundle_forever(
    client: ServerClient,
    interval: Duration,
    sender: watch::Sender<Option<Arc<X509Bundle>>>,
) {
    let mut failing = false;
    loop {
        match client
            .x509_bundle()
            .await
            .map_err(|error| error.to_string())
            .and_then(|body| bundle_from(&body))
        {
            Ok(bundle) => {
                sender.send_if_modified(|current| {
                    if current.as_deref() == Some(&bundle) {
                        return false;
                    }
                    tracing::info!(
                        certificates = bundle.certificates.len(),
                        active_authority = ?bundle.active_authority,
                        "X.509 bundle updated"
                    );
                    *current = Some(Arc::new(bundle));
                    true
                });
                if failing {
                    tracing::info!("fetching the X.509 bundle recovered");
                }
                failing = false;
            }
            Err(error) => {
                if failing {
                    tracing::debug!(error = %error, "fetching the X.509 bundle failed again");
                } else {
                    tracing::warn!(error = %error, "fetching the X.509 bundle failed; keeping the last one");
                }
                failing = true;
            }
        }
        tokio::time::sleep(interval).await;
    }
}
