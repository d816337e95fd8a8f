//! End-to-end checks through the public API: tokens Mayfly mints must validate in an independent
//! JWT library (jsonwebtoken) through the published JWKS, keys must survive sealing at rest, and
//! the attacks a verifier of untrusted tokens faces must fail.

// Test helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use mayfly_crypto::evidence::{EvidenceError, EvidenceRules, verify_evidence};
use mayfly_crypto::jwk::{Jwk, VerifyingKey, jwks_document, parse_jwk_set};
use mayfly_crypto::jws::JwsError;
use mayfly_crypto::jwt_svid::{JwtSvidClaims, JwtSvidError, mint, new_jti, validate_jwt_svid};
use mayfly_crypto::kek::{KekError, KeyEncryptionKey};
use mayfly_crypto::signing::{Algorithm, SigningKey, generate_kid};
use serde_json::{Value, json};

/// A fixed "now", and an expiry far enough ahead that jsonwebtoken's wall-clock check passes.
const NOW: i64 = 1_800_000_000;
const FAR_EXP: i64 = 4_000_000_000;
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn svid_claims(exp: i64) -> JwtSvidClaims {
    JwtSvidClaims {
        sub: "spiffe://example.org/ns/default/sa/web".to_owned(),
        aud: vec!["payments-api".to_owned()],
        exp,
        iat: NOW,
        iss: "https://mayfly.example".to_owned(),
        jti: new_jti().unwrap(),
    }
}

fn published_keys(keys: &[&SigningKey]) -> Value {
    let jwks: Vec<Jwk> = keys.iter().map(|key| key.public_jwk()).collect();
    jwks_document(&jwks)
}

fn jsonwebtoken_algorithm(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
    }
}

fn evidence_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": ["mayfly"],
        "sub": "system:serviceaccount:default:web",
        "exp": NOW + 600,
        "iat": NOW,
        "nbf": NOW,
    })
}

fn evidence_rules() -> EvidenceRules {
    EvidenceRules::new(ISSUER, "mayfly")
}

/// Signs `claims` with `header` using jsonwebtoken, as another issuer or an attacker would.
fn encode_es256(key: &SigningKey, header: &Header, claims: &Value) -> String {
    let der = key.to_pkcs8().unwrap();
    jsonwebtoken::encode(header, claims, &EncodingKey::from_ec_der(&der)).unwrap()
}

fn es256_header(kid: &str) -> Header {
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    header
}

#[test]
fn minted_tokens_validate_in_jsonwebtoken() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg, generate_kid().unwrap()).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(published_keys(&[&key])).unwrap();
        let token = mint(&key, &svid_claims(FAR_EXP)).unwrap();

        let header = jsonwebtoken::decode_header(&token).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(jsonwebtoken_algorithm(alg));
        validation.set_audience(&["payments-api"]);
        validation.set_issuer(&["https://mayfly.example"]);
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        );

        let decoded = decoded.unwrap_or_else(|error| panic!("{alg}: {error}"));
        assert_eq!(
            decoded.claims["sub"],
            "spiffe://example.org/ns/default/sa/web"
        );
        assert_eq!(decoded.header.typ.as_deref(), Some("JWT"));
    }
}

#[test]
fn published_jwks_round_trips_into_validation() {
    let es = SigningKey::generate(Algorithm::ES256, "es").unwrap();
    let rs = SigningKey::generate(Algorithm::RS256, "rs").unwrap();
    let ps = SigningKey::generate(Algorithm::PS256, "ps").unwrap();
    let document = published_keys(&[&es, &rs, &ps]);

    let (keys, skipped) = parse_jwk_set(&document);

    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(keys.len(), 3);
    for key in [&es, &rs, &ps] {
        let token = mint(key, &svid_claims(NOW + 60)).unwrap();
        let validated = validate_jwt_svid(&token, &keys, "payments-api", NOW).unwrap();
        assert_eq!(validated.kid, key.kid());
    }
}

#[test]
fn jwks_keys_have_required_members() {
    let es = SigningKey::generate(Algorithm::ES384, "es").unwrap();
    let rs = SigningKey::generate(Algorithm::PS256, "rs").unwrap();

    let document = published_keys(&[&es, &rs]);

    for key in document["keys"].as_array().unwrap() {
        assert!(key["kid"].is_string(), "{key}");
        assert!(key["kty"].is_string(), "{key}");
        assert!(key["alg"].is_string(), "{key}");
        assert_eq!(key["use"], "sig", "{key}");
        assert!(key.get("d").is_none(), "private member published: {key}");
    }
}

