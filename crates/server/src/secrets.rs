//! Write-only secrets of credential providers and notification targets. They are sealed with the
//! key-encryption key before a resource reaches the store, and opened only to produce a
//! credential or send a notification. Reads and audit events show "set", a fingerprint and an age.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use mayfly_crypto::kek::{KekError, KeyEncryptionKey};
use mayfly_domain::config::Config;
use mayfly_domain::resources::{CredentialProvider, Resource, ResourceKind};
use mayfly_domain::secret::{SealedSecret, SecretString};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::problem::ApiError;

/// Error from sealing or opening a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A new resource has no value for a write-only field.
    #[error("{field}: must be set when {kind} {provider:?} is created")]
    Missing {
        /// The kind of the resource that owns the secret.
        kind: ResourceKind,
        /// The resource's name.
        provider: String,
        /// The write-only field, such as `value`.
        field: &'static str,
    },
    /// A write carried a field that only the server sets.
    #[error("{field}: is set by the server; send {plain} instead")]
    ServerOwned {
        /// The sealed field, such as `sealed_value`.
        field: &'static str,
        /// The plaintext field to send.
        plain: &'static str,
    },
    /// Encrypting or decrypting with the key-encryption key failed.
    #[error("{field} of {kind} {provider:?}: {source}")]
    Crypto {
        /// The kind of the resource that owns the secret.
        kind: ResourceKind,
        /// The resource's name.
        provider: String,
        /// The write-only field.
        field: &'static str,
        /// The key-encryption key's error.
        source: KekError,
    },
    /// The stored ciphertext is not base64 or the plaintext not UTF-8.
    #[error("{field} of {kind} {provider:?}: the stored form is corrupt")]
    Corrupt {
        /// The kind of the resource that owns the secret.
        kind: ResourceKind,
        /// The resource's name.
        provider: String,
        /// The write-only field.
        field: &'static str,
    },
}

impl SecretError {
    /// Maps the error for a configuration write: the caller's mistakes are 400s, crypto
    /// failures are logged and returned as internal errors.
    pub fn into_api(self, request_id: &str) -> ApiError {
        match self {
            // The problem document puts the field before the reason, so the reason omits it.
            SecretError::Missing {
                kind,
                provider,
                field,
            } => ApiError::invalid(
                field,
                "",
                &format!("must be set when {kind} {provider:?} is created"),
            ),
            SecretError::ServerOwned { field, plain } => ApiError::invalid(
                field,
                "",
                &format!("is set by the server; send {plain} instead"),
            ),
            other => {
                tracing::error!(request_id, error = %other, "sealing a secret failed");
                ApiError::Internal {
                    request_id: request_id.to_string(),
                }
            }
        }
    }
}

/// Replaces the plaintext secrets of a resource being written with their sealed form. A value
/// equal to the stored one keeps the stored form, so re-applying it changes nothing; a write
/// without a value keeps the stored one.
pub fn seal_resource(
    kek: &KeyEncryptionKey,
    current: &Config,
    resource: Resource,
    now: Timestamp,
) -> Result<Resource, SecretError> {
    let provider = match resource {
        Resource::CredentialProvider(provider) => provider,
        Resource::NotificationTarget(mut target) => {
            if target.sealed_secret.is_some() {
                return Err(SecretError::ServerOwned {
                    field: "sealed_secret",
                    plain: "secret",
                });
            }
            let stored = current
                .notification_targets
                .get(&target.name)
                .and_then(|existing| existing.sealed_secret.clone());
            // A target that sends no secret keeps none, not even one from before.
            if target.auth.uses_secret() {
                let plain = target.secret.take();
                let kind = ResourceKind::NotificationTarget;
                target.sealed_secret = Some(seal_field_of(
                    kek,
                    kind,
                    &target.name,
                    "secret",
                    plain,
                    stored,
                    now,
                )?);
            } else {
                target.secret = None;
            }
            return Ok(Resource::NotificationTarget(target));
        }
        other => return Ok(other),
    };
    let stored = current.credential_providers.get(provider.name());
    let sealed = match provider {
        CredentialProvider::StaticSecret(mut provider) => {
            if provider.sealed_value.is_some() {
                return Err(SecretError::ServerOwned {
                    field: "sealed_value",
                    plain: "value",
                });
            }
            let stored = match stored {
                Some(CredentialProvider::StaticSecret(existing)) => existing.sealed_value.clone(),
                _ => None,
            };
            provider.sealed_value = Some(seal_field(
                kek,
                &provider.name,
                "value",
                provider.value.take(),
                stored,
                now,
            )?);
            CredentialProvider::StaticSecret(provider)
        }
        CredentialProvider::OauthClientCredentials(mut provider) => {
            if provider.sealed_client_secret.is_some() {
                return Err(SecretError::ServerOwned {
                    field: "sealed_client_secret",
                    plain: "client_secret",
                });
            }
            let stored = match stored {
                Some(CredentialProvider::OauthClientCredentials(existing)) => {
                    existing.sealed_client_secret.clone()
                }
                _ => None,
            };
            // A provider that signs assertions keeps no secret, not even one from before.
            if provider.client_auth.uses_secret() {
                let plain = provider.client_secret.take();
                provider.sealed_client_secret = Some(seal_field(
                    kek,
                    &provider.name,
                    "client_secret",
                    plain,
                    stored,
                    now,
                )?);
            }
            CredentialProvider::OauthClientCredentials(provider)
        }
        other => other,
    };
    Ok(Resource::CredentialProvider(sealed))
}

