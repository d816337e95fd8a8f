use super::*;
use crate::signing::{Algorithm, SigningKey};

fn es256_jwk() -> Jwk {
    SigningKey::generate(Algorithm::ES256, "ec")
        .unwrap()
        .public_jwk()
}

#[test]
fn from_jwk_limits_algorithms_to_declared_alg() {
    let key = VerifyingKey::from_jwk(&es256_jwk()).unwrap();

    assert_eq!(key.key_type(), KeyType::EcP256);
    assert_eq!(key.algorithms().collect::<Vec<_>>(), [JwsAlgorithm::ES256]);
    assert!(!key.supports(JwsAlgorithm::ES384));
}

#[test]
fn from_jwk_without_alg_accepts_every_rsa_algorithm() {
    let mut jwk = SigningKey::generate(Algorithm::RS256, "rsa")
        .unwrap()
        .public_jwk();
    jwk.alg = None;

    let key = VerifyingKey::from_jwk(&jwk).unwrap();

    assert_eq!(key.algorithms().count(), 6);
    assert!(key.supports(JwsAlgorithm::PS512));
    assert!(!key.supports(JwsAlgorithm::ES256));
}

#[test]
fn from_jwk_rejects_alg_unfit_for_key_type() {
    let mut jwk = es256_jwk();
    jwk.alg = Some("RS256".to_owned());

    assert_eq!(
        VerifyingKey::from_jwk(&jwk).unwrap_err(),
        JwkError::AlgorithmMismatch {
            alg: JwsAlgorithm::RS256,
            key_type: KeyType::EcP256
        }
    );
}

#[test]
fn from_jwk_rejects_hmac_alg() {
    let mut jwk = es256_jwk();
    jwk.alg = Some("HS256".to_owned());

    assert!(matches!(
        VerifyingKey::from_jwk(&jwk).unwrap_err(),
        JwkError::UnsupportedAlgorithm { .. }
    ));
}

#[test]
fn from_jwk_rejects_point_off_curve() {
    let mut jwk = es256_jwk();
    let mut y = URL_SAFE_NO_PAD.decode(jwk.y.as_deref().unwrap()).unwrap();
    y[31] ^= 0x01;
    jwk.y = Some(URL_SAFE_NO_PAD.encode(&y));

    assert!(matches!(
        VerifyingKey::from_jwk(&jwk).unwrap_err(),
        JwkError::Rejected { .. }
    ));
}

#[test]
fn from_jwk_rejects_short_coordinate() {
    let mut jwk = es256_jwk();
    jwk.x = Some(URL_SAFE_NO_PAD.encode([1_u8; 31]));

    assert_eq!(
        VerifyingKey::from_jwk(&jwk).unwrap_err(),
        JwkError::InvalidMember {
            member: "x",
            reason: "expected 32 bytes, got 31".to_owned()
        }
    );
}

#[test]
fn from_jwk_rejects_small_rsa_modulus() {
    let jwk = Jwk {
        kty: "RSA".to_owned(),
        n: Some(URL_SAFE_NO_PAD.encode([0xc5_u8; 128])),
        e: Some("AQAB".to_owned()),
        ..Jwk::default()
    };

    assert_eq!(
        VerifyingKey::from_jwk(&jwk).unwrap_err(),
        JwkError::RsaModulusSize { bits: 1024 }
    );
}

#[test]
fn from_jwk_accepts_rsa_modulus_with_leading_zero() {
    let mut jwk = SigningKey::generate(Algorithm::RS256, "rsa")
        .unwrap()
        .public_jwk();
    let mut n = vec![0_u8];
    n.extend(URL_SAFE_NO_PAD.decode(jwk.n.as_deref().unwrap()).unwrap());
    jwk.n = Some(URL_SAFE_NO_PAD.encode(&n));

    assert!(VerifyingKey::from_jwk(&jwk).is_ok());
}

#[test]
fn verify_rejects_algorithm_the_key_does_not_accept() {
    let signing = SigningKey::generate(Algorithm::ES256, "ec").unwrap();
    let key = VerifyingKey::from_jwk(&signing.public_jwk()).unwrap();
    let token = signing.sign_compact(&serde_json::json!({"a": 1})).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();

    assert!(key.verify(JwsAlgorithm::ES256, input.as_bytes(), &signature));
    assert!(!key.verify(JwsAlgorithm::ES384, input.as_bytes(), &signature));
    assert!(!key.verify(JwsAlgorithm::ES256, b"other message", &signature));
}

#[test]
fn bit_length_counts_significant_bits() {
    assert_eq!(bit_length(&[]), 0);
    assert_eq!(bit_length(&[0x01]), 1);
    assert_eq!(bit_length(&[0x80, 0x00]), 16);
    assert_eq!(bit_length(&[0x7f, 0xff]), 15);
}
