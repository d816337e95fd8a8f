//! The `federated_token_exchange` credential provider against local token services that validate
//! the JWT-SVID with PyJWT through Mayfly's OIDC discovery: RFC 8693 token exchange, the
//! Entra-style client assertion, and AWS STS `AssumeRoleWithWebIdentity`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestIssuer, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BILLING_SUB: &str = "repo:acme/billing";
const BILLING_SPIFFE_ID: &str = "spiffe://mayfly.local/billing";

/// The Python token services of `tests/federation/exchange_server.py`.
struct ExchangeServer {
    base: String,
    _child: Child,
}

impl ExchangeServer {
    async fn start(mayfly_issuer: &str) -> ExchangeServer {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/federation/exchange_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([mayfly_issuer, BILLING_SPIFFE_ID])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs; install the packages of tests/requirements.txt");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the exchange server starts within 20s")
            .unwrap()
            .expect("the exchange server prints its port");
        let port = serde_json::from_str::<Value>(&line).unwrap()["port"]
            .as_u64()
            .unwrap();
        ExchangeServer {
            base: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }

    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/__stats", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

struct Setup {
    server: TestServer,
    issuer: TestIssuer,
    exchange: ExchangeServer,
}

async fn setup() -> Setup {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let exchange = ExchangeServer::start(&server.base).await;
    Setup {
        server,
        issuer,
        exchange,
    }
}

impl Setup {
    /// Applies a configuration in which `billing` reaches `reports` through the federated
    /// provider `reports-federated`, whose fields after `name` and `kind` are `fields`.
    async fn apply(&self, fields: &str) {
        let yaml = format!(
            "trust_providers:\n{}\
client_workloads:\n  - name: billing\n    identities:\n      - {{trust_provider: ci, match: {{sub: \"{BILLING_SUB}\"}}}}\n\
server_workloads:\n  - {{name: reports, host: reports.example, port: 443}}\n\
credential_providers:\n  - {{name: reports-federated, kind: federated_token_exchange, {fields}}}\n\
access_policies:\n  - {{name: billing-reports, client_workload: billing, server_workload: reports, credential_provider: reports-federated, trust_providers: [ci]}}\n",
            self.issuer.trust_provider_yaml("ci")
        );
        self.server.apply(&yaml).await;
    }

    async fn request(&self) -> (u16, Value) {
        let token = self.issuer.token(json!({"sub": BILLING_SUB}));
        self.server
            .credential_with_token(&token, json!({"server_workload": "reports"}))
            .await
    }

