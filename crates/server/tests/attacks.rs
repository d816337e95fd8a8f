//! Attacks on a running server: forged and tricky evidence tokens, races between configuration
//! changes and issuance, spoofed source addresses, stalled and oversized requests, admin token
//! tricks, leaks of secrets into responses and audit events, and crafted audit rows. Each test is
//! named after the attack it blocks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Reply, TestIssuer, TestServer, basic_config};
use mayfly_crypto::signing::{Algorithm, SigningKey};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `sub` claim that identifies the `billing` client workload of `basic_config`.
const BILLING_SUB: &str = "repo:acme/billing";

/// How long the slow issuer takes to serve its first key set.
const SLOW_KEYS: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Builds the configuration of `basic_config` with another `ci` trust provider, given as a YAML
/// flow mapping.
fn config_with_provider(trust_provider: &str) -> String {
    format!(
        "trust_providers:\n  - {trust_provider}\n\
client_workloads:\n  - name: billing\n    identities:\n      - {{trust_provider: ci, match: {{sub: \"{BILLING_SUB}\"}}}}\n\
server_workloads:\n  - {{name: payments, host: payments.example, port: 443}}\n\
credential_providers:\n  - {{name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}}\n\
access_policies:\n  - {{name: billing-payments, client_workload: billing, server_workload: payments, credential_provider: payments-jwt, trust_providers: [ci]}}\n"
    )
}

