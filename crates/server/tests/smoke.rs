//! End-to-end flow: apply a configuration, fetch a JWT-SVID with OIDC evidence, read the audit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestIssuer, TestServer, basic_config, claims_of, header_of};
use serde_json::json;

#[tokio::test]
async fn oidc_evidence_gets_jwt_svid() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;

    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credential_type"], "jwt_svid");
    let token = body["token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(claims["sub"], "spiffe://mayfly.local/billing");
    assert_eq!(claims["aud"], json!(["payments"]));
    assert_eq!(claims["iss"], server.base);
    let header = header_of(token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header.as_object().unwrap().len(), 3);

    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(events[0]["detail"]["token_id"], claims["jti"]);
}
