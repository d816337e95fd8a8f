//! The trust domain's SPIFFE X.509 CA: generation, rotation through `prepared`, `active`,
//! `retired` and `removed`, X.509-SVID signing, and the published X.509 bundle.
//!
//! A prepared CA is in the bundle `publish_ahead` before it signs, so agents and relying parties
//! that refresh the bundle trust it before any X.509-SVID it signed appears. The active CA is
//! replaced once half its lifetime has passed. A retired CA stays in the bundle until every
//! X.509-SVID it signed has expired: X.509-SVID lifetimes are capped at 24 hours and at the CA's
//! own `notAfter`, so [`RETIRED_GRACE`] after it stopped signing, or its `notAfter` if sooner.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use mayfly_crypto::x509::{self, GeneratedCa, SvidRequest, X509Error};
use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_store::{Store, StoreError, X509AuthorityRecord};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::clock::new_event_id;
use crate::keys::{KeyRing, RETIRED_GRACE, SYSTEM_ACTOR, state};

/// Metadata keys of the SPIFFE bundle's sequence number and the digest of the content it numbers.
const SEQUENCE_META: &str = "spiffe_bundle_sequence";
const DIGEST_META: &str = "spiffe_bundle_digest";

/// How often relying parties should refresh the SPIFFE bundle, in seconds; the same as the
/// JWKS's `Cache-Control: max-age`.
pub const BUNDLE_REFRESH_HINT_SECONDS: u64 = 300;

/// Errors of X.509 CA operations.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A CA could not be generated, sealed or opened, or a certificate could not be signed.
    #[error("x509 authority {id}: {reason}")]
    Crypto { id: String, reason: String },
    /// The CA is in a state that does not allow the operation.
    #[error("x509 authority {id:?} is {state}: {reason}")]
    WrongState {
        id: String,
        state: String,
        reason: String,
    },
    /// No CA is active.
    #[error("no active x509 authority")]
    NoActiveAuthority,
}

/// A CA as the API shows it: the certificate, never the private key.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorityInfo {
    pub id: String,
    pub trust_domain: String,
    pub state: String,
    pub created_at: Timestamp,
    pub not_after: Timestamp,
    pub activates_at: Option<Timestamp>,
    pub retired_at: Option<Timestamp>,
    pub remove_after: Option<Timestamp>,
    pub certificate_pem: String,
}

impl From<&X509AuthorityRecord> for AuthorityInfo {
    fn from(record: &X509AuthorityRecord) -> Self {
        AuthorityInfo {
            id: record.id.clone(),
            trust_domain: record.trust_domain.clone(),
            state: record.state.clone(),
            created_at: record.created_at,
            not_after: record.not_after,
            activates_at: record.activates_at,
            retired_at: record.retired_at,
            remove_after: record.remove_after,
            certificate_pem: x509::certificates_pem(&[&record.certificate_der]),
        }
    }
}

/// The CA that signs, with its opened private key.
struct ActiveAuthority {
    id: String,
    certificate_der: Vec<u8>,
    private_key_pkcs8: Zeroizing<Vec<u8>>,
    not_after: Timestamp,
}

/// The signing CA and the published CA certificates, as the request path reads them.
pub struct AuthoritySet {
    active: Option<ActiveAuthority>,
    /// Id of the active CA, when there is one.
    pub active_id: Option<String>,
    /// DER certificates of every published CA (prepared, active, retired, tainted), oldest first.
    pub published: Vec<Vec<u8>>,
}

/// An X.509-SVID just signed, with the CA that signed it.
pub struct IssuedX509Svid {
    /// Leaf first, then the signing CA.
    pub chain: Vec<Vec<u8>>,
    pub serial: String,
    pub authority: String,
    pub expires_at: Timestamp,
}

/// Owns the X.509 CAs of the trust domain.
pub struct X509Ca {
    store: Arc<dyn Store>,
    keys: Arc<KeyRing>,
    trust_domain: String,
    lifetime: Duration,
    publish_ahead: Duration,
    current: RwLock<Arc<AuthoritySet>>,
    /// Serializes state changes made by this server.
    changes: Mutex<()>,
    /// Serializes SPIFFE bundle sequence updates.
    sequence: Mutex<()>,
}

impl X509Ca {
    /// Loads the CAs and makes sure one is active.
    pub async fn load(
        store: Arc<dyn Store>,
        keys: Arc<KeyRing>,
        trust_domain: String,
        lifetime: Duration,
        publish_ahead: Duration,
        now: Timestamp,
    ) -> Result<Arc<X509Ca>, CaError> {
        let empty = AuthoritySet {
            active: None,
            active_id: None,
            published: Vec::new(),
        };
        let ca = Arc::new(X509Ca {
            store,
            keys,
            trust_domain,
            lifetime,
            publish_ahead,
            current: RwLock::new(Arc::new(empty)),
            changes: Mutex::new(()),
            sequence: Mutex::new(()),
        });
        ca.tick(now).await?;
        Ok(ca)
    }