/// An OIDC issuer with two keys: `key-a`, whose key set `/keys-a` (also the one discovery names)
/// is served only after a delay, and `key-b`, served at once from `/keys-b`.
struct SlowIssuer {
    url: String,
    key_a: Arc<SigningKey>,
    key_b: Arc<SigningKey>,
    /// Requests served at `/keys-a` and at `/broken`, which always returns 500.
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowIssuer {
    async fn start(delay: Duration) -> SlowIssuer {
        let key_a = Arc::new(SigningKey::generate(Algorithm::ES256, "key-a").unwrap());
        let key_b = Arc::new(SigningKey::generate(Algorithm::ES256, "key-b").unwrap());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/keys-a")});
        let keys_a = json!({"keys": [serde_json::to_value(key_a.public_jwk()).unwrap()]});
        let keys_b = json!({"keys": [serde_json::to_value(key_b.public_jwk()).unwrap()]});

        let fetches = Arc::new(AtomicUsize::new(0));
        let (count_a, count_broken) = (fetches.clone(), fetches.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route(
                "/keys-a",
                get(move || async move {
                    count_a.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    Json(keys_a)
                }),
            )
            .route("/keys-b", get(move || async move { Json(keys_b) }))
            .route(
                "/broken",
                get(move || async move {
                    count_broken.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });

        SlowIssuer {
            url,
            key_a,
            key_b,
            fetches,
            task,
        }
    }

    /// Signs a fresh `billing` evidence token with `key`; every call gives a different token.
    fn token(&self, key: &SigningKey) -> String {
        let now = jiff::Timestamp::now().as_second();
        let claims = json!({
            "iss": self.url,
            "aud": "mayfly",
            "sub": BILLING_SUB,
            "iat": now,
            "exp": now + 600,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        key.sign_compact(&claims).unwrap()
    }
}

impl Drop for SlowIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests a credential for `payments`, sending `token` as the bearer evidence when given.
async fn request_payments(server: &TestServer, token: Option<&str>) -> Reply {
    let mut builder = server
        .http
        .post(server.url("/v1/credentials"))
        .json(&json!({"server_workload": "payments"}));
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    Reply::from(builder).await
}

/// Starts a credential request for `payments` in the background.
fn spawn_request(server: &TestServer, token: String) -> tokio::task::JoinHandle<Reply> {
    let request = server
        .http
        .post(server.url("/v1/credentials"))
        .bearer_auth(token)
        .json(&json!({"server_workload": "payments"}));
    tokio::spawn(Reply::from(request))
}

/// Signs a compact JWS over the exact header and payload text, so tests can send headers and
/// payloads that `SigningKey::sign_compact` never produces.
fn sign_raw(key: &SigningKey, header: &str, payload: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let der = key.to_pkcs8().unwrap();
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_ec_der(&der),
        jsonwebtoken::Algorithm::ES256,
    )
    .unwrap();
    format!("{signing_input}.{signature}")
}

/// Returns the standard claims of a `billing` token from `issuer`, valid for ten minutes.
fn billing_claims(issuer: &str) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({"iss": issuer, "aud": "mayfly", "sub": BILLING_SUB, "iat": now, "exp": now + 600})
}

async fn credential_events(server: &TestServer) -> Vec<Value> {
    server
        .audit_events("kind=credential_request&limit=1000")
        .await
}

/// Returns the `reason` of the newest credential request event.
async fn newest_reason(server: &TestServer) -> String {
    let events = credential_events(server).await;
    events[0]["detail"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Sends raw bytes on a new connection and reads until the server closes it or `wait` passes.
/// Returns what was read and whether the server closed the connection in time.
async fn raw_exchange(server: &TestServer, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(server.running().addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut response = Vec::new();
    let closed = tokio::time::timeout(wait, stream.read_to_end(&mut response))
        .await
        .is_ok();
    (response, closed)
}

// ---------------------------------------------------------------------------------------------
// Races between configuration changes and issuance

#[tokio::test]
async fn disable_during_slow_evidence_check_stops_issuance() {
    let server = TestServer::start().await;
    let issuer = SlowIssuer::start(SLOW_KEYS).await;
    let provider = format!(
        "{{name: ci, kind: oidc, issuer: \"{}\", audience: mayfly, discovery: true}}",
        issuer.url
    );
    server.apply(&config_with_provider(&provider)).await;

    let pending = spawn_request(&server, issuer.token(&issuer.key_a));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true, "{body}");
    let reply = pending.await.unwrap();

    assert_eq!(
        reply.status, 403,
        "a credential was issued after disable returned: {}",
        reply.body
    );
    assert_eq!(
        reply.body["step"], "server_workload_enabled",
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn jwks_uri_change_drops_old_keys() {
    let server = TestServer::start().await;
    let issuer = SlowIssuer::start(SLOW_KEYS).await;
    let provider = |path: &str| {
        format!(
            "{{name: ci, kind: oidc, issuer: \"{}\", audience: mayfly, jwks_uri: \"{}/{path}\"}}",
            issuer.url, issuer.url
        )
    };
    server
        .apply(&config_with_provider(&provider("keys-a")))
        .await;

    // The fetch of key set A is still running when the provider moves to key set B.
    let pending = spawn_request(&server, issuer.token(&issuer.key_a));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .apply(&config_with_provider(&provider("keys-b")))
        .await;
    let during_change = pending.await.unwrap();
    let signed_by_a = request_payments(&server, Some(&issuer.token(&issuer.key_a))).await;
    let signed_by_b = request_payments(&server, Some(&issuer.token(&issuer.key_b))).await;

    assert_eq!(
        during_change.status, 401,
        "evidence checked with replaced keys was accepted: {}",
        during_change.body
    );
    assert_eq!(
        signed_by_a.status, 401,
        "key A outlived its removal from the configuration: {}",
        signed_by_a.body
    );
    assert_eq!(signed_by_b.status, 200, "{}", signed_by_b.body);
}

// ---------------------------------------------------------------------------------------------
// Key fetches that callers can trigger

#[tokio::test]
async fn concurrent_first_requests_fetch_issuer_keys_once() {
    let server = TestServer::start().await;
    let issuer = SlowIssuer::start(Duration::from_millis(500)).await;
    let provider = format!(
        "{{name: ci, kind: oidc, issuer: \"{}\", audience: mayfly, jwks_uri: \"{}/keys-a\"}}",
        issuer.url, issuer.url
    );
    server.apply(&config_with_provider(&provider)).await;

    let pending: Vec<_> = (0..20)
        .map(|_| spawn_request(&server, issuer.token(&issuer.key_a)))
        .collect();
    for request in pending {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    assert_eq!(
        issuer.fetches.load(Ordering::SeqCst),
        1,
        "20 concurrent requests fetched the key set this often"
    );
}

#[tokio::test]
async fn failing_key_set_fetch_is_throttled() {
    let server = TestServer::start().await;
    let issuer = SlowIssuer::start(Duration::ZERO).await;
    let provider = format!(
        "{{name: ci, kind: oidc, issuer: \"{}\", audience: mayfly, jwks_uri: \"{}/broken\"}}",
        issuer.url, issuer.url
    );
    server.apply(&config_with_provider(&provider)).await;

    for _ in 0..10 {
        let reply = request_payments(&server, Some(&issuer.token(&issuer.key_a))).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }

    let fetches = issuer.fetches.load(Ordering::SeqCst);
    assert!(
        fetches <= 2,
        "10 requests made {fetches} fetches of a failing key set"
    );
}

// ---------------------------------------------------------------------------------------------
// Forged and tricky evidence tokens

#[tokio::test]
async fn token_supplied_keys_are_never_used() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let attacker = SlowIssuer::start(Duration::ZERO).await;
    let attacker_jwk = serde_json::to_value(attacker.key_a.public_jwk()).unwrap();
    let attacker_keys = format!("{}/keys-a", attacker.url);
    let headers = [
        json!({"alg": "ES256", "typ": "JWT", "jwk": attacker_jwk}),
        json!({"alg": "ES256", "typ": "JWT", "kid": "key-a", "jku": attacker_keys}),
        json!({"alg": "ES256", "typ": "JWT", "kid": "key-a", "x5u": attacker_keys}),
        json!({"alg": "ES256", "typ": "JWT", "kid": "issuer-key-1", "jwk": attacker_jwk}),
    ];

    for header in headers {
        let token = sign_raw(
            &attacker.key_a,
            &header.to_string(),
            &billing_claims(&issuer.url).to_string(),
        );
        let reply = request_payments(&server, Some(&token)).await;
        assert_eq!(reply.status, 401, "header {header}: {}", reply.body);
        assert_eq!(reply.body["step"], "evidence", "header {header}");
    }
    assert_eq!(
        attacker.fetches.load(Ordering::SeqCst),
        0,
        "the server fetched a key set named by a token"
    );
}

#[tokio::test]
async fn look_alike_issuer_and_audience_are_rejected() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let variants = [
        json!({"sub": BILLING_SUB, "iss": format!("{}/", issuer.url)}),
        json!({"sub": BILLING_SUB, "iss": issuer.url.to_uppercase()}),
        json!({"sub": BILLING_SUB, "iss": [issuer.url.clone()]}),
        json!({"sub": BILLING_SUB, "aud": "mayfly "}),
        json!({"sub": BILLING_SUB, "aud": "Mayfly"}),
        json!({"sub": BILLING_SUB, "aud": ["mayfly-staging", "xmayfly"]}),
        json!({"sub": BILLING_SUB, "aud": [["mayfly"]]}),
        json!({"sub": BILLING_SUB, "aud": {"mayfly": true}}),
    ];

    for claims in variants {
        let reply = request_payments(&server, Some(&issuer.token(claims.clone()))).await;
        assert_eq!(reply.status, 401, "claims {claims}: {}", reply.body);
    }
}

#[tokio::test]
async fn out_of_range_expiry_is_rejected() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;

    for exp in [
        json!(1e300),
        json!(-1e300),
        json!("9999999999"),
        json!(null),
        json!(i64::MIN),
    ] {
        let reply = request_payments(
            &server,
            Some(&issuer.token(json!({"sub": BILLING_SUB, "exp": exp}))),
        )
        .await;
        assert_eq!(reply.status, 401, "exp {exp}: {}", reply.body);
    }
    let far_future = issuer
        .token(json!({"sub": BILLING_SUB, "exp": i64::MAX, "nbf": i64::MIN, "iat": i64::MIN}));
    let reply = request_payments(&server, Some(&far_future)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let expires_at = reply.body["expires_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let lifetime = expires_at.as_second() - jiff::Timestamp::now().as_second();
    assert!(
        lifetime <= 300,
        "the credential lives {lifetime} s, longer than its provider's ttl"
    );
}

#[tokio::test]
async fn duplicate_issuer_claim_resolves_to_last_value() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let now = jiff::Timestamp::now().as_second();
    let header = r#"{"alg":"ES256","kid":"issuer-key-1","typ":"JWT"}"#;
    let payload = |first: &str, last: &str| {
        format!(
            r#"{{"iss":"{first}","aud":"mayfly","sub":"{BILLING_SUB}","iat":{now},"exp":{},"iss":"{last}"}}"#,
            now + 600
        )
    };

    let trusted_last = sign_raw(
        &issuer.key,
        header,
        &payload("https://evil.example", &issuer.url),
    );
    let trusted_first = sign_raw(
        &issuer.key,
        header,
        &payload(&issuer.url, "https://evil.example"),
    );

    // Picking the trust provider and checking `iss` read the same (last) value.
    assert_eq!(
        request_payments(&server, Some(&trusted_last)).await.status,
        200
    );
    assert_eq!(
        request_payments(&server, Some(&trusted_first)).await.status,
        401
    );
}

#[tokio::test]
async fn non_canonical_signature_misses_cache() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let token = issuer.token(json!({"sub": BILLING_SUB}));
    assert_eq!(request_payments(&server, Some(&token)).await.status, 200);

    // An ES256 signature is 64 bytes, so its last base64url character carries four unused bits.
    let (body, last) = token.split_at(token.len() - 1);
    let bumped = match last {
        "A" => "B",
        "Q" => "R",
        "g" => "h",
        "w" => "x",
        other => panic!("unexpected last signature character {other}"),
    };
    let variant = format!("{body}{bumped}");
    let reply = request_payments(&server, Some(&variant)).await;

    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn claim_glob_characters_match_literally() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;

    for sub in [
        "repo:acme/*",
        "*",
        "repo:acme/billin*",
        "repo:acme/billing*",
    ] {
        let reply = request_payments(&server, Some(&issuer.token(json!({"sub": sub})))).await;
        assert_eq!(reply.status, 403, "sub {sub}: {}", reply.body);
        assert_eq!(reply.body["step"], "client_workload", "sub {sub}");
    }
}

#[tokio::test]
async fn long_unverified_issuer_is_shortened() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let claims = json!({"iss": "x".repeat(40_000), "aud": "mayfly", "sub": BILLING_SUB});
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("signature")
    );

    let reply = request_payments(&server, Some(&token)).await;

    assert_eq!(reply.status, 401, "{}", reply.body);
    let reason = newest_reason(&server).await;
    assert!(
        reason.len() < 500,
        "the audit event holds {} bytes of the caller's issuer",
        reason.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Request target and source address

#[tokio::test]
async fn oversized_target_is_not_audited() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let token = issuer.token(json!({"sub": BILLING_SUB}));
    let huge = "a".repeat(200_000);
    let bodies = [
        (json!({"server_workload": huge}), "server_workload"),
        (json!({"target": {"host": huge, "port": 443}}), "target"),
    ];

    for (body, field) in bodies {
        for evidence in [None, Some(token.as_str())] {
            let mut builder = server.http.post(server.url("/v1/credentials")).json(&body);
            if let Some(token) = evidence {
                builder = builder.bearer_auth(token);
            }
            let reply = Reply::from(builder).await;
            reply.assert_problem(400);
            assert_eq!(reply.body["field"], field, "{}", reply.body);
            assert!(
                reply.body.to_string().len() < 1000,
                "the problem echoes the whole target"
            );
        }
    }
    let stored: usize = credential_events(&server)
        .await
        .iter()
        .map(|event| event.to_string().len())
        .sum();
    assert!(
        stored < 10_000,
        "{stored} bytes of credential events for rejected targets"
    );
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let config = basic_config(&issuer).replace(
        "trust_providers: [ci]}",
        "trust_providers: [ci], access_conditions: [office]}",
    ) + "access_conditions:\n  - {name: office, kind: source_ip, allow: [10.0.0.0/8]}\n";
    server.apply(&config).await;

    for forwarded in ["10.1.2.3", "10.1.2.3, 10.4.5.6", "127.0.0.1, 10.1.2.3"] {
        let request = server
            .http
            .post(server.url("/v1/credentials"))
            .bearer_auth(issuer.token(json!({"sub": BILLING_SUB})))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"server_workload": "payments"}));
        let reply = Reply::from(request).await;
        assert_eq!(
            reply.status, 403,
            "X-Forwarded-For {forwarded}: {}",
            reply.body
        );
        assert_eq!(reply.body["step"], "access_condition");
    }
    let events = credential_events(&server).await;
    assert!(
        events
            .iter()
            .all(|event| event["detail"]["source_ip"] == "127.0.0.1"),
        "{events:?}"
    );
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_uses_rightmost() {
    let server = TestServer::start_with(|settings| {
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
    })
    .await;
    let issuer = TestIssuer::start().await;
    let config = basic_config(&issuer).replace(
        "trust_providers: [ci]}",
        "trust_providers: [ci], access_conditions: [office]}",
    ) + "access_conditions:\n  - {name: office, kind: source_ip, allow: [10.0.0.0/8]}\n";
    server.apply(&config).await;
    let cases = [
        ("10.1.2.3", 200),
        ("10.1.2.3, 198.51.100.7", 403),
        ("10.1.2.3, 198.51.100.7, 127.0.0.1", 403),
        ("198.51.100.7, 10.1.2.3", 200),
    ];

    for (forwarded, status) in cases {
        let request = server
            .http
            .post(server.url("/v1/credentials"))
            .bearer_auth(issuer.token(json!({"sub": BILLING_SUB})))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"server_workload": "payments"}));
        let reply = Reply::from(request).await;
        assert_eq!(
            reply.status, status,
            "X-Forwarded-For {forwarded}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn unparseable_forwarded_for_is_unknown_source() {
    let server = TestServer::start_with(|settings| {
        settings.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
    })
    .await;
    let issuer = TestIssuer::start().await;
    // The allowlist contains the proxy's own network, as an internal-only rule behind a proxy would.
    let config = basic_config(&issuer).replace(
        "trust_providers: [ci]}",
        "trust_providers: [ci], access_conditions: [internal]}",
    ) + "access_conditions:\n  - {name: internal, kind: source_ip, allow: [127.0.0.0/8]}\n";
    server.apply(&config).await;
    let cases = [
        ("garbage", 403),
        ("unknown", 403),
        ("127.0.0.5, garbage", 403),
        ("", 403),
        ("198.51.100.7:5555", 403),
        ("[2001:db8::7]:443", 403),
        ("127.0.0.5:5555", 200),
    ];

    for (forwarded, status) in cases {
        let request = server
            .http
            .post(server.url("/v1/credentials"))
            .bearer_auth(issuer.token(json!({"sub": BILLING_SUB})))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"server_workload": "payments"}));
        let reply = Reply::from(request).await;
        assert_eq!(
            reply.status, status,
            "X-Forwarded-For {forwarded:?}: {}",
            reply.body
        );
    }
    let without_header =
        request_payments(&server, Some(&issuer.token(json!({"sub": BILLING_SUB})))).await;
    assert_eq!(
        without_header.status, 200,
        "a request from the proxy itself: {}",
        without_header.body
    );
}

