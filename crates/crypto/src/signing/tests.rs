use super::*;
use serde_json::{Value, json};

fn decode_json(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn algorithm_parse_round_trips_and_defaults_to_es256() {
    for alg in Algorithm::ALL {
        assert_eq!(Algorithm::parse(alg.as_str()).unwrap(), alg);
        assert_eq!(alg.to_string().parse::<Algorithm>().unwrap(), alg);
    }
    assert_eq!(Algorithm::default(), Algorithm::ES256);
    assert!(matches!(
        Algorithm::parse("HS256"),
        Err(SigningError::UnknownAlgorithm { .. })
    ));
    assert!(Algorithm::parse("es256").is_err());
}

#[test]
fn algorithm_serializes_as_alg_name() {
    assert_eq!(serde_json::to_value(Algorithm::PS256).unwrap(), "PS256");
    assert_eq!(
        serde_json::from_value::<Algorithm>(json!("ES384")).unwrap(),
        Algorithm::ES384
    );
}

#[test]
fn sign_compact_header_is_exactly_alg_kid_typ() {
    let key = SigningKey::generate(Algorithm::ES256, "key-1").unwrap();

    let token = key.sign_compact(&json!({"sub": "x"})).unwrap();

    let header_part = token.split('.').next().unwrap();
    let header_text = String::from_utf8(URL_SAFE_NO_PAD.decode(header_part).unwrap()).unwrap();
    assert_eq!(header_text, r#"{"alg":"ES256","kid":"key-1","typ":"JWT"}"#);
}

#[test]
fn sign_compact_signature_has_fixed_length() {
    for (alg, len) in [(Algorithm::ES256, 64), (Algorithm::ES384, 96)] {
        let key = SigningKey::generate(alg, "k").unwrap();

        let token = key.sign_compact(&json!({})).unwrap();

        let signature = URL_SAFE_NO_PAD
            .decode(token.rsplit('.').next().unwrap())
            .unwrap();
        assert_eq!(signature.len(), len, "{alg}");
        assert_eq!(key.signature_len(), len, "{alg}");
    }
}

#[test]
fn sign_compact_verifies_with_own_verifying_key() {
    for alg in [Algorithm::ES256, Algorithm::ES384] {
        let key = SigningKey::generate(alg, "k").unwrap();
        let verifying = key.verifying_key().unwrap();

        let token = key.sign_compact(&json!({"n": 1})).unwrap();

        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        assert!(verifying.verify(alg.jws_algorithm(), input.as_bytes(), &signature));
        assert_eq!(
            decode_json(token.split('.').nth(1).unwrap()),
            json!({"n": 1})
        );
    }
}

#[test]
fn pkcs8_round_trip_keeps_public_key_and_kid() {
    let key = SigningKey::generate(Algorithm::ES384, "k1").unwrap();

    let der = key.to_pkcs8().unwrap();
    let loaded = SigningKey::from_pkcs8(Algorithm::ES384, "k1", &der).unwrap();

    assert_eq!(loaded.public_jwk(), key.public_jwk());
    assert_eq!(loaded.kid(), "k1");
}

#[test]
fn from_pkcs8_rejects_key_of_other_curve() {
    let key = SigningKey::generate(Algorithm::ES384, "k1").unwrap();
    let der = key.to_pkcs8().unwrap();

    assert!(matches!(
        SigningKey::from_pkcs8(Algorithm::ES256, "k1", &der),
        Err(SigningError::InvalidPkcs8 {
            alg: Algorithm::ES256,
            ..
        })
    ));
}

#[test]
fn from_pkcs8_rejects_garbage() {
    assert!(matches!(
        SigningKey::from_pkcs8(Algorithm::RS256, "k1", b"not a key"),
        Err(SigningError::InvalidPkcs8 { .. })
    ));
}

#[test]
fn invalid_kids_are_rejected() {
    let too_long = "a".repeat(MAX_KID_LEN + 1);
    for kid in [
        "",
        "has space",
        "quote\"",
        "slash/",
        "ünï",
        too_long.as_str(),
    ] {
        assert!(
            matches!(
                SigningKey::generate(Algorithm::ES256, kid),
                Err(SigningError::InvalidKid { .. })
            ),
            "{kid:?}"
        );
    }
    assert!(SigningKey::generate(Algorithm::ES256, "a".repeat(MAX_KID_LEN)).is_ok());
}

#[test]
fn generate_kid_is_url_safe_and_unique() {
    let first = generate_kid().unwrap();
    let second = generate_kid().unwrap();

    assert_eq!(first.len(), 16);
    assert_ne!(first, second);
    assert!(SigningKey::generate(Algorithm::ES256, first).is_ok());
}

#[test]
fn public_jwk_has_ec_members() {
    let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();

    let jwk = key.public_jwk();

    assert_eq!(jwk.kty, "EC");
    assert_eq!(jwk.crv.as_deref(), Some("P-256"));
    assert_eq!(jwk.alg.as_deref(), Some("ES256"));
    assert_eq!(jwk.key_use.as_deref(), Some("sig"));
    assert_eq!(URL_SAFE_NO_PAD.decode(jwk.x.unwrap()).unwrap().len(), 32);
    assert_eq!(URL_SAFE_NO_PAD.decode(jwk.y.unwrap()).unwrap().len(), 32);
    assert!(jwk.n.is_none());
}

#[test]
fn debug_output_hides_private_key() {
    let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
    let der = key.to_pkcs8().unwrap();

    let printed = format!("{key:?}");

    assert!(printed.contains("<redacted>"));
    assert!(printed.contains("k1"));
    assert!(!printed.contains(&hex::encode(der.as_slice())));
    assert!(!printed.contains(&URL_SAFE_NO_PAD.encode(der.as_slice())));
}
