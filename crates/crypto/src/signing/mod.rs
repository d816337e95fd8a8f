//! Mayfly's own signing keys and the compact JWS they produce.
//!
//! A [`SigningKey`] keeps the aws-lc-rs key pair parsed once, together with its encoded JWS
//! header, so signing a token costs one serialization, one signature and two base64 encodings.

mod algorithm;

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::jwk::{Jwk, JwkError, USE_SIG, VerifyingKey};
use crate::jws::{encode_part, quote_untrusted};
use crate::random::{RandomError, random_base64url};

pub use algorithm::Algorithm;
use algorithm::Family;

/// Longest accepted key id, in bytes.
pub const MAX_KID_LEN: usize = 128;

/// Smallest RSA modulus accepted for a signing key, in bits.
pub const MIN_RSA_SIGNING_BITS: usize = 2048;

/// Errors from creating, exporting or using a signing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The algorithm name is not one Mayfly signs with.
    #[error("unknown signing algorithm {alg}; expected ES256, ES384, RS256 or PS256")]
    UnknownAlgorithm {
        /// The name given, quoted.
        alg: String,
    },
    /// The key id is empty, too long or has characters outside `A-Z a-z 0-9 . _ -`.
    #[error(
        "kid {kid} is invalid: use 1 to {MAX_KID_LEN} characters from A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    InvalidKid {
        /// The key id given, quoted.
        kid: String,
    },
    /// aws-lc-rs failed to generate a key pair.
    #[error("failed to generate a {alg} key pair")]
    KeyGeneration {
        /// The algorithm of the key.
        alg: Algorithm,
    },
    /// The PKCS#8 document is not a private key for the algorithm.
    #[error("PKCS#8 document is not a valid {alg} private key: {reason}")]
    InvalidPkcs8 {
        /// The algorithm the key was loaded for.
        alg: Algorithm,
        /// aws-lc-rs's description of the problem.
        reason: String,
    },
    /// The RSA private key is smaller than 2048 bits.
    #[error("RSA signing key has {bits} bits; at least {MIN_RSA_SIGNING_BITS} are required")]
    RsaKeyTooSmall {
        /// Size of the modulus in bits.
        bits: usize,
    },
    /// aws-lc-rs failed to encode the private key as PKCS#8.
    #[error("failed to encode signing key {kid} as PKCS#8")]
    Export {
        /// The key's id.
        kid: String,
    },
    /// The public key could not be turned into a JWK that verifies.
    #[error("public key of signing key {kid} is unusable: {source}")]
    PublicKey {
        /// The key's id.
        kid: String,
        /// Reason the JWK was rejected.
        source: JwkError,
    },
    /// The payload could not be serialized to JSON.
    #[error("failed to serialize the JWS payload to JSON: {reason}")]
    Payload {
        /// serde_json's description of the problem.
        reason: String,
    },
    /// aws-lc-rs failed to produce a signature.
    #[error("failed to sign with {alg} key {kid}")]
    Sign {
        /// The key's algorithm.
        alg: Algorithm,
        /// The key's id.
        kid: String,
    },
}

/// A private signing key with its key id, algorithm and cached aws-lc-rs key pair.
///
/// The private key lives in memory owned by aws-lc, whose `OPENSSL_free` zeroes memory before
/// releasing it (aws-lc-sys 0.47), so the key is cleared when the key pair is dropped. `Debug`
/// prints only the key id and algorithm.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    key_pair: KeyPair,
    /// Unpadded base64url of `{"alg":…,"kid":…,"typ":"JWT"}`, computed once per key.
    encoded_header: String,
    public_jwk: Jwk,
}

enum KeyPair {
    Ecdsa {
        key_pair: EcdsaKeyPair,
        crv: &'static str,
    },
    Rsa {
        key_pair: RsaKeyPair,
        padding: &'static dyn signature::RsaEncoding,
    },
}

/// The only JWS header Mayfly emits. Field order is fixed by the struct.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

impl SigningKey {
    /// Generates a new key pair: P-256 or P-384 for ES256 and ES384, 2048-bit RSA for RS256
    /// and PS256. RSA generation searches for random primes and is much slower than EC
    /// generation, so keep it off the request path.
    pub fn generate(alg: Algorithm, kid: impl Into<String>) -> Result<SigningKey, SigningError> {
        let kid = checked_kid(kid.into())?;

        let key_pair = match alg.family() {
            Family::Ecdsa { signing, crv } => {
                EcdsaKeyPair::generate(signing).map(|key_pair| KeyPair::Ecdsa { key_pair, crv })
            }
            Family::Rsa { padding } => RsaKeyPair::generate(KeySize::Rsa2048)
                .map(|key_pair| KeyPair::Rsa { key_pair, padding }),
        }
        .map_err(|_| SigningError::KeyGeneration { alg })?;

        SigningKey::assemble(alg, kid, key_pair)
    }

    /// Loads a private key from a PKCS#8 v1 DER document, as written by
    /// [`SigningKey::to_pkcs8`].
    pub fn from_pkcs8(
        alg: Algorithm,
        kid: impl Into<String>,
        der: &[u8],
    ) -> Result<SigningKey, SigningError> {
        let kid = checked_kid(kid.into())?;
        let invalid = |error: aws_lc_rs::error::KeyRejected| SigningError::InvalidPkcs8 {
            alg,
            reason: error.to_string(),
        };

        let key_pair = match alg.family() {
            Family::Ecdsa { signing, crv } => KeyPair::Ecdsa {
                key_pair: EcdsaKeyPair::from_pkcs8(signing, der).map_err(invalid)?,
                crv,
            },
            Family::Rsa { padding } => {
                let key_pair = RsaKeyPair::from_pkcs8(der).map_err(invalid)?;
                let bits = key_pair.public_modulus_len() * 8;
                if bits < MIN_RSA_SIGNING_BITS {
                    return Err(SigningError::RsaKeyTooSmall { bits });
                }
                KeyPair::Rsa { key_pair, padding }
            }
        };

        SigningKey::assemble(alg, kid, key_pair)
    }

