//! A public key parsed once from a JWK and ready to verify JWS signatures with aws-lc-rs.

use std::fmt;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Jwk, USE_JWT_SVID, USE_SIG};
use crate::jws::{JwsAlgorithm, quote_untrusted};

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus accepted, in bits; aws-lc-rs verifies moduli up to this size.
pub const MAX_RSA_BITS: usize = 8192;

/// Reasons a JWK cannot be used as a verifying key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The key set entry is not a JSON object.
    #[error("key is not a JSON object")]
    NotAnObject,
    /// A member has the wrong JSON type, such as a number for `kid`.
    #[error("key is malformed: {reason}")]
    Malformed {
        /// serde_json's description of the problem.
        reason: String,
    },
    /// `key_ops` is present and does not include `verify`.
    #[error("key_ops does not allow verify")]
    KeyOperations,
    /// `use` is neither `sig` nor `jwt-svid`.
    #[error("use {key_use} is not for signatures; expected \"sig\" or \"jwt-svid\"")]
    UnsupportedUse {
        /// The `use` value, quoted.
        key_use: String,
    },
    /// `kty` is neither `EC` nor `RSA`.
    #[error("unsupported kty {kty}; supported key types are \"EC\" and \"RSA\"")]
    UnsupportedKeyType {
        /// The `kty` value, quoted.
        kty: String,
    },
    /// `crv` of an EC key is neither `P-256` nor `P-384`.
    #[error("unsupported crv {crv}; supported curves are \"P-256\" and \"P-384\"")]
    UnsupportedCurve {
        /// The `crv` value, quoted.
        crv: String,
    },
    /// `alg` is not an accepted JWS algorithm.
    #[error(
        "alg {alg} is not allowed; allowed algorithms are RS256, RS384, RS512, ES256, ES384, PS256, PS384 and PS512"
    )]
    UnsupportedAlgorithm {
        /// The `alg` value, quoted.
        alg: String,
    },
    /// `alg` does not fit the key type, such as ES256 on an RSA key.
    #[error("alg {alg} does not fit a {key_type} key")]
    AlgorithmMismatch {
        /// The declared algorithm.
        alg: JwsAlgorithm,
        /// The key's type.
        key_type: KeyType,
    },
    /// A member the key type needs is absent.
    #[error("missing member {member}")]
    MissingMember {
        /// Name of the member, such as `x` or `n`.
        member: &'static str,
    },
    /// A member is present but malformed.
    #[error("member {member} is invalid: {reason}")]
    InvalidMember {
        /// Name of the member.
        member: &'static str,
        /// Description of the problem.
        reason: String,
    },
    /// The RSA modulus is outside the accepted size range.
    #[error(
        "RSA modulus has {bits} bits; supported sizes are {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
    )]
    RsaModulusSize {
        /// Size of the modulus in bits.
        bits: usize,
    },
    /// aws-lc-rs rejected the key material, for example an EC point not on the curve.
    #[error("public key rejected by aws-lc-rs: {reason}")]
    Rejected {
        /// aws-lc-rs's description of the problem.
        reason: String,
    },
}

/// Type of a verifying key, which fixes the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA key on NIST P-256, for ES256.
    EcP256,
    /// ECDSA key on NIST P-384, for ES384.
    EcP384,
    /// RSA key, for RS256, RS384, RS512, PS256, PS384 and PS512.
    Rsa,
}

impl KeyType {
    /// Returns every algorithm a key of this type can verify.
    pub fn algorithms(self) -> &'static [JwsAlgorithm] {
        match self {
            KeyType::EcP256 => &[JwsAlgorithm::ES256],
            KeyType::EcP384 => &[JwsAlgorithm::ES384],
            KeyType::Rsa => &[
                JwsAlgorithm::RS256,
                JwsAlgorithm::RS384,
                JwsAlgorithm::RS512,
                JwsAlgorithm::PS256,
                JwsAlgorithm::PS384,
                JwsAlgorithm::PS512,
            ],
        }
    }

    /// Returns the length in bytes of one EC coordinate, or `None` for RSA.
    fn coordinate_len(self) -> Option<usize> {
        match self {
            KeyType::EcP256 => Some(32),
            KeyType::EcP384 => Some(48),
            KeyType::Rsa => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcP256 => "EC P-256",
            KeyType::EcP384 => "EC P-384",
            KeyType::Rsa => "RSA",
        })
    }
}

