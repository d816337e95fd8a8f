//! Admin and agent bearer tokens: generation, hashing for storage, and a redacting wrapper.
//!
//! A token is a prefix naming its kind (such as `mfy_admin_`) followed by 43 base64url
//! characters encoding 32 random bytes. Only its SHA-256 hash is stored. A plain, fast hash is
//! the right choice here: a 256-bit random token cannot be guessed, so the slow, salted hashes
//! that protect human-chosen passwords would add cost and no security.

use std::fmt;

use aws_lc_rs::constant_time;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::random::{RandomError, random_base64url};

/// Number of random bytes in a token.
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// A secret string, such as a bearer token, zeroized on drop and redacted from `Debug`.
///
/// It has no `PartialEq`, because `==` on strings is not constant-time: compare tokens with
/// [`token_matches_hash`].
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps `value`.
    pub fn new(value: String) -> SecretString {
        SecretString(Zeroizing::new(value))
    }

    /// Returns the secret text. Avoid copying it into values that are not zeroized.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// Generates a token: `prefix` followed by 43 base64url characters of 32 random bytes.
pub fn generate_token(prefix: &str) -> Result<SecretString, RandomError> {
    let random = Zeroizing::new(random_base64url::<TOKEN_RANDOM_BYTES>()?);

    let mut token = String::with_capacity(prefix.len() + random.len());
    token.push_str(prefix);
    token.push_str(&random);
    Ok(SecretString::new(token))
}

/// Returns the lowercase hex SHA-256 of `token`, the form stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Reports whether `token` hashes to `expected_hash` (lowercase hex), comparing in constant
/// time.
pub fn token_matches_hash(token: &str, expected_hash: &str) -> bool {
    let actual = hash_token(token);
    constant_time::verify_slices_are_equal(actual.as_bytes(), expected_hash.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_token_has_prefix_and_43_chars() {
        let token = generate_token("mfy_admin_").unwrap();

        let random = token.expose().strip_prefix("mfy_admin_").unwrap();
        assert_eq!(random.len(), 43);
        assert!(
            random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn generate_token_is_unique() {
        let first = generate_token("mfy_agent_").unwrap();
        let second = generate_token("mfy_agent_").unwrap();

        assert_ne!(first.expose(), second.expose());
    }

    #[test]
    fn hash_token_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_matches_only_its_own_hash() {
        let token = generate_token("mfy_admin_").unwrap();
        let hash = hash_token(token.expose());

        assert!(token_matches_hash(token.expose(), &hash));
        assert!(!token_matches_hash("mfy_admin_guess", &hash));
        assert!(!token_matches_hash(token.expose(), &hash[..63]));
    }

    #[test]
    fn debug_output_hides_secret() {
        let token = generate_token("mfy_admin_").unwrap();

        let printed = format!("{token:?}");

        assert_eq!(printed, "SecretString(<redacted>)");
        assert!(!printed.contains(token.expose()));
    }
}
