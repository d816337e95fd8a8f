//! Public keys as JSON Web Keys (RFC 7517): the JWKS that Mayfly publishes, and the key sets of
//! other issuers, parsed key by key into [`VerifyingKey`]s.

mod verifying_key;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use verifying_key::{JwkError, KeyType, VerifyingKey};

use crate::jws::quote_untrusted;

/// `use` value of a key for signature verification (RFC 7517).
pub const USE_SIG: &str = "sig";

/// `use` value of a JWT-SVID key in a SPIFFE trust bundle.
pub const USE_JWT_SVID: &str = "jwt-svid";

/// A public JSON Web Key of type EC or RSA.
///
/// Absent members are left out when serialized. Members this struct does not name (`x5c`,
/// `key_ops` and others) are ignored when deserializing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC` or `RSA`.
    pub kty: String,
    /// Key id, matched against a token's `kid` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The only JWS algorithm the key may verify, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use: `sig` for signatures, `jwt-svid` in SPIFFE bundles, `enc` for encryption.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Curve of an EC key: `P-256` or `P-384`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// X coordinate of an EC key, unpadded base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Y coordinate of an EC key, unpadded base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Modulus of an RSA key, unpadded base64url, big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// Public exponent of an RSA key, unpadded base64url, big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// Builds the OIDC discovery JWKS `{"keys": [...]}` from Mayfly's public keys.
///
/// Every published key gets `use: "sig"`. A key without `kid` or `alg` is left out, because
/// relying parties select keys by `kid` and some reject keys without `alg`. Keys from
/// [`SigningKey::public_jwk`](crate::signing::SigningKey::public_jwk) always have both.
pub fn jwks_document(keys: &[Jwk]) -> Value {
    let published: Vec<Jwk> = keys
        .iter()
        .filter(|key| key.kid.is_some() && key.alg.is_some())
        .map(|key| Jwk {
            key_use: Some(USE_SIG.to_owned()),
            ..key.clone()
        })
        .collect();

    json!({ "keys": published })
}

/// Parses a JWK Set key by key into verifying keys.
///
/// A key that cannot be used is skipped with a reason instead of failing the whole set, so one
/// unusual key at an issuer does not block its other keys. Skipped keys:
/// - entries that are not objects, and keys with missing or malformed members;
/// - unknown `kty` or `crv`, a `use` other than `sig` or `jwt-svid`, `key_ops` without `verify`;
/// - an `alg` outside [`JwsAlgorithm`](crate::jws::JwsAlgorithm) or unfit for the key;
/// - RSA moduli outside 2048 to 8192 bits;
/// - a repeated `kid`, because the first key with that `kid` is kept.
///
/// Returns the usable keys and one message per skipped key.
pub fn parse_jwk_set(value: &Value) -> (Vec<VerifyingKey>, Vec<String>) {
    let Some(entries) = value.get("keys").and_then(Value::as_array) else {
        return (Vec::new(), vec!["key set has no \"keys\" array".to_owned()]);
    };

    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match parse_entry(entry) {
            Ok(key) if has_duplicate_kid(&keys, &key) => {
                skipped.push(format!(
                    "key {index} ({}): skipped: an earlier key has the same kid",
                    describe_entry(entry)
                ));
            }
            Ok(key) => keys.push(key),
            Err(reason) => {
                skipped.push(format!(
                    "key {index} ({}): skipped: {reason}",
                    describe_entry(entry)
                ));
            }
        }
    }

    (keys, skipped)
}

fn parse_entry(entry: &Value) -> Result<VerifyingKey, JwkError> {
    if !entry.is_object() {
        return Err(JwkError::NotAnObject);
    }
    check_key_ops(entry)?;

    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|error| JwkError::Malformed {
        reason: error.to_string(),
    })?;
    VerifyingKey::from_jwk(&jwk)
}

/// Rejects a key whose `key_ops` (RFC 7517 section 4.3) is present but does not allow `verify`.
fn check_key_ops(entry: &Value) -> Result<(), JwkError> {
    let Some(operations) = entry.get("key_ops") else {
        return Ok(());
    };
    let allows_verify = operations
        .as_array()
        .is_some_and(|list| list.iter().any(|op| op.as_str() == Some("verify")));

    if allows_verify {
        Ok(())
    } else {
        Err(JwkError::KeyOperations)
    }
}

fn has_duplicate_kid(keys: &[VerifyingKey], key: &VerifyingKey) -> bool {
    key.kid()
        .is_some_and(|kid| keys.iter().any(|other| other.kid() == Some(kid)))
}

