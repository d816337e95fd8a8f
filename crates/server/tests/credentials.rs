//! Credential requests: each way the decision flow denies a request, what a grant returns, the
//! audit event every request writes, the verified-evidence cache and the workload socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Reply, TestIssuer, TestServer, claims_of};
use mayfly_crypto::signing::{Algorithm, SigningKey};
use mayfly_server::evidence::unix::{
    ExecutableHasher, PeerAtAccept, UnixAttestationError, attest, uptime_ticks,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The `sub` claim that identifies the `billing` client workload.
const BILLING_SUB: &str = "repo:acme/billing";

/// A configuration file assembled from one-line YAML flow mappings, one list per resource kind.
struct Config {
    trust_providers: Vec<String>,
    client_workloads: Vec<String>,
    server_workloads: Vec<String>,
    credential_providers: Vec<String>,
    access_conditions: Vec<String>,
    access_policies: Vec<String>,
}

impl Config {
    /// Builds the base configuration: the client `billing`, identified by the issuer's `sub`,
    /// may reach `payments` with a JWT-SVID from `payments-jwt` under policy `billing-payments`.
    fn oidc(issuer: &TestIssuer) -> Config {
        Config {
            trust_providers: vec![oidc_trust_provider("ci", &issuer.url, "mayfly")],
            client_workloads: vec![format!(
                "{{name: billing, identities: [{{trust_provider: ci, match: {{sub: \"{BILLING_SUB}\"}}}}]}}"
            )],
            server_workloads: vec![
                "{name: payments, host: payments.example, port: 443}".to_string(),
            ],
            credential_providers: vec![
                "{name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}".to_string(),
            ],
            access_conditions: Vec::new(),
            access_policies: vec![policy(
                "billing-payments",
                "billing",
                "payments",
                "[ci]",
                "[]",
            )],
        }
    }

    fn render(&self) -> String {
        let sections = [
            ("trust_providers", &self.trust_providers),
            ("client_workloads", &self.client_workloads),
            ("server_workloads", &self.server_workloads),
            ("credential_providers", &self.credential_providers),
            ("access_conditions", &self.access_conditions),
            ("access_policies", &self.access_policies),
        ];
        let mut yaml = String::new();
        for (kind, entries) in sections {
            if entries.is_empty() {
                continue;
            }
            yaml.push_str(kind);
            yaml.push_str(":\n");
            for entry in entries {
                yaml.push_str(&format!("  - {entry}\n"));
            }
        }
        yaml
    }
}

fn oidc_trust_provider(name: &str, issuer: &str, audience: &str) -> String {
    format!(
        "{{name: {name}, kind: oidc, issuer: \"{issuer}\", audience: {audience}, discovery: true}}"
    )
}

fn policy(
    name: &str,
    client: &str,
    server: &str,
    trust_providers: &str,
    conditions: &str,
) -> String {
    format!(
        "{{name: {name}, client_workload: {client}, server_workload: {server}, credential_provider: payments-jwt, \
         trust_providers: {trust_providers}, access_conditions: {conditions}}}"
    )
}

/// Requests a credential over HTTP, sending `evidence` as a bearer token when given.
async fn request(server: &TestServer, evidence: Option<&str>, body: Value) -> Reply {
    let mut builder = server.http.post(server.url("/v1/credentials")).json(&body);
    if let Some(token) = evidence {
        builder = builder.bearer_auth(token);
    }
    Reply::from(builder).await
}

async fn request_payments(server: &TestServer, evidence: &str) -> Reply {
    request(
        server,
        Some(evidence),
        json!({"server_workload": "payments"}),
    )
    .await
}

/// Starts a server and an issuer and applies `Config::oidc` after `adjust` changed it.
async fn start(adjust: impl FnOnce(&mut Config, &TestIssuer)) -> (TestServer, TestIssuer) {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let mut config = Config::oidc(&issuer);
    adjust(&mut config, &issuer);
    server.apply(&config.render()).await;
    (server, issuer)
}

fn billing_evidence(issuer: &TestIssuer) -> String {
    issuer.token(json!({"sub": BILLING_SUB}))
}

/// Checks a denial: the status, a problem document that names only the step and the request id,
/// and exactly one failure audit event for the request at that step. Returns the audit event.
async fn assert_denied(server: &TestServer, answer: &Reply, status: u16, step: &str) -> Value {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    let problem = answer
        .body
        .as_object()
        .expect("the problem document is an object");
    let mut fields: Vec<&str> = problem.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["detail", "request_id", "status", "step", "title", "type"]
    );
    assert_eq!(problem["step"], step);
    assert_eq!(problem["status"], status);
    assert_eq!(
        problem["detail"],
        format!("credential request denied at step {step}")
    );
    let request_id = problem["request_id"]
        .as_str()
        .expect("request_id is a string");
    assert_eq!(answer.header("x-request-id"), Some(request_id));

    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = events[0].clone();
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["detail"]["step"], step);
    assert_eq!(event["detail"]["request_id"], request_id);
    event
}

