//! JWT-SVIDs and signing keys: the token format, validation against the published JWKS with
//! Mayfly's own validator and with the `jsonwebtoken` crate, scheduled rotation driven by explicit
//! times, the emergency taint and revoke, and encryption of private keys at rest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{TestIssuer, TestServer, basic_config, claims_of, header_of};
use jiff::{SignedDuration, Timestamp};
use mayfly_crypto::jwk::parse_jwk_set;
use mayfly_crypto::jws::JwsError;
use mayfly_crypto::jwt_svid::{JwtSvidError, ValidatedJwtSvid, validate_jwt_svid};
use mayfly_crypto::signing::Algorithm;
use serde_json::{Value, json};

/// Starts a server and an issuer with `basic_config`, after `adjust` changed the YAML.
async fn start(adjust: impl FnOnce(String) -> String) -> (TestServer, TestIssuer) {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&adjust(basic_config(&issuer))).await;
    (server, issuer)
}

/// Requests a JWT-SVID for `payments` as `billing`.
async fn mint(server: &TestServer, issuer: &TestIssuer) -> String {
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// Fetches the published key set as a relying party does, through discovery's `jwks_uri`.
/// Returns the discovery document, the key set and the key set's `Cache-Control` header.
async fn discover(server: &TestServer) -> (Value, Value, String) {
    let discovery: Value = server
        .http
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .expect("discovery names a jwks_uri");
    let response = server.http.get(jwks_uri).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    let jwks = response.json().await.unwrap();
    (discovery, jwks, cache_control)
}

async fn published_jwks(server: &TestServer) -> Value {
    discover(server).await.1
}

fn published_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_string())
        .collect()
}

fn kid_of(token: &str) -> String {
    header_of(token)["kid"].as_str().unwrap().to_string()
}

/// Validates `token` for audience `payments` at the current time with Mayfly's validator.
fn validate(token: &str, jwks: &Value) -> Result<ValidatedJwtSvid, JwtSvidError> {
    let (keys, skipped) = parse_jwk_set(jwks);
    assert!(skipped.is_empty(), "unusable published keys: {skipped:?}");
    validate_jwt_svid(token, &keys, "payments", Timestamp::now().as_second())
}

/// Validates with the `jsonwebtoken` crate, as an independent relying party would.
fn validate_independently(token: &str, jwks: &Value, issuer: &str) -> Result<Value, String> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|error| error.to_string())?;
    let header = jsonwebtoken::decode_header(token).map_err(|error| error.to_string())?;
    let kid = header.kid.ok_or("the token has no kid")?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("no published key has kid {kid}"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|error| error.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["payments"]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|error| error.to_string())
}

/// Lists the signing keys through `GET /v1/keys`.
async fn keys(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.get("/v1/keys").await;
    assert_eq!(status, 200, "{body}");
    body["keys"].as_array().unwrap().clone()
}

async fn key_state(server: &TestServer, kid: &str) -> String {
    let keys = keys(server).await;
    let key = keys
        .iter()
        .find(|key| key["kid"] == kid)
        .unwrap_or_else(|| panic!("no key {kid} in {keys:?}"));
    key["state"].as_str().unwrap().to_string()
}