// ---------------------------------------------------------------------------------------------
// Stalled and oversized requests

#[tokio::test]
async fn stalled_request_body_is_cut_off() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let head = b"POST /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"server";

    let (response, closed) = raw_exchange(&server, head, Duration::from_secs(25)).await;

    assert!(
        closed,
        "the connection was still open after {:?}",
        started.elapsed()
    );
    assert!(
        !response.starts_with(b"HTTP/1.1 2"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

    let (response, closed) = raw_exchange(&server, request, Duration::from_secs(25)).await;

    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(
        closed,
        "the idle connection was still open after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oversized_headers_are_rejected() {
    let server = TestServer::start().await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    for index in 0..500 {
        many.push_str(&format!("X-Header-{index}: x\r\n"));
    }
    many.push_str("\r\n");
    let big_bearer = format!(
        "POST /v1/credentials HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
        "a".repeat(300 * 1024)
    );

    for request in [big, many, big_bearer] {
        let mut stream = TcpStream::connect(server.running().addr).await.unwrap();
        // The server may close the connection before it has read the whole request.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut response = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response)).await;
        assert!(
            !response.starts_with(b"HTTP/1.1 2"),
            "{}",
            String::from_utf8_lossy(&response)
        );
    }
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------------------------------------
// Admin tokens and secrets

#[tokio::test]
async fn altered_admin_tokens_are_unauthorized() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    let secret = token
        .strip_prefix("mfy_admin_")
        .expect("admin tokens start with mfy_admin_");
    let variants = [
        token.to_uppercase(),
        token[..token.len() - 1].to_string(),
        format!("{token}x"),
        format!("{token}\u{200b}"),
        "mfy_admin_".to_string(),
        secret.to_string(),
        format!("{token} {token}"),
        String::new(),
    ];

    for variant in &variants {
        let (status, body) = server
            .admin_as(variant, reqwest::Method::GET, "/v1/server-workloads", None)
            .await;
        assert_eq!(status, 401, "token variant {variant:?}: {body}");
    }
    for header in [
        format!("BEARER {token}"),
        format!("Basic {token}"),
        format!("Token {token}"),
        token.clone(),
    ] {
        let request = server
            .http
            .get(server.url("/v1/server-workloads"))
            .header("authorization", header.clone());
        let reply = Reply::from(request).await;
        assert_eq!(
            reply.status, 401,
            "Authorization {header:?}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn secrets_stay_out_of_audit_and_denials() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let granted = issuer.token(json!({"sub": BILLING_SUB}));
    let unmatched = issuer.token(json!({"sub": "repo:acme/other"}));
    let (signed, _) = granted.rsplit_once('.').unwrap();
    let bad_signature = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));

    let grant = request_payments(&server, Some(&granted)).await;
    assert_eq!(grant.status, 200, "{}", grant.body);
    let issued = grant.body["token"].as_str().unwrap().to_string();
    let mut denials = Vec::new();
    for evidence in [&unmatched, &bad_signature, &server.admin_token] {
        denials.push(request_payments(&server, Some(evidence)).await);
    }

    let events = server.audit_events("limit=1000").await;
    let text = serde_json::to_string(&events).unwrap();
    for (name, secret) in [
        ("evidence", &granted),
        ("unmatched evidence", &unmatched),
        ("forged evidence", &bad_signature),
        ("admin token", &server.admin_token),
    ] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "the {name} is in an audit event");
        for denial in &denials {
            assert!(
                !denial.body.to_string().contains(signature),
                "the {name} is in a denial: {}",
                denial.body
            );
        }
    }
    let issued_signature = issued.rsplit('.').next().unwrap();
    assert!(
        !text.contains(issued_signature),
        "the issued credential is in an audit event"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[tokio::test]
async fn same_name_in_every_kind_stays_separate() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let config = format!(
        "trust_providers:\n{}\
client_workloads:\n  - {{name: same, identities: [{{trust_provider: same, match: {{sub: \"{BILLING_SUB}\"}}}}]}}\n\
server_workloads:\n  - {{name: same, host: same.example, port: 443}}\n\
credential_providers:\n  - {{name: same, kind: jwt_svid, audience: [same], ttl: 5m}}\n\
access_conditions:\n  - {{name: same, kind: source_ip, allow: [127.0.0.0/8]}}\n\
access_policies:\n  - {{name: same, client_workload: same, server_workload: same, credential_provider: same, trust_providers: [same], access_conditions: [same]}}\n",
        issuer.trust_provider_yaml("same")
    );
    server.apply(&config).await;

    for (kind, field, value) in [
        ("trust-providers", "kind", "oidc"),
        ("client-workloads", "spiffe_id", ""),
        ("server-workloads", "host", "same.example"),
        ("credential-providers", "kind", "jwt_svid"),
        ("access-conditions", "kind", "source_ip"),
        ("access-policies", "server_workload", "same"),
    ] {
        let (status, body) = server.get(&format!("/v1/{kind}/same")).await;
        assert_eq!(status, 200, "{kind}: {body}");
        if !value.is_empty() {
            assert_eq!(body[field], value, "{kind}: {body}");
        }
    }
    let reply = request_payments(&server, Some(&issuer.token(json!({"sub": BILLING_SUB})))).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let (status, body) = server
        .post("/v1/credentials", json!({"server_workload": "same"}))
        .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn spiffe_id_outside_trust_domain_is_rejected() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let config = basic_config(&issuer).replace(
        "  - name: billing\n",
        "  - name: billing\n    spiffe_id: spiffe://prod.other.example/billing\n",
    );

    let (status, body) = server.try_apply(&config, false).await;

    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("prod.other.example"),
        "{body}"
    );
    let (status, _) = server.get("/v1/client-workloads/billing").await;
    assert_eq!(status, 404);
}