fn reason_of(event: &Value) -> &str {
    event["detail"]["reason"]
        .as_str()
        .expect("a failure event has a reason")
}

fn assert_reason_contains(event: &Value, expected: &str) {
    let reason = reason_of(event);
    assert!(
        reason.contains(expected),
        "reason {reason:?} does not mention {expected:?}"
    );
}

/// Builds a token for `billing` from a raw header, the issuer's usual claims and `signature`.
fn token_with_header(issuer: &TestIssuer, header: Value, signature: &[u8]) -> String {
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({"iss": issuer.url, "aud": "mayfly", "sub": BILLING_SUB, "iat": now, "exp": now + 600});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

// ---------------------------------------------------------------------------------------------
// Evidence failures: 401

#[tokio::test]
async fn request_without_evidence_gets_no_credential() {
    let (server, _issuer) = start(|_, _| {}).await;

    let answer = request(&server, None, json!({"server_workload": "payments"})).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "no evidence");
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn token_from_unknown_issuer_gets_no_credential() {
    let (server, _issuer) = start(|_, _| {}).await;
    let stranger = TestIssuer::start().await;

    let answer = request_payments(&server, &stranger.token(json!({"sub": BILLING_SUB}))).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "no oidc trust provider has issuer");
    assert_reason_contains(&event, &stranger.url);
}

#[tokio::test]
async fn expired_evidence_token_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    let now = jiff::Timestamp::now().as_second();
    let expired = issuer.token(json!({"sub": BILLING_SUB, "iat": now - 7200, "exp": now - 3600}));

    let answer = request_payments(&server, &expired).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "expired");
}

#[tokio::test]
async fn evidence_token_for_another_audience_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    let token = issuer.token(json!({"sub": BILLING_SUB, "aud": "some-other-service"}));

    let answer = request_payments(&server, &token).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "aud");
    assert_reason_contains(&event, "some-other-service");
}

#[tokio::test]
async fn evidence_signed_by_unpublished_key_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    // Same kid as the issuer's published key, but a different private key.
    let rogue = SigningKey::generate(Algorithm::ES256, issuer.key.kid()).unwrap();
    let now = jiff::Timestamp::now().as_second();
    let forged = rogue
        .sign_compact(&json!({"iss": issuer.url, "aud": "mayfly", "sub": BILLING_SUB, "iat": now, "exp": now + 600}))
        .unwrap();

    let answer = request_payments(&server, &forged).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "signature does not verify");
}

#[tokio::test]
async fn evidence_with_unknown_kid_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    let rogue = SigningKey::generate(Algorithm::ES256, "rogue-key").unwrap();
    let now = jiff::Timestamp::now().as_second();
    let forged = rogue
        .sign_compact(&json!({"iss": issuer.url, "aud": "mayfly", "sub": BILLING_SUB, "iat": now, "exp": now + 600}))
        .unwrap();

    let answer = request_payments(&server, &forged).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "rogue-key");
}

