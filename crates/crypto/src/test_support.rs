//! Helpers for unit tests that build tokens the signing API refuses to produce.

use serde_json::Value;

use crate::jws::encode_part;
use crate::signing::SigningKey;

/// Signs `payload` under an arbitrary `header` with `key`, as an attacker holding the key could.
pub(crate) fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        encode_part(header.to_string().as_bytes()),
        encode_part(payload.to_string().as_bytes())
    );
    let signature = key.sign_bytes(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", encode_part(&signature))
}

/// Builds an unsigned token with `header` and `payload` and an HMAC-SHA256 signature keyed by
/// `secret`.
pub(crate) fn forge_hs256(header: &Value, payload: &Value, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        encode_part(header.to_string().as_bytes()),
        encode_part(payload.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", encode_part(tag.as_ref()))
}