// ---------------------------------------------------------------------------------------------
// Crafted audit rows

/// Runs a server until its audit chain has a few events, stops it and returns its data directory.
async fn stopped_server_with_events() -> TempDir {
    let mut server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    for _ in 0..2 {
        let reply =
            request_payments(&server, Some(&issuer.token(json!({"sub": BILLING_SUB})))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    server.stop().await;
    std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap())
}

async fn open_database(dir: &TempDir) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("data").join("mayfly.db"));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap()
}

async fn execute(dir: &TempDir, statement: &'static str) {
    let mut database = open_database(dir).await;
    sqlx::query(statement).execute(&mut database).await.unwrap();
}

/// Starts a server on `dir` and returns the status and body of `GET /v1/audit/verify`, or the
/// transport error when the server dropped the connection.
async fn verify_on(dir: &TempDir) -> Result<(u16, Value), String> {
    let data_dir = dir.path().join("data");
    let server = TestServer::start_with(|settings| settings.data_dir = data_dir).await;
    let request = server
        .http
        .get(server.url("/v1/audit/verify"))
        .bearer_auth(&server.admin_token);
    let response = tokio::time::timeout(Duration::from_secs(20), request.send())
        .await
        .map_err(|_| "audit verify did not answer within 20 s".to_string())?
        .map_err(|error| format!("audit verify failed: {error}"))?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn maximum_sequence_audit_row_is_reported() {
    let dir = stopped_server_with_events().await;
    execute(
        &dir,
        "INSERT INTO audit_events (seq, id, time_us, kind, outcome, server_workload, client_workload, event_json, prev_hash, hash) \
         SELECT 9223372036854775807, 'forged', time_us, kind, outcome, server_workload, client_workload, event_json, prev_hash, hash \
         FROM audit_events WHERE seq = 2",
    )
    .await;

    let (status, report) = verify_on(&dir).await.unwrap();

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["problems"]
            .to_string()
            .contains("9223372036854775807"),
        "{report}"
    );
}