fn seal_field(
    kek: &KeyEncryptionKey,
    provider: &str,
    field: &'static str,
    plain: Option<SecretString>,
    stored: Option<SealedSecret>,
    now: Timestamp,
) -> Result<SealedSecret, SecretError> {
    seal_field_of(
        kek,
        ResourceKind::CredentialProvider,
        provider,
        field,
        plain,
        stored,
        now,
    )
}

fn seal_field_of(
    kek: &KeyEncryptionKey,
    kind: ResourceKind,
    provider: &str,
    field: &'static str,
    plain: Option<SecretString>,
    stored: Option<SealedSecret>,
    now: Timestamp,
) -> Result<SealedSecret, SecretError> {
    let Some(plain) = plain else {
        return stored.ok_or_else(|| SecretError::Missing {
            kind,
            provider: provider.to_string(),
            field,
        });
    };
    let fingerprint = kek.secret_fingerprint(plain.expose().as_bytes());
    if let Some(stored) = stored
        && stored.fingerprint == fingerprint
    {
        return Ok(stored);
    }
    let sealed = kek
        .seal(
            plain.expose().as_bytes(),
            &associated_data(kind, provider, field),
        )
        .map_err(|source| SecretError::Crypto {
            kind,
            provider: provider.to_string(),
            field,
            source,
        })?;
    Ok(SealedSecret {
        ciphertext: STANDARD.encode(sealed),
        fingerprint,
        set_at: now,
    })
}

/// Decrypts a sealed secret of the credential provider `provider`.
pub fn open(
    kek: &KeyEncryptionKey,
    provider: &str,
    field: &'static str,
    sealed: &SealedSecret,
) -> Result<Zeroizing<String>, SecretError> {
    open_of(
        kek,
        ResourceKind::CredentialProvider,
        provider,
        field,
        sealed,
    )
}

/// Decrypts a sealed secret of the resource `kind`/`name`.
pub fn open_of(
    kek: &KeyEncryptionKey,
    kind: ResourceKind,
    name: &str,
    field: &'static str,
    sealed: &SealedSecret,
) -> Result<Zeroizing<String>, SecretError> {
    let corrupt = || SecretError::Corrupt {
        kind,
        provider: name.to_string(),
        field,
    };
    let bytes = STANDARD.decode(&sealed.ciphertext).map_err(|_| corrupt())?;
    let plain = kek
        .open(&bytes, &associated_data(kind, name, field))
        .map_err(|source| SecretError::Crypto {
            kind,
            provider: name.to_string(),
            field,
            source,
        })?;
    let text = std::str::from_utf8(&plain).map_err(|_| corrupt())?;
    Ok(Zeroizing::new(text.to_string()))
}

/// Binds a sealed value to its resource and field, so a ciphertext copied into another resource
/// in the store fails to open.
fn associated_data(kind: ResourceKind, name: &str, field: &str) -> Vec<u8> {
    format!("{}/{name}/{field}", kind.as_str()).into_bytes()
}

/// Replaces every `sealed_<field>` object of a stored resource with `<field>`: whether it is set,
/// its fingerprint, when it was set and, given `now`, its age. The ciphertext is left out.
pub fn describe_sealed(mut spec: Value, now: Option<Timestamp>) -> Value {
    let Value::Object(map) = &mut spec else {
        return spec;
    };
    let sealed_keys: Vec<String> = map
        .keys()
        .filter(|key| key.starts_with("sealed_"))
        .cloned()
        .collect();
    for key in sealed_keys {
        let Some(sealed) = map.remove(&key) else {
            continue;
        };
        let field = key.trim_start_matches("sealed_").to_string();
        let mut description =
            json!({"set": true, "fingerprint": sealed["fingerprint"], "set_at": sealed["set_at"]});
        let set_at = sealed["set_at"]
            .as_str()
            .and_then(|text| text.parse::<Timestamp>().ok());
        if let (Some(now), Some(set_at)) = (now, set_at) {
            let seconds = now.as_second().saturating_sub(set_at.as_second()).max(0);
            description["age_seconds"] = json!(seconds);
            description["age"] = json!(age_text(seconds));
        }
        map.insert(field, description);
    }
    spec
}

/// Tells whether `field` is a write-only field as [`describe_sealed`] shows it.
pub fn is_described(field: &Value) -> bool {
    field.get("set") == Some(&Value::Bool(true)) && field.get("fingerprint").is_some()
}

/// Writes an age in its largest whole unit: `45s`, `12m`, `5h`, `400d`.
fn age_text(seconds: i64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
