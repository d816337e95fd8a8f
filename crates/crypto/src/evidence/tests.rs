use serde_json::{Value, json};

use super::*;
use crate::jwk::Jwk;
use crate::jws::{JwsAlgorithm, encode_part};
use crate::signing::{Algorithm, SigningKey};
use crate::test_support::{forge, forge_hs256};

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://token.actions.githubusercontent.com";

fn rules() -> EvidenceRules {
    EvidenceRules::new(ISSUER, "mayfly")
}

fn issuer_key(alg: Algorithm, kid: &str) -> (SigningKey, VerifyingKey) {
    let key = SigningKey::generate(alg, kid).unwrap();
    let verifying = key.verifying_key().unwrap();
    (key, verifying)
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": "mayfly",
        "sub": "repo:example/app:ref:refs/heads/main",
        "exp": NOW + 300,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "repository": "example/app",
    })
}

fn header(kid: &str) -> Value {
    json!({"alg": "ES256", "kid": kid, "typ": "JWT"})
}

fn verify(token: &str, keys: &[VerifyingKey]) -> Result<VerifiedToken, EvidenceError> {
    verify_evidence(token, keys, &rules(), NOW)
}

fn with_claim(name: &str, value: Value) -> Value {
    let mut claims = claims();
    claims[name] = value;
    claims
}

fn without_claim(name: &str) -> Value {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove(name);
    claims
}

#[test]
fn valid_token_returns_claims_expiry_and_kid() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let token = forge(&key, &header("gh-1"), &claims());

    let verified = verify(&token, &[verifying]).unwrap();

    assert_eq!(verified.expires_at, NOW + 300);
    assert_eq!(verified.kid.as_deref(), Some("gh-1"));
    assert_eq!(verified.claims["repository"], "example/app");
}

#[test]
fn missing_kid_uses_only_fitting_key() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "k8s");
    let (_, rsa) = issuer_key(Algorithm::RS256, "rsa");
    let token = forge(&key, &json!({"alg": "ES256"}), &claims());

    let verified = verify(&token, &[rsa, verifying]).unwrap();

    assert_eq!(verified.kid.as_deref(), Some("k8s"));
}

#[test]
fn missing_kid_with_several_keys_is_ambiguous() {
    let (key, first) = issuer_key(Algorithm::ES256, "a");
    let (_, second) = issuer_key(Algorithm::ES256, "b");
    let token = forge(&key, &json!({"alg": "ES256"}), &claims());

    assert_eq!(
        verify(&token, &[first, second]).unwrap_err(),
        EvidenceError::Jws(JwsError::AmbiguousKey {
            alg: JwsAlgorithm::ES256,
            count: 2
        })
    );
}

#[test]
fn missing_kid_without_fitting_key_is_rejected() {
    let (key, _) = issuer_key(Algorithm::ES384, "a");
    let (_, es256) = issuer_key(Algorithm::ES256, "b");
    let token = forge(&key, &json!({"alg": "ES384"}), &claims());

    assert_eq!(
        verify(&token, &[es256]).unwrap_err(),
        EvidenceError::Jws(JwsError::NoKeyForAlgorithm {
            alg: JwsAlgorithm::ES384
        })
    );
}

#[test]
fn tolerated_headers_do_not_block_verification() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let header = json!({
        "alg": "ES256",
        "kid": "gh-1",
        "typ": "at+jwt",
        "x5t": "aGVsbG8",
        "jku": "https://attacker.example/jwks.json",
    });

    assert!(verify(&forge(&key, &header, &claims()), &[verifying]).is_ok());
}