#[tokio::test]
async fn unreadable_audit_row_is_reported() {
    let dir = stopped_server_with_events().await;
    execute(
        &dir,
        "UPDATE audit_events SET event_json = 'not json' WHERE seq = 3",
    )
    .await;

    let (status, report) = verify_on(&dir).await.unwrap();

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|problem| problem["seq"] == 3),
        "{report}"
    );
}

#[tokio::test]

async fn edited_index_column_is_detected() {
    let dir = stopped_server_with_events().await;
    execute(
        &dir,
        "UPDATE audit_events SET outcome = 'failure' WHERE outcome = 'success'",
    )
    .await;

    let (status, report) = verify_on(&dir).await.unwrap();

    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["ok"], false,
        "an event hidden from outcome=success queries verifies: {report}"
    );
}

// ---------------------------------------------------------------------------------------------
// Workload socket

/// Connects to the workload socket from a Python process, forks a child that keeps the
/// connection, and replaces the connecting process with `sleep`. The child then sends the
/// credential request and prints the HTTP status line.
const EXEC_AFTER_CONNECT: &str = r#"
import os, socket, sys, time
connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
connection.connect(sys.argv[1])
if os.fork() == 0:
    time.sleep(1.0)
    body = b'{"server_workload":"payments"}'
    head = "POST /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    connection.sendall(head.encode() + body)
    response = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            break
        response += chunk
    sys.stdout.write(response.decode(errors="replace").split("\r\n")[0])
    sys.stdout.flush()
    os._exit(0)
