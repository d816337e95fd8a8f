//! Minting and validating JWT-SVIDs, the JWTs that carry a workload's SPIFFE ID in `sub`.
//!
//! Minted tokens follow the JWT-SVID standard and what the common SPIFFE client libraries expect:
//! header `alg`, `kid` and `typ: "JWT"` only, `aud` always an array, `exp` and `iat` as JSON
//! integers. Validation applies the standard's rules with no clock leeway.

use mayfly_domain::spiffe::{SpiffeId, TrustDomain};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::claims::{self, ClaimError};
use crate::jwk::VerifyingKey;
use crate::jws::{self, JwsError, quote_untrusted};
use crate::random::{RandomError, random_base64url};
use crate::signing::{SigningError, SigningKey};

/// Largest JWT-SVID accepted for validation, in bytes.
pub const MAX_JWT_SVID_BYTES: usize = 16 * 1024;

/// Header members a JWT-SVID may carry.
const ALLOWED_HEADERS: [&str; 3] = ["alg", "kid", "typ"];

/// Claims of a JWT-SVID that Mayfly mints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSvidClaims {
    /// The workload's SPIFFE ID.
    pub sub: String,
    /// Audiences; serialized as an array even when there is one.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds.
    pub iat: i64,
    /// Issuer URL.
    pub iss: String,
    /// Unique token id, from [`new_jti`].
    pub jti: String,
}

/// A JWT-SVID whose signature, audience and expiry have been checked.
///
/// `iat`, `iss` and `jti` are optional because JWT-SVIDs from other SPIFFE issuers may omit
/// them; the standard requires only `sub`, `aud` and `exp`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwtSvid {
    /// The workload's SPIFFE ID from `sub`, normalized with a lowercase trust domain.
    pub sub: SpiffeId,
    /// Every audience in `aud`.
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds, when present.
    pub iat: Option<i64>,
    /// Issuer, when present.
    pub iss: Option<String>,
    /// Token id, when present.
    pub jti: Option<String>,
    /// Key id of the key that verified the signature.
    pub kid: String,
    /// Every claim of the payload, including the ones above.
    pub claims: Map<String, Value>,
}

/// Errors from minting or validating a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSvidError {
    /// The token is larger than [`MAX_JWT_SVID_BYTES`].
    #[error("JWT-SVID is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Size of the token in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Format, `alg`, key selection or signature check failed.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The header has a member other than `alg`, `kid` and `typ`.
    #[error("JWT-SVID header contains {name}; only alg, kid and typ are allowed")]
    DisallowedHeader {
        /// Name of the member, quoted.
        name: String,
    },
    /// `typ` is present but neither `JWT` nor `JOSE`.
    #[error("JWT-SVID header typ {typ} is not \"JWT\" or \"JOSE\"")]
    InvalidType {
        /// The `typ` value, quoted.
        typ: String,
    },
    /// A claim is missing or malformed.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// `aud` does not contain the expected audience.
    #[error("JWT-SVID aud {actual} does not contain the expected audience {expected}")]
    AudienceMismatch {
        /// The expected audience, quoted.
        expected: String,
        /// The token's audiences, quoted.
        actual: String,
    },
    /// `exp` is not after `now`.
    #[error("JWT-SVID expired: exp {exp} is not after now {now}")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The time of the check.
        now: i64,
    },
    /// Signing the token failed.
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// Signs `claims` as a JWT-SVID with `key`.
///
/// Rejects claims that would make an invalid JWT-SVID: a `sub` that is not a SPIFFE ID in
/// normal form, an empty `aud`, an empty audience string, or `exp` not after `iat`.
pub fn mint(key: &SigningKey, claims: &JwtSvidClaims) -> Result<String, JwtSvidError> {
    if claims.sub.is_empty() {
        return Err(ClaimError::Missing { claim: "sub" }.into());
    }
    let subject = parse_subject(&claims.sub)?;
    if subject.as_str() != claims.sub {
        return Err(ClaimError::Invalid {
            claim: "sub",
            reason: format!("SPIFFE ID must be written as {}", subject.as_str()),
        }
        .into());
    }
    if claims.aud.is_empty() || claims.aud.iter().any(String::is_empty) {
        return Err(ClaimError::Invalid {
            claim: "aud",
            reason: "must list at least one audience, and no audience may be empty".to_owned(),
        }
        .into());
    }
    if claims.exp <= claims.iat {
        return Err(ClaimError::Invalid {
            claim: "exp",
            reason: format!("exp {} is not after iat {}", claims.exp, claims.iat),
        }
        .into());
    }

    Ok(key.sign_compact(claims)?)
}

/// Generates a token id: 128 random bits as 22 URL-safe characters.
pub fn new_jti() -> Result<String, RandomError> {
    random_base64url::<16>()
}