#[test]
fn embedded_jwk_header_key_is_not_used() {
    let (_, trusted) = issuer_key(Algorithm::ES256, "gh-1");
    let (attacker, attacker_public) = issuer_key(Algorithm::ES256, "gh-1");
    let attacker_jwk = serde_json::to_value(attacker_public.jwk()).unwrap();

    for header in [
        json!({"alg": "ES256", "kid": "gh-1", "jwk": attacker_jwk}),
        json!({"alg": "ES256", "jwk": attacker_jwk}),
    ] {
        let token = forge(&attacker, &header, &claims());

        assert_eq!(
            verify(&token, std::slice::from_ref(&trusted)).unwrap_err(),
            EvidenceError::Jws(JwsError::InvalidSignature {
                kid: "\"gh-1\"".to_owned()
            }),
            "{header}"
        );
    }
}

#[test]
fn oversize_token_is_rejected_first() {
    let (_, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let mut rules = rules();
    rules.max_token_bytes = 100;
    let token = "x".repeat(101);

    assert_eq!(
        verify_evidence(&token, &[verifying], &rules, NOW).unwrap_err(),
        EvidenceError::TooLarge {
            size: 101,
            max: 100
        }
    );
}

#[test]
fn default_size_limit_is_16_kib() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let padded = with_claim("padding", json!("p".repeat(DEFAULT_MAX_TOKEN_BYTES)));
    let token = forge(&key, &header("gh-1"), &padded);

    assert!(matches!(
        verify(&token, &[verifying]).unwrap_err(),
        EvidenceError::TooLarge { max: 16384, .. }
    ));
}

#[test]
fn malformed_tokens_are_rejected_with_part_named() {
    let (_, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let keys = [verifying];

    assert_eq!(
        verify("only.two", &keys).unwrap_err(),
        EvidenceError::Jws(JwsError::PartCount { found: 2 })
    );
    assert_eq!(
        verify("!!!.e30.c2ln", &keys).unwrap_err(),
        EvidenceError::Jws(JwsError::InvalidBase64 { part: "header" })
    );
    let not_json = format!("{}.e30.c2ln", encode_part(b"not json"));
    assert!(matches!(
        verify(&not_json, &keys).unwrap_err(),
        EvidenceError::Jws(JwsError::InvalidJson { part: "header", .. })
    ));
}

#[test]
fn alg_none_is_rejected() {
    let (_, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let token = format!(
        "{}.{}.",
        encode_part(br#"{"alg":"none","kid":"gh-1"}"#),
        encode_part(claims().to_string().as_bytes())
    );

    assert_eq!(
        verify(&token, &[verifying]).unwrap_err(),
        EvidenceError::Jws(JwsError::UnsupportedAlgorithm {
            alg: "\"none\"".to_owned()
        })
    );
}

#[test]
fn hs256_algorithm_confusion_is_rejected() {
    let (_, verifying) = issuer_key(Algorithm::RS256, "gh-1");
    let public_n = verifying.jwk().n.clone().unwrap();

    for secret in [
        serde_json::to_vec(verifying.jwk()).unwrap(),
        public_n.into_bytes(),
    ] {
        let token = forge_hs256(&json!({"alg": "HS256", "kid": "gh-1"}), &claims(), &secret);

        assert_eq!(
            verify(&token, std::slice::from_ref(&verifying)).unwrap_err(),
            EvidenceError::Jws(JwsError::UnsupportedAlgorithm {
                alg: "\"HS256\"".to_owned()
            })
        );
    }
}

#[test]
fn crit_header_is_rejected() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let header = json!({"alg": "ES256", "kid": "gh-1", "crit": ["b64"], "b64": false});

    let error = verify(&forge(&key, &header, &claims()), &[verifying]).unwrap_err();

    assert_eq!(
        error,
        EvidenceError::CriticalHeader {
            names: "[\"b64\"]".to_owned()
        }
    );
}

#[test]
fn unknown_kid_is_rejected() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let token = forge(&key, &header("gh-2"), &claims());

    assert_eq!(
        verify(&token, &[verifying]).unwrap_err(),
        EvidenceError::Jws(JwsError::UnknownKid {
            kid: "\"gh-2\"".to_owned()
        })
    );
}

#[test]
fn alg_not_fitting_key_is_rejected() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let header = json!({"alg": "RS256", "kid": "gh-1"});

    assert!(matches!(
        verify(&forge(&key, &header, &claims()), &[verifying]).unwrap_err(),
        EvidenceError::Jws(JwsError::AlgorithmMismatch {
            alg: JwsAlgorithm::RS256,
            ..
        })
    ));
}