    /// Returns how often [`X509Ca::tick`] should run: every minute, or more often when a
    /// prepared CA is published for less than two minutes.
    pub fn tick_interval(&self) -> Duration {
        (self.publish_ahead / 2).clamp(Duration::from_millis(200), Duration::from_secs(60))
    }

    /// Returns the current set; cheap, for the request path.
    pub fn current(&self) -> Arc<AuthoritySet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Lists every CA.
    pub async fn list(&self) -> Result<Vec<AuthorityInfo>, CaError> {
        Ok(self
            .store
            .list_x509_authorities()
            .await?
            .iter()
            .map(AuthorityInfo::from)
            .collect())
    }

    /// Runs one rotation step: removes retired CAs whose X.509-SVIDs have all expired, activates
    /// a prepared CA when its time comes, creates an active CA when none exists, and prepares
    /// the successor `publish_ahead` before the active CA reaches half its lifetime.
    pub async fn tick(&self, now: Timestamp) -> Result<(), CaError> {
        let _guard = self.changes.lock().await;
        let records = self.store.list_x509_authorities().await?;

        for record in &records {
            let expired =
                record.remove_after.is_some_and(|at| at <= now) || record.not_after <= now;
            let withdrawn = record.state == state::RETIRED || record.state == state::TAINTED;
            if expired && withdrawn {
                let mut removed = record.clone();
                removed.state = state::REMOVED.to_string();
                removed.encrypted_private_key = None;
                let audit = authority_event(
                    now,
                    "remove",
                    record,
                    state::REMOVED,
                    "every X.509-SVID it signed has expired",
                    SYSTEM_ACTOR,
                );
                self.store
                    .update_x509_authority(&removed, &record.state, vec![audit])
                    .await?;
            }
        }

        let records = self.store.list_x509_authorities().await?;
        let active = records.iter().find(|r| r.state == state::ACTIVE).cloned();
        let prepared = records.iter().find(|r| r.state == state::PREPARED).cloned();

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
        } else if let Some(active) = active {
            let activated = active.activates_at.unwrap_or(active.created_at);
            let due = add(activated, self.lifetime / 2);
            if active.not_after <= add(now, Duration::from_secs(60)) {
                // The active CA expired (the server was down past its rotation): nothing it
                // signs now would verify, so a new CA signs at once.
                self.retire(&active, now, "it expired", SYSTEM_ACTOR)
                    .await?;
                self.generate(
                    state::ACTIVE,
                    now,
                    now,
                    "the active CA expired",
                    SYSTEM_ACTOR,
                )
                .await?;
            } else if prepared.is_none() && add(now, self.publish_ahead) >= due {
                let activates_at = std::cmp::max(due, add(now, self.publish_ahead));
                self.generate(
                    state::PREPARED,
                    activates_at,
                    now,
                    "scheduled rotation",
                    SYSTEM_ACTOR,
                )
                .await?;
            }
        } else {
            // No CA signs yet: nothing can have cached the bundle, so it becomes active at once.
            self.generate(
                state::ACTIVE,
                now,
                now,
                "first X.509 CA of the trust domain",
                SYSTEM_ACTOR,
            )
            .await?;
        }
        self.publish().await
    }

    /// Prepares a new CA that starts signing `publish_ahead` from now. Fails when one is already
    /// prepared.
    pub async fn rotate(&self, now: Timestamp, actor: &str) -> Result<AuthorityInfo, CaError> {
        let _guard = self.changes.lock().await;
        let records = self.store.list_x509_authorities().await?;
        if let Some(prepared) = records.iter().find(|r| r.state == state::PREPARED) {
            return Err(CaError::WrongState {
                id: prepared.id.clone(),
                state: prepared.state.clone(),
                reason: format!(
                    "a prepared CA already exists and becomes active at {}",
                    prepared
                        .activates_at
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                ),
            });
        }
        let record = self
            .generate(
                state::PREPARED,
                add(now, self.publish_ahead),
                now,
                "manual rotation",
                actor,
            )
            .await?;
        self.publish().await?;
        Ok(AuthorityInfo::from(&record))
    }

    /// Signs an X.509-SVID for `spiffe_id` from the CSR `csr_der` with the active CA. The
    /// lifetime is `ttl`, capped at the CA's `notAfter`.
    pub fn sign(
        &self,
        csr_der: &[u8],
        spiffe_id: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<IssuedX509Svid, SignError> {
        let checked = x509::verify_csr(csr_der, Some(spiffe_id)).map_err(SignError::Csr)?;
        let set = self.current();
        let active = set
            .active
            .as_ref()
            .ok_or(SignError::Ca(CaError::NoActiveAuthority))?;
        let expires_at = std::cmp::min(add(now, ttl), active.not_after);
        let request = SvidRequest {
            spiffe_id,
            now: now.as_second(),
            not_after: expires_at.as_second(),
        };
        let signed = x509::sign_svid(
            checked,
            &active.certificate_der,
            &active.private_key_pkcs8,
            &request,
        )
        .map_err(|error| {
            SignError::Ca(CaError::Crypto {
                id: active.id.clone(),
                reason: error.to_string(),
            })
        })?;
        let expires_at = Timestamp::from_second(request.not_after).unwrap_or(expires_at);
        Ok(IssuedX509Svid {
            chain: vec![signed.certificate_der, active.certificate_der.clone()],
            serial: signed.serial,
            authority: active.id.clone(),
            expires_at,
        })
    }

    /// Returns the PEM of every published CA certificate.
    pub fn bundle_pem(&self) -> String {
        let set = self.current();
        let certificates: Vec<&[u8]> = set.published.iter().map(Vec::as_slice).collect();
        x509::certificates_pem(&certificates)
    }

    /// Builds the SPIFFE trust domain bundle: the X.509 CAs as `x509-svid` keys with `x5c`, the
    /// published signing keys of `jwks_body` as `jwt-svid` keys, a sequence number that grows
    /// whenever the keys change, and the refresh hint.
    pub async fn spiffe_bundle(&self, jwks_body: &str) -> Result<Value, CaError> {
        let set = self.current();
        let mut keys = Vec::new();
        for certificate in &set.published {
            let jwk = x509::bundle_jwk(certificate).map_err(|error| CaError::Crypto {
                id: "(published)".to_string(),
                reason: error.to_string(),
            })?;
            keys.push(jwk);
        }
        let jwks: Value = serde_json::from_str(jwks_body).unwrap_or_else(|_| json!({"keys": []}));
        for key in jwks
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut key = key.clone();
            key["use"] = json!("jwt-svid");
            keys.push(key);
        }

        let digest = hex::encode(sha2::Sha256::digest(
            Value::Array(keys.clone()).to_string().as_bytes(),
        ));
        let sequence = self.sequence_for(&digest).await?;
        Ok(json!({
            "keys": keys,
            "spiffe_sequence": sequence,
            "spiffe_refresh_hint": BUNDLE_REFRESH_HINT_SECONDS,
        }))
    }

    /// Returns the bundle sequence number for content with `digest`, incrementing the stored one
    /// when the content changed since it was last numbered.
    async fn sequence_for(&self, digest: &str) -> Result<u64, CaError> {
        let _guard = self.sequence.lock().await;
        let stored: u64 = self
            .store
            .get_meta(SEQUENCE_META)
            .await?
            .and_then(|text| text.parse().ok())
            .unwrap_or(0);
        if self.store.get_meta(DIGEST_META).await?.as_deref() == Some(digest) {
            return Ok(stored);
        }
        // NOTE: two replicas that see a change at the same moment may both increment, so the
        // sequence can skip a number; it never goes back.
        let next = stored + 1;
        self.store
            .set_meta(SEQUENCE_META, &next.to_string())
            .await?;
        self.store.set_meta(DIGEST_META, digest).await?;
        Ok(next)
    }

    async fn activate(
        &self,
        prepared: &X509AuthorityRecord,
        active: Option<&X509AuthorityRecord>,
        now: Timestamp,
        reason: &str,
        actor: &str,
    ) -> Result<(), CaError> {
        if let Some(active) = active {
            self.retire(active, now, reason, actor).await?;
        }
        let mut activated = prepared.clone();
        activated.state = state::ACTIVE.to_string();
        activated.activates_at = Some(now);
        let audit = authority_event(now, "activate", prepared, state::ACTIVE, reason, actor);
        self.store
            .update_x509_authority(&activated, state::PREPARED, vec![audit])
            .await?;
        tracing::info!(x509_authority = %prepared.id, "X.509 CA activated");
        Ok(())
    }

    async fn retire(
        &self,
        active: &X509AuthorityRecord,
        now: Timestamp,
        reason: &str,
        actor: &str,
    ) -> Result<(), CaError> {
        let mut retired = active.clone();
        retired.state = state::RETIRED.to_string();
        retired.retired_at = Some(now);
        retired.remove_after = Some(std::cmp::min(add(now, RETIRED_GRACE), active.not_after));
        let audit = authority_event(now, "retire", active, state::RETIRED, reason, actor);
        self.store
            .update_x509_authority(&retired, state::ACTIVE, vec![audit])
            .await?;
        Ok(())
    }

    async fn generate(
        &self,
        initial_state: &str,
        activates_at: Timestamp,
        now: Timestamp,
        reason: &str,
        actor: &str,
    ) -> Result<X509AuthorityRecord, CaError> {
        let id = format!("ca-{}", uuid::Uuid::new_v4().simple());
        let crypto_error = |reason: String| CaError::Crypto {
            id: id.clone(),
            reason,
        };
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let generated: GeneratedCa = tokio::task::spawn_blocking({
            let trust_domain = self.trust_domain.clone();
            let id = id.clone();
            let start = now.as_second();
            move || x509::generate_ca(&trust_domain, &id, start, lifetime)
        })
        .await
        .map_err(|error| crypto_error(error.to_string()))?
        .map_err(|error| crypto_error(error.to_string()))?;
        let sealed = self
            .keys
            .kek()
            .seal(&generated.private_key_pkcs8, id.as_bytes())
            .map_err(|error| crypto_error(error.to_string()))?;
        let not_after = Timestamp::from_second(generated.not_after)
            .map_err(|error| crypto_error(error.to_string()))?;

        let record = X509AuthorityRecord {
            id: id.clone(),
            trust_domain: self.trust_domain.clone(),
            state: initial_state.to_string(),
            certificate_der: generated.certificate_der,
            encrypted_private_key: Some(sealed),
            created_at: now,
            not_after,
            activates_at: Some(activates_at),
            retired_at: None,
            remove_after: None,
        };
        let audit = authority_event(now, "generate", &record, initial_state, reason, actor);
        self.store
            .insert_x509_authority(&record, vec![audit])
            .await?;
        tracing::info!(x509_authority = %record.id, state = %record.state, not_after = %record.not_after, reason, "X.509 CA generated");
        Ok(record)
    }

    /// Reloads the CAs from the store and swaps in a new [`AuthoritySet`].
    pub async fn publish(&self) -> Result<(), CaError> {
        let records = self.store.list_x509_authorities().await?;
        let mut active = None;
        let mut published = Vec::new();
        for record in records
            .iter()
            .filter(|record| record.trust_domain == self.trust_domain)
        {
            let is_published = matches!(
                record.state.as_str(),
                state::PREPARED | state::ACTIVE | state::RETIRED | state::TAINTED
            );
            if is_published {
                published.push(record.certificate_der.clone());
            }
            if record.state == state::ACTIVE {
                active = Some(self.open(record)?);
            }
        }
        let active_id = active
            .as_ref()
            .map(|authority: &ActiveAuthority| authority.id.clone());
        let set = AuthoritySet {
            active,
            active_id,
            published,
        };
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    fn open(&self, record: &X509AuthorityRecord) -> Result<ActiveAuthority, CaError> {
        let crypto_error = |reason: String| CaError::Crypto {
            id: record.id.clone(),
            reason,
        };
        let sealed = record
            .encrypted_private_key
            .as_ref()
            .ok_or_else(|| crypto_error("the private key is missing".to_string()))?;
        let pkcs8 = self
            .keys
            .kek()
            .open(sealed, record.id.as_bytes())
            .map_err(|error| crypto_error(error.to_string()))?;
        Ok(ActiveAuthority {
            id: record.id.clone(),
            certificate_der: record.certificate_der.clone(),
            private_key_pkcs8: pkcs8,
            not_after: record.not_after,
        })
    }
}

/// Errors of X.509-SVID signing.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CSR is invalid or requests a SAN the caller was not granted.
    #[error(transparent)]
    Csr(X509Error),
    /// The CA could not sign.
    #[error(transparent)]
    Ca(CaError),
}

fn add(time: Timestamp, duration: Duration) -> Timestamp {
    let span = jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::ZERO);
    time.checked_add(span).unwrap_or(time)
}

/// Audit event of a CA state change: a `key_change` like those of signing keys, with the
/// `resource_kind`, `resource_name`, `before` and `after` fields of configuration changes.
fn authority_event(
    now: Timestamp,
    action: &str,
    record: &X509AuthorityRecord,
    new_state: &str,
    reason: &str,
    actor: &str,
) -> NewAuditEvent {
    let detail = json!({
        "actor": actor,
        "action": action,
        "resource_kind": "x509_authority",
        "resource_name": record.id,
        "x509_authority": record.id,
        "trust_domain": record.trust_domain,
        "before": if action == "generate" { Value::Null } else { json!({"state": record.state}) },
        "after": {"state": new_state, "not_after": record.not_after.to_string()},
        "reason": reason,
    });
    NewAuditEvent::new(new_event_id(), now, AuditKind::KeyChange, detail)
}