fn describe_entry(entry: &Value) -> String {
    match entry.get("kid").and_then(Value::as_str) {
        Some(kid) => format!("kid {}", quote_untrusted(kid)),
        None => "no kid".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{Algorithm, SigningKey};

    fn ec_jwk(kid: &str) -> Value {
        let key = SigningKey::generate(Algorithm::ES256, kid).unwrap();
        serde_json::to_value(key.public_jwk()).unwrap()
    }

    #[test]
    fn jwks_document_sets_use_sig_on_every_key() {
        let first = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
        let second = SigningKey::generate(Algorithm::ES384, "k2").unwrap();
        let mut without_use = second.public_jwk();
        without_use.key_use = None;

        let document = jwks_document(&[first.public_jwk(), without_use]);

        let keys = document["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for key in keys {
            assert_eq!(key["use"], "sig");
            assert!(key["kid"].is_string());
            assert!(key["kty"].is_string());
            assert!(key["alg"].is_string());
        }
    }

    #[test]
    fn jwks_document_omits_incomplete_keys() {
        let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
        let mut no_kid = key.public_jwk();
        no_kid.kid = None;
        let mut no_alg = key.public_jwk();
        no_alg.alg = None;

        let document = jwks_document(&[no_kid, no_alg, key.public_jwk()]);

        assert_eq!(document["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn jwk_serialization_skips_absent_members() {
        let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();

        let value = serde_json::to_value(key.public_jwk()).unwrap();

        let object = value.as_object().unwrap();
        assert!(!object.contains_key("n"));
        assert!(!object.contains_key("e"));
        assert!(object.values().all(|member| !member.is_null()));
    }

    #[test]
    fn parse_jwk_set_skips_unusable_keys() {
        let set = json!({"keys": [
            ec_jwk("good-1"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "no-y", "crv": "P-256", "x": "AA"},
            "not an object",
            ec_jwk("good-2"),
        ]});

        let (keys, skipped) = parse_jwk_set(&set);

        let kids: Vec<_> = keys.iter().map(|key| key.kid().unwrap()).collect();
        assert_eq!(kids, ["good-1", "good-2"]);
        assert_eq!(skipped.len(), 5, "{skipped:#?}");
        assert!(skipped[0].contains("\"hmac\""), "{}", skipped[0]);
        assert!(skipped[0].contains("kty"), "{}", skipped[0]);
        assert!(skipped[2].contains("crv"), "{}", skipped[2]);
        assert!(skipped[3].contains("missing member y"), "{}", skipped[3]);
    }

    #[test]
    fn parse_jwk_set_skips_encryption_keys() {
        let mut encryption = ec_jwk("enc-key");
        encryption["use"] = json!("enc");
        let mut svid = ec_jwk("svid-key");
        svid["use"] = json!("jwt-svid");

        let (keys, skipped) = parse_jwk_set(&json!({"keys": [encryption, svid]}));

        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), Some("svid-key"));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("\"enc\""), "{}", skipped[0]);
    }

    #[test]
    fn parse_jwk_set_honours_key_ops() {
        let mut sign_only = ec_jwk("sign-only");
        sign_only["key_ops"] = json!(["sign"]);
        let mut verify = ec_jwk("verify");
        verify["key_ops"] = json!(["verify"]);

        let (keys, skipped) = parse_jwk_set(&json!({"keys": [sign_only, verify]}));

        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), Some("verify"));
        assert!(skipped[0].contains("key_ops"), "{}", skipped[0]);
    }

    #[test]
    fn parse_jwk_set_keeps_first_of_duplicate_kids() {
        let first = ec_jwk("same");
        let second = ec_jwk("same");

        let (keys, skipped) = parse_jwk_set(&json!({"keys": [first.clone(), second]}));

        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].jwk().x.as_deref(), first["x"].as_str());
        assert!(skipped[0].contains("same kid"), "{}", skipped[0]);
    }

    #[test]
    fn parse_jwk_set_skips_mistyped_members() {
        let mut numeric_kid = ec_jwk("k");
        numeric_kid["kid"] = json!(5);

        let (keys, skipped) = parse_jwk_set(&json!({"keys": [numeric_kid]}));

        assert!(keys.is_empty());
        assert!(skipped[0].contains("malformed"), "{}", skipped[0]);
    }

    #[test]
    fn parse_jwk_set_without_keys_array_reports_why() {
        let (keys, skipped) = parse_jwk_set(&json!({"kty": "EC"}));

        assert!(keys.is_empty());
        assert_eq!(skipped, ["key set has no \"keys\" array"]);
    }

    #[test]
    fn parse_jwk_set_accepts_empty_set() {
        let (keys, skipped) = parse_jwk_set(&json!({"keys": []}));

        assert!(keys.is_empty());
        assert!(skipped.is_empty());
    }
}
