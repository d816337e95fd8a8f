//! The server routes of the agent's proxy: the target list, proxy delivery of credentials and
//! injection events in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

const SECRET: &str = "proxy-only-secret-5e2a";

const CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: web
    identities:
      - {trust_provider: local, match: {uid: "1000", agent: web-1}}
server_workloads:
  - {name: payments, host: Payments.Example, port: 443}
  - {name: ledger, host: ledger.example, port: 8080, scheme: http, authentication: {method: header, header: X-Api-Key}}
  - {name: archive, host: archive.example, port: 443}
credential_providers:
  - {name: payments-jwt, kind: jwt_svid, audience: [payments]}
  - {name: ledger-key, kind: static_secret, value: "proxy-only-secret-5e2a"}
access_policies:
  - {name: web-payments, client_workload: web, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
  - {name: web-ledger, client_workload: web, server_workload: ledger, credential_provider: ledger-key, trust_providers: [local]}
"#;

async fn server_with_agent() -> (TestServer, String) {
    let server = TestServer::start().await;
    let config = mayfly_domain::config_file::parse("proxy.yaml", CONFIG).unwrap();
    let (status, body) = server.post("/v1/apply", json!({"config": config})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post("/v1/agent-tokens", json!({"agent": "web-1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let join_token = body["token"].as_str().unwrap().to_string();
    let (status, body) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/join",
        &join_token,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let credential = body["credential"].as_str().unwrap().to_string();
    (server, credential)
}

async fn bearer(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .http
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn event(path: &str) -> Value {
    json!({
        "id": "4f1c0a9e2b7d4c5e8f6a1b2c3d4e5f60",
        "time": "2026-12-05T00:00:00Z",
        "attributes": {"uid": ["1000"], "pid": ["4242"], "path": ["/usr/bin/curl"]},
        "host": "payments.example",
        "port": 443,
        "method": "POST",
        "path": path,
        "server_workload": "payments",
        "credential_request_id": "req-123",
        "mode": "headers",
        "spiffe_id": "spiffe://mayfly.local/web",
    })
}

#[tokio::test]
async fn targets_list_enabled_workloads_only() {
    let (server, credential) = server_with_agent().await;
    let (status, body) = server
        .post("/v1/server-workloads/archive/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = bearer(
        &server,
        reqwest::Method::GET,
        "/v1/agents/targets",
        &credential,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let targets = body["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{body}");
    assert!(targets.contains(&json!({"server_workload": "payments", "host": "payments.example", "port": 443, "scheme": "https"})));
    assert!(targets.contains(&json!({"server_workload": "ledger", "host": "ledger.example", "port": 8080, "scheme": "http"})));
    assert!(!body.to_string().contains(SECRET));
}

#[tokio::test]
async fn targets_require_agent_credential() {
    let (server, _) = server_with_agent().await;
    let (status, _) = bearer(
        &server,
        reqwest::Method::GET,
        "/v1/agents/targets",
        "mfy_agent_forged",
        None,
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn static_secret_delivered_to_proxy_only() {
    let (server, credential) = server_with_agent().await;
    let request = |delivery: &str| {
        json!({
            "attributes": {"uid": ["1000"], "path": ["/usr/bin/curl"]},
            "request": {"target": {"host": "ledger.example", "port": 8080}},
            "delivery": delivery,
        })
    };

    let (status, body) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/credentials",
        &credential,
        Some(request("workload")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains(SECRET));

    let (status, body) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/credentials",
        &credential,
        Some(request("proxy")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presentation"]["headers"]["X-Api-Key"], SECRET);

    let granted = server
        .audit_events("kind=credential_request&outcome=success")
        .await;
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0]["detail"]["delivery"], "proxy");
    assert!(!serde_json::to_string(&granted).unwrap().contains(SECRET));
}

#[tokio::test]
async fn injection_events_join_audit_log() {
    let (server, credential) = server_with_agent().await;
    let (status, body) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/injection-events",
        &credential,
        Some(json!({"events": [event("/v1/charges")]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);

    let events = server.audit_events("kind=credential_injection").await;
    assert_eq!(events.len(), 1);
    let recorded = &events[0];
    assert_eq!(recorded["server_workload"], "payments");
    assert_eq!(recorded["outcome"], "success");
    assert_eq!(recorded["detail"]["agent"], "web-1");
    assert_eq!(recorded["detail"]["attributes"]["agent"], json!(["web-1"]));
    assert_eq!(recorded["detail"]["path"], "/v1/charges");
    assert_eq!(recorded["detail"]["credential_request_id"], "req-123");
    assert_eq!(
        recorded["detail"]["event_id"],
        "4f1c0a9e2b7d4c5e8f6a1b2c3d4e5f60"
    );
}

#[tokio::test]
async fn injection_event_with_query_rejected() {
    let (server, credential) = server_with_agent().await;
    let (status, body) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/injection-events",
        &credential,
        Some(json!({"events": [event("/v1/charges?api_key=leaked")]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "events[0].path");
    assert!(
        server
            .audit_events("kind=credential_injection")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn injection_event_claiming_agent_rejected() {
    let (server, credential) = server_with_agent().await;
    let mut forged = event("/");
    forged["attributes"]["agent"] = json!(["other-agent"]);
    let (status, body) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/injection-events",
        &credential,
        Some(json!({"events": [forged]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "events[0].attributes");
}

#[tokio::test]
async fn injection_batch_over_limit_rejected() {
    let (server, credential) = server_with_agent().await;
    let events: Vec<Value> = (0..101).map(|_| event("/")).collect();
    let (status, body) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/injection-events",
        &credential,
        Some(json!({"events": events})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "events");
    assert_eq!(body["value"], "101");
}

#[tokio::test]
async fn injection_events_require_agent_credential() {
    let (server, _) = server_with_agent().await;
    let (status, _) = bearer(
        &server,
        reqwest::Method::POST,
        "/v1/agents/injection-events",
        "mfy_agent_forged",
        Some(json!({"events": [event("/")]})),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        server
            .audit_events("kind=credential_injection")
            .await
            .is_empty()
    );
}