/// Validates a JWT-SVID for `audience` at `now` (Unix seconds).
///
/// Checks, in order:
/// 1. size, at most [`MAX_JWT_SVID_BYTES`];
/// 2. format, and `alg` in [`JwsAlgorithm`](crate::jws::JwsAlgorithm), so never `none`, HS* or
///    EdDSA;
/// 3. header members limited to `alg`, `kid` and `typ`, with `typ` absent, `JWT` or `JOSE`;
/// 4. the key named by `kid`, which is required, and `alg` fitting that key;
/// 5. the signature;
/// 6. `aud` containing `audience`, `exp` after `now` with no leeway, and `sub` a SPIFFE ID.
///
/// `keys` must be the JWT keys of the trust domain named in `sub`, which
/// [`unverified_trust_domain`] reads before validation.
pub fn validate_jwt_svid(
    token: &str,
    keys: &[VerifyingKey],
    audience: &str,
    now: i64,
) -> Result<ValidatedJwtSvid, JwtSvidError> {
    if token.len() > MAX_JWT_SVID_BYTES {
        return Err(JwtSvidError::TooLarge {
            size: token.len(),
            max: MAX_JWT_SVID_BYTES,
        });
    }

    let jws = jws::parse_compact(token)?;
    check_header(&jws)?;
    let key = jws.select_key(keys, true)?;
    jws.verify_signature(key)?;

    let claims = jws.payload_object()?;
    let aud = check_audience(&claims, audience)?;
    let exp = claims::numeric_date(&claims, "exp")?.ok_or(ClaimError::Missing { claim: "exp" })?;
    if exp <= now {
        return Err(JwtSvidError::Expired { exp, now });
    }
    let sub = subject(&claims)?;

    Ok(ValidatedJwtSvid {
        sub,
        aud,
        exp,
        iat: claims::numeric_date(&claims, "iat")?,
        iss: claims::string_claim(&claims, "iss")?.map(str::to_owned),
        jti: claims::string_claim(&claims, "jti")?.map(str::to_owned),
        kid: key.kid().unwrap_or_default().to_owned(),
        claims,
    })
}

/// Reads the trust domain of `sub` from a JWT-SVID without verifying anything but its format
/// and `alg`.
///
/// The result is untrusted. Use it only to pick the trust domain's keys for
/// [`validate_jwt_svid`], which then verifies the token.
pub fn unverified_trust_domain(token: &str) -> Result<TrustDomain, JwtSvidError> {
    if token.len() > MAX_JWT_SVID_BYTES {
        return Err(JwtSvidError::TooLarge {
            size: token.len(),
            max: MAX_JWT_SVID_BYTES,
        });
    }

    let jws = jws::parse_compact(token)?;
    let claims = jws.payload_object()?;
    let sub = subject(&claims)?;

    TrustDomain::parse(sub.trust_domain()).map_err(|error| {
        JwtSvidError::Claim(ClaimError::Invalid {
            claim: "sub",
            reason: error.to_string(),
        })
    })
}

fn subject(claims: &Map<String, Value>) -> Result<SpiffeId, JwtSvidError> {
    match claims::string_claim(claims, "sub")? {
        Some(sub) if !sub.is_empty() => parse_subject(sub),
        _ => Err(ClaimError::Missing { claim: "sub" }.into()),
    }
}

fn parse_subject(sub: &str) -> Result<SpiffeId, JwtSvidError> {
    SpiffeId::parse(sub).map_err(|error| {
        JwtSvidError::Claim(ClaimError::Invalid {
            claim: "sub",
            reason: error.to_string(),
        })
    })
}

fn check_header(jws: &jws::CompactJws<'_>) -> Result<(), JwtSvidError> {
    if let Some(name) = jws
        .header
        .keys()
        .find(|name| !ALLOWED_HEADERS.contains(&name.as_str()))
    {
        return Err(JwtSvidError::DisallowedHeader {
            name: quote_untrusted(name),
        });
    }

    match jws.header_str("typ")? {
        None | Some("JWT") | Some("JOSE") => Ok(()),
        Some(other) => Err(JwtSvidError::InvalidType {
            typ: quote_untrusted(other),
        }),
    }
}

fn check_audience(
    claims: &Map<String, Value>,
    audience: &str,
) -> Result<Vec<String>, JwtSvidError> {
    let audiences = claims::audiences(claims)?;

    if audiences.contains(&audience) {
        Ok(audiences.into_iter().map(str::to_owned).collect())
    } else {
        Err(JwtSvidError::AudienceMismatch {
            expected: quote_untrusted(audience),
            actual: claims::quote_list(&audiences),
        })
    }
}

/// Reads `aud` as one string or an array of strings.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(audience) => vec![audience],
        OneOrMany::Many(audiences) => audiences,
    })
}

#[cfg(test)]
mod tests;