#[tokio::test]
async fn alg_none_evidence_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    let unsigned = token_with_header(&issuer, json!({"alg": "none", "typ": "JWT"}), b"");

    let answer = request_payments(&server, &unsigned).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "alg \"none\" is not allowed");
}

#[tokio::test]
async fn hs256_key_confusion_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    // Algorithm confusion: an HMAC whose secret is the public key a verifier holds.
    let public_key = serde_json::to_vec(&issuer.key.public_jwk()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(issuer.key.kid().to_string());
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({"iss": issuer.url, "aud": "mayfly", "sub": BILLING_SUB, "iat": now, "exp": now + 600});
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_key).unwrap(),
    )
    .unwrap();

    let answer = request_payments(&server, &forged).await;

    let event = assert_denied(&server, &answer, 401, "evidence").await;
    assert_reason_contains(&event, "alg \"HS256\" is not allowed");
}

// ---------------------------------------------------------------------------------------------
// Decision failures: 403

#[tokio::test]
async fn unmatched_client_workload_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;

    let answer =
        request_payments(&server, &issuer.token(json!({"sub": "repo:acme/intruder"}))).await;

    let event = assert_denied(&server, &answer, 403, "client_workload").await;
    assert_reason_contains(&event, "matches no client workload");
}

#[tokio::test]
async fn ambiguous_client_workload_gets_no_credential() {
    let (server, issuer) = start(|config, _| {
        config.client_workloads.push(
            "{name: acme-any, identities: [{trust_provider: ci, match: {sub: \"repo:acme/*\"}}]}"
                .to_string(),
        );
    })
    .await;

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    let event = assert_denied(&server, &answer, 403, "client_workload").await;
    assert_reason_contains(&event, "ambiguous");
    assert_reason_contains(&event, "\"acme-any\", \"billing\"");
}

#[tokio::test]
async fn unknown_server_workload_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;

    let answer = request(
        &server,
        Some(&billing_evidence(&issuer)),
        json!({"server_workload": "ledger"}),
    )
    .await;

    let event = assert_denied(&server, &answer, 403, "server_workload").await;
    assert_reason_contains(&event, "no server workload matches ledger");
    assert_eq!(event["client_workload"], "billing");
}

#[tokio::test]
async fn client_without_policy_gets_no_credential() {
    let (server, issuer) = start(|config, _| {
        config
            .server_workloads
            .push("{name: ledger, host: ledger.example, port: 443}".to_string());
    })
    .await;

    let answer = request(
        &server,
        Some(&billing_evidence(&issuer)),
        json!({"server_workload": "ledger"}),
    )
    .await;

    let event = assert_denied(&server, &answer, 403, "access_policy").await;
    assert_reason_contains(
        &event,
        "no access policy allows client workload \"billing\"",
    );
    assert_eq!(event["server_workload"], "ledger");
}

#[tokio::test]
async fn trust_provider_outside_policy_gets_no_credential() {
    // billing is known through ci and through the workload socket, but its policy accepts only
    // the socket.
    let (server, issuer) = start(|config, _| {
        config.trust_providers.push("{name: local, kind: unix}".to_string());
        config.client_workloads[0] = format!(
            "{{name: billing, identities: [{{trust_provider: ci, match: {{sub: \"{BILLING_SUB}\"}}}}, \
             {{trust_provider: local, match: {{uid: 4242}}}}]}}"
        );
        config.access_policies[0] = policy("billing-payments", "billing", "payments", "[local]", "[]");
    })
    .await;

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    let event = assert_denied(&server, &answer, 403, "access_policy").await;
    assert_reason_contains(
        &event,
        "accepts evidence only from trust providers [\"local\"]",
    );
    assert_eq!(event["detail"]["policy"], "billing-payments");
}