#[test]
fn rsa_key_without_alg_accepts_rs256_and_ps256() {
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let key = SigningKey::generate(alg, "rsa").unwrap();
        let jwk = Jwk {
            alg: None,
            key_use: None,
            ..key.public_jwk()
        };
        let verifying = VerifyingKey::from_jwk(&jwk).unwrap();
        let header = json!({"alg": alg.as_str(), "kid": "rsa"});

        let verified = verify(&forge(&key, &header, &claims()), &[verifying]);

        assert!(verified.is_ok(), "{alg}: {verified:?}");
    }
}

#[test]
fn pss_signature_under_pkcs1_alg_is_rejected() {
    let key = SigningKey::generate(Algorithm::PS256, "rsa").unwrap();
    let jwk = Jwk {
        alg: None,
        ..key.public_jwk()
    };
    let verifying = VerifyingKey::from_jwk(&jwk).unwrap();
    let header = json!({"alg": "RS256", "kid": "rsa"});

    assert!(matches!(
        verify(&forge(&key, &header, &claims()), &[verifying]).unwrap_err(),
        EvidenceError::Jws(JwsError::InvalidSignature { .. })
    ));
}

#[test]
fn wrong_issuer_names_both_values() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let claims = with_claim("iss", json!("https://evil.example"));

    let error = verify(&forge(&key, &header("gh-1"), &claims), &[verifying]).unwrap_err();

    assert_eq!(
        error,
        EvidenceError::IssuerMismatch {
            expected: format!("{ISSUER:?}"),
            actual: "\"https://evil.example\"".to_owned()
        }
    );
    let message = error.to_string();
    assert!(message.contains("https://evil.example"), "{message}");
    assert!(message.contains(ISSUER), "{message}");
}

#[test]
fn issuer_comparison_is_exact() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let keys = [verifying];

    for iss in [
        format!("{ISSUER}/"),
        ISSUER.to_uppercase(),
        format!(" {ISSUER}"),
    ] {
        let claims = with_claim("iss", json!(iss));

        assert!(
            matches!(
                verify(&forge(&key, &header("gh-1"), &claims), &keys),
                Err(EvidenceError::IssuerMismatch { .. })
            ),
            "{iss}"
        );
    }
}

#[test]
fn missing_issuer_is_rejected() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");

    assert_eq!(
        verify(
            &forge(&key, &header("gh-1"), &without_claim("iss")),
            &[verifying]
        )
        .unwrap_err(),
        EvidenceError::Claim(ClaimError::Missing { claim: "iss" })
    );
}

#[test]
fn wrong_audience_names_both_values() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let claims = with_claim("aud", json!(["sts.amazonaws.com", "other"]));

    let error = verify(&forge(&key, &header("gh-1"), &claims), &[verifying]).unwrap_err();

    assert_eq!(
        error,
        EvidenceError::AudienceMismatch {
            expected: "\"mayfly\"".to_owned(),
            actual: "[\"sts.amazonaws.com\", \"other\"]".to_owned()
        }
    );
}

#[test]
fn audience_array_containing_expected_is_accepted() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let claims = with_claim("aud", json!(["other", "mayfly"]));

    assert!(verify(&forge(&key, &header("gh-1"), &claims), &[verifying]).is_ok());
}

