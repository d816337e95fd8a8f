//! The `static_secret` credential provider: the value is sealed before it reaches the store,
//! reads and audit events show only its fingerprint and age, and workloads receive it only from a
//! provider that opted in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestIssuer, TestServer};
use serde_json::{Value, json};

const API_KEY: &str = "sk-live-4f1c9a7e2b8d3f60";
const BILLING_SUB: &str = "repo:acme/billing";

/// `billing` may reach `payments` with the static secret provider `legacy-key`, whose fields
/// after `name` and `kind` are `fields` (a YAML flow mapping's inside).
fn config(issuer: &TestIssuer, fields: &str, authentication: &str) -> String {
    format!(
        "trust_providers:\n{}\
client_workloads:\n  - name: billing\n    identities:\n      - {{trust_provider: ci, match: {{sub: \"{BILLING_SUB}\"}}}}\n\
server_workloads:\n  - {{name: payments, host: payments.example, port: 443, authentication: {authentication}}}\n\
credential_providers:\n  - {{name: legacy-key, kind: static_secret, {fields}}}\n\
access_policies:\n  - {{name: billing-payments, client_workload: billing, server_workload: payments, credential_provider: legacy-key, trust_providers: [ci]}}\n",
        issuer.trust_provider_yaml("ci")
    )
}

async fn start(fields: &str) -> (TestServer, TestIssuer) {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server
        .apply(&config(&issuer, fields, "{method: bearer}"))
        .await;
    (server, issuer)
}

async fn request_payments(server: &TestServer, issuer: &TestIssuer) -> (u16, Value) {
    let token = issuer.token(json!({"sub": BILLING_SUB}));
    server
        .credential_with_token(&token, json!({"server_workload": "payments"}))
        .await
}

fn action_of(body: &Value, name: &str) -> Value {
    body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|change| change["name"] == name && change["kind"] == "credential_provider")
        .map(|change| change["action"].clone())
        .unwrap()
}

/// Reads every file of the data directory, SQLite's write-ahead log included.
fn data_dir_bytes(server: &TestServer) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn plaintext_secret_never_reaches_the_store() {
    let (server, _issuer) = start(&format!("value: {API_KEY}")).await;

    let bytes = data_dir_bytes(&server);
    assert!(!bytes.is_empty());
    assert!(
        !contains(&bytes, API_KEY),
        "the API key is in the data directory in plaintext"
    );
    assert!(
        contains(&bytes, "sealed_value"),
        "the stored spec holds the sealed form"
    );
}

#[tokio::test]
async fn read_shows_fingerprint_and_age_only() {
    let (server, _issuer) = start(&format!("value: {API_KEY}")).await;

    let (status, body) = server.get("/v1/credential-providers/legacy-key").await;

    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(!text.contains(API_KEY), "{text}");
    assert!(!text.contains("ciphertext"), "{text}");
    assert!(body.get("sealed_value").is_none(), "{text}");
    assert_eq!(body["value"]["set"], true, "{text}");
    assert!(
        body["value"]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"),
        "{text}"
    );
    assert!(body["value"]["set_at"].is_string(), "{text}");
    assert!(
        body["value"]["age_seconds"].as_i64().unwrap() >= 0,
        "{text}"
    );
    assert_eq!(body["credential_type"], "api_key");
    assert_eq!(body["typical_lifetime"], json!({"kind": "until_rotated"}));

    let (status, list) = server.get("/v1/credential-providers").await;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(API_KEY));
}