#[tokio::test]
async fn disabled_server_workload_gets_no_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    let (status, body) = server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    let event = assert_denied(&server, &answer, 403, "server_workload_enabled").await;
    assert_reason_contains(&event, "server workload \"payments\" is disabled");
    assert_eq!(event["server_workload"], "payments");
    assert_eq!(event["client_workload"], "billing");
    assert_eq!(event["detail"]["policy"], "billing-payments");

    let (status, body) = server
        .post("/v1/server-workloads/payments/enable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = request_payments(&server, &billing_evidence(&issuer)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn source_ip_condition_blocks_loopback_caller() {
    let (server, issuer) = start(|config, _| {
        config
            .access_conditions
            .push("{name: office-network, kind: source_ip, allow: [10.0.0.0/8]}".to_string());
        config.access_policies[0] = policy(
            "billing-payments",
            "billing",
            "payments",
            "[ci]",
            "[office-network]",
        );
    })
    .await;

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    let event = assert_denied(&server, &answer, 403, "access_condition").await;
    assert_reason_contains(
        &event,
        "source address 127.0.0.1 is not in the allowed networks",
    );
    assert_reason_contains(&event, "office-network");
}

#[tokio::test]
async fn closed_time_window_blocks_request() {
    // Every day, but never during the current UTC hour or the next one (so an hour that turns
    // while the test runs is still outside the window).
    let hour = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .hour();
    let start_hour = (hour + 2) % 24;
    let window = format!(
        "{{name: closed-now, kind: time_window, timezone: UTC, schedule: [{{days: [mon, tue, wed, thu, fri, sat, sun], \
         start: \"{start_hour:02}:00\", end: \"{hour:02}:00\"}}]}}"
    );
    let (server, issuer) = start(|config, _| {
        config.access_conditions.push(window);
        config.access_policies[0] = policy(
            "billing-payments",
            "billing",
            "payments",
            "[ci]",
            "[closed-now]",
        );
    })
    .await;

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    let event = assert_denied(&server, &answer, 403, "access_condition").await;
    assert_reason_contains(
        &event,
        "is outside the schedule of access condition \"closed-now\"",
    );
}

// ---------------------------------------------------------------------------------------------
// Grants

#[tokio::test]
async fn grant_by_name_returns_bearer_credential() {
    let (server, issuer) = start(|_, _| {}).await;

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let body = &answer.body;
    assert_eq!(body["credential_type"], "jwt_svid");
    assert_eq!(body["spiffe_id"], "spiffe://mayfly.local/billing");
    assert_eq!(body["server_workload"], "payments");
    let token = body["token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(claims["sub"], "spiffe://mayfly.local/billing");
    let expires_at = jiff::Timestamp::from_second(claims["exp"].as_i64().unwrap()).unwrap();
    assert_eq!(body["expires_at"], expires_at.to_string());
    assert_eq!(
        body["presentation"],
        json!({"headers": {"Authorization": format!("Bearer {token}")}})
    );
    assert_eq!(body["request_id"].as_str(), answer.header("x-request-id"));
}

#[tokio::test]
async fn grant_by_target_matches_host_case_insensitively() {
    let (server, issuer) = start(|_, _| {}).await;
    let evidence = billing_evidence(&issuer);

    let answer = request(
        &server,
        Some(&evidence),
        json!({"target": {"host": "PAYMENTS.Example", "port": 443}}),
    )
    .await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["server_workload"], "payments");
    assert_eq!(
        claims_of(answer.body["token"].as_str().unwrap())["aud"],
        json!(["payments"])
    );

    let wrong_port = request(
        &server,
        Some(&evidence),
        json!({"target": {"host": "payments.example", "port": 8443}}),
    )
    .await;
    assert_eq!(wrong_port.status, 403, "{}", wrong_port.body);
    assert_eq!(wrong_port.body["step"], "server_workload");
}

