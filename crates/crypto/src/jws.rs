//! Compact JWS (RFC 7515) parsing, key selection and signature checks shared by the JWT-SVID,
//! evidence and checkpoint verifiers.
//!
//! Each verifier calls these steps in the same order. It splits the token and decodes the header,
//! checks `alg` against [`JwsAlgorithm`] and applies its own header rules. Then it selects the
//! key, checks that `alg` fits the key and verifies the signature. Only then does it decode the
//! payload.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::jwk::{KeyType, VerifyingKey};

/// Maximum number of characters of an untrusted value (issuer, audience, kid, alg) copied into
/// an error message.
const MAX_QUOTED_CHARS: usize = 96;

/// JWS algorithms accepted when verifying: RSA PKCS#1 v1.5, ECDSA on P-256 and P-384, and RSA-PSS.
///
/// `none`, the HMAC algorithms (HS256 and so on) and EdDSA are absent on purpose: the JWT-SVID
/// standard forbids them, and accepting HMAC would let a public key serve as a shared secret.
/// ES512 is absent because the JWT libraries used by common relying parties do not support it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384 and MGF1 with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512 and MGF1 with SHA-512.
    PS512,
}

impl JwsAlgorithm {
    /// Every accepted algorithm.
    pub const ALL: [JwsAlgorithm; 8] = [
        JwsAlgorithm::RS256,
        JwsAlgorithm::RS384,
        JwsAlgorithm::RS512,
        JwsAlgorithm::ES256,
        JwsAlgorithm::ES384,
        JwsAlgorithm::PS256,
        JwsAlgorithm::PS384,
        JwsAlgorithm::PS512,
    ];

    /// Returns the `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::RS256 => "RS256",
            JwsAlgorithm::RS384 => "RS384",
            JwsAlgorithm::RS512 => "RS512",
            JwsAlgorithm::ES256 => "ES256",
            JwsAlgorithm::ES384 => "ES384",
            JwsAlgorithm::PS256 => "PS256",
            JwsAlgorithm::PS384 => "PS384",
            JwsAlgorithm::PS512 => "PS512",
        }
    }

    /// Parses an `alg` header value; the match is case-sensitive, as in RFC 7518.
    pub fn parse(value: &str) -> Option<JwsAlgorithm> {
        JwsAlgorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == value)
    }

    /// Returns the only key type that can verify this algorithm.
    pub fn key_type(self) -> KeyType {
        match self {
            JwsAlgorithm::ES256 => KeyType::EcP256,
            JwsAlgorithm::ES384 => KeyType::EcP384,
            JwsAlgorithm::RS256
            | JwsAlgorithm::RS384
            | JwsAlgorithm::RS512
            | JwsAlgorithm::PS256
            | JwsAlgorithm::PS384
            | JwsAlgorithm::PS512 => KeyType::Rsa,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from the steps every compact JWS goes through: format, `alg`, key choice, signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// The token does not have exactly three dot-separated parts.
    #[error("token must have three base64url parts separated by '.', found {found} parts")]
    PartCount {
        /// Number of parts found.
        found: usize,
    },
    /// A part is not unpadded base64url.
    #[error("token {part} is not valid unpadded base64url")]
    InvalidBase64 {
        /// `header`, `payload` or `signature`.
        part: &'static str,
    },
    /// The header or payload is not a JSON object.
    #[error("token {part} is not a JSON object: {reason}")]
    InvalidJson {
        /// `header` or `payload`.
        part: &'static str,
        /// Kind and position of the JSON error, without the parsed text.
        reason: String,
    },
    /// The header has no `alg`.
    #[error("token header has no alg")]
    MissingAlgorithm,
    /// A header field that must be a string is not one.
    #[error("token header {field} must be a string")]
    HeaderNotString {
        /// Name of the header field.
        field: &'static str,
    },
    /// The header's `alg` is not in the accepted list.
    #[error(
        "token header alg {alg} is not allowed; allowed algorithms are RS256, RS384, RS512, ES256, ES384, PS256, PS384 and PS512"
    )]
    UnsupportedAlgorithm {
        /// The `alg` value, quoted and shortened.
        alg: String,
    },
    /// The header has no `kid`, but the verifier selects keys only by `kid`.
    #[error("token header has no kid, so no key can be selected")]
    MissingKid,
    /// No key in the key set has the token's `kid`.
    #[error(
        "no key with kid {kid} in the key set; refresh the key set if the issuer has rotated its keys"
    )]
    UnknownKid {
        /// The token's `kid`, quoted and shortened.
        kid: String,
    },
    /// The token has no `kid` and no key in the set fits its `alg`.
    #[error("token header has no kid and no key in the key set fits alg {alg}")]
    NoKeyForAlgorithm {
        /// The token's `alg`.
        alg: JwsAlgorithm,
    },
    /// The token has no `kid` and several keys fit its `alg`, so the key is ambiguous.
    #[error(
        "token header has no kid and {count} keys in the key set fit alg {alg}; the issuer must set kid"
    )]
    AmbiguousKey {
        /// The token's `alg`.
        alg: JwsAlgorithm,
        /// Number of keys that fit.
        count: usize,
    },
    /// The token's `alg` does not fit the selected key's type or the key's declared `alg`.
    #[error("token alg {alg} does not fit key {kid}, which is {key}")]
    AlgorithmMismatch {
        /// The token's `alg`.
        alg: JwsAlgorithm,
        /// The key's `kid`, quoted, or `(none)`.
        kid: String,
        /// The key's type and the algorithms it accepts.
        key: String,
    },
    /// The signature does not verify with the selected key.
    #[error("token signature does not verify with key {kid}")]
    InvalidSignature {
        /// The key's `kid`, quoted, or `(none)`.
        kid: String,
    },
}