    /// Encodes the private key as a PKCS#8 v1 DER document in a buffer zeroized on drop. Seal
    /// it with a [`KeyEncryptionKey`](crate::kek::KeyEncryptionKey) before storing it.
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, SigningError> {
        let export_failed = |_| SigningError::Export {
            kid: self.kid.clone(),
        };

        match &self.key_pair {
            KeyPair::Ecdsa { key_pair, .. } => {
                let document = key_pair.to_pkcs8v1().map_err(export_failed)?;
                Ok(Zeroizing::new(document.as_ref().to_vec()))
            }
            KeyPair::Rsa { key_pair, .. } => {
                let document = key_pair.as_der().map_err(export_failed)?;
                Ok(Zeroizing::new(document.as_ref().to_vec()))
            }
        }
    }

    /// Returns the key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Returns the signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Returns the public key as a JWK with `kty`, `kid`, `alg`, `use: "sig"` and the key
    /// members.
    pub fn public_jwk(&self) -> Jwk {
        self.public_jwk.clone()
    }

    /// Returns a verifying key for this key's own signatures.
    pub fn verifying_key(&self) -> Result<VerifyingKey, SigningError> {
        VerifyingKey::from_jwk(&self.public_jwk).map_err(|source| SigningError::PublicKey {
            kid: self.kid.clone(),
            source,
        })
    }

    /// Signs `payload` as a compact JWS whose header is exactly `alg`, `kid` and `typ: "JWT"`.
    pub fn sign_compact(&self, payload: &impl Serialize) -> Result<String, SigningError> {
        let payload = serde_json::to_vec(payload).map_err(|error| SigningError::Payload {
            reason: error.to_string(),
        })?;

        let mut token = String::with_capacity(
            self.encoded_header.len()
                + base64_len(payload.len())
                + base64_len(self.signature_len())
                + 2,
        );
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);

        let signature = self.sign_bytes(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);

        Ok(token)
    }

    fn signature_len(&self) -> usize {
        match &self.key_pair {
            // A FIXED ECDSA signature is r and s, each as long as one point coordinate.
            KeyPair::Ecdsa { key_pair, .. } => {
                key_pair.public_key().as_ref().len().saturating_sub(1)
            }
            KeyPair::Rsa { key_pair, .. } => key_pair.public_modulus_len(),
        }
    }

    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let failed = |_| SigningError::Sign {
            alg: self.algorithm,
            kid: self.kid.clone(),
        };
        let rng = SystemRandom::new();

        match &self.key_pair {
            KeyPair::Ecdsa { key_pair, .. } => {
                let signature = key_pair.sign(&rng, message).map_err(failed)?;
                Ok(signature.as_ref().to_vec())
            }
            KeyPair::Rsa { key_pair, padding } => {
                let mut signature = vec![0_u8; key_pair.public_modulus_len()];
                key_pair
                    .sign(*padding, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }

    fn assemble(
        algorithm: Algorithm,
        kid: String,
        key_pair: KeyPair,
    ) -> Result<SigningKey, SigningError> {
        let header = Header {
            alg: algorithm.as_str(),
            kid: &kid,
            typ: "JWT",
        };
        let header_json = serde_json::to_vec(&header).map_err(|error| SigningError::Payload {
            reason: error.to_string(),
        })?;
        let encoded_header = encode_part(&header_json);
        let public_jwk = public_jwk(algorithm, &kid, &key_pair);

        Ok(SigningKey {
            kid,
            algorithm,
            key_pair,
            encoded_header,
            public_jwk,
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Generates a random key id of 16 URL-safe characters (96 random bits).
pub fn generate_kid() -> Result<String, RandomError> {
    random_base64url::<12>()
}

/// Length of unpadded base64 text for `len` bytes.
fn base64_len(len: usize) -> usize {
    (len * 4).div_ceil(3)
}

fn checked_kid(kid: String) -> Result<String, SigningError> {
    let valid = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));

    if valid {
        Ok(kid)
    } else {
        Err(SigningError::InvalidKid {
            kid: quote_untrusted(&kid),
        })
    }
}

fn public_jwk(algorithm: Algorithm, kid: &str, key_pair: &KeyPair) -> Jwk {
    let common = Jwk {
        kid: Some(kid.to_owned()),
        alg: Some(algorithm.as_str().to_owned()),
        key_use: Some(USE_SIG.to_owned()),
        ..Jwk::default()
    };

    match key_pair {
        KeyPair::Ecdsa { key_pair, crv } => {
            // The public key is an uncompressed SEC 1 point: 0x04, X, then Y of equal length.
            let point = key_pair.public_key().as_ref();
            let coordinates = point.get(1..).unwrap_or_default();
            let (x, y) = coordinates.split_at(coordinates.len() / 2);
            Jwk {
                kty: "EC".to_owned(),
                crv: Some((*crv).to_owned()),
                x: Some(encode_part(x)),
                y: Some(encode_part(y)),
                ..common
            }
        }
        KeyPair::Rsa { key_pair, .. } => {
            let public_key = key_pair.public_key();
            Jwk {
                kty: "RSA".to_owned(),
                n: Some(encode_part(
                    public_key.modulus().big_endian_without_leading_zero(),
                )),
                e: Some(encode_part(
                    public_key.exponent().big_endian_without_leading_zero(),
                )),
                ..common
            }
        }
    }
}

#[cfg(test)]
mod tests;