/// Returns the `key_change` audit events about `kid` as (action, actor) pairs, oldest first.
async fn key_events(server: &TestServer, kid: &str) -> Vec<(String, String)> {
    let mut events: Vec<(String, String)> = server
        .audit_events("kind=key_change&limit=1000")
        .await
        .iter()
        .filter(|event| event["detail"]["kid"] == kid)
        .map(|event| {
            (
                event["detail"]["action"].as_str().unwrap().to_string(),
                event["detail"]["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    events.reverse();
    events
}

fn after(time: Timestamp, seconds: i64) -> Timestamp {
    time + SignedDuration::from_secs(seconds)
}

const HOUR: i64 = 3600;

// ---------------------------------------------------------------------------------------------
// Format and validation

#[tokio::test]
async fn jwt_svid_follows_spiffe_format() {
    let server = TestServer::start_with(|settings| {
        settings.trust_domain = Some("Prod.Example.COM".to_string())
    })
    .await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let (discovery, _, _) = discover(&server).await;
    let base64url = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };

    let mut jtis = HashSet::new();
    for _ in 0..50 {
        let token = mint(&server, &issuer).await;

        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        assert!(
            parts.iter().all(|part| base64url(part)),
            "not compact JWS: {token}"
        );
        let header = header_of(&token);
        let mut header_fields: Vec<&str> = header
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        header_fields.sort_unstable();
        assert_eq!(header_fields, ["alg", "kid", "typ"]);
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["alg"], "ES256");

        let claims = claims_of(&token);
        assert_eq!(claims["sub"], "spiffe://prod.example.com/billing");
        assert_eq!(claims["aud"], json!(["payments"]));
        assert!(
            claims["exp"].is_i64(),
            "exp is not a JSON integer: {}",
            claims["exp"]
        );
        assert!(
            claims["iat"].is_i64(),
            "iat is not a JSON integer: {}",
            claims["iat"]
        );
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            300
        );
        assert_eq!(claims["iss"], discovery["issuer"]);
        jtis.insert(claims["jti"].as_str().unwrap().to_string());
    }
    assert_eq!(jtis.len(), 50);
}

#[tokio::test]
async fn jwt_svid_validates_against_discovered_jwks() {
    let (server, issuer) = start(|yaml| yaml).await;
    let token = mint(&server, &issuer).await;

    let (discovery, jwks, cache_control) = discover(&server).await;

    assert_eq!(cache_control, "max-age=300");
    for key in jwks["keys"].as_array().unwrap() {
        assert!(key["kid"].is_string(), "{key}");
        assert!(key["kty"].is_string(), "{key}");
        assert!(key["alg"].is_string(), "{key}");
        assert_eq!(key["use"], "sig", "{key}");
    }
    let validated = validate(&token, &jwks).unwrap();
    assert_eq!(validated.sub.as_str(), "spiffe://mayfly.local/billing");
    assert_eq!(validated.kid, kid_of(&token));
    let issuer_url = discovery["issuer"].as_str().unwrap();
    let claims = validate_independently(&token, &jwks, issuer_url).unwrap();
    assert_eq!(claims["sub"], "spiffe://mayfly.local/billing");
}

#[tokio::test]
async fn jwt_svid_for_other_audience_fails_validation() {
    let (server, issuer) =
        start(|yaml| yaml.replace("audience: [payments]", "audience: [ledger]")).await;
    let token = mint(&server, &issuer).await;
    let jwks = published_jwks(&server).await;

    let error = validate(&token, &jwks).unwrap_err();

    assert!(
        matches!(error, JwtSvidError::AudienceMismatch { .. }),
        "{error}"
    );
    assert!(validate_independently(&token, &jwks, &server.base).is_err());
}

#[tokio::test]
async fn rs256_provider_issues_rs256_jwt_svid() {
    let (server, issuer) =
        start(|yaml| yaml.replace("ttl: 5m}", "ttl: 5m, algorithm: RS256}")).await;

    let token = mint(&server, &issuer).await;

    assert_eq!(header_of(&token)["alg"], "RS256");
    let jwks = published_jwks(&server).await;
    let kid = kid_of(&token);
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == kid.as_str())
        .unwrap();
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(validate(&token, &jwks).unwrap().kid, kid);
    validate_independently(&token, &jwks, &server.base).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Scheduled rotation

#[tokio::test]
async fn scheduled_rotation_follows_key_lifecycle() {
    let (server, issuer) = start(|yaml| yaml).await;
    let ring = server.running().state.keys.clone();
    let es256 = [Algorithm::ES256];
    let start = mayfly_server::clock::now();
    let before_rotation = mint(&server, &issuer).await;
    let first = kid_of(&before_rotation);

    // 22 hours into a 24-hour period: too early to prepare the successor.
    ring.tick(after(start, 22 * HOUR), &es256).await.unwrap();
    assert_eq!(
        published_kids(&published_jwks(&server).await),
        std::slice::from_ref(&first)
    );

    // 23 hours in: the successor is prepared and published, but does not sign yet.
    let prepared_at = after(start, 23 * HOUR);
    ring.tick(prepared_at, &es256).await.unwrap();
    let listed = keys(&server).await;
    let prepared = listed
        .iter()
        .find(|key| key["state"] == "prepared")
        .expect("a prepared key");
    let second = prepared["kid"].as_str().unwrap().to_string();
    let activates_at: Timestamp = prepared["activates_at"].as_str().unwrap().parse().unwrap();
    assert!(
        activates_at >= after(prepared_at, HOUR),
        "activates at {activates_at}, prepared at {prepared_at}"
    );
    assert!(published_kids(&published_jwks(&server).await).contains(&second));
    assert_eq!(kid_of(&mint(&server, &issuer).await), first);

    // One second before its activation time the prepared key still waits.
    ring.tick(after(activates_at, -1), &es256).await.unwrap();
    assert_eq!(key_state(&server, &second).await, "prepared");
    assert_eq!(kid_of(&mint(&server, &issuer).await), first);

    // At activation the successor signs and the old key is retired but still published.
    ring.tick(activates_at, &es256).await.unwrap();
    assert_eq!(key_state(&server, &second).await, "active");
    assert_eq!(key_state(&server, &first).await, "retired");
    assert_eq!(kid_of(&mint(&server, &issuer).await), second);
    let jwks = published_jwks(&server).await;
    assert!(published_kids(&jwks).contains(&first));
    assert_eq!(validate(&before_rotation, &jwks).unwrap().kid, first);
    validate_independently(&before_rotation, &jwks, &server.base).unwrap();

    // The retired key stays published for 24 hours and 5 minutes after it stopped signing.
    let grace = 24 * HOUR + 300;
    ring.tick(after(activates_at, grace - 1), &es256)
        .await
        .unwrap();
    assert!(published_kids(&published_jwks(&server).await).contains(&first));
    ring.tick(after(activates_at, grace), &es256).await.unwrap();
    assert!(!published_kids(&published_jwks(&server).await).contains(&first));
    assert_eq!(key_state(&server, &first).await, "removed");

    let system = "system".to_string();
    assert_eq!(
        key_events(&server, &first).await,
        [
            ("generate".to_string(), system.clone()),
            ("retire".to_string(), system.clone()),
            ("remove".to_string(), system.clone())
        ]
    );
    assert_eq!(
        key_events(&server, &second).await,
        [
            ("generate".to_string(), system.clone()),
            ("activate".to_string(), system)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Manual rotation, taint and revoke

#[tokio::test]
async fn manual_rotate_prepares_key_once() {
    let (server, issuer) = start(|yaml| yaml).await;
    let active = kid_of(&mint(&server, &issuer).await);

    let (status, body) = server.post("/v1/keys/rotate", json!({})).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key"]["state"], "prepared");
    assert_eq!(body["key"]["algorithm"], "ES256");
    let prepared = body["key"]["kid"].as_str().unwrap().to_string();
    let created_at: Timestamp = body["key"]["created_at"].as_str().unwrap().parse().unwrap();
    let activates_at: Timestamp = body["key"]["activates_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(activates_at, after(created_at, HOUR));
    assert!(published_kids(&published_jwks(&server).await).contains(&prepared));
    assert_eq!(kid_of(&mint(&server, &issuer).await), active);
    assert_eq!(
        key_events(&server, &prepared).await,
        [("generate".to_string(), "admin-token:bootstrap".to_string())]
    );

    let (status, body) = server.post("/v1/keys/rotate", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("a prepared key already exists"),
        "{body}"
    );
}

#[tokio::test]
async fn tainted_key_stops_signing_but_stays_published() {
    let (server, issuer) = start(|yaml| yaml).await;
    let before_taint = mint(&server, &issuer).await;
    let tainted = kid_of(&before_taint);

    let (status, body) = server
        .post(&format!("/v1/keys/{tainted}/taint"), json!({}))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key"]["state"], "tainted");
    let replacement = kid_of(&mint(&server, &issuer).await);
    assert_ne!(replacement, tainted);
    assert_eq!(key_state(&server, &replacement).await, "active");
    let jwks = published_jwks(&server).await;
    assert!(published_kids(&jwks).contains(&tainted));
    assert!(published_kids(&jwks).contains(&replacement));
    assert_eq!(validate(&before_taint, &jwks).unwrap().kid, tainted);
    let admin = "admin-token:bootstrap".to_string();
    assert_eq!(
        key_events(&server, &tainted).await.last().unwrap(),
        &("taint".to_string(), admin.clone())
    );
    assert_eq!(
        key_events(&server, &replacement).await,
        [("generate".to_string(), admin)]
    );
}

#[tokio::test]
async fn taint_activates_prepared_key_at_once() {
    let (server, issuer) = start(|yaml| yaml).await;
    let tainted = kid_of(&mint(&server, &issuer).await);
    let (status, body) = server.post("/v1/keys/rotate", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let prepared = body["key"]["kid"].as_str().unwrap().to_string();

    let (status, body) = server
        .post(&format!("/v1/keys/{tainted}/taint"), json!({}))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(kid_of(&mint(&server, &issuer).await), prepared);
    assert_eq!(key_state(&server, &prepared).await, "active");
}

#[tokio::test]
async fn revoked_key_leaves_jwks_and_its_tokens_fail() {
    let (server, issuer) = start(|yaml| yaml).await;
    let before_revoke = mint(&server, &issuer).await;
    let revoked = kid_of(&before_revoke);

    let (status, body) = server
        .post(&format!("/v1/keys/{revoked}/revoke"), json!({}))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key"]["state"], "revoked");
    let jwks = published_jwks(&server).await;
    assert!(!published_kids(&jwks).contains(&revoked));
    let error = validate(&before_revoke, &jwks).unwrap_err();
    assert!(
        matches!(error, JwtSvidError::Jws(JwsError::UnknownKid { .. })),
        "{error}"
    );
    assert!(validate_independently(&before_revoke, &jwks, &server.base).is_err());

    let after_revoke = mint(&server, &issuer).await;
    assert_ne!(kid_of(&after_revoke), revoked);
    validate(&after_revoke, &jwks).unwrap();
    assert_eq!(
        key_events(&server, &revoked).await.last().unwrap(),
        &("revoke".to_string(), "admin-token:bootstrap".to_string())
    );
}

#[tokio::test]
async fn unknown_kid_cannot_be_tainted() {
    let (server, _issuer) = start(|yaml| yaml).await;

    let (status, body) = server.post("/v1/keys/no-such-key/taint", json!({})).await;

    assert_eq!(status, 404, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Encryption at rest

/// Returns the private scalar of a P-256 PKCS#8 document: the 32-byte octet string after the
/// ECPrivateKey version (INTEGER 1).
fn p256_private_scalar(pkcs8: &[u8]) -> Vec<u8> {
    let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
    let start = pkcs8
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("an ECPrivateKey in PKCS#8")
        + marker.len();
    pkcs8[start..start + 32].to_vec()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn signing_keys_are_encrypted_at_rest() {
    let (mut server, _issuer) = start(|yaml| yaml).await;
    let state = server.running().state.clone();
    let first_key = state
        .keys
        .current()
        .active(Algorithm::ES256)
        .unwrap()
        .clone();
    let (status, body) = server.post("/v1/keys/rotate", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post(&format!("/v1/keys/{}/taint", first_key.kid()), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let second_key = state
        .keys
        .current()
        .active(Algorithm::ES256)
        .unwrap()
        .clone();
    assert_ne!(second_key.kid(), first_key.kid());
    drop(state);
    server.stop().await;

    let mut database = Vec::new();
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("mayfly.db") {
            database.extend(std::fs::read(entry.path()).unwrap());
        }
    }

    for key in [&first_key, &second_key] {
        let public_x = key.public_jwk().x.unwrap();
        assert!(
            contains(&database, public_x.as_bytes()),
            "the public key of {} is not in the database",
            key.kid()
        );
        let pkcs8 = key.to_pkcs8().unwrap();
        let scalar = p256_private_scalar(&pkcs8);
        assert!(
            !contains(&database, &pkcs8),
            "PKCS#8 of {} stored in clear",
            key.kid()
        );
        assert!(
            !contains(&database, STANDARD.encode(&pkcs8[..]).as_bytes()),
            "base64 PKCS#8 of {} stored",
            key.kid()
        );
        assert!(
            !contains(&database, &scalar),
            "private scalar of {} stored in clear",
            key.kid()
        );
        assert!(
            !contains(&database, URL_SAFE_NO_PAD.encode(&scalar).as_bytes()),
            "JWK d of {} stored",
            key.kid()
        );
    }
}