#[tokio::test]
async fn secret_change_audit_omits_value() {
    let (server, issuer) = start(&format!("value: {API_KEY}")).await;
    server
        .apply(&config(
            &issuer,
            "value: rotated-key-0001",
            "{method: bearer}",
        ))
        .await;

    let events = server.audit_events("kind=config_change&limit=100").await;

    let changes: Vec<&Value> = events
        .iter()
        .filter(|event| event["detail"]["resource_name"] == "legacy-key")
        .collect();
    assert_eq!(changes.len(), 2, "{events:?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(API_KEY), "{text}");
    assert!(!text.contains("rotated-key-0001"), "{text}");
    assert!(!text.contains("ciphertext"), "{text}");
    let update = changes[0];
    assert_eq!(update["detail"]["action"], "update");
    let before = &update["detail"]["before"]["value"]["fingerprint"];
    let after = &update["detail"]["after"]["value"]["fingerprint"];
    assert!(before.is_string(), "{update}");
    assert!(after.is_string(), "{update}");
    assert_ne!(before, after);
}

#[tokio::test]
async fn reapplying_the_same_value_is_unchanged() {
    let (server, issuer) = start(&format!("value: {API_KEY}")).await;
    let (_, first) = server.get("/v1/credential-providers/legacy-key").await;

    let again = server
        .apply(&config(
            &issuer,
            &format!("value: {API_KEY}"),
            "{method: bearer}",
        ))
        .await;
    assert_eq!(action_of(&again, "legacy-key"), "unchanged", "{again}");

    let without_value = server
        .apply(&config(
            &issuer,
            "allow_workload_delivery: false",
            "{method: bearer}",
        ))
        .await;
    assert_eq!(
        action_of(&without_value, "legacy-key"),
        "unchanged",
        "{without_value}"
    );

    let changed = server
        .apply(&config(
            &issuer,
            "value: another-key-0002",
            "{method: bearer}",
        ))
        .await;
    assert_eq!(action_of(&changed, "legacy-key"), "update", "{changed}");
    let (_, after) = server.get("/v1/credential-providers/legacy-key").await;
    assert_ne!(first["value"]["fingerprint"], after["value"]["fingerprint"]);
}

#[tokio::test]
async fn read_sent_back_keeps_value() {
    let (server, _issuer) =
        start(&format!("value: {API_KEY}, allow_workload_delivery: true")).await;
    let (_, read) = server.get("/v1/credential-providers/legacy-key").await;

    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/credential-providers/legacy-key",
            Some(read),
        )
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["change"], "unchanged", "{body}");
}

#[tokio::test]
async fn write_cannot_plant_a_sealed_value() {
    let (server, _issuer) = start(&format!("value: {API_KEY}")).await;
    let (_, read) = server.get("/v1/credential-providers/legacy-key").await;
    let planted = json!({
        "kind": "static_secret",
        "sealed_value": {"ciphertext": "AQIDBA==", "fingerprint": read["value"]["fingerprint"], "set_at": "2026-01-01T00:00:00Z"},
    });

    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/credential-providers/legacy-key",
            Some(planted),
        )
        .await;

    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["detail"], "sealed_value: is set by the server; send value instead",
        "{body}"
    );
}

#[tokio::test]
async fn new_provider_without_a_value_is_rejected() {
    let server = TestServer::start().await;

    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/credential-providers/empty",
            Some(json!({"kind": "static_secret"})),
        )
        .await;

    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["detail"], "value: must be set when credential_provider \"empty\" is created",
        "{body}"
    );
}

#[tokio::test]
async fn workload_denied_secret_without_opt_in() {
    let (server, issuer) = start(&format!("value: {API_KEY}")).await;

    let (status, body) = request_payments(&server, &issuer).await;

    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains(API_KEY));
    let events = server.audit_events("kind=credential_request&limit=1").await;
    let detail = &events[0]["detail"];
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(detail["step"], "credential_provider");
    assert!(
        detail["reason"]
            .as_str()
            .unwrap()
            .contains("allow_workload_delivery"),
        "{detail}"
    );
}

#[tokio::test]
async fn opted_in_provider_returns_api_key() {
    let (server, issuer) = start(&format!("value: {API_KEY}, allow_workload_delivery: true")).await;

    let (status, body) = request_payments(&server, &issuer).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credential_type"], "api_key");
    assert_eq!(body["token"], API_KEY);
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(
        body["presentation"]["headers"]["Authorization"],
        format!("Bearer {API_KEY}")
    );
    let events = server.audit_events("kind=credential_request&limit=1").await;
    let detail = &events[0]["detail"];
    assert_eq!(detail["credential_type"], "api_key");
    assert_eq!(detail["expires_at"], Value::Null);
    assert!(
        detail["secret_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    assert!(detail["secret_set_at"].is_string());
    assert!(!events[0].to_string().contains(API_KEY));
}

#[tokio::test]
async fn username_and_password_are_presented_as_basic_authentication() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let fields = "username: reports, value: \"pa:ss w0rd\", allow_workload_delivery: true";
    server
        .apply(&config(&issuer, fields, "{method: basic}"))
        .await;

    let (status, body) = request_payments(&server, &issuer).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credential_type"], "password");
    assert_eq!(body["username"], "reports");
    assert_eq!(body["token"], "pa:ss w0rd");
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode("reports:pa:ss w0rd");
    assert_eq!(
        body["presentation"]["headers"]["Authorization"],
        format!("Basic {encoded}")
    );
}

#[tokio::test]
async fn value_survives_a_restart_and_opens_with_the_same_key() {
    let (mut server, issuer) =
        start(&format!("value: {API_KEY}, allow_workload_delivery: true")).await;
    let data_dir = server.data_dir();
    server.stop().await;

    let restarted = TestServer::start_with(|settings| settings.data_dir = data_dir).await;
    let (status, body) = request_payments(&restarted, &issuer).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], API_KEY);
}
