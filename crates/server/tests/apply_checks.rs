//! Checks that `POST /v1/apply` makes before it changes anything: empty files with prune,
//! identity rules, server workload hosts and destination URLs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestIssuer, TestServer, basic_config};
use serde_json::{Value, json};

#[tokio::test]
async fn prune_with_empty_file_rejected() {
    let issuer = TestIssuer::start().await;
    let server = TestServer::start().await;
    server.apply(&basic_config(&issuer)).await;

    for dry_run in [false, true] {
        let (status, body) = server
            .post(
                "/v1/apply",
                json!({"config": {}, "prune": true, "dry_run": dry_run}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], "config", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("declares no resources"),
            "{body}"
        );
    }

    let (status, body) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(status, 200, "nothing was deleted: {body}");
    let (status, body) = server.post("/v1/apply", json!({"config": {}})).await;
    assert_eq!(
        status, 200,
        "an empty file without prune changes nothing: {body}"
    );
}

/// Applies a unix trust provider and one client workload with `rule` as its only identity rule,
/// as JSON so that the server alone checks it.
async fn apply_rule(server: &TestServer, rule: &Value) -> (u16, Value) {
    let config = json!({
        "trust_providers": [{"name": "local", "kind": "unix"}],
        "client_workloads": [{"name": "w", "identities": [{"trust_provider": "local", "match": rule}]}],
    });
    server.post("/v1/apply", json!({"config": config})).await
}

#[tokio::test]
async fn identity_rule_values_checked() {
    let server = TestServer::start().await;
    let upper = "AB".repeat(32);
    let cases = [
        (
            json!({"path": "*"}),
            "identities[0].match",
            "whose value is not *",
        ),
        (
            json!({"uid": "*", "path": "**"}),
            "identities[0].match",
            "whose value is not *",
        ),
        (
            json!({"uid": "abc"}),
            "match.uid \"abc\"",
            "decimal number or *",
        ),
        (json!({"gid": "-1"}), "match.gid", "decimal number or *"),
        (
            json!({"uid": 0, "groups": "1x"}),
            "match.groups",
            "decimal number or *",
        ),
        (
            json!({"sha256": "xyz"}),
            "match.sha256",
            "64 lower-case hex digits",
        ),
        (
            json!({"sha256": upper}),
            "match.sha256",
            "64 lower-case hex digits",
        ),
        (
            json!({"color": "blue"}),
            "color",
            "groups, pid, path, sha256 or agent",
        ),
    ];
    for (rule, field, message) in cases {
        let (status, body) = apply_rule(&server, &rule).await;
        assert_eq!(status, 400, "{rule}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{rule}: {detail}");
        assert!(detail.contains(message), "{rule}: {detail}");
    }
    let (status, body) = server.get("/v1/client-workloads/w").await;
    assert_eq!(status, 404, "no rejected rule was stored: {body}");

    let lower = "ab".repeat(32);
    let accepted = [
        json!({"uid": 1000}),
        json!({"uid": "*", "path": "/usr/bin/web"}),
        json!({"uid": 0, "gid": "*", "groups": 4242, "pid": 1}),
        json!({"sha256": lower}),
    ];
    for rule in accepted {
        let (status, body) = apply_rule(&server, &rule).await;
        assert_eq!(status, 200, "{rule}: {body}");
    }
}

fn server_workload(name: &str, host: &str) -> Value {
    json!({"config": {"server_workloads": [{"name": name, "host": host, "port": 443}]}})
}