    async fn last_request_event(&self) -> Value {
        self.server
            .audit_events("kind=credential_request&limit=1")
            .await[0]
            .clone()
    }
}

/// Seconds from now until the response's `expires_at`.
fn seconds_left(body: &Value) -> i64 {
    let expires_at: jiff::Timestamp = body["expires_at"].as_str().unwrap().parse().unwrap();
    expires_at.as_second() - jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn rfc8693_exchange_returns_target_token() {
    let setup = setup().await;
    let fields = format!(
        "exchange: rfc8693, token_url: \"{}/rfc8693/token\", svid_audience: [\"https://exchange.example\"], scopes: [\"reports:read\"]",
        setup.exchange.base
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credential_type"], "access_token");
    assert!(
        body["token"].as_str().unwrap().starts_with("exchanged-"),
        "{body}"
    );
    assert!((895..=900).contains(&seconds_left(&body)), "{body}");
    let stats = setup.exchange.stats().await;
    assert_eq!(stats["claims"]["sub"], BILLING_SPIFFE_ID);
    assert_eq!(stats["claims"]["aud"], json!(["https://exchange.example"]));
    let event = setup.last_request_event().await;
    assert_eq!(event["detail"]["credential_type"], "access_token");
    assert_eq!(event["detail"]["exchange"], "rfc8693");
    assert_eq!(event["detail"]["expires_at"], body["expires_at"]);
}

#[tokio::test]
async fn entra_client_assertion_returns_target_token() {
    let setup = setup().await;
    let fields = format!(
        "exchange: client_assertion, token_url: \"{}/entra/token\", svid_audience: [\"api://AzureADTokenExchange\"], client_id: reports-app, scopes: [\"https://reports.example/.default\"]",
        setup.exchange.base
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    assert!(
        body["token"].as_str().unwrap().starts_with("entra-"),
        "{body}"
    );
    assert_eq!(
        setup.exchange.stats().await["claims"]["aud"],
        json!(["api://AzureADTokenExchange"])
    );
}

#[tokio::test]
async fn aws_sts_returns_temporary_credentials() {
    let setup = setup().await;
    let fields = format!(
        "exchange: aws_sts, token_url: \"{}/sts/\", svid_audience: [sts.amazonaws.com], role_arn: \"arn:aws:iam::123456789012:role/reports\", duration: 15m",
        setup.exchange.base
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credential_type"], "aws_credentials");
    let access_key_id = body["access_key_id"].as_str().unwrap();
    let secret_access_key = body["secret_access_key"].as_str().unwrap();
    let session_token = body["token"].as_str().unwrap();
    assert!(access_key_id.starts_with("ASIA"), "{body}");
    assert!((890..=900).contains(&seconds_left(&body)), "{body}");
    let environment = &body["presentation"]["environment"];
    assert_eq!(environment["AWS_ACCESS_KEY_ID"], access_key_id);
    assert_eq!(environment["AWS_SECRET_ACCESS_KEY"], secret_access_key);
    assert_eq!(environment["AWS_SESSION_TOKEN"], session_token);
    let event = setup.last_request_event().await;
    assert_eq!(event["detail"]["access_key_id"], access_key_id);
    assert_eq!(event["detail"]["credential_type"], "aws_credentials");
    let text = event.to_string();
    assert!(!text.contains(secret_access_key), "{text}");
    assert!(!text.contains(session_token), "{text}");
}

#[tokio::test]
async fn exchanged_credential_is_cached_per_workload() {
    let setup = setup().await;
    let fields = format!(
        "exchange: rfc8693, token_url: \"{}/rfc8693/token\", svid_audience: [\"https://exchange.example\"]",
        setup.exchange.base
    );
    setup.apply(&fields).await;

    let (_, first) = setup.request().await;
    let (status, second) = setup.request().await;

    assert_eq!(status, 200, "{second}");
    assert_eq!(first["token"], second["token"]);
    assert_eq!(setup.exchange.stats().await["rfc8693"], 1);
    assert_eq!(setup.last_request_event().await["detail"]["cached"], true);
}

#[tokio::test]
async fn sts_rejects_svid_for_wrong_audience() {
    let setup = setup().await;
    let fields = format!(
        "exchange: aws_sts, token_url: \"{}/sts/\", svid_audience: [some-other-audience], role_arn: \"arn:aws:iam::123456789012:role/reports\"",
        setup.exchange.base
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 403, "{body}");
    let event = setup.last_request_event().await;
    assert_eq!(event["detail"]["upstream_error"], "InvalidIdentityToken");
    assert_eq!(event["detail"]["upstream_status"], 400);
    assert!(!event.to_string().contains("validation detail"), "{event}");
}

#[tokio::test]
async fn token_exchange_rejects_wrong_audience() {
    let setup = setup().await;
    let fields = format!(
        "exchange: rfc8693, token_url: \"{}/rfc8693/token\", svid_audience: [some-other-audience]",
        setup.exchange.base
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 403, "{body}");
    let event = setup.last_request_event().await;
    assert_eq!(event["detail"]["upstream_error"], "invalid_grant");
    // PyJWT's message travels in error_description, which never reaches the audit log.
    assert!(!event.to_string().contains("Audience"), "{event}");
}