#[test]
fn jwks_with_unsupported_key_still_yields_good_keys() {
    let good = SigningKey::generate(Algorithm::ES256, "good").unwrap();
    let mut document = published_keys(&[&good]);
    let keys = document["keys"].as_array_mut().unwrap();
    keys.insert(0, json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}));
    keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}));
    keys.push(json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}));

    let (keys, skipped) = parse_jwk_set(&document);

    assert_eq!(keys.len(), 1);
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    let token = mint(&good, &svid_claims(NOW + 60)).unwrap();
    assert!(validate_jwt_svid(&token, &keys, "payments-api", NOW).is_ok());
}

#[test]
fn signing_key_survives_sealing_at_rest() {
    let kek = KeyEncryptionKey::generate().unwrap();
    let key = SigningKey::generate(Algorithm::RS256, "rsa-1").unwrap();
    let aad = b"signing_key:rsa-1";

    let sealed = kek.seal(&key.to_pkcs8().unwrap(), aad).unwrap();
    let reloaded_kek = KeyEncryptionKey::parse(&kek.to_base64()).unwrap();
    let der = reloaded_kek.open(&sealed, aad).unwrap();
    let reloaded = SigningKey::from_pkcs8(Algorithm::RS256, "rsa-1", &der).unwrap();

    assert_eq!(reloaded.public_jwk(), key.public_jwk());
    let token = mint(&reloaded, &svid_claims(NOW + 60)).unwrap();
    let keys = [key.verifying_key().unwrap()];
    assert!(validate_jwt_svid(&token, &keys, "payments-api", NOW).is_ok());
}

#[test]
fn sealed_key_does_not_open_with_wrong_kek() {
    let kek = KeyEncryptionKey::generate().unwrap();
    let wrong = KeyEncryptionKey::generate().unwrap();
    let key = SigningKey::generate(Algorithm::ES256, "k").unwrap();
    let sealed = kek.seal(&key.to_pkcs8().unwrap(), b"k").unwrap();

    assert_ne!(kek.fingerprint(), wrong.fingerprint());
    assert_eq!(wrong.open(&sealed, b"k").unwrap_err(), KekError::OpenFailed);
}

#[test]
fn evidence_from_jsonwebtoken_issuer_is_accepted() {
    let issuer = SigningKey::generate(Algorithm::ES256, "k8s-1").unwrap();
    let (keys, _) = parse_jwk_set(&published_keys(&[&issuer]));
    let token = encode_es256(&issuer, &es256_header("k8s-1"), &evidence_claims());

    let verified = verify_evidence(&token, &keys, &evidence_rules(), NOW).unwrap();

    assert_eq!(verified.claims["sub"], "system:serviceaccount:default:web");
    assert_eq!(verified.expires_at, NOW + 600);
    assert_eq!(verified.kid.as_deref(), Some("k8s-1"));
}

#[test]
fn rsa_evidence_without_jwk_alg_is_accepted() {
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let issuer = SigningKey::generate(alg, "rsa").unwrap();
        let jwk = Jwk {
            alg: None,
            key_use: None,
            ..issuer.public_jwk()
        };
        let (keys, _) = parse_jwk_set(&json!({"keys": [jwk]}));
        let token = issuer.sign_compact(&evidence_claims()).unwrap();

        let verified = verify_evidence(&token, &keys, &evidence_rules(), NOW);

        assert!(verified.is_ok(), "{alg}: {verified:?}");
    }
}

#[test]
fn evidence_with_attacker_jwk_header_is_rejected() {
    let issuer = SigningKey::generate(Algorithm::ES256, "k8s-1").unwrap();
    let attacker = SigningKey::generate(Algorithm::ES256, "k8s-1").unwrap();
    let (keys, _) = parse_jwk_set(&published_keys(&[&issuer]));
    let mut header = es256_header("k8s-1");
    header.jwk =
        Some(serde_json::from_value(serde_json::to_value(attacker.public_jwk()).unwrap()).unwrap());

    let token = encode_es256(&attacker, &header, &evidence_claims());

    assert!(matches!(
        verify_evidence(&token, &keys, &evidence_rules(), NOW),
        Err(EvidenceError::Jws(JwsError::InvalidSignature { .. }))
    ));
}

