//! Encryption at rest of log stream secrets (webhook secrets and HEC tokens).
//!
//! Before a log stream's spec is stored, its `secret` is sealed with the server's
//! key-encryption key (AES-256-GCM, bound to the stream's name) and kept as
//! `sealed:v1:<base64>`. When the configuration is read back, the value is opened again, so only
//! the in-memory configuration ever contains the plain secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mayfly_crypto::kek::KeyEncryptionKey;
use serde_json::Value;

/// Prefix of a sealed secret in a stored spec.
const SEALED_PREFIX: &str = "sealed:v1:";

/// A failure to seal or open a stored secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Encrypting the secret failed.
    #[error("sealing the secret of log stream {name:?} failed: {message}")]
    Seal { name: String, message: String },
    /// The stored secret is not valid base64, or was encrypted with another key or for another
    /// stream.
    #[error("opening the secret of log stream {name:?} failed: {message}")]
    Open { name: String, message: String },
}

/// Replaces a plain `secret` in `spec` with its sealed form.
pub fn seal_spec(kek: &KeyEncryptionKey, name: &str, spec: &mut Value) -> Result<(), SecretError> {
    let Some(Value::String(secret)) = spec.get_mut("secret") else {
        return Ok(());
    };
    if secret.starts_with(SEALED_PREFIX) {
        return Ok(());
    }
    let sealed = kek
        .seal(secret.as_bytes(), &associated_data(name))
        .map_err(|error| SecretError::Seal {
            name: name.to_string(),
            message: error.to_string(),
        })?;
    zeroize::Zeroize::zeroize(secret);
    *secret = format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed));
    Ok(())
}

/// Replaces a sealed `secret` in `spec` with the plain value.
pub fn open_spec(kek: &KeyEncryptionKey, name: &str, spec: &mut Value) -> Result<(), SecretError> {
    let Some(Value::String(secret)) = spec.get_mut("secret") else {
        return Ok(());
    };
    let Some(encoded) = secret.strip_prefix(SEALED_PREFIX) else {
        return Ok(());
    };
    let open_error = |message: String| SecretError::Open {
        name: name.to_string(),
        message,
    };
    let sealed = STANDARD
        .decode(encoded)
        .map_err(|error| open_error(error.to_string()))?;
    let plain = kek
        .open(&sealed, &associated_data(name))
        .map_err(|error| open_error(error.to_string()))?;
    let text = String::from_utf8(plain.to_vec())
        .map_err(|_| open_error("the secret is not UTF-8".to_string()))?;
    *secret = text;
    Ok(())
}

/// Binds a sealed secret to its stream, so it cannot be copied into another stream's spec.
fn associated_data(name: &str) -> Vec<u8> {
    format!("mayfly log_stream secret {name}").into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_round_trips_and_hides_value() {
        let kek = KeyEncryptionKey::generate().unwrap();
        let mut spec = serde_json::json!({"name": "siem", "secret": "hec-token-1"});
        seal_spec(&kek, "siem", &mut spec).unwrap();
        let stored = spec["secret"].as_str().unwrap().to_string();
        assert!(stored.starts_with(SEALED_PREFIX));
        assert!(!stored.contains("hec-token-1"));

        open_spec(&kek, "siem", &mut spec).unwrap();
        assert_eq!(spec["secret"], "hec-token-1");
    }

    #[test]
    fn secret_copied_to_other_stream_does_not_open() {
        let kek = KeyEncryptionKey::generate().unwrap();
        let mut spec = serde_json::json!({"secret": "hec-token-1"});
        seal_spec(&kek, "siem", &mut spec).unwrap();
        assert!(open_spec(&kek, "other", &mut spec).is_err());
    }
}
