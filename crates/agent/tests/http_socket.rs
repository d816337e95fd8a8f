//! The HTTP credential endpoint on the agent's socket, against a real server: the request that
//! `mayfly credential get NAME --socket PATH` sends (HTTP/1 over the Unix socket) gets the
//! server's response, and the server still decides.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{TestServer, start_agent};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: web
    identities:
      - {trust_provider: local, match: {uid: "${UID}", agent: web-1}}
server_workloads:
  - {name: payments, host: payments.example, port: 443}
credential_providers:
  - {name: payments-jwt, kind: jwt_svid, audience: [payments]}
access_policies:
  - {name: web-payments, client_workload: web, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
"#;

const CONFIG_WITHOUT_AGENT: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: web
    identities:
      - {trust_provider: local, match: {uid: "${UID}"}}
server_workloads:
  - {name: payments, host: payments.example, port: 443}
credential_providers:
  - {name: payments-jwt, kind: jwt_svid, audience: [payments]}
access_policies:
  - {name: web-payments, client_workload: web, server_workload: payments, credential_provider: payments-jwt, trust_providers: [local]}
"#;

async fn setup(config: &str) -> (TestServer, tempfile::TempDir, mayfly_agent::RunningAgent) {
    let server = TestServer::start().await;
    server.apply(config).await;
    let dir = tempfile::tempdir().unwrap();
    let token = server.join_token("web-1").await;
    let agent = start_agent(&server.base, dir.path(), Some(token)).await;
    (server, dir, agent)
}

fn http_socket(dir: &Path) -> std::path::PathBuf {
    dir.join("agent").join("credential.sock")
}

/// Sends `POST /v1/credentials` with `body` over HTTP/1 on the Unix socket at `socket`, as
/// `mayfly credential get` does, and returns the status, the headers and the body.
async fn post_credentials(socket: &Path, body: &Value) -> (u16, String, Value) {
    let body = body.to_string();
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let request = format!(
        "POST /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn credential_by_name_through_agent() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let (status, head, body) = post_credentials(
        &http_socket(dir.path()),
        &json!({"server_workload": "payments"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert_eq!(body["credential_type"], "jwt_svid");
    assert_eq!(body["server_workload"], "payments");
    assert_eq!(
        body["spiffe_id"].as_str().unwrap().split('/').next_back(),
        Some("web")
    );
    assert_eq!(body["token"].as_str().unwrap().split('.').count(), 3);

    let events = server
        .audit_events("kind=credential_request&outcome=success")
        .await;
    assert_eq!(events.len(), 1);
    let evidence = &events[0]["detail"]["evidence"];
    assert_eq!(evidence["agent"], "web-1", "{evidence}");
    assert_eq!(
        evidence["attributes"]["agent"],
        json!(["web-1"]),
        "{evidence}"
    );
    assert_eq!(
        evidence["attributes"]["uid"],
        json!([common::current_uid()]),
        "{evidence}"
    );
    assert_eq!(events[0]["detail"]["transport"], "agent");
}

#[tokio::test]
async fn credential_by_target_through_agent() {
    let (_server, dir, _agent) = setup(CONFIG).await;
    let request = json!({"target": {"host": "payments.example", "port": 443}});
    let (status, _, body) = post_credentials(&http_socket(dir.path()), &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server_workload"], "payments");
}

#[tokio::test]
async fn rule_without_agent_is_denied_at_client_workload() {
    let (_server, dir, _agent) = setup(CONFIG_WITHOUT_AGENT).await;
    let (status, head, body) = post_credentials(
        &http_socket(dir.path()),
        &json!({"server_workload": "payments"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(body["type"], "urn:mayfly:problem:credential-denied");
    assert_eq!(body["step"], "client_workload");
    assert!(body["request_id"].is_string());
    assert!(body.get("token").is_none());
}

#[tokio::test]
async fn unknown_field_gets_a_problem() {
    let (_server, dir, _agent) = setup(CONFIG).await;
    let (status, _, body) = post_credentials(
        &http_socket(dir.path()),
        &json!({"server_workload": "payments", "extra": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("extra"), "{body}");
}

/// Sends `method /v1/credentials` with the raw `body` and returns the status, the lower-cased
/// headers and the body parsed as JSON.
async fn send_raw(socket: &Path, method: &str, body: &str) -> (u16, String, Value) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let request = format!(
        "{method} /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn unknown_field_names_the_clients_field() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let (status, _, body) = post_credentials(
        &http_socket(dir.path()),
        &json!({"server_workload": "payments", "x": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("unknown field \"x\""), "{detail}");
    assert!(!detail.contains("request.x"), "{detail}");
    assert!(!detail.contains("column"), "{detail}");
    assert!(
        server
            .audit_events("kind=credential_request")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn invalid_names_never_reach_server() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let long = "a".repeat(256);
    let cases = [
        (
            json!({"server_workload": "pay\nments"}),
            "server_workload \"pay\\nments\" contains a control character",
        ),
        (
            json!({"target": {"host": "a\u{7f}b", "port": 443}}),
            "target.host \"a\\u{7f}b\" contains a control character",
        ),
        (
            json!({"server_workload": long}),
            "server_workload is 256 bytes long",
        ),
        (
            json!({"server_workload": 5}),
            "server_workload 5: must be a string",
        ),
        (
            json!({"target": {"host": "a", "port": 70000}}),
            "target.port 70000: must be an integer",
        ),
        (
            json!({"target": {"host": "a", "port": 443, "y": 1}}),
            "unknown field \"y\" in target",
        ),
    ];
    for (request, expected) in cases {
        let (status, head, body) = post_credentials(&http_socket(dir.path()), &request).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            body["detail"].as_str().unwrap().starts_with(expected),
            "{body}"
        );
    }
    assert!(
        server
            .audit_events("kind=credential_request")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn oversized_body_and_wrong_method_are_problems() {
    let (_server, dir, _agent) = setup(CONFIG).await;
    let socket = http_socket(dir.path());
    let oversized = format!("{{\"server_workload\": \"{}\"}}", "a".repeat(70 * 1024));
    let (status, head, body) = send_raw(&socket, "POST", &oversized).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(body["status"], 413, "{body}");

    let (status, head, body) = send_raw(&socket, "GET", "").await;
    assert_eq!(status, 405, "{body}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("only POST"),
        "{body}"
    );
}

#[tokio::test]
async fn evicted_agent_gets_no_credential() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let socket = http_socket(dir.path());
    let (status, _, body) =
        post_credentials(&socket, &json!({"server_workload": "payments"})).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/agents/web-1/evict", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) =
        post_credentials(&socket, &json!({"server_workload": "payments"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.get("token").is_none());
    assert_eq!(
        server.audit_events("kind=credential_request").await.len(),
        1,
        "the evicted agent reached no decision"
    );
}

#[tokio::test]
async fn server_route_rejects_callers_without_agent_credential() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let body = json!({"attributes": {"uid": [common::current_uid()]}, "request": {"server_workload": "payments"}});
    // The admin token is no agent credential, and forged attributes need one.
    let response = server
        .http
        .post(format!("{}/v1/agents/credentials", server.base))
        .bearer_auth(&server.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = server
        .http
        .post(format!("{}/v1/agents/credentials", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(
        server
            .audit_events("kind=credential_request")
            .await
            .is_empty()
    );
}

/// A process connects and exits, and a child that inherited the connection sends the request: the
/// process the kernel names as the peer is gone, so the agent cannot attest it.
#[tokio::test]
async fn inherited_connection_of_exited_process_is_denied() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let script = r#"
import os, socket, sys, time
connection = socket.socket(socket.AF_UNIX)
connection.connect(sys.argv[1])
parent = os.getpid()
if os.fork() != 0:
    os._exit(0)
while os.getppid() == parent:
    time.sleep(0.01)
body = b'{"server_workload": "payments"}'
connection.sendall(b"POST /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
response = b""
while True:
    chunk = connection.recv(65536)
    if not chunk:
        break
    response += chunk
sys.stdout.write(response.decode())
"#;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(http_socket(dir.path()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    // The parent exits at once, so the output comes from the child through the inherited pipe.
    let response = String::from_utf8(output.stdout).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let body: Value = serde_json::from_str(body).unwrap();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(body["step"], "evidence", "{body}");
    assert!(body.get("token").is_none());
    assert!(
        server
            .audit_events("kind=credential_request")
            .await
            .is_empty(),
        "the agent sent nothing to the server"
    );
}
