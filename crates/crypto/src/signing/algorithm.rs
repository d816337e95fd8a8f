//! The algorithms Mayfly signs with and the aws-lc-rs parameters behind them.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature;
use serde::{Deserialize, Serialize};

use super::SigningError;
use crate::jws::{JwsAlgorithm, quote_untrusted};

/// Algorithms Mayfly signs with. ES256 is the default because it is fast and every JWT-SVID
/// client supports it. RSA signing is much slower, so RS256 and PS256 are opt-in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256 on a 2048-bit key.
    RS256,
    /// RSASSA-PSS with SHA-256 on a 2048-bit key.
    PS256,
}

impl Algorithm {
    /// Every signing algorithm.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
    ];

    /// Returns the JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        self.jws_algorithm().as_str()
    }

    /// Parses a JWS `alg` name; the match is case-sensitive.
    pub fn parse(value: &str) -> Result<Algorithm, SigningError> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == value)
            .ok_or_else(|| SigningError::UnknownAlgorithm {
                alg: quote_untrusted(value),
            })
    }

    /// Returns the same algorithm as a verification algorithm.
    pub fn jws_algorithm(self) -> JwsAlgorithm {
        match self {
            Algorithm::ES256 => JwsAlgorithm::ES256,
            Algorithm::ES384 => JwsAlgorithm::ES384,
            Algorithm::RS256 => JwsAlgorithm::RS256,
            Algorithm::PS256 => JwsAlgorithm::PS256,
        }
    }

    pub(super) fn family(self) -> Family {
        match self {
            Algorithm::ES256 => Family::Ecdsa {
                signing: &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                crv: "P-256",
            },
            Algorithm::ES384 => Family::Ecdsa {
                signing: &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                crv: "P-384",
            },
            Algorithm::RS256 => Family::Rsa {
                padding: &signature::RSA_PKCS1_SHA256,
            },
            Algorithm::PS256 => Family::Rsa {
                padding: &signature::RSA_PSS_SHA256,
            },
        }
    }
}

/// The aws-lc-rs parameters behind an [`Algorithm`]. The `FIXED` ECDSA encodings produce the
/// JWS signature form, `r` and `s` concatenated, rather than ASN.1 DER.
#[derive(Clone, Copy)]
pub(super) enum Family {
    Ecdsa {
        signing: &'static signature::EcdsaSigningAlgorithm,
        crv: &'static str,
    },
    Rsa {
        padding: &'static dyn signature::RsaEncoding,
    },
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = SigningError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Algorithm::parse(value)
    }
}