/// A public key for verifying JWS signatures, parsed by aws-lc-rs once when it is built.
///
/// It contains one parsed key per algorithm it accepts: only the JWK's `alg` when the JWK declares
/// one, otherwise every algorithm of its [`KeyType`].
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    jwk: Jwk,
    key_type: KeyType,
    verifiers: Vec<(JwsAlgorithm, ParsedPublicKey)>,
}

impl VerifyingKey {
    /// Parses a public JWK, checking its `use`, `kty`, `crv`, `alg` and key material.
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, JwkError> {
        check_use(jwk)?;
        let key_type = key_type_of(jwk)?;
        let algorithms = declared_algorithms(jwk, key_type)?;

        let verifiers = match key_type.coordinate_len() {
            Some(coordinate_len) => ec_verifiers(jwk, key_type, coordinate_len, algorithms)?,
            None => rsa_verifiers(jwk, algorithms)?,
        };

        Ok(VerifyingKey {
            jwk: jwk.clone(),
            key_type,
            verifiers,
        })
    }

    /// Returns the key id, matched against a token's `kid` header.
    pub fn kid(&self) -> Option<&str> {
        self.jwk.kid.as_deref()
    }

    /// Returns the key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Returns the JWK the key was parsed from.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Lists the algorithms this key accepts.
    pub fn algorithms(&self) -> impl Iterator<Item = JwsAlgorithm> + '_ {
        self.verifiers.iter().map(|(alg, _)| *alg)
    }

    /// Reports whether this key accepts signatures made with `alg`.
    pub fn supports(&self, alg: JwsAlgorithm) -> bool {
        self.verifiers.iter().any(|(accepted, _)| *accepted == alg)
    }

    /// Checks `signature` over `message` with `alg`. Returns false when the signature is invalid
    /// or the key does not accept `alg`.
    #[must_use]
    pub fn verify(&self, alg: JwsAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(accepted, _)| *accepted == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    /// Describes the key for error messages, such as `an RSA key accepting RS256`.
    pub(crate) fn describe(&self) -> String {
        let algorithms: Vec<&str> = self.algorithms().map(JwsAlgorithm::as_str).collect();
        let article = if self.key_type == KeyType::Rsa {
            "an"
        } else {
            "a"
        };
        format!(
            "{article} {} key accepting {}",
            self.key_type,
            algorithms.join(", ")
        )
    }
}

fn check_use(jwk: &Jwk) -> Result<(), JwkError> {
    match jwk.key_use.as_deref() {
        None | Some(USE_SIG) | Some(USE_JWT_SVID) => Ok(()),
        Some(other) => Err(JwkError::UnsupportedUse {
            key_use: quote_untrusted(other),
        }),
    }
}

fn key_type_of(jwk: &Jwk) -> Result<KeyType, JwkError> {
    match jwk.kty.as_str() {
        "RSA" => Ok(KeyType::Rsa),
        "EC" => match jwk.crv.as_deref() {
            Some("P-256") => Ok(KeyType::EcP256),
            Some("P-384") => Ok(KeyType::EcP384),
            Some(other) => Err(JwkError::UnsupportedCurve {
                crv: quote_untrusted(other),
            }),
            None => Err(JwkError::MissingMember { member: "crv" }),
        },
        other => Err(JwkError::UnsupportedKeyType {
            kty: quote_untrusted(other),
        }),
    }
}

fn declared_algorithms(jwk: &Jwk, key_type: KeyType) -> Result<Vec<JwsAlgorithm>, JwkError> {
    let Some(alg) = jwk.alg.as_deref() else {
        return Ok(key_type.algorithms().to_vec());
    };

    let alg = JwsAlgorithm::parse(alg).ok_or_else(|| JwkError::UnsupportedAlgorithm {
        alg: quote_untrusted(alg),
    })?;
    if alg.key_type() != key_type {
        return Err(JwkError::AlgorithmMismatch { alg, key_type });
    }
    Ok(vec![alg])
}

