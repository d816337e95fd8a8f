use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;
use crate::jwk::VerifyingKey;
use crate::signing::Algorithm;
use crate::test_support::{forge, forge_hs256};

const NOW: i64 = 1_800_000_000;
const SUB: &str = "spiffe://example.org/ns/payments/sa/api";

fn claims() -> JwtSvidClaims {
    JwtSvidClaims {
        sub: SUB.to_owned(),
        aud: vec!["payments-api".to_owned()],
        exp: NOW + 300,
        iat: NOW,
        iss: "https://mayfly.example".to_owned(),
        jti: new_jti().unwrap(),
    }
}

fn key(alg: Algorithm, kid: &str) -> (SigningKey, Vec<VerifyingKey>) {
    let key = SigningKey::generate(alg, kid).unwrap();
    let verifying = vec![key.verifying_key().unwrap()];
    (key, verifying)
}

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn payload() -> Value {
    serde_json::to_value(claims()).unwrap()
}

#[test]
fn minted_header_has_exactly_three_members() {
    let (key, _) = key(Algorithm::ES256, "k1");

    let token = mint(&key, &claims()).unwrap();

    let header = decode_part(&token, 0);
    assert_eq!(header, json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}));
    assert_eq!(header.as_object().unwrap().len(), 3);
}

#[test]
fn minted_exp_and_iat_are_json_integers() {
    let (key, _) = key(Algorithm::ES256, "k1");

    let token = mint(&key, &claims()).unwrap();

    let payload = decode_part(&token, 1);
    assert!(payload["exp"].is_i64(), "{}", payload["exp"]);
    assert!(payload["iat"].is_i64(), "{}", payload["iat"]);
    assert_eq!(payload["exp"], json!(NOW + 300));
}

#[test]
fn minted_single_audience_is_array() {
    let (key, _) = key(Algorithm::ES256, "k1");

    let token = mint(&key, &claims()).unwrap();

    assert_eq!(decode_part(&token, 1)["aud"], json!(["payments-api"]));
}

#[test]
fn mint_then_validate_round_trips() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let claims = claims();

    let token = mint(&key, &claims).unwrap();
    let validated = validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap();

    assert_eq!(validated.sub.as_str(), claims.sub);
    assert_eq!(validated.aud, claims.aud);
    assert_eq!(validated.exp, claims.exp);
    assert_eq!(validated.iat, Some(claims.iat));
    assert_eq!(validated.iss.as_deref(), Some(claims.iss.as_str()));
    assert_eq!(validated.jti.as_deref(), Some(claims.jti.as_str()));
    assert_eq!(validated.kid, "k1");
    assert_eq!(validated.claims["sub"], SUB);
}

#[test]
fn mint_rejects_empty_audience_and_backwards_lifetime() {
    let (key, _) = key(Algorithm::ES256, "k1");

    let mut no_audience = claims();
    no_audience.aud.clear();
    assert!(matches!(
        mint(&key, &no_audience),
        Err(JwtSvidError::Claim(ClaimError::Invalid {
            claim: "aud",
            ..
        }))
    ));

    let mut backwards = claims();
    backwards.exp = backwards.iat;
    assert!(matches!(
        mint(&key, &backwards),
        Err(JwtSvidError::Claim(ClaimError::Invalid {
            claim: "exp",
            ..
        }))
    ));

    let mut no_subject = claims();
    no_subject.sub.clear();
    assert_eq!(
        mint(&key, &no_subject).unwrap_err(),
        JwtSvidError::Claim(ClaimError::Missing { claim: "sub" })
    );
}

#[test]
fn claims_deserialize_string_audience() {
    let mut value = payload();
    value["aud"] = json!("payments-api");

    let parsed: JwtSvidClaims = serde_json::from_value(value).unwrap();

    assert_eq!(parsed.aud, ["payments-api"]);
}

#[test]
fn validate_accepts_string_audience_and_jose_typ() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let mut payload = payload();
    payload["aud"] = json!("payments-api");
    let header = json!({"alg": "ES256", "kid": "k1", "typ": "JOSE"});

    let token = forge(&key, &header, &payload);

    assert!(validate_jwt_svid(&token, &keys, "payments-api", NOW).is_ok());
}

#[test]
fn validate_accepts_missing_typ_and_optional_claims() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let header = json!({"alg": "ES256", "kid": "k1"});
    let payload = json!({"sub": SUB, "aud": ["a"], "exp": NOW + 10});

    let validated = validate_jwt_svid(&forge(&key, &header, &payload), &keys, "a", NOW).unwrap();

    assert_eq!(validated.iat, None);
    assert_eq!(validated.iss, None);
    assert_eq!(validated.jti, None);
}