#[tokio::test]
async fn header_authentication_presents_token_in_named_header() {
    let (server, issuer) = start(|config, _| {
        config.server_workloads[0] =
            "{name: payments, host: payments.example, port: 443, authentication: {method: header, header: X-Api-Key}}"
                .to_string();
    })
    .await;

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = answer.body["token"].as_str().unwrap();
    assert_eq!(
        answer.body["presentation"],
        json!({"headers": {"X-Api-Key": token}})
    );
}

#[tokio::test]
async fn query_authentication_presents_token_as_parameter() {
    let (server, issuer) = start(|config, _| {
        config.server_workloads[0] =
            "{name: payments, host: payments.example, port: 443, authentication: {method: query, parameter: api_key}}"
                .to_string();
    })
    .await;

    let answer = request_payments(&server, &billing_evidence(&issuer)).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = answer.body["token"].as_str().unwrap();
    assert_eq!(
        answer.body["presentation"],
        json!({"query": {"api_key": token}})
    );
}

#[tokio::test]
async fn success_audit_event_records_decision_without_evidence() {
    let (server, issuer) = start(|_, _| {}).await;
    let evidence = billing_evidence(&issuer);

    let answer = request_payments(&server, &evidence).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = claims_of(answer.body["token"].as_str().unwrap());

    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    let detail = &event["detail"];
    let time: jiff::Timestamp = event["time"].as_str().unwrap().parse().unwrap();
    assert_eq!(time.as_second(), claims["iat"].as_i64().unwrap());
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["server_workload"], "payments");
    assert_eq!(event["client_workload"], "billing");
    assert_eq!(detail["spiffe_id"], "spiffe://mayfly.local/billing");
    assert_eq!(detail["credential_type"], "jwt_svid");
    assert_eq!(detail["source_ip"], "127.0.0.1");
    assert_eq!(detail["transport"], "http");
    assert_eq!(detail["policy"], "billing-payments");
    assert_eq!(detail["trust_provider"], "ci");
    assert_eq!(detail["token_id"], claims["jti"]);
    assert_eq!(detail["expires_at"], answer.body["expires_at"]);
    assert_eq!(detail["request_id"], answer.body["request_id"]);
    assert_eq!(detail["evidence"]["accepted_by"][0]["sub"], BILLING_SUB);

    let recorded = event.to_string();
    let signature = evidence.rsplit('.').next().unwrap();
    assert!(
        !recorded.contains(&evidence),
        "the audit event contains the evidence token"
    );
    assert!(
        !recorded.contains(signature),
        "the audit event contains the evidence signature"
    );
    let issued = answer.body["token"].as_str().unwrap();
    assert!(
        !recorded.contains(issued),
        "the audit event contains the issued credential"
    );
}

// ---------------------------------------------------------------------------------------------
// Verified-evidence cache

#[tokio::test]
async fn cached_evidence_gets_second_credential() {
    let (server, issuer) = start(|_, _| {}).await;
    let evidence = billing_evidence(&issuer);

    let first = request_payments(&server, &evidence).await;
    let second = request_payments(&server, &evidence).await;

    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(second.status, 200, "{}", second.body);
    let first_jti = claims_of(first.body["token"].as_str().unwrap())["jti"].clone();
    let second_jti = claims_of(second.body["token"].as_str().unwrap())["jti"].clone();
    assert_ne!(first_jti, second_jti);
    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["detail"]["evidence"]["cached"], true);
    assert_eq!(events[1]["detail"]["evidence"]["cached"], false);
}

#[tokio::test]
async fn cached_evidence_is_rejected_after_trust_provider_change() {
    let (server, issuer) = start(|_, _| {}).await;
    let evidence = billing_evidence(&issuer);
    let first = request_payments(&server, &evidence).await;
    assert_eq!(first.status, 200, "{}", first.body);

    let mut changed = Config::oidc(&issuer);
    changed.trust_providers[0] = oidc_trust_provider("ci", &issuer.url, "another-audience");
    server.apply(&changed.render()).await;
    let second = request_payments(&server, &evidence).await;

    assert_eq!(second.status, 401, "{}", second.body);
    assert_eq!(second.body["step"], "evidence");
    let events = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_reason_contains(&events[0], "another-audience");
}