#[test]
fn evidence_hs256_algorithm_confusion_is_rejected() {
    let issuer = SigningKey::generate(Algorithm::RS256, "k8s-1").unwrap();
    let (keys, _) = parse_jwk_set(&published_keys(&[&issuer]));
    let public_key_text = serde_json::to_vec(&issuer.public_jwk()).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k8s-1".to_owned());

    let token = jsonwebtoken::encode(
        &header,
        &evidence_claims(),
        &EncodingKey::from_secret(&public_key_text).unwrap(),
    )
    .unwrap();

    assert!(matches!(
        verify_evidence(&token, &keys, &evidence_rules(), NOW),
        Err(EvidenceError::Jws(JwsError::UnsupportedAlgorithm { .. }))
    ));
}

#[test]
fn evidence_attacks_fail_with_named_errors() {
    let issuer = SigningKey::generate(Algorithm::ES256, "k8s-1").unwrap();
    let (keys, _) = parse_jwk_set(&published_keys(&[&issuer]));
    let rules = evidence_rules();
    let sign = |claims: &Value| encode_es256(&issuer, &es256_header("k8s-1"), claims);
    let mut claims = evidence_claims();

    claims["iss"] = json!("https://attacker.example");
    let wrong_issuer = sign(&claims);
    claims = evidence_claims();
    claims["aud"] = json!("someone-else");
    let wrong_audience = sign(&claims);
    claims = evidence_claims();
    claims["exp"] = json!(NOW - 3600);
    let expired = sign(&claims);
    let mut crit_header = es256_header("k8s-1");
    crit_header.crit = Some(vec!["exp".to_owned()]);
    let crit = encode_es256(&issuer, &crit_header, &evidence_claims());
    let unknown_kid = encode_es256(&issuer, &es256_header("k8s-2"), &evidence_claims());

    assert!(matches!(
        verify_evidence(&wrong_issuer, &keys, &rules, NOW),
        Err(EvidenceError::IssuerMismatch { .. })
    ));
    assert!(matches!(
        verify_evidence(&wrong_audience, &keys, &rules, NOW),
        Err(EvidenceError::AudienceMismatch { .. })
    ));
    assert!(matches!(
        verify_evidence(&expired, &keys, &rules, NOW),
        Err(EvidenceError::Expired { .. })
    ));
    assert!(matches!(
        verify_evidence(&crit, &keys, &rules, NOW),
        Err(EvidenceError::CriticalHeader { .. })
    ));
    assert!(matches!(
        verify_evidence(&unknown_kid, &keys, &rules, NOW),
        Err(EvidenceError::Jws(JwsError::UnknownKid { .. }))
    ));
    let oversize = format!("{}.{}", sign(&evidence_claims()), "A".repeat(16 * 1024));
    assert!(matches!(
        verify_evidence(&oversize, &keys, &rules, NOW),
        Err(EvidenceError::TooLarge { .. })
    ));
}

#[test]
fn jwt_svid_attacks_fail() {
    let key = SigningKey::generate(Algorithm::ES256, "mayfly-1").unwrap();
    let keys = [key.verifying_key().unwrap()];
    let token = mint(&key, &svid_claims(NOW + 60)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();

    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 0x01;
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"mayfly-1","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);

    assert!(matches!(
        validate_jwt_svid(&tampered, &keys, "payments-api", NOW),
        Err(JwtSvidError::Jws(JwsError::InvalidSignature { .. }))
    ));
    assert!(matches!(
        validate_jwt_svid(&alg_none, &keys, "payments-api", NOW),
        Err(JwtSvidError::Jws(JwsError::UnsupportedAlgorithm { .. }))
    ));
    assert!(matches!(
        validate_jwt_svid(&token, &keys, "other-api", NOW),
        Err(JwtSvidError::AudienceMismatch { .. })
    ));
    assert!(matches!(
        validate_jwt_svid(&token, &keys, "payments-api", NOW + 60),
        Err(JwtSvidError::Expired { .. })
    ));
}

#[test]
fn verifying_key_from_published_jwk_matches_signing_key() {
    let key = SigningKey::generate(Algorithm::ES384, "k").unwrap();

    let from_jwk = VerifyingKey::from_jwk(&key.public_jwk()).unwrap();

    assert_eq!(from_jwk.jwk(), key.verifying_key().unwrap().jwk());
    assert_eq!(from_jwk.kid(), Some("k"));
}