os.execv(sys.argv[2], [sys.argv[2], "3"])
"#;

#[tokio::test]
#[ignore = "SO_PEERCRED names the connecting pid, and exec keeps the pid and start time, so the socket attests whatever binary the process runs when the request arrives"]
async fn exec_after_connect_borrows_no_identity() {
    let uid = rustix::process::getuid().as_raw();
    let sleep = std::fs::canonicalize("/bin/sleep")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let server = TestServer::start().await;
    let yaml = format!(
        "trust_providers:\n  - {{name: local, kind: unix}}\n\
client_workloads:\n  - {{name: sleeper, identities: [{{trust_provider: local, match: {{uid: {uid}, path: \"{sleep}\"}}}}]}}\n\
server_workloads:\n  - {{name: payments, host: payments.example, port: 443}}\n\
credential_providers:\n  - {{name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}}\n\
access_policies:\n  - {{name: sleeper-payments, client_workload: sleeper, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}}\n"
    );
    server.apply(&yaml).await;
    let socket = server.socket_path().to_string_lossy().into_owned();

    let output = tokio::process::Command::new("python3")
        .args(["-c", EXEC_AFTER_CONNECT, &socket, &sleep])
        .output()
        .await
        .unwrap();

    let status_line = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        status_line.starts_with("HTTP/1.1 "),
        "{status_line:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !status_line.starts_with("HTTP/1.1 200"),
        "a python process got the credential of {sleep}"
    );
}