#[tokio::test]
async fn hosts_compared_without_case_or_dot() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/v1/apply", server_workload("dup3", "Dup.Local."))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, stored) = server.get("/v1/server-workloads/dup3").await;
    assert_eq!(
        stored["host"], "dup.local",
        "the host is stored normalized: {stored}"
    );

    for other in ["dup.local", "DUP.local.", "dup.local."] {
        let (status, body) = server
            .post("/v1/apply", server_workload("dup1", other))
            .await;
        assert_eq!(status, 400, "{other}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("dup.local:443 are already used by server_workload"),
            "{other}: {body}"
        );
    }
    let (status, body) = server
        .post("/v1/apply", server_workload("dup3", "dup.local"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"][0]["action"], "unchanged", "{body}");

    for bad in ["dup.local..", ".dup.local", "dup..local"] {
        let (status, body) = server.post("/v1/apply", server_workload("bad", bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    for host in ["dup.local.", "DUP.LOCAL"] {
        let (status, body) = server
            .credential_with_token(
                "not-a-token",
                json!({"target": {"host": host, "port": 443}}),
            )
            .await;
        assert_eq!(status, 401, "{host}: {body}");
        let events = server.audit_events("kind=credential_request&limit=1").await;
        assert_eq!(
            events[0]["server_workload"], "dup3",
            "{host} resolves to dup3: {}",
            events[0]
        );
    }
}

fn webhook_stream(url: &str, secret: &str, auth: Value) -> Value {
    let mut stream = json!({"name": "hook", "kind": "webhook", "url": url, "secret": secret});
    if let (Some(stream), Value::Object(auth)) = (stream.as_object_mut(), auth) {
        stream.extend(auth);
    }
    json!({"config": {"log_streams": [stream]}})
}

fn notification_target(url: &str, secret: Option<&str>) -> Value {
    let mut target = json!({"name": "pager", "kind": "webhook", "url": url, "auth": "bearer"});
    if let Some(secret) = secret {
        target["secret"] = json!(secret);
    }
    json!({"config": {"notification_targets": [target]}})
}

#[tokio::test]
async fn destination_urls_and_headers_checked() {
    let server = TestServer::start().await;
    let with_userinfo = "http://user:PassInUrl99@127.0.0.1:9/in";
    let rejected = [
        webhook_stream(with_userinfo, "s3cret", json!({})),
        notification_target(with_userinfo, Some("s3cret")),
    ];
    for body in rejected {
        let (status, reply) = server.post("/v1/apply", body).await;
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["detail"]
                .as_str()
                .unwrap()
                .contains("url: must not contain user information"),
            "{reply}"
        );
        assert!(
            reply["detail"]
                .as_str()
                .unwrap()
                .contains("put the credential in secret"),
            "{reply}"
        );
        assert!(
            !reply.to_string().contains("PassInUrl99"),
            "the password must not be echoed: {reply}"
        );
    }

    for header in ["Content-Length", "host", "Transfer-Encoding", "Connection"] {
        let body = webhook_stream(
            "http://127.0.0.1:9/in",
            "s3cret",
            json!({"auth": "header", "header": header}),
        );
        let (status, reply) = server.post("/v1/apply", body).await;
        assert_eq!(status, 400, "{header}: {reply}");
        assert!(
            reply["detail"]
                .as_str()
                .unwrap()
                .contains("is set by HTTP itself"),
            "{reply}"
        );
    }
    let body = webhook_stream(
        "http://127.0.0.1:9/in",
        "s3cret",
        json!({"auth": "header", "header": "X-Api-Key"}),
    );
    let (status, reply) = server.post("/v1/apply", body).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn stored_secret_stays_with_origin() {
    let server = TestServer::start().await;
    let (status, reply) = server
        .post(
            "/v1/apply",
            webhook_stream("http://127.0.0.1:9/in", "s3cret", json!({})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = server
        .post(
            "/v1/apply",
            notification_target("http://127.0.0.1:9/alerts", Some("s3cret")),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    let (status, reply) = server
        .post(
            "/v1/apply",
            webhook_stream("http://127.0.0.1:9/other-path", "(redacted)", json!({})),
        )
        .await;
    assert_eq!(status, 200, "the same origin keeps the secret: {reply}");
    let (status, reply) = server
        .post(
            "/v1/apply",
            notification_target("http://127.0.0.1:9/other-path", None),
        )
        .await;
    assert_eq!(status, 200, "the same origin keeps the secret: {reply}");

    let moved = [
        "http://127.0.0.1:10/in",
        "https://127.0.0.1:9/in",
        "http://localhost:9/in",
    ];
    for url in moved {
        let (status, reply) = server
            .post("/v1/apply", webhook_stream(url, "(redacted)", json!({})))
            .await;
        assert_eq!(status, 400, "{url}: {reply}");
        assert!(
            reply["detail"]
                .as_str()
                .unwrap()
                .contains("send the secret again"),
            "{reply}"
        );
        let (status, reply) = server
            .post("/v1/apply", notification_target(url, None))
            .await;
        assert_eq!(status, 400, "{url}: {reply}");
        assert!(
            reply["detail"]
                .as_str()
                .unwrap()
                .contains("send the secret again"),
            "{reply}"
        );
    }
    let (_, stream) = server.get("/v1/log-streams/hook").await;
    assert_eq!(stream["url"], "http://127.0.0.1:9/other-path", "{stream}");

    let (status, reply) = server
        .post(
            "/v1/apply",
            webhook_stream("http://127.0.0.1:10/in", "new-secret", json!({})),
        )
        .await;
    assert_eq!(status, 200, "a new secret may go to a new origin: {reply}");
    let (status, reply) = server
        .post(
            "/v1/apply",
            notification_target("http://127.0.0.1:10/in", Some("new-secret")),
        )
        .await;
    assert_eq!(status, 200, "a new secret may go to a new origin: {reply}");
}

#[tokio::test]
async fn duplicate_policy_names_both_policies() {
    let issuer = TestIssuer::start().await;
    let server = TestServer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let duplicate = json!({"config": {"access_policies": [{
        "name": "p", "client_workload": "billing", "server_workload": "payments",
        "credential_provider": "payments-jwt", "trust_providers": ["ci"],
    }]}});
    let (status, body) = server.post("/v1/apply", duplicate).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("access_policy \"billing-payments\" and access_policy \"p\" both cover"),
        "{detail}"
    );
}

#[tokio::test]
async fn incident_report_unknown_workload_not_found() {
    let issuer = TestIssuer::start().await;
    let server = TestServer::start().await;
    server.apply(&basic_config(&issuer)).await;

    let (status, body) = server
        .get("/v1/incidents/report?server_workload=nope&since=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("nope"), "{body}");

    let (status, body) = server
        .get("/v1/incidents/report?server_workload=payments&since=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(status, 200, "{body}");

    let reply = server
        .admin_reply(
            reqwest::Method::DELETE,
            "/v1/access-policies/billing-payments",
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = server
        .admin_reply(
            reqwest::Method::DELETE,
            "/v1/server-workloads/payments",
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (status, body) = server
        .get("/v1/incidents/report?server_workload=payments&since=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(
        status, 200,
        "a deleted server workload keeps its history: {body}"
    );
}

#[tokio::test]
async fn port_out_of_range_message() {
    let server = TestServer::start().await;
    for port in [70_000, -1] {
        let body = json!({"config": {"server_workloads": [{"name": "api", "host": "api.example", "port": port}]}});
        let (status, reply) = server.post("/v1/apply", body).await;
        assert_eq!(status, 400, "{reply}");
        let detail = reply["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("{port} must be between 1 and 65535")),
            "{detail}"
        );
        assert!(
            !detail.contains("u16"),
            "no Rust type in the message: {detail}"
        );
    }
}

fn oauth_provider(token_url: &str, secret: Option<&str>) -> Value {
    let mut provider = json!({
        "name": "reports",
        "kind": "oauth_client_credentials",
        "token_url": token_url,
        "client_id": "reports",
        "client_auth": "client_secret_basic",
    });
    if let Some(secret) = secret {
        provider["client_secret"] = json!(secret);
    }
    json!({"config": {"credential_providers": [provider]}})
}

#[tokio::test]
async fn client_secret_stays_with_token_url_origin() {
    let server = TestServer::start().await;
    let (status, reply) = server
        .post(
            "/v1/apply",
            oauth_provider("https://idp.example/token", Some("s3cret")),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    let (status, reply) = server
        .post(
            "/v1/apply",
            oauth_provider("https://idp.example/v2/token", None),
        )
        .await;
    assert_eq!(status, 200, "the same origin keeps the secret: {reply}");

    let (status, reply) = server
        .post(
            "/v1/apply",
            oauth_provider("https://attacker.example/token", None),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    let detail = reply["detail"].as_str().unwrap();
    assert!(detail.contains("send the secret again"), "{detail}");
    let (_, provider) = server.get("/v1/credential-providers/reports").await;
    assert_eq!(
        provider["token_url"], "https://idp.example/v2/token",
        "{provider}"
    );

    let (status, reply) = server
        .post(
            "/v1/apply",
            oauth_provider("https://attacker.example/token", Some("new-secret")),
        )
        .await;
    assert_eq!(status, 200, "a new secret may go to a new origin: {reply}");
}
