//! The agent against an independent SPIFFE client from another ecosystem: py-spiffe (PyPI
//! package `spiffe`, pinned in tests/requirements.txt) fetches and validates JWT-SVIDs and JWT
//! bundles through the agent socket, found through SPIFFE_ENDPOINT_SOCKET.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{TestServer, socket_path, start_agent};
use serde_json::Value;

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

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/independent/py_spiffe_agent.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_fetches_and_validates_through_agent() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &server.base,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let endpoint = format!("unix://{}", socket_path(dir.path()).display());

    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script())
            .args(["payments", "vault"])
            .env("SPIFFE_ENDPOINT_SOCKET", endpoint)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "py-spiffe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    assert_eq!(result["spiffe_id"], "spiffe://mayfly.local/web");
    assert_eq!(result["audience"], serde_json::json!(["payments"]));
    assert_eq!(result["bundle_trust_domain"], "mayfly.local");
    assert!(result["bundle_keys"].as_u64().unwrap() >= 1);
    assert_eq!(result["locally_validated"], "spiffe://mayfly.local/web");
    assert_eq!(result["agent_validated"], "spiffe://mayfly.local/web");
    assert_eq!(result["wrong_audience_rejected"], true);
    let denied = result["denied_audience_error"]
        .as_str()
        .expect("the denied audience raised an error");
    assert!(
        denied.contains("PERMISSION_DENIED") || denied.contains("PermissionDenied"),
        "{denied}"
    );

    let denials = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(denials.len(), 1);
    assert_eq!(
        denials[0]["detail"]["audience"],
        serde_json::json!(["vault"])
    );
}
