//! The key encryption key (KEK) that seals signing keys and stored secrets at rest.
//!
//! Sealed format: one version byte (`1`), a random 96-bit nonce, then the AES-256-GCM ciphertext
//! with its 16-byte tag appended. The associated data (`aad`) is authenticated but not stored,
//! so the caller passes the same value to [`KeyEncryptionKey::open`], for example the row id the
//! ciphertext belongs to, which stops a sealed value from being moved to another row.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::random::{RandomError, random_bytes};

/// Length of a key encryption key in bytes (AES-256).
pub const KEK_LEN: usize = 32;

/// Version byte that starts every sealed value.
const SEALED_VERSION: u8 = 1;

/// Length of the AES-GCM authentication tag in bytes.
const TAG_LEN: usize = 16;

/// Smallest possible sealed value: version byte, nonce and tag around an empty plaintext.
pub const MIN_SEALED_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

/// Prefix hashed together with the key to form its fingerprint, so that the fingerprint is never
/// the plain SHA-256 of the key.
const FINGERPRINT_CONTEXT: &[u8] = b"mayfly kek fingerprint v1\n";

/// Prefix of the message whose HMAC fingerprints a stored secret.
const SECRET_FINGERPRINT_CONTEXT: &[u8] = b"mayfly secret fingerprint v1\n";

/// Standard and URL-safe base64 decoders that accept input with or without `=` padding.
const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Errors from creating a key encryption key or from sealing and opening data with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The key text is not valid base64 in either the standard or the URL-safe alphabet.
    #[error("key encryption key is not valid base64 (standard or URL-safe, padded or not)")]
    InvalidBase64,
    /// The key has the wrong length.
    #[error("key encryption key must be {KEK_LEN} bytes, got {len} bytes")]
    WrongLength {
        /// Length of the key that was supplied, after base64 decoding for text input.
        len: usize,
    },
    /// The random number generator failed while generating a key or a nonce.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// aws-lc-rs failed to encrypt, which happens only for a plaintext beyond AES-GCM's limit.
    #[error("failed to encrypt {len} bytes with the key encryption key")]
    SealFailed {
        /// Length of the plaintext.
        len: usize,
    },
    /// The sealed value is shorter than a version byte, nonce and tag.
    #[error(
        "sealed value is {len} bytes, shorter than the minimum of {MIN_SEALED_LEN} bytes; it is truncated or not a sealed value"
    )]
    Truncated {
        /// Length of the sealed value.
        len: usize,
    },
    /// The sealed value starts with a version byte this build does not know.
    #[error(
        "sealed value has format version {version}, but only version {SEALED_VERSION} is supported"
    )]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// Authentication failed: the key is not the one that sealed the value, the associated data
    /// differs, or the ciphertext was modified.
    #[error(
        "failed to decrypt the sealed value: the key encryption key does not match, the associated data differs, or the ciphertext was modified"
    )]
    OpenFailed,
}

/// A 256-bit AES-GCM key that encrypts signing keys and secrets at rest.
///
/// The key bytes are zeroized on drop and never printed by `Debug`.
#[derive(Clone)]
pub struct KeyEncryptionKey {
    bytes: Zeroizing<[u8; KEK_LEN]>,
}

impl KeyEncryptionKey {
    /// Generates a new random key.
    pub fn generate() -> Result<Self, KekError> {
        let bytes = random_bytes::<KEK_LEN>()?;
        Ok(KeyEncryptionKey { bytes })
    }

