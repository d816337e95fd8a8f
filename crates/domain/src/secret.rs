//! Write-only secret fields of credential providers: the plaintext an operator sends, and the
//! sealed form the server stores in its place.
//!
//! The domain crate never encrypts: the server seals a [`SecretString`] with its key-encryption
//! key and puts a [`SealedSecret`] in the stored resource, so the plaintext never reaches the
//! store, a configuration read or an audit event.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A secret as an operator writes it. `Debug` prints a placeholder and the text is zeroized on
/// drop. It serializes as its text, because the CLI sends configuration files to the server,
/// which seals it before storing or auditing the resource.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(text: impl Into<String>) -> SecretString {
        SecretString(Zeroizing::new(text.into()))
    }

    /// The plaintext; callers must not log it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(..)")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Reads a secret from a string. A number or boolean is rejected without echoing it, because
/// written where a secret belongs it is most likely the secret itself.
struct SecretVisitor;

impl SecretVisitor {
    fn not_text<E: serde::de::Error>(kind: &str) -> E {
        E::custom(format!(
            "a secret must be a string, but {kind} was given (the value is not shown): quote it in YAML, such as \"0123\""
        ))
    }
}

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = SecretString;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a secret as a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SecretString, E> {
        Ok(SecretString::new(text))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<SecretString, E> {
        Ok(SecretString(Zeroizing::new(text)))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretString, E> {
        Err(Self::not_text("a boolean"))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretString, E> {
        Err(Self::not_text("a number"))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretString, E> {
        Err(Self::not_text("a number"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretString, E> {
        Err(Self::not_text("a number"))
    }
}

/// A secret encrypted with the server's key-encryption key: the form the store contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the sealed form of a secret, which only the server writes (send the secret in its plain field instead)"
)]
pub struct SealedSecret {
    /// Base64 of the sealed bytes (version, nonce, AES-256-GCM ciphertext and tag).
    pub ciphertext: String,
    /// A keyed fingerprint of the plaintext: equal values have equal fingerprints on one server,
    /// and the fingerprint does not let anyone test guesses without the key-encryption key.
    pub fingerprint: String,
    /// When this value was set.
    pub set_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_error_says_who_writes_it() {
        let error = serde_json::from_str::<SealedSecret>("\"garbage\"")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("only the server writes"), "{error}");
        assert!(!error.contains("struct SealedSecret"), "{error}");
    }
}