/// A compact JWS whose header has been decoded and whose `alg` is accepted, but whose signature
/// has not yet been checked.
pub(crate) struct CompactJws<'a> {
    /// The decoded header.
    pub header: Map<String, Value>,
    /// The accepted `alg` from the header.
    pub alg: JwsAlgorithm,
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

/// Splits `token`, decodes its header and checks `alg` against [`JwsAlgorithm`].
pub(crate) fn parse_compact(token: &str) -> Result<CompactJws<'_>, JwsError> {
    let found = token.split('.').count();
    let mut parts = token.splitn(3, '.');
    let (Some(header), Some(payload), Some(signature), 3) =
        (parts.next(), parts.next(), parts.next(), found)
    else {
        return Err(JwsError::PartCount { found });
    };

    let header_bytes = decode_part(header, "header")?;
    let header_json = parse_object(&header_bytes, "header")?;

    let alg = match header_json.get("alg") {
        None => return Err(JwsError::MissingAlgorithm),
        Some(Value::String(alg)) => {
            JwsAlgorithm::parse(alg).ok_or_else(|| JwsError::UnsupportedAlgorithm {
                alg: quote_untrusted(alg),
            })?
        }
        Some(_) => return Err(JwsError::HeaderNotString { field: "alg" }),
    };

    let signing_input_len = header.len() + 1 + payload.len();
    Ok(CompactJws {
        header: header_json,
        alg,
        signing_input: &token[..signing_input_len],
        payload,
        signature,
    })
}

impl CompactJws<'_> {
    /// Returns a string header field, or an error when it is present but not a string.
    pub fn header_str(&self, field: &'static str) -> Result<Option<&str>, JwsError> {
        match self.header.get(field) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(JwsError::HeaderNotString { field }),
        }
    }

    /// Selects the key named by the header's `kid` and checks that `alg` fits it.
    ///
    /// When `kid_required` is false and the token has no `kid`, the single key that fits `alg`
    /// is used. No such key, or more than one, is an error. Keys named by the token itself
    /// (`jku`, `x5u`, `jwk`) are never consulted.
    pub fn select_key<'k>(
        &self,
        keys: &'k [VerifyingKey],
        kid_required: bool,
    ) -> Result<&'k VerifyingKey, JwsError> {
        let key = match self.header_str("kid")? {
            Some(kid) => keys
                .iter()
                .find(|key| key.kid() == Some(kid))
                .ok_or_else(|| JwsError::UnknownKid {
                    kid: quote_untrusted(kid),
                })?,
            None if kid_required => return Err(JwsError::MissingKid),
            None => self.only_key_for_algorithm(keys)?,
        };

        if !key.supports(self.alg) {
            return Err(JwsError::AlgorithmMismatch {
                alg: self.alg,
                kid: describe_kid(key.kid()),
                key: key.describe(),
            });
        }
        Ok(key)
    }

    /// Verifies the signature over the header and payload with `key`.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), JwsError> {
        let signature = decode_part(self.signature, "signature")?;

        if key.verify(self.alg, self.signing_input.as_bytes(), &signature) {
            Ok(())
        } else {
            Err(JwsError::InvalidSignature {
                kid: describe_kid(key.kid()),
            })
        }
    }

    /// Decodes the payload as a JSON object. Call only after the signature has been verified.
    pub fn payload_object(&self) -> Result<Map<String, Value>, JwsError> {
        let bytes = decode_part(self.payload, "payload")?;
        parse_object(&bytes, "payload")
    }

    /// Decodes the payload into `T`. Call only after the signature has been verified.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, JwsError> {
        let bytes = decode_part(self.payload, "payload")?;
        serde_json::from_slice(&bytes).map_err(|error| JwsError::InvalidJson {
            part: "payload",
            reason: describe_json_error(&error),
        })
    }

    fn only_key_for_algorithm<'k>(
        &self,
        keys: &'k [VerifyingKey],
    ) -> Result<&'k VerifyingKey, JwsError> {
        let mut fitting = keys.iter().filter(|key| key.supports(self.alg));
        match (fitting.next(), fitting.count()) {
            (Some(key), 0) => Ok(key),
            (None, _) => Err(JwsError::NoKeyForAlgorithm { alg: self.alg }),
            (Some(_), others) => Err(JwsError::AmbiguousKey {
                alg: self.alg,
                count: others + 1,
            }),
        }
    }
}

