//! Signing keys: loading, rotation through `prepared`, `active`, `retired` and `removed`, the
//! emergency `taint` and `revoke`, and the published JWKS.
//!
//! A prepared key is published at least [`PUBLISH_AHEAD`] before it signs, so validators that
//! cache the JWKS for its advertised lifetime already know its `kid`. A retired or tainted key
//! stays published until every token it signed has expired: credential lifetimes are capped at
//! 24 hours, so [`RETIRED_GRACE`] after it stopped signing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use mayfly_crypto::jwk::{Jwk, VerifyingKey, jwks_document};
use mayfly_crypto::kek::KeyEncryptionKey;
use mayfly_crypto::signing::{Algorithm, SigningKey, generate_kid};
use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_domain::resources::MAX_CREDENTIAL_TTL;
use mayfly_store::{SigningKeyRecord, Store, StoreError};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::clock::new_event_id;

/// How long a prepared key is published before it signs.
pub const PUBLISH_AHEAD: Duration = Duration::from_secs(3600);
/// How long a key stays published after it stopped signing: the longest credential lifetime plus
/// five minutes for clock skew.
pub const RETIRED_GRACE: Duration = Duration::from_secs(MAX_CREDENTIAL_TTL.0 + 300);

/// Actor recorded for changes the server makes on its own schedule.
pub const SYSTEM_ACTOR: &str = "system";

/// Key states as stored.
pub mod state {
    pub const PREPARED: &str = "prepared";
    pub const ACTIVE: &str = "active";
    pub const RETIRED: &str = "retired";
    pub const TAINTED: &str = "tainted";
    pub const REVOKED: &str = "revoked";
    pub const REMOVED: &str = "removed";
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be generated, encrypted or decrypted.
    #[error("signing key {kid}: {reason}")]
    Crypto { kid: String, reason: String },
    /// No key has this kid.
    #[error("signing key {0:?} not found")]
    NotFound(String),
    /// The key is in a state that does not allow the operation.
    #[error("signing key {kid:?} is {state}: {reason}")]
    WrongState {
        kid: String,
        state: String,
        reason: String,
    },
    /// No active key exists for the algorithm.
    #[error("no active signing key for {0}")]
    NoActiveKey(&'static str),
}

/// A key as the API shows it: never the private part.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: String,
    pub state: String,
    pub created_at: Timestamp,
    pub activates_at: Option<Timestamp>,
    pub retired_at: Option<Timestamp>,
    pub remove_after: Option<Timestamp>,
}

impl From<&SigningKeyRecord> for KeyInfo {
    fn from(record: &SigningKeyRecord) -> Self {
        KeyInfo {
            kid: record.kid.clone(),
            algorithm: record.algorithm.clone(),
            state: record.state.clone(),
            created_at: record.created_at,
            activates_at: record.activates_at,
            retired_at: record.retired_at,
            remove_after: record.remove_after,
        }
    }
}

/// What the request path reads: the key that signs per algorithm and the published JWKS.
pub struct KeySet {
    active: HashMap<Algorithm, Arc<SigningKey>>,
    /// Pre-rendered `/.well-known/jwks.json` body.
    pub jwks_body: String,
    /// Every public key ever stored, removed ones included, for verifying audit checkpoints.
    pub all_public: Vec<VerifyingKey>,
    /// Keys currently published.
    pub published: Vec<VerifyingKey>,
}

impl KeySet {
    pub fn active(&self, algorithm: Algorithm) -> Option<&Arc<SigningKey>> {
        self.active.get(&algorithm)
    }
}

/// Owns the signing keys: loads them, rotates them, and publishes a fresh [`KeySet`] after every
/// change.
pub struct KeyRing {
    store: Arc<dyn Store>,
    kek: KeyEncryptionKey,
    period: Duration,
    current: RwLock<Arc<KeySet>>,
    /// Serializes state changes made by this server.
    changes: Mutex<()>,
}

impl KeyRing {
    /// Loads the keys and makes sure an ES256 key is active.
    pub async fn load(
        store: Arc<dyn Store>,
        kek: KeyEncryptionKey,
        period: Duration,
        now: Timestamp,
    ) -> Result<Arc<KeyRing>, KeyError> {
        let empty = KeySet {
            active: HashMap::new(),
            jwks_body: jwks_document(&[]).to_string(),
            all_public: Vec::new(),
            published: Vec::new(),
        };
        let ring = Arc::new(KeyRing {
            store,
            kek,
            period,
            current: RwLock::new(Arc::new(empty)),
            changes: Mutex::new(()),
        });
        ring.tick(now, &[Algorithm::ES256]).await?;
        Ok(ring)
    }

