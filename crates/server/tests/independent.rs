//! Minted JWT-SVIDs validated by an independent library from another ecosystem (PyJWT), which
//! finds the keys through OIDC discovery as a relying party would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{TestIssuer, TestServer, basic_config};
use serde_json::{Value, json};

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/independent/pyjwt_validate.py")
}

/// Runs the PyJWT validator; returns its JSON output or its error message.
async fn pyjwt(issuer: &str, audience: &str, token: &str) -> Result<Value, String> {
    let (issuer, audience, token) = (issuer.to_string(), audience.to_string(), token.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script())
            .args([&issuer, &audience, &token])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("validator prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

async fn mint(server: &TestServer, issuer: &TestIssuer) -> String {
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn pyjwt_validates_es256_svid_through_discovery() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let token = mint(&server, &issuer).await;

    let validated = pyjwt(&server.base, "payments", &token).await.unwrap();
    assert_eq!(validated["claims"]["sub"], "spiffe://mayfly.local/billing");
    assert_eq!(validated["header"]["alg"], "ES256");
}

#[tokio::test]
async fn pyjwt_validates_rs256_svid() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let config = basic_config(&issuer).replace("ttl: 5m}", "ttl: 5m, algorithm: RS256}");
    server.apply(&config).await;
    let token = mint(&server, &issuer).await;

    let validated = pyjwt(&server.base, "payments", &token).await.unwrap();
    assert_eq!(validated["header"]["alg"], "RS256");
}

#[tokio::test]
async fn pyjwt_rejects_wrong_audience() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let token = mint(&server, &issuer).await;

    let error = pyjwt(&server.base, "other-api", &token).await.unwrap_err();
    assert!(error.contains("InvalidAudience"), "{error}");
}

#[tokio::test]
async fn pyjwt_rejects_token_after_key_revocation() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let token = mint(&server, &issuer).await;
    let kid = common::header_of(&token)["kid"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, body) = server
        .post(&format!("/v1/keys/{kid}/revoke"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let error = pyjwt(&server.base, "payments", &token).await.unwrap_err();
    assert!(
        error.contains("PyJWKClientError") || error.contains("Unable to find"),
        "{error}"
    );
}