/// Encodes bytes as unpadded base64url, the encoding of every JWS part.
pub(crate) fn encode_part(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Quotes an untrusted value for an error message, escaping control characters and cutting it to
/// a bounded length so that a hostile token cannot flood logs and audit events.
pub(crate) fn quote_untrusted(value: &str) -> String {
    if value.chars().count() <= MAX_QUOTED_CHARS {
        return format!("{value:?}");
    }
    let prefix: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{prefix:?}...")
}

fn describe_kid(kid: Option<&str>) -> String {
    kid.map_or_else(|| "(none)".to_owned(), quote_untrusted)
}

fn decode_part(text: &str, part: &'static str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwsError::InvalidBase64 { part })
}

fn parse_object(bytes: &[u8], part: &'static str) -> Result<Map<String, Value>, JwsError> {
    serde_json::from_slice(bytes).map_err(|error| JwsError::InvalidJson {
        part,
        reason: describe_json_error(&error),
    })
}

/// Describes a JSON error by kind and position only, because serde_json's own message can quote
/// pieces of the input.
fn describe_json_error(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected structure or type",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_with_header(header: &str) -> String {
        format!(
            "{}.{}.{}",
            encode_part(header.as_bytes()),
            encode_part(b"{}"),
            encode_part(b"sig")
        )
    }

    #[test]
    fn algorithm_parse_round_trips() {
        for alg in JwsAlgorithm::ALL {
            assert_eq!(JwsAlgorithm::parse(alg.as_str()), Some(alg));
        }
    }

    #[test]
    fn algorithm_parse_rejects_disallowed_names() {
        for alg in [
            "none", "None", "HS256", "HS384", "HS512", "EdDSA", "ES512", "es256", "",
        ] {
            assert_eq!(JwsAlgorithm::parse(alg), None, "{alg}");
        }
    }

    #[test]
    fn parse_compact_counts_parts() {
        for (token, found) in [("a.b", 2), ("a.b.c.d", 4), ("abc", 1), ("a.b.c.d.e", 5)] {
            assert_eq!(
                parse_compact(token).err(),
                Some(JwsError::PartCount { found }),
                "{token}"
            );
        }
    }

    #[test]
    fn parse_compact_rejects_padded_base64() {
        let header = format!("{}=", encode_part(br#"{"alg":"ES256"}"#));
        let token = format!("{header}.e30.c2ln");

        assert_eq!(
            parse_compact(&token).err(),
            Some(JwsError::InvalidBase64 { part: "header" })
        );
    }

    #[test]
    fn parse_compact_rejects_non_object_header() {
        let token = token_with_header(r#"["alg","ES256"]"#);

        assert!(matches!(
            parse_compact(&token).err(),
            Some(JwsError::InvalidJson { part: "header", .. })
        ));
    }

    #[test]
    fn json_error_reason_does_not_quote_input() {
        let token = token_with_header(r#"{"alg": "secret-looking-value"#);

        let message = parse_compact(&token).err().unwrap().to_string();

        assert!(!message.contains("secret-looking-value"), "{message}");
    }

    #[test]
    fn parse_compact_requires_string_alg() {
        assert_eq!(
            parse_compact(&token_with_header(r#"{"kid":"k"}"#)).err(),
            Some(JwsError::MissingAlgorithm)
        );
        assert_eq!(
            parse_compact(&token_with_header(r#"{"alg":256}"#)).err(),
            Some(JwsError::HeaderNotString { field: "alg" })
        );
    }

    #[test]
    fn parse_compact_names_rejected_alg() {
        let error = parse_compact(&token_with_header(r#"{"alg":"none"}"#))
            .err()
            .unwrap();

        assert_eq!(
            error,
            JwsError::UnsupportedAlgorithm {
                alg: "\"none\"".to_owned()
            }
        );
    }

    #[test]
    fn parse_compact_keeps_signing_input() {
        let token = token_with_header(r#"{"alg":"ES256"}"#);

        let jws = parse_compact(&token).unwrap();

        let expected_len = token.rfind('.').unwrap();
        assert_eq!(jws.signing_input, &token[..expected_len]);
        assert_eq!(jws.alg, JwsAlgorithm::ES256);
    }

    #[test]
    fn quote_untrusted_escapes_and_shortens() {
        assert_eq!(quote_untrusted("a\nb"), "\"a\\nb\"");

        let long = "x".repeat(500);
        let quoted = quote_untrusted(&long);
        assert!(quoted.len() < 110, "{}", quoted.len());
        assert!(quoted.ends_with("..."));
    }
}
