//! Verification of untrusted OIDC and JWT evidence tokens from other issuers, such as Kubernetes
//! service account tokens, GitHub Actions OIDC tokens and any other OIDC issuer's ID tokens.
//!
//! Checks run in a fixed order, and the first failure is returned. Error messages are written
//! for operators, because they end up in audit events: they name the failed check and, for
//! `iss` and `aud`, the expected and actual values, and they never contain the token.

use serde_json::{Map, Value};

use crate::claims::{self, ClaimError};
use crate::jwk::VerifyingKey;
use crate::jws::{self, JwsError, quote_untrusted};

/// Default clock leeway for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: i64 = 60;

/// Default size limit for an evidence token, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Requirements for evidence tokens from one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRules {
    /// Expected `iss`, compared byte for byte.
    pub issuer: String,
    /// Audience that `aud` must contain.
    pub audience: String,
    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds; negative values count as zero.
    pub leeway_seconds: i64,
    /// Largest accepted token, in bytes.
    pub max_token_bytes: usize,
}

impl EvidenceRules {
    /// Builds rules for `issuer` and `audience` with the default leeway and size limit.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> EvidenceRules {
        EvidenceRules {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

/// An evidence token whose signature and claims passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
    /// `exp` in Unix seconds, rounded down when the token gave a fraction.
    pub expires_at: i64,
    /// Key id of the key that verified the signature, when that key has one.
    pub kid: Option<String>,
}

/// Reasons an evidence token is rejected, one per check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The token is larger than the rules allow.
    #[error("evidence token is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Size of the token in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Format, header JSON, `alg`, key selection, algorithm fit or signature check failed.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The header has `crit`, naming extensions this verifier does not implement.
    #[error(
        "evidence token header crit lists {names}, but no critical header extensions are supported"
    )]
    CriticalHeader {
        /// The `crit` value, shortened.
        names: String,
    },
    /// A claim is missing or has the wrong type.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// `iss` differs from the expected issuer.
    #[error("evidence token iss {actual} does not match the expected issuer {expected}")]
    IssuerMismatch {
        /// The expected issuer, quoted.
        expected: String,
        /// The token's `iss`, quoted.
        actual: String,
    },
    /// `aud` does not contain the expected audience.
    #[error("evidence token aud {actual} does not contain the expected audience {expected}")]
    AudienceMismatch {
        /// The expected audience, quoted.
        expected: String,
        /// The token's audiences, quoted.
        actual: String,
    },
    /// The token has expired: `exp + leeway <= now`.
    #[error("evidence token expired: exp {exp} plus leeway {leeway} s is not after now {now}")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The leeway used, in seconds.
        leeway: i64,
        /// The time of the check.
        now: i64,
    },
    /// `nbf` or `iat` lies further in the future than the leeway allows.
    #[error("evidence token {claim} {value} is more than {leeway} s after now {now}")]
    NotYetValid {
        /// `nbf` or `iat`.
        claim: &'static str,
        /// The claim's value.
        value: i64,
        /// The leeway used, in seconds.
        leeway: i64,
        /// The time of the check.
        now: i64,
    },
}

/// Verifies an evidence token against `keys` (the issuer's JWKS) and `rules` at `now`.
///
/// Checks, in order:
/// 1. size, at most `rules.max_token_bytes`;
/// 2. three base64url parts and a JSON object header;
/// 3. `alg` in the allow list RS256/384/512, ES256/384 and PS256/384/512, which shuts out
///    `none` and HMAC algorithm confusion;
/// 4. no `crit`;
/// 5. the key by `kid`, or without `kid` the only key that fits `alg`, and `alg` fitting it;
/// 6. the signature;
/// 7. `iss`, `aud`, `exp`, `nbf` and `iat`.
///
/// Keys named by the token itself through `jku`, `x5u` or `jwk` are never used. Those members,
/// and others such as `x5t` or `typ: "at+jwt"`, are tolerated and ignored.
pub fn verify_evidence(
    token: &str,
    keys: &[VerifyingKey],
    rules: &EvidenceRules,
    now: i64,
) -> Result<VerifiedToken, EvidenceError> {
    if token.len() > rules.max_token_bytes {
        return Err(EvidenceError::TooLarge {
            size: token.len(),
            max: rules.max_token_bytes,
        });
    }

    let jws = jws::parse_compact(token)?;
    if let Some(crit) = jws.header.get("crit") {
        return Err(EvidenceError::CriticalHeader {
            names: describe_crit(crit),
        });
    }
    let key = jws.select_key(keys, false)?;
    jws.verify_signature(key)?;

    let claims = jws.payload_object()?;
    let expires_at = check_claims(&claims, rules, now)?;

    Ok(VerifiedToken {
        claims,
        expires_at,
        kid: key.kid().map(str::to_owned),
    })
}

/// Checks `iss`, `aud`, `exp`, `nbf` and `iat`, and returns `exp`.
fn check_claims(
    claims: &Map<String, Value>,
    rules: &EvidenceRules,
    now: i64,
) -> Result<i64, EvidenceError> {
    let leeway = rules.leeway_seconds.max(0);

    let issuer =
        claims::string_claim(claims, "iss")?.ok_or(ClaimError::Missing { claim: "iss" })?;
    if issuer != rules.issuer {
        return Err(EvidenceError::IssuerMismatch {
            expected: quote_untrusted(&rules.issuer),
            actual: quote_untrusted(issuer),
        });
    }

    let audiences = claims::audiences(claims)?;
    if !audiences.contains(&rules.audience.as_str()) {
        return Err(EvidenceError::AudienceMismatch {
            expected: quote_untrusted(&rules.audience),
            actual: claims::quote_list(&audiences),
        });
    }

    let exp = claims::numeric_date(claims, "exp")?.ok_or(ClaimError::Missing { claim: "exp" })?;
    if exp.saturating_add(leeway) <= now {
        return Err(EvidenceError::Expired { exp, leeway, now });
    }

    for claim in ["nbf", "iat"] {
        if let Some(value) = claims::numeric_date(claims, claim)?
            && value > now.saturating_add(leeway)
        {
            return Err(EvidenceError::NotYetValid {
                claim,
                value,
                leeway,
                now,
            });
        }
    }

    Ok(exp)
}

fn describe_crit(crit: &Value) -> String {
    let Some(names) = crit.as_array() else {
        return "a value that is not an array".to_owned();
    };
    let names: Vec<&str> = names
        .iter()
        .map(|name| name.as_str().unwrap_or("(not a string)"))
        .collect();
    claims::quote_list(&names)
}

#[cfg(test)]
mod tests;