// ---------------------------------------------------------------------------------------------
// The workload socket

/// Returns the uid and executable path of this test process, the peer on the workload socket.
fn this_process() -> (u32, String) {
    let uid = rustix::process::getuid().as_raw();
    let path = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (uid, path)
}

/// Applies a configuration in which the client `tester` is identified by a unix rule `rule`.
async fn start_unix(rule: &str) -> TestServer {
    let server = TestServer::start().await;
    let yaml = format!(
        "trust_providers:\n  - {{name: local, kind: unix}}\n\
         client_workloads:\n  - {{name: tester, identities: [{{trust_provider: local, match: {rule}}}]}}\n\
         server_workloads:\n  - {{name: payments, host: payments.example, port: 443}}\n\
         credential_providers:\n  - {{name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}}\n\
         access_conditions:\n  - {{name: loopback-only, kind: source_ip, allow: [127.0.0.1/32]}}\n\
         access_policies:\n  - {}\n",
        policy(
            "tester-payments",
            "tester",
            "payments",
            "[local]",
            "[loopback-only]"
        )
    );
    server.apply(&yaml).await;
    server
}

#[tokio::test]
async fn workload_socket_attests_calling_process() {
    let (uid, path) = this_process();
    let rule = format!(
        "{{uid: {uid}, path: {}}}",
        serde_json::to_string(&path).unwrap()
    );
    let server = start_unix(&rule).await;

    let (status, body) = server
        .credential_over_socket(json!({"server_workload": "payments"}))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://mayfly.local/tester");
    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let detail = &events[0]["detail"];
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(detail["transport"], "unix");
    assert_eq!(detail["source_ip"], "127.0.0.1");
    assert_eq!(detail["trust_provider"], "local");
    let attributes = &detail["evidence"]["attributes"];
    assert_eq!(attributes["uid"], json!([uid.to_string()]));
    assert_eq!(attributes["pid"], json!([std::process::id().to_string()]));
    assert_eq!(attributes["path"], json!([path]));
    let own_hash = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    assert_eq!(attributes["sha256"], json!([own_hash]));
}

#[tokio::test]
async fn other_uid_gets_no_socket_credential() {
    let (uid, _) = this_process();
    let server = start_unix(&format!("{{uid: {}}}", uid + 1)).await;

    let (status, body) = server
        .credential_over_socket(json!({"server_workload": "payments"}))
        .await;

    assert_eq!(status, 403, "{body}");
    assert_eq!(body["step"], "client_workload");
    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(events[0]["detail"]["transport"], "unix");
    assert_eq!(
        events[0]["detail"]["evidence"]["attributes"]["uid"],
        json!([uid.to_string()])
    );
}

#[tokio::test]
async fn reused_pid_is_not_attested() {
    let hasher = ExecutableHasher::new(512 * 1024 * 1024);
    let (uid, _) = this_process();
    let gid = rustix::process::getgid().as_raw();
    let accepted_before_spawn = uptime_ticks().unwrap();
    // Clock ticks are usually 10 ms (USER_HZ is 100), so wait several before starting the child.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();

    let stale = PeerAtAccept {
        pid: Some(pid),
        uid,
        gid,
        accepted_at_ticks: Some(accepted_before_spawn),
    };
    let reused = attest(stale, &hasher);
    let current = PeerAtAccept {
        pid: Some(pid),
        uid,
        gid,
        accepted_at_ticks: uptime_ticks(),
    };
    let attested = attest(current, &hasher);
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(reused, Err(UnixAttestationError::PidReused { pid }));
    let attributes = attested.unwrap();
    assert_eq!(attributes["pid"], vec![pid.to_string()]);
    assert!(
        attributes["path"][0].ends_with("/sleep"),
        "{:?}",
        attributes["path"]
    );
}
