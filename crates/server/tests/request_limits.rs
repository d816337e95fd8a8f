//! Limits on client-sent strings that a credential request would copy into its audit event:
//! oversized or malformed input is rejected with a 400 naming the field, and nothing is audited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

const CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: web
    identities:
      - {trust_provider: local, match: {uid: "1000", agent: web-1}}
server_workloads:
  - {name: payments, host: payments.example, port: 443}
credential_providers:
  - {name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}
access_policies:
  - {name: web-payments, client_workload: web, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
"#;

async fn server() -> TestServer {
    let server = TestServer::start().await;
    let config = mayfly_domain::config_file::parse("limits.yaml", CONFIG)
        .expect("test configuration parses");
    let (status, body) = server.post("/v1/apply", json!({"config": config})).await;
    assert_eq!(status, 200, "{body}");
    server
}

async fn bearer_post(server: &TestServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn join(server: &TestServer, agent: &str) -> String {
    let (status, body) = server
        .post("/v1/agent-tokens", json!({"agent": agent, "ttl": "5m"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (status, body) = bearer_post(server, "/v1/agents/join", &token, json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["credential"].as_str().unwrap().to_string()
}

fn svid_request(audience: Vec<String>) -> Value {
    json!({"attributes": {"uid": ["1000"]}, "audience": audience})
}

async fn credential_events(server: &TestServer) -> Vec<Value> {
    server.audit_events("kind=credential_request").await
}

#[tokio::test]
async fn audience_limits_reject_before_audit() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["a".repeat(256)],
            "audience[0]",
            "longer than the maximum of 255",
        ),
        (
            vec!["payments".to_string(), "x".repeat(1_000_000 / 2)],
            "audience[1]",
            "longer than the maximum of 255",
        ),
        (
            (0..33).map(|i| format!("aud-{i}")).collect(),
            "audience",
            "more than the maximum of 32",
        ),
        (
            vec!["payments".to_string(), String::new()],
            "audience[1]",
            "must not be empty",
        ),
        (vec![], "audience", "at least one audience"),
        (
            vec!["pay\nments".to_string()],
            "audience[0]",
            "control characters",
        ),
        (
            vec!["pay\u{0}".to_string()],
            "audience[0]",
            "control characters",
        ),
    ];
    for (audience, field, message) in cases {
        let count = audience.len();
        let (status, body) = bearer_post(
            &server,
            "/v1/agents/jwt-svids",
            &credential,
            svid_request(audience),
        )
        .await;
        assert_eq!(status, 400, "{count} audiences: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with(field), "{detail}");
        assert!(detail.contains(message), "{detail}");
        assert!(
            detail.len() < 300,
            "the message must not echo the whole value: {} bytes",
            detail.len()
        );
    }
    assert_eq!(
        credential_events(&server).await.len(),
        0,
        "rejected input must not be audited"
    );
}

#[tokio::test]
async fn audience_at_limits_is_decided() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let mut audience: Vec<String> = (0..31).map(|i| format!("{i}{}", "a".repeat(250))).collect();
    audience.push("payments".to_string());
    let (status, body) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &credential,
        svid_request(audience),
    )
    .await;
    assert_eq!(
        status, 403,
        "32 audiences of up to 255 bytes reach the decision: {body}"
    );
    assert_eq!(credential_events(&server).await.len(), 1);

    let (status, body) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &credential,
        svid_request(vec!["payments".into()]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn target_limits_reject_before_audit() {
    let server = server().await;
    let cases = [
        (json!({"server_workload": "pay\nments"}), "server_workload"),
        (
            json!({"server_workload": "p".repeat(64)}),
            "server_workload",
        ),
        (
            json!({"target": {"host": "payments.example\r\nX: y", "port": 443}}),
            "target",
        ),
        (
            json!({"target": {"host": "h".repeat(254), "port": 443}}),
            "target",
        ),
    ];
    for (request, field) in cases {
        let (status, body) = server
            .credential_with_token("not-a-token", request.clone())
            .await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
    assert_eq!(
        credential_events(&server).await.len(),
        0,
        "rejected input must not be audited"
    );
}

#[tokio::test]
async fn unknown_agent_attribute_is_shortened_in_audit() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let long_name = "z".repeat(100_000);
    let request =
        json!({"attributes": {"uid": ["1000"], long_name: ["1"]}, "audience": ["payments"]});
    let (status, body) = bearer_post(&server, "/v1/agents/jwt-svids", &credential, request).await;
    assert_eq!(status, 401, "{body}");
    let events = credential_events(&server).await;
    assert_eq!(events.len(), 1);
    let reason = events[0]["detail"]["reason"].as_str().unwrap();
    assert!(
        reason.len() < 300,
        "the reason must keep a shortened name: {} bytes",
        reason.len()
    );
    assert!(
        reason.contains("zzz..."),
        "the shortened name ends with a marker: {reason}"
    );
}

#[tokio::test]
async fn evidence_failure_names_server_workload() {
    let issuer = common::TestIssuer::start().await;
    let server = TestServer::start().await;
    server.apply(&common::basic_config(&issuer)).await;

    let forged = issuer.token(json!({"sub": "repo:acme/billing", "aud": "someone-else"}));
    let requests = [
        json!({"server_workload": "payments"}),
        json!({"target": {"host": "payments.example", "port": 443}}),
        json!({"server_workload": "nothing"}),
    ];
    for request in &requests {
        let (status, body) = server.credential_with_token(&forged, request.clone()).await;
        assert_eq!(status, 401, "{request}: {body}");
    }

    let events = server
        .audit_events("kind=credential_request&server_workload=payments&outcome=failure")
        .await;
    assert_eq!(
        events.len(),
        2,
        "both requests for payments are listed under it: {events:?}"
    );
    for event in &events {
        assert_eq!(event["detail"]["step"], "evidence");
        assert_eq!(event["server_workload"], "payments");
    }
    let all = credential_events(&server).await;
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[0]["server_workload"],
        Value::Null,
        "an unknown name is kept only in detail.target"
    );
    assert_eq!(all[0]["detail"]["target"], "nothing");
}