#[test]
fn tampered_signature_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let token = mint(&key, &claims()).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    signature[10] ^= 0x40;
    let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature));

    assert_eq!(
        validate_jwt_svid(&tampered, &keys, "payments-api", NOW).unwrap_err(),
        JwtSvidError::Jws(JwsError::InvalidSignature {
            kid: "\"k1\"".to_owned()
        })
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let token = mint(&key, &claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = payload();
    payload["sub"] = json!("spiffe://example.org/admin");
    let forged_payload = jws::encode_part(payload.to_string().as_bytes());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);

    assert!(matches!(
        validate_jwt_svid(&tampered, &keys, "payments-api", NOW),
        Err(JwtSvidError::Jws(JwsError::InvalidSignature { .. }))
    ));
}

#[test]
fn token_from_unknown_kid_is_rejected() {
    let (attacker, _) = key(Algorithm::ES256, "other-kid");
    let (_, keys) = key(Algorithm::ES256, "k1");
    let token = mint(&attacker, &claims()).unwrap();

    assert_eq!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap_err(),
        JwtSvidError::Jws(JwsError::UnknownKid {
            kid: "\"other-kid\"".to_owned()
        })
    );
}

#[test]
fn same_kid_other_key_is_rejected() {
    let (attacker, _) = key(Algorithm::ES256, "k1");
    let (_, keys) = key(Algorithm::ES256, "k1");
    let token = mint(&attacker, &claims()).unwrap();

    assert!(matches!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW),
        Err(JwtSvidError::Jws(JwsError::InvalidSignature { .. }))
    ));
}

#[test]
fn token_without_kid_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let token = forge(&key, &json!({"alg": "ES256", "typ": "JWT"}), &payload());

    assert_eq!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap_err(),
        JwtSvidError::Jws(JwsError::MissingKid)
    );
}

#[test]
fn alg_none_is_rejected() {
    let (_, keys) = key(Algorithm::ES256, "k1");
    let header = jws::encode_part(br#"{"alg":"none","kid":"k1","typ":"JWT"}"#);
    let body = jws::encode_part(payload().to_string().as_bytes());

    for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
        assert!(
            matches!(
                validate_jwt_svid(&token, &keys, "payments-api", NOW),
                Err(JwtSvidError::Jws(
                    JwsError::UnsupportedAlgorithm { .. } | JwsError::PartCount { .. }
                ))
            ),
            "{token}"
        );
    }
}

#[test]
fn hs256_algorithm_confusion_is_rejected() {
    let (_, keys) = key(Algorithm::ES256, "k1");
    let public_jwk = serde_json::to_vec(keys[0].jwk()).unwrap();
    let header = json!({"alg": "HS256", "kid": "k1", "typ": "JWT"});

    let token = forge_hs256(&header, &payload(), &public_jwk);

    assert_eq!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap_err(),
        JwtSvidError::Jws(JwsError::UnsupportedAlgorithm {
            alg: "\"HS256\"".to_owned()
        })
    );
}

#[test]
fn eddsa_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let token = forge(&key, &json!({"alg": "EdDSA", "kid": "k1"}), &payload());

    assert!(matches!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW),
        Err(JwtSvidError::Jws(JwsError::UnsupportedAlgorithm { .. }))
    ));
}

#[test]
fn alg_not_matching_key_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let token = forge(&key, &json!({"alg": "ES384", "kid": "k1"}), &payload());

    assert!(matches!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW),
        Err(JwtSvidError::Jws(JwsError::AlgorithmMismatch {
            alg: crate::jws::JwsAlgorithm::ES384,
            ..
        }))
    ));
}

#[test]
fn extra_header_members_are_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let attacker_jwk = serde_json::to_value(keys[0].jwk()).unwrap();

    for (name, value) in [
        ("jwk", attacker_jwk),
        ("jku", json!("https://attacker.example/jwks")),
        ("x5u", json!("https://attacker.example/cert")),
        ("crit", json!(["exp"])),
        ("cty", json!("JWT")),
    ] {
        let mut header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        header[name] = value;
        let token = forge(&key, &header, &payload());

        assert_eq!(
            validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap_err(),
            JwtSvidError::DisallowedHeader {
                name: format!("{name:?}")
            },
            "{name}"
        );
    }
}

#[test]
fn other_typ_values_are_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");

    for typ in [json!("at+jwt"), json!("jwt"), json!("")] {
        let token = forge(
            &key,
            &json!({"alg": "ES256", "kid": "k1", "typ": typ}),
            &payload(),
        );

        assert!(
            matches!(
                validate_jwt_svid(&token, &keys, "payments-api", NOW),
                Err(JwtSvidError::InvalidType { .. })
            ),
            "{typ}"
        );
    }

    let token = forge(
        &key,
        &json!({"alg": "ES256", "kid": "k1", "typ": 1}),
        &payload(),
    );
    assert_eq!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap_err(),
        JwtSvidError::Jws(JwsError::HeaderNotString { field: "typ" })
    );
}