/// Sends a credential request for `payments` over the workload socket from a process running
/// `program`, a copy of socat, and returns the HTTP status line.
async fn socket_request_from(program: &std::path::Path, socket: &std::path::Path) -> String {
    let body = r#"{"server_workload":"payments"}"#;
    let request = format!(
        "POST /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut child = tokio::process::Command::new(program)
        .args([
            "-t",
            "5",
            "-",
            &format!("UNIX-CONNECT:{},shut-none", socket.display()),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().next() {
        Some(line) => line.to_string(),
        None => format!(
            "no response; socat wrote {:?}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[tokio::test]
async fn rewritten_binary_is_hashed_again() {
    use sha2::{Digest, Sha256};
    use std::io::Write;

    let programs = tempfile::tempdir().unwrap();
    let program = programs.path().join("pinned-workload");
    std::fs::copy("/usr/bin/socat", &program).unwrap();
    let original = std::fs::read(&program).unwrap();
    let hash = hex::encode(Sha256::digest(&original));
    let uid = rustix::process::getuid().as_raw();
    let server = TestServer::start().await;
    let yaml = format!(
        "trust_providers:\n  - {{name: local, kind: unix}}\n\
client_workloads:\n  - {{name: pinned, identities: [{{trust_provider: local, match: {{uid: {uid}, path: \"{}\", sha256: \"{hash}\"}}}}]}}\n\
server_workloads:\n  - {{name: payments, host: payments.example, port: 443}}\n\
credential_providers:\n  - {{name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}}\n\
access_policies:\n  - {{name: pinned-payments, client_workload: pinned, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}}\n",
        program.display()
    );
    server.apply(&yaml).await;
    let first = socket_request_from(&program, &server.socket_path()).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");

    // Same inode, same size, same modification time, different content.
    let modified = std::fs::metadata(&program).unwrap().modified().unwrap();
    let marker = original
        .windows(14)
        .position(|window| window == b"Gerhard Rieger")
        .unwrap();
    let mut rewritten = original.clone();
    rewritten[marker] = b'g';
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&program)
        .unwrap();
    file.write_all(&rewritten).unwrap();
    file.set_times(std::fs::FileTimes::new().set_modified(modified))
        .unwrap();
    drop(file);
    let second = socket_request_from(&program, &server.socket_path()).await;

    assert!(
        second.starts_with("HTTP/1.1 403"),
        "the rewritten binary kept the old hash: {second:?}"
    );
}
