//! Signed audit checkpoints: a compact JWS stating that the audit hash chain up to `seq` ends in
//! `head_hash`, so that a rewrite of the stored chain is detectable from copies that left the
//! database.

use serde::{Deserialize, Serialize};

use crate::jwk::VerifyingKey;
use crate::jws::{self, JwsError, quote_untrusted};
use crate::signing::{SigningError, SigningKey};

/// Header members a checkpoint JWS may carry, which are exactly those that
/// [`SigningKey::sign_compact`] writes.
const ALLOWED_HEADERS: [&str; 3] = ["alg", "kid", "typ"];

/// The signed content of a checkpoint.
///
/// Unknown fields are rejected, so a JWT signed by the same key (a JWT-SVID, for example) never
/// verifies as a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPayload {
    /// Sequence number of the last event the checkpoint covers.
    pub seq: i64,
    /// Chain hash of that event, lowercase hex.
    pub head_hash: String,
    /// When the checkpoint was written, RFC 3339.
    pub time: String,
}

/// Errors from signing or verifying a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Format, `alg`, key selection or signature check failed.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The header has a member other than `alg`, `kid` and `typ`.
    #[error("checkpoint header contains {name}; only alg, kid and typ are allowed")]
    DisallowedHeader {
        /// Name of the member, quoted.
        name: String,
    },
    /// The payload is not `{"seq", "head_hash", "time"}`.
    #[error(
        "checkpoint payload must have exactly seq (integer), head_hash and time (strings): {source}"
    )]
    InvalidPayload {
        /// Parser error for the payload.
        source: JwsError,
    },
    /// Signing the checkpoint failed.
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// Signs a checkpoint over `{"seq", "head_hash", "time"}` with `key`.
pub fn sign_checkpoint(
    key: &SigningKey,
    seq: i64,
    head_hash: &str,
    time: &str,
) -> Result<String, CheckpointError> {
    let payload = CheckpointPayload {
        seq,
        head_hash: head_hash.to_owned(),
        time: time.to_owned(),
    };
    Ok(key.sign_compact(&payload)?)
}

/// Verifies a checkpoint's signature with the key named by its `kid` and returns its payload.
///
/// Checkpoints do not expire, so no time is checked: pass every key that may have signed one,
/// including retired keys.
pub fn verify_checkpoint(
    jws: &str,
    keys: &[VerifyingKey],
) -> Result<CheckpointPayload, CheckpointError> {
    let parsed = jws::parse_compact(jws)?;
    if let Some(name) = parsed
        .header
        .keys()
        .find(|name| !ALLOWED_HEADERS.contains(&name.as_str()))
    {
        return Err(CheckpointError::DisallowedHeader {
            name: quote_untrusted(name),
        });
    }

    let key = parsed.select_key(keys, true)?;
    parsed.verify_signature(key)?;

    parsed
        .payload_as::<CheckpointPayload>()
        .map_err(|source| CheckpointError::InvalidPayload { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt_svid::{self, JwtSvidClaims};
    use crate::signing::Algorithm;
    use crate::test_support::forge;
    use serde_json::json;

    const HEAD: &str = "3f0a0d6c1b5e4c2f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a69";

    fn key() -> SigningKey {
        SigningKey::generate(Algorithm::ES256, "audit-1").unwrap()
    }

    #[test]
    fn checkpoint_round_trips() {
        let key = key();

        let jws = sign_checkpoint(&key, 42, HEAD, "2026-01-02T03:04:05Z").unwrap();
        let payload = verify_checkpoint(&jws, &[key.verifying_key().unwrap()]).unwrap();

        assert_eq!(
            payload,
            CheckpointPayload {
                seq: 42,
                head_hash: HEAD.to_owned(),
                time: "2026-01-02T03:04:05Z".to_owned(),
            }
        );
    }

    #[test]
    fn checkpoint_with_changed_seq_fails() {
        let key = key();
        let jws = sign_checkpoint(&key, 42, HEAD, "2026-01-02T03:04:05Z").unwrap();
        let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
        parts[1] = jws::encode_part(
            json!({"seq": 41, "head_hash": HEAD, "time": "2026-01-02T03:04:05Z"})
                .to_string()
                .as_bytes(),
        );
        let changed = parts.join(".");

        assert!(matches!(
            verify_checkpoint(&changed, &[key.verifying_key().unwrap()]),
            Err(CheckpointError::Jws(JwsError::InvalidSignature { .. }))
        ));
    }

    #[test]
    fn checkpoint_signed_by_other_key_fails() {
        let signer = key();
        let other = SigningKey::generate(Algorithm::ES256, "audit-1").unwrap();
        let jws = sign_checkpoint(&signer, 1, HEAD, "2026-01-02T03:04:05Z").unwrap();

        assert!(matches!(
            verify_checkpoint(&jws, &[other.verifying_key().unwrap()]),
            Err(CheckpointError::Jws(JwsError::InvalidSignature { .. }))
        ));
    }

    #[test]
    fn jwt_svid_is_not_accepted_as_checkpoint() {
        let key = key();
        let claims = JwtSvidClaims {
            sub: "spiffe://example.org/a".to_owned(),
            aud: vec!["x".to_owned()],
            exp: 200,
            iat: 100,
            iss: "https://mayfly.example".to_owned(),
            jti: "j".to_owned(),
        };
        let token = jwt_svid::mint(&key, &claims).unwrap();

        assert!(matches!(
            verify_checkpoint(&token, &[key.verifying_key().unwrap()]),
            Err(CheckpointError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn checkpoint_with_extra_header_is_rejected() {
        let key = key();
        let header = json!({"alg": "ES256", "kid": "audit-1", "jku": "https://attacker.example"});
        let payload = json!({"seq": 1, "head_hash": HEAD, "time": "t"});
        let jws = forge(&key, &header, &payload);

        assert!(matches!(
            verify_checkpoint(&jws, &[key.verifying_key().unwrap()]),
            Err(CheckpointError::DisallowedHeader { .. })
        ));
    }
}