    /// Builds a key from exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KekError> {
        let array: [u8; KEK_LEN] = bytes
            .try_into()
            .map_err(|_| KekError::WrongLength { len: bytes.len() })?;
        Ok(KeyEncryptionKey {
            bytes: Zeroizing::new(array),
        })
    }

    /// Parses a key from base64 text of exactly 32 bytes.
    ///
    /// Accepts the standard and the URL-safe alphabet, with or without `=` padding, and ignores
    /// leading and trailing whitespace such as the newline at the end of a key file.
    pub fn parse(text: &str) -> Result<Self, KekError> {
        let text = text.trim();

        let decoded = STANDARD_ANY_PADDING
            .decode(text)
            .or_else(|_| URL_SAFE_ANY_PADDING.decode(text))
            .map(Zeroizing::new)
            .map_err(|_| KekError::InvalidBase64)?;

        KeyEncryptionKey::from_bytes(&decoded)
    }

    /// Encodes the key as padded standard base64, the form [`KeyEncryptionKey::parse`] reads.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(general_purpose::STANDARD.encode(self.bytes.as_slice()))
    }

    /// Returns a short identifier of the key: the first 8 bytes of a SHA-256 over a fixed
    /// context string and the key, as 16 hex digits.
    ///
    /// Storing it next to sealed data lets a server detect, before decrypting anything, that it
    /// was started with a different key than the one that sealed its data directory.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_CONTEXT);
        hasher.update(self.bytes.as_slice());
        let digest = hasher.finalize();
        hex::encode(&digest[..8])
    }

    /// Returns a fingerprint of a stored secret: HMAC-SHA-256 keyed with this key over a fixed
    /// context and `secret`, first 16 bytes as hex behind `hmac-sha256:`.
    ///
    /// Equal secrets get equal fingerprints under one key, so a changed value is detected
    /// without decrypting, and without the key the fingerprint cannot be used to test guesses of a
    /// low-entropy secret.
    pub fn secret_fingerprint(&self, secret: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.bytes.as_slice());
        let mut context = aws_lc_rs::hmac::Context::with_key(&key);
        context.update(SECRET_FINGERPRINT_CONTEXT);
        context.update(secret);
        let tag = context.sign();
        format!("hmac-sha256:{}", hex::encode(&tag.as_ref()[..16]))
    }

    /// Encrypts `plaintext` with AES-256-GCM under a fresh random nonce, authenticating `aad`.
    ///
    /// Returns the version byte, the nonce and the ciphertext with its tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let key = self.aead_key()?;
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let nonce = Nonce::assume_unique_for_key(*nonce_bytes);

        let mut sealed = Vec::with_capacity(MIN_SEALED_LEN + plaintext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(nonce_bytes.as_slice());
        let mut ciphertext = plaintext.to_vec();
        key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut ciphertext)
            .map_err(|_| KekError::SealFailed {
                len: plaintext.len(),
            })?;
        sealed.extend_from_slice(&ciphertext);

        Ok(sealed)
    }

    /// Decrypts a value produced by [`KeyEncryptionKey::seal`] with the same `aad`.
    ///
    /// The plaintext is returned in a buffer that is zeroized on drop.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KekError> {
        if sealed.len() < MIN_SEALED_LEN {
            return Err(KekError::Truncated { len: sealed.len() });
        }
        let (version, rest) = sealed.split_at(1);
        if version[0] != SEALED_VERSION {
            return Err(KekError::UnsupportedVersion {
                version: version[0],
            });
        }

        let (nonce_bytes, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| KekError::OpenFailed)?;
        let key = self.aead_key()?;

        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext_len = key
            .open_in_place(nonce, Aad::from(aad), buffer.as_mut_slice())
            .map_err(|_| KekError::OpenFailed)?
            .len();
        buffer.truncate(plaintext_len);

        Ok(buffer)
    }

    fn aead_key(&self) -> Result<LessSafeKey, KekError> {
        // Only a key of the wrong length fails here, and the type guarantees 32 bytes.
        let unbound = UnboundKey::new(&AES_256_GCM, self.bytes.as_slice())
            .map_err(|_| KekError::WrongLength { len: KEK_LEN })?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("fingerprint", &self.fingerprint())
            .field("bytes", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    fn fixed_key() -> KeyEncryptionKey {
        let bytes: Vec<u8> = (0_u8..32).map(|b| b.wrapping_mul(7) ^ 0xfb).collect();
        KeyEncryptionKey::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let key = KeyEncryptionKey::generate().unwrap();

        let sealed = key.seal(b"signing key bytes", b"key:k1").unwrap();
        let opened = key.open(&sealed, b"key:k1").unwrap();

        assert_eq!(opened.as_slice(), b"signing key bytes");
        assert_eq!(sealed[0], SEALED_VERSION);
        assert_eq!(sealed.len(), MIN_SEALED_LEN + b"signing key bytes".len());
    }

    #[test]
    fn seal_empty_plaintext_round_trips() {
        let key = fixed_key();

        let sealed = key.seal(b"", b"").unwrap();

        assert_eq!(sealed.len(), MIN_SEALED_LEN);
        assert!(key.open(&sealed, b"").unwrap().is_empty());
    }

    #[test]
    fn seal_uses_fresh_nonce_each_time() {
        let key = fixed_key();

        let first = key.seal(b"same", b"aad").unwrap();
        let second = key.seal(b"same", b"aad").unwrap();

        assert_ne!(first[1..1 + NONCE_LEN], second[1..1 + NONCE_LEN]);
        assert_ne!(first, second);
    }

    #[test]
    fn open_with_wrong_key_fails() {
        let sealed = fixed_key().seal(b"secret", b"aad").unwrap();
        let other = KeyEncryptionKey::generate().unwrap();

        assert_eq!(
            other.open(&sealed, b"aad").unwrap_err(),
            KekError::OpenFailed
        );
    }

    #[test]
    fn open_with_changed_aad_fails() {
        let key = fixed_key();
        let sealed = key.seal(b"secret", b"row:1").unwrap();

        assert_eq!(
            key.open(&sealed, b"row:2").unwrap_err(),
            KekError::OpenFailed
        );
    }

    #[test]
    fn open_truncated_input_fails() {
        let key = fixed_key();
        let sealed = key.seal(b"secret", b"aad").unwrap();

        let short = &sealed[..MIN_SEALED_LEN - 1];
        assert_eq!(
            key.open(short, b"aad").unwrap_err(),
            KekError::Truncated {
                len: MIN_SEALED_LEN - 1
            }
        );

        let missing_last_byte = &sealed[..sealed.len() - 1];
        assert_eq!(
            key.open(missing_last_byte, b"aad").unwrap_err(),
            KekError::OpenFailed
        );
    }

    #[test]
    fn open_flipped_ciphertext_bit_fails() {
        let key = fixed_key();
        let mut sealed = key.seal(b"secret", b"aad").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 0x01;

        assert_eq!(key.open(&sealed, b"aad").unwrap_err(), KekError::OpenFailed);
    }

    #[test]
    fn open_unknown_version_fails() {
        let key = fixed_key();
        let mut sealed = key.seal(b"secret", b"aad").unwrap();
        sealed[0] = 9;

        assert_eq!(
            key.open(&sealed, b"aad").unwrap_err(),
            KekError::UnsupportedVersion { version: 9 }
        );
    }

    #[test]
    fn parse_accepts_every_base64_variant() {
        let key = fixed_key();
        let raw = key.bytes.as_slice();

        for text in [
            STANDARD.encode(raw),
            STANDARD_NO_PAD.encode(raw),
            URL_SAFE.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            format!("  {}\n", STANDARD.encode(raw)),
        ] {
            let parsed = KeyEncryptionKey::parse(&text).unwrap();
            assert_eq!(parsed.fingerprint(), key.fingerprint(), "input {text:?}");
        }
    }

    #[test]
    fn parse_round_trips_to_base64() {
        let key = KeyEncryptionKey::generate().unwrap();

        let parsed = KeyEncryptionKey::parse(&key.to_base64()).unwrap();

        assert_eq!(*parsed.bytes, *key.bytes);
    }

    #[test]
    fn parse_names_decoded_length() {
        let text = STANDARD.encode([1_u8; 31]);

        assert_eq!(
            KeyEncryptionKey::parse(&text).unwrap_err(),
            KekError::WrongLength { len: 31 }
        );
        let message = KeyEncryptionKey::parse(&text).unwrap_err().to_string();
        assert!(message.contains("got 31 bytes"), "{message}");
    }

    #[test]
    fn parse_rejects_non_base64() {
        assert_eq!(
            KeyEncryptionKey::parse("not base64 at all!").unwrap_err(),
            KekError::InvalidBase64
        );
    }

    #[test]
    fn from_bytes_rejects_wrong_length() {
        assert_eq!(
            KeyEncryptionKey::from_bytes(&[0_u8; 33]).unwrap_err(),
            KekError::WrongLength { len: 33 }
        );
    }

    #[test]
    fn fingerprint_is_short_hex_and_differs_per_key() {
        let first = fixed_key().fingerprint();
        let second = KeyEncryptionKey::generate().unwrap().fingerprint();

        assert_eq!(first.len(), 16);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
        assert_eq!(first, fixed_key().fingerprint());
    }

    #[test]
    fn debug_output_hides_key_bytes() {
        let key = fixed_key();

        let printed = format!("{key:?}");

        assert!(printed.contains("<redacted>"));
        assert!(!printed.contains(&*key.to_base64()));
        assert!(!printed.contains(&hex::encode(key.bytes.as_slice())));
        assert!(!printed.contains(&format!("{:?}", key.bytes.as_slice())));
    }

    #[test]
    fn secret_fingerprint_is_keyed_and_stable() {
        let key = fixed_key();
        let other = KeyEncryptionKey::generate().unwrap();

        let first = key.secret_fingerprint(b"api-key-1");

        assert_eq!(first, fixed_key().secret_fingerprint(b"api-key-1"));
        assert_ne!(first, key.secret_fingerprint(b"api-key-2"));
        assert_ne!(first, other.secret_fingerprint(b"api-key-1"));
        assert!(first.starts_with("hmac-sha256:"));
        assert_eq!(first.len(), "hmac-sha256:".len() + 32);
        // Not the plain hash of the secret, which anyone could compute from a guess.
        let plain = hex::encode(&Sha256::digest(b"api-key-1")[..16]);
        assert!(!first.contains(&plain));
    }
}