    /// The key-encryption key, which also seals the secrets of credential providers.
    pub fn kek(&self) -> &KeyEncryptionKey {
        &self.kek
    }

    /// Returns the current key set; cheap, for the request path.
    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Lists every key.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(self
            .store
            .list_signing_keys()
            .await?
            .iter()
            .map(KeyInfo::from)
            .collect())
    }

    /// Runs one rotation step for each algorithm in use: activates a key when none is active,
    /// prepares the successor an hour before the active key's period ends, activates a prepared
    /// key when its time comes, and removes retired keys whose tokens have all expired.
    pub async fn tick(&self, now: Timestamp, algorithms: &[Algorithm]) -> Result<(), KeyError> {
        let _guard = self.changes.lock().await;
        let records = self.store.list_signing_keys().await?;

        for record in &records {
            let expired = record.remove_after.is_some_and(|at| at <= now);
            if expired && (record.state == state::RETIRED || record.state == state::TAINTED) {
                let mut removed = record.clone();
                removed.state = state::REMOVED.to_string();
                removed.encrypted_private_key = None;
                let audit = key_event(
                    now,
                    "remove",
                    record,
                    "every token it signed has expired",
                    SYSTEM_ACTOR,
                );
                self.store
                    .update_signing_key(&removed, &record.state, vec![audit])
                    .await?;
            }
        }

        let mut records = self.store.list_signing_keys().await?;
        for algorithm in algorithms {
            self.rotate_algorithm(*algorithm, &mut records, now).await?;
        }
        self.publish().await
    }

    async fn rotate_algorithm(
        &self,
        algorithm: Algorithm,
        records: &mut Vec<SigningKeyRecord>,
        now: Timestamp,
    ) -> Result<(), KeyError> {
        let name = algorithm.as_str();
        let active = records
            .iter()
            .find(|r| r.algorithm == name && r.state == state::ACTIVE)
            .cloned();
        let prepared = records
            .iter()
            .find(|r| r.algorithm == name && r.state == state::PREPARED)
            .cloned();

        if let Some(prepared) = &prepared
            && prepared.activates_at.is_none_or(|at| at <= now)
        {
            self.activate(
                prepared,
                active.as_ref(),
                now,
                "its publication period is over",
                SYSTEM_ACTOR,
            )
            .await?;
            *records = self.store.list_signing_keys().await?;
            return Ok(());
        }

        let Some(active) = active else {
            // No key signs for this algorithm yet (first start, or a newly used algorithm):
            // nothing could have cached its kid, so it becomes active at once.
            let key = self
                .generate(
                    algorithm,
                    state::ACTIVE,
                    Some(now),
                    now,
                    "first key for this algorithm",
                    SYSTEM_ACTOR,
                )
                .await?;
            records.push(key);
            return Ok(());
        };

        let activated = active.activates_at.unwrap_or(active.created_at);
        let due = add(activated, self.period);
        if prepared.is_none() && add(now, PUBLISH_AHEAD) >= due {
            let activates_at = std::cmp::max(due, add(now, PUBLISH_AHEAD));
            let key = self
                .generate(
                    algorithm,
                    state::PREPARED,
                    Some(activates_at),
                    now,
                    "scheduled rotation",
                    SYSTEM_ACTOR,
                )
                .await?;
            records.push(key);
        }
        Ok(())
    }

    /// Prepares a new key for `algorithm` that starts signing an hour from now. Fails when one is
    /// already prepared.
    pub async fn rotate(
        &self,
        algorithm: Algorithm,
        now: Timestamp,
        actor: &str,
    ) -> Result<KeyInfo, KeyError> {
        let _guard = self.changes.lock().await;
        let records = self.store.list_signing_keys().await?;
        if let Some(prepared) = records
            .iter()
            .find(|r| r.algorithm == algorithm.as_str() && r.state == state::PREPARED)
        {
            return Err(KeyError::WrongState {
                kid: prepared.kid.clone(),
                state: prepared.state.clone(),
                reason: format!(
                    "a prepared key already exists and becomes active at {}; taint the active key to switch at once",
                    prepared
                        .activates_at
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                ),
            });
        }
        let record = self
            .generate(
                algorithm,
                state::PREPARED,
                Some(add(now, PUBLISH_AHEAD)),
                now,
                "manual rotation",
                actor,
            )
            .await?;
        self.publish().await?;
        Ok(KeyInfo::from(&record))
    }

    /// Stops signing with a key at once but keeps publishing it until its tokens expire. When it
    /// was active, another key takes over immediately.
    pub async fn taint(&self, kid: &str, now: Timestamp, actor: &str) -> Result<KeyInfo, KeyError> {
        self.withdraw(
            kid,
            now,
            state::TAINTED,
            Some(add(now, RETIRED_GRACE)),
            actor,
        )
        .await
    }

    /// Removes a key from the JWKS at once: every token it signed stops validating at relying
    /// parties that refresh their keys. When it was active, another key takes over immediately.
    pub async fn revoke(
        &self,
        kid: &str,
        now: Timestamp,
        actor: &str,
    ) -> Result<KeyInfo, KeyError> {
        self.withdraw(kid, now, state::REVOKED, None, actor).await
    }

    async fn withdraw(
        &self,
        kid: &str,
        now: Timestamp,
        new_state: &str,
        remove_after: Option<Timestamp>,
        actor: &str,
    ) -> Result<KeyInfo, KeyError> {
        let _guard = self.changes.lock().await;
        let records = self.store.list_signing_keys().await?;
        let record = records
            .iter()
            .find(|r| r.kid == kid)
            .ok_or_else(|| KeyError::NotFound(kid.to_string()))?;
        let allowed: &[&str] = if new_state == state::TAINTED {
            &[state::PREPARED, state::ACTIVE, state::RETIRED]
        } else {
            &[
                state::PREPARED,
                state::ACTIVE,
                state::RETIRED,
                state::TAINTED,
            ]
        };
        if !allowed.contains(&record.state.as_str()) {
            return Err(KeyError::WrongState {
                kid: kid.to_string(),
                state: record.state.clone(),
                reason: format!("only {} keys can become {new_state}", allowed.join(", ")),
            });
        }

        let mut updated = record.clone();
        updated.state = new_state.to_string();
        updated.retired_at = Some(now);
        updated.remove_after = remove_after;
        if new_state == state::REVOKED {
            updated.encrypted_private_key = None;
        }
        let action = if new_state == state::TAINTED {
            "taint"
        } else {
            "revoke"
        };
        let audit = key_event(now, action, record, "requested by an admin", actor);
        self.store
            .update_signing_key(&updated, &record.state, vec![audit])
            .await?;

        if record.state == state::ACTIVE {
            let algorithm = Algorithm::parse(&record.algorithm).unwrap_or(Algorithm::ES256);
            let replacement = records
                .iter()
                .find(|r| r.algorithm == record.algorithm && r.state == state::PREPARED)
                .cloned();
            match replacement {
                Some(prepared) => {
                    self.activate(&prepared, None, now, "the active key was withdrawn", actor)
                        .await?
                }
                None => {
                    self.generate(
                        algorithm,
                        state::ACTIVE,
                        Some(now),
                        now,
                        "the active key was withdrawn",
                        actor,
                    )
                    .await?;
                }
            }
        }
        self.publish().await?;
        Ok(KeyInfo::from(&updated))
    }

    async fn activate(
        &self,
        prepared: &SigningKeyRecord,
        active: Option<&SigningKeyRecord>,
        now: Timestamp,
        reason: &str,
        actor: &str,
    ) -> Result<(), KeyError> {
        if let Some(active) = active {
            let mut retired = active.clone();
            retired.state = state::RETIRED.to_string();
            retired.retired_at = Some(now);
            retired.remove_after = Some(add(now, RETIRED_GRACE));
            let audit = key_event(now, "retire", active, reason, actor);
            self.store
                .update_signing_key(&retired, state::ACTIVE, vec![audit])
                .await?;
        }
        let mut activated = prepared.clone();
        activated.state = state::ACTIVE.to_string();
        activated.activates_at = Some(now);
        let audit = key_event(now, "activate", prepared, reason, actor);
        self.store
            .update_signing_key(&activated, state::PREPARED, vec![audit])
            .await?;
        Ok(())
    }

    async fn generate(
        &self,
        algorithm: Algorithm,
        initial_state: &str,
        activates_at: Option<Timestamp>,
        now: Timestamp,
        reason: &str,
        actor: &str,
    ) -> Result<SigningKeyRecord, KeyError> {
        let kid = generate_kid().map_err(|error| KeyError::Crypto {
            kid: "(new)".to_string(),
            reason: error.to_string(),
        })?;
        let crypto_error = |reason: String| KeyError::Crypto {
            kid: kid.clone(),
            reason,
        };
        // RSA key generation takes a noticeable moment: keep it off the async workers.
        let generated = tokio::task::spawn_blocking({
            let kid = kid.clone();
            move || SigningKey::generate(algorithm, &kid)
        })
        .await
        .map_err(|error| crypto_error(error.to_string()))?
        .map_err(|error| crypto_error(error.to_string()))?;
        let pkcs8 = generated
            .to_pkcs8()
            .map_err(|error| crypto_error(error.to_string()))?;
        let sealed = self
            .kek
            .seal(&pkcs8, kid.as_bytes())
            .map_err(|error| crypto_error(error.to_string()))?;
        let public_jwk = serde_json::to_value(generated.public_jwk())
            .map_err(|error| crypto_error(error.to_string()))?;

        let record = SigningKeyRecord {
            kid: kid.clone(),
            algorithm: algorithm.as_str().to_string(),
            state: initial_state.to_string(),
            public_jwk,
            encrypted_private_key: Some(sealed),
            created_at: now,
            activates_at,
            retired_at: None,
            remove_after: None,
        };
        let audit = key_event(now, "generate", &record, reason, actor);
        self.store.insert_signing_key(&record, vec![audit]).await?;
        tracing::info!(kid = %record.kid, algorithm = %record.algorithm, state = %record.state, reason, "signing key generated");
        Ok(record)
    }

    /// Reloads the keys from the store and swaps in a new [`KeySet`].
    pub async fn publish(&self) -> Result<(), KeyError> {
        let records = self.store.list_signing_keys().await?;
        let mut active = HashMap::new();
        let mut published_jwks = Vec::new();
        let mut published = Vec::new();
        let mut all_public = Vec::new();

        for record in &records {
            let jwk: Option<Jwk> = serde_json::from_value(record.public_jwk.clone()).ok();
            let verifying = jwk
                .as_ref()
                .and_then(|jwk| VerifyingKey::from_jwk(jwk).ok());
            if let Some(verifying) = &verifying {
                all_public.push(verifying.clone());
            }
            let is_published = matches!(
                record.state.as_str(),
                state::PREPARED | state::ACTIVE | state::RETIRED | state::TAINTED
            );
            if is_published && let (Some(jwk), Some(verifying)) = (jwk, verifying) {
                published_jwks.push(jwk);
                published.push(verifying);
            }
            if record.state == state::ACTIVE {
                let key = self.decrypt(record)?;
                if let Ok(algorithm) = Algorithm::parse(&record.algorithm) {
                    active.insert(algorithm, Arc::new(key));
                }
            }
        }

        let set = KeySet {
            active,
            jwks_body: jwks_document(&published_jwks).to_string(),
            all_public,
            published,
        };
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    fn decrypt(&self, record: &SigningKeyRecord) -> Result<SigningKey, KeyError> {
        let crypto_error = |reason: String| KeyError::Crypto {
            kid: record.kid.clone(),
            reason,
        };
        let sealed = record
            .encrypted_private_key
            .as_ref()
            .ok_or_else(|| crypto_error("the private key is missing".to_string()))?;
        let pkcs8 = self
            .kek
            .open(sealed, record.kid.as_bytes())
            .map_err(|error| crypto_error(error.to_string()))?;
        let algorithm = Algorithm::parse(&record.algorithm)
            .ok()
            .ok_or_else(|| crypto_error(format!("unknown algorithm {}", record.algorithm)))?;
        SigningKey::from_pkcs8(algorithm, &record.kid, &pkcs8)
            .map_err(|error| crypto_error(error.to_string()))
    }
}

fn add(time: Timestamp, duration: Duration) -> Timestamp {
    let span = jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::ZERO);
    time.checked_add(span).unwrap_or(time)
}

fn key_event(
    now: Timestamp,
    action: &str,
    record: &SigningKeyRecord,
    reason: &str,
    actor: &str,
) -> NewAuditEvent {
    let detail = json!({
        "actor": actor,
        "action": action,
        "kid": record.kid,
        "algorithm": record.algorithm,
        "previous_state": record.state,
        "reason": reason,
    });
    NewAuditEvent::new(new_event_id(), now, AuditKind::KeyChange, detail)
}
