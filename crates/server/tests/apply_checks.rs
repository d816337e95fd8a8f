//! Checks that `POST /v1/apply` makes before it changes anything: empty files with prune,
//! identity rules, server workload hosts and destination URLs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestIssuer, TestServer, basic_config};
use serde_json::json;

#[tokio::test]
async fn prune_with_empty_file_rejected() {
    let issuer = TestIssuer::start().await;
    let server = TestServer::start().await;
    server.apply(&basic_config(&issuer)).await;

    for dry_run in [false, true] {
        let (status, body) = server.post("/v1/apply", json!({"config": {}, "prune": true, "dry_run": dry_run})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], "config", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("declares no resources"), "{body}");
    }

    let (status, body) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(status, 200, "nothing was deleted: {body}");
    let (status, body) = server.post("/v1/apply", json!({"config": {}})).await;
    assert_eq!(status, 200, "an empty file without prune changes nothing: {body}");
}