fn ec_verifiers(
    jwk: &Jwk,
    key_type: KeyType,
    coordinate_len: usize,
    algorithms: Vec<JwsAlgorithm>,
) -> Result<Vec<(JwsAlgorithm, ParsedPublicKey)>, JwkError> {
    let x = decode_member(jwk.x.as_deref(), "x")?;
    let y = decode_member(jwk.y.as_deref(), "y")?;
    for (member, value) in [("x", &x), ("y", &y)] {
        if value.len() != coordinate_len {
            return Err(JwkError::InvalidMember {
                member,
                reason: format!("expected {coordinate_len} bytes, got {}", value.len()),
            });
        }
    }

    // aws-lc-rs takes EC public keys as an uncompressed SEC 1 point: 0x04, X, then Y.
    let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);

    algorithms
        .into_iter()
        .map(|alg| {
            let verification =
                ecdsa_algorithm(alg).ok_or(JwkError::AlgorithmMismatch { alg, key_type })?;
            let key = ParsedPublicKey::new(verification, &point).map_err(rejected)?;
            Ok((alg, key))
        })
        .collect()
}

fn rsa_verifiers(
    jwk: &Jwk,
    algorithms: Vec<JwsAlgorithm>,
) -> Result<Vec<(JwsAlgorithm, ParsedPublicKey)>, JwkError> {
    let n = decode_member(jwk.n.as_deref(), "n")?;
    let e = decode_member(jwk.e.as_deref(), "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    if e.is_empty() {
        return Err(JwkError::InvalidMember {
            member: "e",
            reason: "exponent is zero".to_owned(),
        });
    }

    let bits = bit_length(n);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JwkError::RsaModulusSize { bits });
    }

    let components = RsaPublicKeyComponents { n, e };
    algorithms
        .into_iter()
        .map(|alg| {
            let parameters = rsa_parameters(alg).ok_or(JwkError::AlgorithmMismatch {
                alg,
                key_type: KeyType::Rsa,
            })?;
            let key = components
                .to_parsed_public_key(parameters)
                .map_err(rejected)?;
            Ok((alg, key))
        })
        .collect()
}

/// Returns the aws-lc-rs ECDSA verifier for `alg`, or `None` for an RSA algorithm. The `FIXED`
/// variants take the JWS signature form, `r` and `s` concatenated, rather than ASN.1 DER.
fn ecdsa_algorithm(alg: JwsAlgorithm) -> Option<&'static dyn signature::VerificationAlgorithm> {
    match alg {
        JwsAlgorithm::ES256 => Some(&signature::ECDSA_P256_SHA256_FIXED),
        JwsAlgorithm::ES384 => Some(&signature::ECDSA_P384_SHA384_FIXED),
        JwsAlgorithm::RS256
        | JwsAlgorithm::RS384
        | JwsAlgorithm::RS512
        | JwsAlgorithm::PS256
        | JwsAlgorithm::PS384
        | JwsAlgorithm::PS512 => None,
    }
}

/// Returns the aws-lc-rs RSA verifier for `alg`, or `None` for an ECDSA algorithm.
fn rsa_parameters(alg: JwsAlgorithm) -> Option<&'static RsaParameters> {
    match alg {
        JwsAlgorithm::RS256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        JwsAlgorithm::RS384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        JwsAlgorithm::RS512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        JwsAlgorithm::PS256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
        JwsAlgorithm::PS384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
        JwsAlgorithm::PS512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
        JwsAlgorithm::ES256 | JwsAlgorithm::ES384 => None,
    }
}

fn decode_member(value: Option<&str>, member: &'static str) -> Result<Vec<u8>, JwkError> {
    let text = value.ok_or(JwkError::MissingMember { member })?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwkError::InvalidMember {
            member,
            reason: "not unpadded base64url".to_owned(),
        })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first_nonzero = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first_nonzero..]
}

/// Number of significant bits in a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
    }
}

fn rejected(error: aws_lc_rs::error::KeyRejected) -> JwkError {
    JwkError::Rejected {
        reason: error.to_string(),
    }
}

#[cfg(test)]
#[path = "verifying_key_tests.rs"]
mod tests;