#[test]
fn expired_token_is_rejected_at_leeway_boundary() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let keys = [verifying];
    let exp = NOW - DEFAULT_LEEWAY_SECONDS;

    let at_boundary = forge(&key, &header("gh-1"), &with_claim("exp", json!(exp)));
    assert_eq!(
        verify(&at_boundary, &keys).unwrap_err(),
        EvidenceError::Expired {
            exp,
            leeway: DEFAULT_LEEWAY_SECONDS,
            now: NOW
        }
    );

    let inside = forge(&key, &header("gh-1"), &with_claim("exp", json!(exp + 1)));
    assert!(verify(&inside, &keys).is_ok());
}

#[test]
fn negative_leeway_counts_as_zero() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let mut rules = rules();
    rules.leeway_seconds = -500;
    let token = forge(&key, &header("gh-1"), &with_claim("exp", json!(NOW + 1)));

    assert!(verify_evidence(&token, &[verifying], &rules, NOW).is_ok());
}

#[test]
fn float_exp_is_accepted_and_rounded_down() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let claims = with_claim("exp", json!(1_800_000_300.75));

    let verified = verify(&forge(&key, &header("gh-1"), &claims), &[verifying]).unwrap();

    assert_eq!(verified.expires_at, 1_800_000_300);
}

#[test]
fn missing_or_malformed_exp_is_rejected() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let keys = [verifying];

    assert_eq!(
        verify(&forge(&key, &header("gh-1"), &without_claim("exp")), &keys).unwrap_err(),
        EvidenceError::Claim(ClaimError::Missing { claim: "exp" })
    );
    let string_exp = with_claim("exp", json!("1800000300"));
    assert!(matches!(
        verify(&forge(&key, &header("gh-1"), &string_exp), &keys).unwrap_err(),
        EvidenceError::Claim(ClaimError::Invalid { claim: "exp", .. })
    ));
}

#[test]
fn future_nbf_and_iat_beyond_leeway_are_rejected() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let keys = [verifying];
    let too_late = NOW + DEFAULT_LEEWAY_SECONDS + 1;

    for claim in ["nbf", "iat"] {
        let token = forge(&key, &header("gh-1"), &with_claim(claim, json!(too_late)));
        assert_eq!(
            verify(&token, &keys).unwrap_err(),
            EvidenceError::NotYetValid {
                claim,
                value: too_late,
                leeway: DEFAULT_LEEWAY_SECONDS,
                now: NOW
            }
        );

        let within = NOW + DEFAULT_LEEWAY_SECONDS;
        let token = forge(&key, &header("gh-1"), &with_claim(claim, json!(within)));
        assert!(verify(&token, &keys).is_ok(), "{claim}");
    }
}

#[test]
fn error_messages_never_contain_the_token() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let keys = [verifying];
    let cases = [
        forge(
            &key,
            &header("gh-1"),
            &with_claim("iss", json!("https://evil.example")),
        ),
        forge(&key, &header("gh-1"), &with_claim("exp", json!(NOW - 1000))),
        forge(&key, &header("gh-9"), &claims()),
        forge(
            &key,
            &json!({"alg": "ES256", "kid": "gh-1", "crit": ["x"]}),
            &claims(),
        ),
    ];

    for token in cases {
        let message = verify(&token, &keys).unwrap_err().to_string();
        let signature = token.rsplit('.').next().unwrap();
        let payload = token.split('.').nth(1).unwrap();

        assert!(!message.contains(signature), "{message}");
        assert!(!message.contains(payload), "{message}");
    }
}

#[test]
fn hostile_issuer_value_is_quoted_and_shortened() {
    let (key, verifying) = issuer_key(Algorithm::ES256, "gh-1");
    let hostile = format!("evil\n{}", "a".repeat(5000));
    let claims = with_claim("iss", json!(hostile));

    let message = verify(&forge(&key, &header("gh-1"), &claims), &[verifying])
        .unwrap_err()
        .to_string();

    assert!(!message.contains('\n'), "{message}");
    assert!(message.len() < 400, "{}", message.len());
}
