//! Credentials for injection, cached per (attested caller, destination).
//!
//! An entry is refreshed in the background once about half its lifetime has passed (40 to 60
//! percent, at random), and used until shortly before it expires, also while a refresh waits on
//! a slow server. A credential without an expiry (a static secret) is refreshed every
//! `UNBOUNDED_REFRESH` and dropped after twice that, so a changed policy or secret reaches the
//! proxy. Denials are never cached: each denied request reaches the server and its audit log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use crate::client::{ClientError, ServerClient};
use crate::identity::Identity;

/// Entries within this long of expiry are not used.
const EXPIRY_MARGIN: SignedDuration = SignedDuration::from_secs(5);

/// Refresh interval of a credential that has no expiry.
const UNBOUNDED_REFRESH: SignedDuration = SignedDuration::from_secs(300);

/// A credential and how to present it, as the server returned it.
#[derive(Clone)]
pub struct Injection {
    /// Headers to set, replacing any the application sent with the same name.
    pub headers: Vec<(String, String)>,
    /// Query parameters to set, replacing any the application sent with the same name.
    pub query: Vec<(String, String)>,
    pub server_workload: String,
    pub spiffe_id: String,
    /// The request id of the credential request, for the injection event.
    pub request_id: String,
    issued_at: Timestamp,
    expires_at: Option<Timestamp>,
}

impl Injection {
    /// Names the presentation for the injection event: `headers`, `query` or `headers+query`.
    pub fn mode(&self) -> &'static str {
        match (self.headers.is_empty(), self.query.is_empty()) {
            (false, true) => "headers",
            (true, false) => "query",
            _ => "headers+query",
        }
    }
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |pairs: &[(String, String)]| -> Vec<String> {
            pairs.iter().map(|(name, _)| name.clone()).collect()
        };
        f.debug_struct("Injection")
            .field("headers", &names(&self.headers))
            .field("query", &names(&self.query))
            .field("server_workload", &self.server_workload)
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        for (_, value) in self.headers.iter_mut().chain(self.query.iter_mut()) {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

/// Failures to get a credential to inject.
#[derive(Debug)]
pub enum CredentialError {
    /// The server denied the request; the body is its problem document.
    Denied { status: u16, request_id: String },
    /// The credential has no header or query presentation (such as AWS credentials, which
    /// sign requests rather than travel with them).
    NotInjectable { server_workload: String },
    /// The server could not be reached or returned an error.
    Unavailable(String),
}

#[derive(Deserialize)]
struct Presentation {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Granted {
    presentation: Presentation,
    server_workload: String,
    spiffe_id: String,
    request_id: String,
    issued_at: Timestamp,
    expires_at: Option<Timestamp>,
}

type Key = (Vec<(String, Vec<String>)>, String, u16);

struct Entry {
    injection: Injection,
    refresh_at: Timestamp,
    expires_at: Timestamp,
    refreshing: bool,
}

/// The credential cache of the proxy.
pub struct ProxyCredentials {
    client: ServerClient,
    identity: Arc<Identity>,
    max_entries: usize,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl ProxyCredentials {
    pub fn new(
        client: ServerClient,
        identity: Arc<Identity>,
        max_entries: usize,
    ) -> ProxyCredentials {
        ProxyCredentials {
            client,
            identity,
            max_entries: max_entries.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the credential that the caller with `attributes` gets for `host`:`port`, from the
    /// cache when a valid one is there.
    pub async fn get(
        self: &Arc<Self>,
        attributes: &BTreeMap<String, Vec<String>>,
        host: &str,
        port: u16,
    ) -> Result<Injection, CredentialError> {
        let key: Key = (
            attributes
                .iter()
                .map(|(name, values)| (name.clone(), values.clone()))
                .collect(),
            host.to_ascii_lowercase(),
            port,
        );
        let now = Timestamp::now();
        if let Some((injection, refresh)) = self.lookup(&key, now) {
            if refresh {
                let this = Arc::clone(self);
                let attributes = attributes.clone();
                let host = host.to_string();
                tokio::spawn(async move {
                    let fetched = this.fetch(&attributes, &host, port).await;
                    match fetched {
                        Ok(injection) => this.insert(key, injection),
                        Err(error) => {
                            tracing::warn!(host = %host, port, error = ?error, "refreshing a proxy credential failed; the cached one stays in use");
                            this.refresh_failed(&key);
                        }
                    }
                });
            }
            return Ok(injection);
        }
        let injection = self.fetch(attributes, host, port).await?;
        self.insert(key, injection.clone());
        Ok(injection)
    }

    async fn fetch(
        &self,
        attributes: &BTreeMap<String, Vec<String>>,
        host: &str,
        port: u16,
    ) -> Result<Injection, CredentialError> {
        let (credential, _) = self.identity.credential().await;
        let response = self
            .client
            .proxy_credential(&credential, attributes, host, port)
            .await
            .map_err(|error| match error {
                ClientError::Unauthorized { .. } => CredentialError::Unavailable(
                    "the server does not accept this agent: it may have been evicted".to_string(),
                ),
                other => CredentialError::Unavailable(other.to_string()),
            })?;
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if response.status != 200 {
            let request_id = body
                .get("request_id")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string();
            if matches!(response.status, 401 | 403) {
                return Err(CredentialError::Denied {
                    status: response.status,
                    request_id,
                });
            }
            let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
            return Err(CredentialError::Unavailable(format!(
                "the server rejected the credential request with status {} (request id {request_id}): {detail}",
                response.status
            )));
        }
        let granted: Granted = serde_json::from_value(body).map_err(|error| {
            CredentialError::Unavailable(format!("invalid credential response: {error}"))
        })?;
        if granted.presentation.headers.is_empty() && granted.presentation.query.is_empty() {
            return Err(CredentialError::NotInjectable {
                server_workload: granted.server_workload,
            });
        }
        Ok(Injection {
            headers: granted.presentation.headers.into_iter().collect(),
            query: granted.presentation.query.into_iter().collect(),
            server_workload: granted.server_workload,
            spiffe_id: granted.spiffe_id,
            request_id: granted.request_id,
            issued_at: granted.issued_at,
            expires_at: granted.expires_at,
        })
    }

    fn lookup(&self, key: &Key, now: Timestamp) -> Option<(Injection, bool)> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get_mut(key)?;
        if entry.expires_at - EXPIRY_MARGIN <= now {
            entries.remove(key);
            return None;
        }
        let refresh = now >= entry.refresh_at && !entry.refreshing;
        if refresh {
            entry.refreshing = true;
        }
        Some((entry.injection.clone(), refresh))
    }

    fn insert(&self, key: Key, injection: Injection) {
        let (refresh_at, expires_at) = match injection.expires_at {
            Some(expires_at) => {
                let lifetime = (expires_at - injection.issued_at).as_secs_f64().max(0.0);
                let fraction = rand::random_range(0.4..0.6);
                (
                    injection.issued_at + SignedDuration::from_secs_f64(lifetime * fraction),
                    expires_at,
                )
            }
            None => (
                injection.issued_at + UNBOUNDED_REFRESH,
                injection.issued_at + UNBOUNDED_REFRESH * 2,
            ),
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if !entries.contains_key(&key) && entries.len() >= self.max_entries {
            let now = Timestamp::now();
            entries.retain(|_, entry| entry.expires_at - EXPIRY_MARGIN > now);
            if entries.len() >= self.max_entries
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires_at)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            Entry {
                injection,
                refresh_at,
                expires_at,
                refreshing: false,
            },
        );
    }

    fn refresh_failed(&self, key: &Key) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(key)
        {
            entry.refreshing = false;
        }
    }
}