#[test]
fn expired_token_is_rejected_without_leeway() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let token = mint(&key, &claims()).unwrap();
    let exp = NOW + 300;

    assert!(validate_jwt_svid(&token, &keys, "payments-api", exp - 1).is_ok());
    assert_eq!(
        validate_jwt_svid(&token, &keys, "payments-api", exp).unwrap_err(),
        JwtSvidError::Expired { exp, now: exp }
    );
    assert!(validate_jwt_svid(&token, &keys, "payments-api", exp + 1).is_err());
}

#[test]
fn token_without_exp_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let mut payload = payload();
    payload.as_object_mut().unwrap().remove("exp");

    let token = forge(&key, &json!({"alg": "ES256", "kid": "k1"}), &payload);

    assert_eq!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap_err(),
        JwtSvidError::Claim(ClaimError::Missing { claim: "exp" })
    );
}

#[test]
fn wrong_audience_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");
    let token = mint(&key, &claims()).unwrap();

    let error = validate_jwt_svid(&token, &keys, "billing-api", NOW).unwrap_err();

    assert_eq!(
        error,
        JwtSvidError::AudienceMismatch {
            expected: "\"billing-api\"".to_owned(),
            actual: "[\"payments-api\"]".to_owned()
        }
    );
    let message = error.to_string();
    assert!(message.contains("billing-api"), "{message}");
    assert!(message.contains("payments-api"), "{message}");
}

#[test]
fn token_without_sub_is_rejected() {
    let (key, keys) = key(Algorithm::ES256, "k1");

    for sub in [
        None,
        Some(json!("")),
        Some(json!(7)),
        Some(json!("https://example.org/web")),
        Some(json!("spiffe://example.org/a/../b")),
    ] {
        let mut payload = payload();
        match sub {
            Some(value) => payload["sub"] = value,
            None => {
                payload.as_object_mut().unwrap().remove("sub");
            }
        }
        let token = forge(&key, &json!({"alg": "ES256", "kid": "k1"}), &payload);

        assert!(
            matches!(
                validate_jwt_svid(&token, &keys, "payments-api", NOW),
                Err(JwtSvidError::Claim(_))
            ),
            "{payload}"
        );
    }
}

#[test]
fn oversize_token_is_rejected_before_parsing() {
    let (_, keys) = key(Algorithm::ES256, "k1");
    let token = "a".repeat(MAX_JWT_SVID_BYTES + 1);

    assert_eq!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap_err(),
        JwtSvidError::TooLarge {
            size: MAX_JWT_SVID_BYTES + 1,
            max: MAX_JWT_SVID_BYTES
        }
    );
}

#[test]
fn rsa_rs256_and_ps256_round_trip() {
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let (key, keys) = key(alg, "rsa");

        let token = mint(&key, &claims()).unwrap();

        assert_eq!(decode_part(&token, 0)["alg"], alg.as_str());
        let validated = validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap();
        assert_eq!(validated.sub.as_str(), SUB, "{alg}");
    }
}

#[test]
fn new_jti_is_unique_and_url_safe() {
    let first = new_jti().unwrap();
    let second = new_jti().unwrap();

    assert_ne!(first, second);
    assert_eq!(first.len(), 22);
    assert!(
        first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[test]
fn mint_rejects_non_spiffe_subject() {
    let (key, _) = key(Algorithm::ES256, "k1");

    for sub in ["web", "spiffe://example.org/a/", "spiffe://Example.org/a"] {
        let mut claims = claims();
        claims.sub = sub.to_owned();

        assert!(
            matches!(
                mint(&key, &claims),
                Err(JwtSvidError::Claim(ClaimError::Invalid {
                    claim: "sub",
                    ..
                }))
            ),
            "{sub}"
        );
    }
}

#[test]
fn unverified_trust_domain_reads_sub() {
    let (key, _) = key(Algorithm::ES256, "k1");
    let token = mint(&key, &claims()).unwrap();

    let trust_domain = unverified_trust_domain(&token).unwrap();

    assert_eq!(trust_domain.as_str(), "example.org");
}

#[test]
fn unverified_trust_domain_rejects_non_spiffe_sub() {
    let (key, _) = key(Algorithm::ES256, "k1");
    let mut payload = payload();
    payload["sub"] = json!("repo:example/app");
    let token = forge(&key, &json!({"alg": "ES256", "kid": "k1"}), &payload);

    assert!(matches!(
        unverified_trust_domain(&token),
        Err(JwtSvidError::Claim(ClaimError::Invalid {
            claim: "sub",
            ..
        }))
    ));
}
