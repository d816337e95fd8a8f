//! Agents through the HTTP API: join tokens, joining, renewal, eviction, and JWT-SVIDs for
//! processes an agent attested.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestServer, claims_of};
use serde_json::{Value, json};

const CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: web
    identities:
      - {trust_provider: local, match: {uid: "1000", agent: web-1}}
  - name: host-only
    identities:
      - {trust_provider: local, match: {uid: "2000"}}
server_workloads:
  - {name: payments, host: payments.example, port: 443}
credential_providers:
  - {name: payments-jwt, kind: jwt_svid, audience: [payments, ledger], ttl: 5m}
access_policies:
  - {name: web-payments, client_workload: web, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
  - {name: host-payments, client_workload: host-only, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
"#;

async fn server() -> TestServer {
    let server = TestServer::start().await;
    let config = mayfly_domain::config_file::parse("agents.yaml", CONFIG)
        .expect("test configuration parses");
    let (status, body) = server.post("/v1/apply", json!({"config": config})).await;
    assert_eq!(status, 200, "{body}");
    server
}

async fn join_token(server: &TestServer, agent: &str) -> String {
    let (status, body) = server
        .post("/v1/agent-tokens", json!({"agent": agent, "ttl": "5m"}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
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
    let token = join_token(server, agent).await;
    let (status, body) = bearer_post(server, "/v1/agents/join", &token, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent"], agent);
    assert_eq!(body["trust_domain"], "mayfly.local");
    body["credential"].as_str().unwrap().to_string()
}

fn svid_request(uid: &str, audience: &[&str]) -> Value {
    json!({"attributes": {"uid": [uid], "path": ["/usr/bin/web"]}, "audience": audience})
}

#[tokio::test]
async fn join_token_is_single_use() {
    let server = server().await;
    let token = join_token(&server, "web-1").await;
    let (first, _) = bearer_post(&server, "/v1/agents/join", &token, json!({})).await;
    assert_eq!(first, 200);
    let (replayed, body) = bearer_post(&server, "/v1/agents/join", &token, json!({})).await;
    assert_eq!(replayed, 401, "{body}");
}

#[tokio::test]
async fn join_token_is_stored_hashed_and_audited() {
    let server = server().await;
    let token = join_token(&server, "web-1").await;
    let events = server.audit_events("kind=agent_change").await;
    assert_eq!(events.len(), 1);
    let text = events[0].to_string();
    assert!(text.contains("web-1"));
    assert!(
        !text.contains(&token),
        "the audit event must not contain the join token"
    );
}

#[tokio::test]
async fn agent_token_create_requires_admin() {
    let server = server().await;
    let response = server
        .http
        .post(server.url("/v1/agent-tokens"))
        .json(&json!({"agent": "web-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn renewal_replaces_agent_credential() {
    let server = server().await;
    let first = join(&server, "web-1").await;
    let (status, body) = bearer_post(&server, "/v1/agents/renew", &first, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let second = body["credential"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    let (old, _) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &first,
        svid_request("1000", &["payments"]),
    )
    .await;
    assert_eq!(old, 401, "a replaced credential must stop working");
    let (new, body) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &second,
        svid_request("1000", &["payments"]),
    )
    .await;
    assert_eq!(new, 200, "{body}");
}

#[tokio::test]
async fn agent_jwt_svid_carries_requested_audience() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let (status, body) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &credential,
        svid_request("1000", &["ledger"]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://mayfly.local/web");
    let claims = claims_of(body["token"].as_str().unwrap());
    assert_eq!(claims["aud"], json!(["ledger"]));
    assert_eq!(claims["sub"], "spiffe://mayfly.local/web");

    let events = server
        .audit_events("kind=credential_request&outcome=success")
        .await;
    let evidence = &events[0]["detail"]["evidence"];
    assert_eq!(evidence["kind"], "agent");
    assert_eq!(evidence["agent"], "web-1");
    assert_eq!(evidence["attributes"]["uid"], json!(["1000"]));
    assert_eq!(evidence["attributes"]["path"], json!(["/usr/bin/web"]));
}

#[tokio::test]
async fn audience_no_policy_allows_is_denied_and_audited() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let (status, body) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &credential,
        svid_request("1000", &["vault"]),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let events = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["detail"]["step"], "access_policy");
    assert_eq!(events[0]["detail"]["audience"], json!(["vault"]));
}

#[tokio::test]
async fn rule_without_agent_ignores_agent_attested_uid() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let (status, body) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &credential,
        svid_request("2000", &["payments"]),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let events = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(events[0]["detail"]["step"], "client_workload");
}

#[tokio::test]
async fn rule_naming_other_agent_is_denied() {
    let server = server().await;
    let credential = join(&server, "web-2").await;
    let (status, _) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &credential,
        svid_request("1000", &["payments"]),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn agent_cannot_claim_another_agent_name() {
    let server = server().await;
    let credential = join(&server, "web-2").await;
    let forged =
        json!({"attributes": {"uid": ["1000"], "agent": ["web-1"]}, "audience": ["payments"]});
    let (status, _) = bearer_post(&server, "/v1/agents/jwt-svids", &credential, forged).await;
    assert_eq!(status, 401, "a denial at the evidence step is a 401");
    let events = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(events[0]["detail"]["step"], "evidence");
}

#[tokio::test]
async fn evicted_agent_gets_nothing_more() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let (status, body) = server.post("/v1/agents/web-1/evict", json!({})).await;
    assert_eq!(status, 200, "{body}");

    let (svid, _) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        &credential,
        svid_request("1000", &["payments"]),
    )
    .await;
    assert_eq!(svid, 401);
    let (renew, _) = bearer_post(&server, "/v1/agents/renew", &credential, json!({})).await;
    assert_eq!(renew, 401);

    let (status, body) = server.get("/v1/agents").await;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["name"], "web-1");
    assert_eq!(body["items"][0]["state"], "evicted");
    let actions: Vec<Value> = server
        .audit_events("kind=agent_change")
        .await
        .iter()
        .map(|event| event["detail"]["action"].clone())
        .collect();
    assert!(actions.contains(&json!("evict")), "{actions:?}");
}

#[tokio::test]
async fn unauthenticated_caller_cannot_request_svid() {
    let server = server().await;
    let (status, _) = bearer_post(
        &server,
        "/v1/agents/jwt-svids",
        "mfy_agent_forged",
        svid_request("1000", &["payments"]),
    )
    .await;
    assert_eq!(status, 401);
    let response = server
        .http
        .post(server.url("/v1/agents/jwt-svids"))
        .json(&svid_request("1000", &["payments"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn rule_on_supplementary_group_matches_any_group() {
    let server = server().await;
    let config = mayfly_domain::config_file::parse(
        "groups.yaml",
        &CONFIG.replace("{uid: \"2000\"}", "{groups: \"4242\", agent: web-1}"),
    )
    .expect("test configuration parses");
    let (status, body) = server.post("/v1/apply", json!({"config": config})).await;
    assert_eq!(status, 200, "{body}");
    let credential = join(&server, "web-1").await;

    let member = json!({"attributes": {"uid": ["3000"], "groups": ["10", "4242"]}, "audience": ["payments"]});
    let (status, body) = bearer_post(&server, "/v1/agents/jwt-svids", &credential, member).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://mayfly.local/host-only");

    let outsider =
        json!({"attributes": {"uid": ["3000"], "groups": ["10"]}, "audience": ["payments"]});
    let (status, _) = bearer_post(&server, "/v1/agents/jwt-svids", &credential, outsider).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn agent_cannot_send_many_values_for_uid() {
    let server = server().await;
    let credential = join(&server, "web-1").await;
    let forged = json!({"attributes": {"uid": ["2000", "1000"]}, "audience": ["payments"]});
    let (status, _) = bearer_post(&server, "/v1/agents/jwt-svids", &credential, forged).await;
    assert_eq!(status, 401, "a denial at the evidence step is a 401");
}
