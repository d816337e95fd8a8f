//! Configuration through the admin API: resource CRUD, apply, validation errors, the audit trail
//! of every change, and the server workload switch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Reply, TestIssuer, TestServer, basic_config};
use reqwest::Method;
use serde_json::{Value, json};

/// One resource per kind, in the order that lets each one's references resolve, with a changed
/// version of each for the update step.
fn resources_of_every_kind() -> Vec<(&'static str, &'static str, Value, Value)> {
    vec![
        (
            "trust-providers",
            "ci",
            json!({"name": "ci", "kind": "oidc", "issuer": "https://ci.example.com", "audience": "mayfly", "jwks_uri": "https://ci.example.com/keys"}),
            json!({"name": "ci", "kind": "oidc", "issuer": "https://ci.example.com", "audience": "mayfly-prod", "jwks_uri": "https://ci.example.com/keys"}),
        ),
        (
            "server-workloads",
            "payments",
            json!({"name": "payments", "host": "payments.example", "port": 443, "scheme": "https", "authentication": {"method": "bearer"}}),
            json!({"name": "payments", "host": "payments.example", "port": 8443, "scheme": "https", "authentication": {"method": "header", "header": "X-Api-Key"}}),
        ),
        (
            "credential-providers",
            "payments-jwt",
            json!({"name": "payments-jwt", "kind": "jwt_svid", "audience": ["payments"], "ttl": "5m", "algorithm": "ES256"}),
            json!({"name": "payments-jwt", "kind": "jwt_svid", "audience": ["payments"], "ttl": "10m", "algorithm": "ES256"}),
        ),
        (
            "access-conditions",
            "office",
            json!({"name": "office", "kind": "source_ip", "allow": ["10.0.0.0/8"]}),
            json!({"name": "office", "kind": "source_ip", "allow": ["10.0.0.0/8", "127.0.0.1/32"]}),
        ),
        (
            "client-workloads",
            "billing",
            json!({"name": "billing", "identities": [{"trust_provider": "ci", "match": {"sub": "repo:acme/billing"}}]}),
            json!({"name": "billing", "spiffe_id": "spiffe://mayfly.local/team/billing", "identities": [{"trust_provider": "ci", "match": {"sub": "repo:acme/billing:*"}}]}),
        ),
        (
            "access-policies",
            "billing-payments",
            json!({"name": "billing-payments", "client_workload": "billing", "server_workload": "payments", "credential_provider": "payments-jwt", "trust_providers": ["ci"], "access_conditions": ["office"]}),
            json!({"name": "billing-payments", "client_workload": "billing", "server_workload": "payments", "credential_provider": "payments-jwt", "trust_providers": ["ci"], "access_conditions": []}),
        ),
    ]
}

/// Returns the resource as read back, without the metadata the server adds.
fn without_metadata(mut value: Value) -> Value {
    let map = value.as_object_mut().unwrap();
    for field in [
        "created_at",
        "updated_at",
        "enabled",
        "credential_type",
        "typical_lifetime",
    ] {
        map.remove(field);
    }
    value
}

async fn put(server: &TestServer, path: &str, body: Value) -> Reply {
    server.admin_reply(Method::PUT, path, Some(body)).await
}

async fn config_change_events(server: &TestServer) -> Vec<Value> {
    server.audit_events("kind=config_change").await
}

#[tokio::test]
async fn put_get_list_delete_every_kind() {
    let server = TestServer::start().await;
    let resources = resources_of_every_kind();

    for (kind, name, created, _) in &resources {
        let path = format!("/v1/{kind}/{name}");
        let reply = put(&server, &path, created.clone()).await;
        assert_eq!(reply.status, 200, "PUT {path}: {}", reply.body);
        assert_eq!(reply.body["change"], "create", "PUT {path}");
        assert_eq!(
            without_metadata(reply.body["resource"].clone()),
            *created,
            "PUT {path}"
        );

        let (status, body) = server.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        assert_eq!(without_metadata(body.clone()), *created, "GET {path}");
        assert!(body["created_at"].is_string(), "GET {path}: {body}");

        let (status, body) = server.get(&format!("/v1/{kind}")).await;
        assert_eq!(status, 200, "GET /v1/{kind}: {body}");
        let names: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![*name], "GET /v1/{kind}");
    }

    for (kind, name, created, updated) in &resources {
        let path = format!("/v1/{kind}/{name}");
        let reply = put(&server, &path, created.clone()).await;
        assert_eq!(
            reply.body["change"], "unchanged",
            "PUT {path} again: {}",
            reply.body
        );

        let reply = put(&server, &path, updated.clone()).await;
        assert_eq!(reply.status, 200, "PUT {path} changed: {}", reply.body);
        assert_eq!(reply.body["change"], "update", "PUT {path} changed");
        let (_, body) = server.get(&path).await;
        assert_eq!(without_metadata(body), *updated, "GET {path} after update");
    }

    for (kind, name, _, _) in resources.iter().rev() {
        let path = format!("/v1/{kind}/{name}");
        let (status, body) = server.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, 200, "DELETE {path}: {body}");
        assert_eq!(body["deleted"]["name"], *name, "DELETE {path}");

        let reply = server.admin_reply(Method::GET, &path, None).await;
        reply.assert_problem(404);
        let (_, body) = server.get(&format!("/v1/{kind}")).await;
        assert_eq!(body["items"], json!([]), "GET /v1/{kind} after delete");
    }
}

#[tokio::test]
async fn put_without_name_uses_path_name() {
    let server = TestServer::start().await;

    let reply = put(
        &server,
        "/v1/server-workloads/ledger",
        json!({"host": "ledger.example", "port": 443}),
    )
    .await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    let (status, body) = server.get("/v1/server-workloads/ledger").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "ledger");
}

#[tokio::test]
async fn put_with_name_differing_from_path_is_rejected() {
    let server = TestServer::start().await;

    let reply = put(
        &server,
        "/v1/server-workloads/ledger",
        json!({"name": "payments", "host": "ledger.example", "port": 443}),
    )
    .await;

    reply.assert_problem(400);
    assert_eq!(reply.body["field"], "name");
    assert!(reply.detail().contains("payments"), "{}", reply.body);
    assert!(reply.detail().contains("ledger"), "{}", reply.body);
    let reply = server
        .admin_reply(Method::GET, "/v1/server-workloads/ledger", None)
        .await;
    reply.assert_problem(404);
    let reply = server
        .admin_reply(Method::GET, "/v1/server-workloads/payments", None)
        .await;
    reply.assert_problem(404);
}

#[tokio::test]
async fn unknown_resource_kind_is_not_found() {
    let server = TestServer::start().await;

    let reply = put(&server, "/v1/log-sinks/main", json!({"name": "main"})).await;

    reply.assert_problem(404);
    assert!(reply.detail().contains("log-sinks"), "{}", reply.body);
}

// Apply.

#[tokio::test]
async fn apply_creates_every_resource_of_the_file() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;

    let body = server.apply(&basic_config(&issuer)).await;

    assert_eq!(
        body["changes"],
        json!([
            {"action": "create", "kind": "trust_provider", "name": "ci"},
            {"action": "create", "kind": "server_workload", "name": "payments"},
            {"action": "create", "kind": "credential_provider", "name": "payments-jwt"},
            {"action": "create", "kind": "client_workload", "name": "billing"},
            {"action": "create", "kind": "access_policy", "name": "billing-payments"},
        ])
    );
    let (status, body) = server.get("/v1/access-policies/billing-payments").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn second_apply_of_same_file_changes_nothing() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let config = basic_config(&issuer);
    server.apply(&config).await;
    let events_before = config_change_events(&server).await.len();

    let body = server.apply(&config).await;

    let changes = body["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 5, "{body}");
    for change in changes {
        assert_eq!(change["action"], "unchanged", "{change}");
    }
    assert_eq!(config_change_events(&server).await.len(), events_before);
}

#[tokio::test]
async fn apply_with_prune_reports_update_and_delete() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let smaller = format!(
        "trust_providers:\n{}server_workloads:\n  - {{name: payments, host: payments.example, port: 8443}}\n",
        issuer.trust_provider_yaml("ci")
    );

    let (status, body) = server.try_apply(&smaller, true).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changes"],
        json!([
            {"action": "unchanged", "kind": "trust_provider", "name": "ci"},
            {"action": "update", "kind": "server_workload", "name": "payments"},
            {"action": "delete", "kind": "credential_provider", "name": "payments-jwt"},
            {"action": "delete", "kind": "client_workload", "name": "billing"},
            {"action": "delete", "kind": "access_policy", "name": "billing-payments"},
        ])
    );
    let (_, body) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(body["port"], 8443);
    for path in [
        "/v1/credential-providers/payments-jwt",
        "/v1/client-workloads/billing",
        "/v1/access-policies/billing-payments",
    ] {
        let (status, _) = server.get(path).await;
        assert_eq!(status, 404, "GET {path}");
    }
}

#[tokio::test]
async fn apply_without_prune_keeps_omitted_resources() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let smaller = format!("trust_providers:\n{}", issuer.trust_provider_yaml("ci"));

    let (status, body) = server.try_apply(&smaller, false).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changes"],
        json!([{"action": "unchanged", "kind": "trust_provider", "name": "ci"}])
    );
    for path in [
        "/v1/server-workloads/payments",
        "/v1/credential-providers/payments-jwt",
        "/v1/client-workloads/billing",
        "/v1/access-policies/billing-payments",
    ] {
        let (status, _) = server.get(path).await;
        assert_eq!(status, 200, "GET {path}");
    }
}

#[tokio::test]
async fn apply_dry_run_writes_nothing() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;

    let (status, body) = server.apply_with(&basic_config(&issuer), false, true).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"].as_array().unwrap().len(), 5, "{body}");
    assert_eq!(body["changes"][0]["action"], "create");
    for kind in [
        "trust-providers",
        "server-workloads",
        "credential-providers",
        "client-workloads",
        "access-policies",
    ] {
        let (_, body) = server.get(&format!("/v1/{kind}")).await;
        assert_eq!(body["items"], json!([]), "GET /v1/{kind}");
    }
    assert_eq!(config_change_events(&server).await, Vec::<Value>::new());
}

#[tokio::test]
async fn apply_with_dangling_reference_writes_nothing() {
    let server = TestServer::start().await;
    let config = json!({
        "server_workloads": [{"name": "ledger", "host": "ledger.example", "port": 443}],
        "credential_providers": [{"name": "ledger-jwt", "kind": "jwt_svid", "audience": ["ledger"]}],
        "access_policies": [{"name": "ghost-ledger", "client_workload": "ghost", "server_workload": "ledger", "credential_provider": "ledger-jwt", "trust_providers": ["ci"]}],
    });

    let reply = server
        .admin_reply(Method::POST, "/v1/apply", Some(json!({"config": config})))
        .await;

    reply.assert_problem(400);
    assert!(reply.detail().contains("\"ghost\""), "{}", reply.body);
    for path in [
        "/v1/server-workloads/ledger",
        "/v1/credential-providers/ledger-jwt",
        "/v1/access-policies/ghost-ledger",
    ] {
        let (status, _) = server.get(path).await;
        assert_eq!(status, 404, "GET {path}");
    }
    assert_eq!(config_change_events(&server).await, Vec::<Value>::new());
}

#[tokio::test]
async fn apply_with_one_invalid_resource_writes_nothing() {
    let server = TestServer::start().await;
    let config = json!({
        "server_workloads": [{"name": "ledger", "host": "ledger.example", "port": 443}],
        "credential_providers": [
            {"name": "ledger-jwt", "kind": "jwt_svid", "audience": ["ledger"]},
            {"name": "forever", "kind": "jwt_svid", "audience": ["ledger"], "ttl": "48h"},
        ],
    });

    let reply = server
        .admin_reply(Method::POST, "/v1/apply", Some(json!({"config": config})))
        .await;

    reply.assert_problem(400);
    assert!(reply.detail().contains("forever"), "{}", reply.body);
    assert!(reply.detail().contains("ttl"), "{}", reply.body);
    for path in [
        "/v1/server-workloads/ledger",
        "/v1/credential-providers/ledger-jwt",
    ] {
        let (status, _) = server.get(path).await;
        assert_eq!(status, 404, "GET {path}");
    }
    assert_eq!(config_change_events(&server).await, Vec::<Value>::new());
}

#[tokio::test]
async fn apply_keeps_disabled_server_workload_disabled() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let config = basic_config(&issuer);
    server.apply(&config).await;
    let (status, body) = server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let body = server.apply(&config).await;

    assert_eq!(
        body["changes"][1],
        json!({"action": "unchanged", "kind": "server_workload", "name": "payments"})
    );
    let (_, body) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(body["enabled"], false);

    let changed = config.replace("port: 443", "port: 8443");
    let body = server.apply(&changed).await;
    assert_eq!(
        body["changes"][1],
        json!({"action": "update", "kind": "server_workload", "name": "payments"})
    );
    let (_, body) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(body["port"], 8443);
    assert_eq!(body["enabled"], false);
}

// References.

#[tokio::test]
async fn policy_naming_missing_client_workload_is_rejected() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let policy = json!({"client_workload": "ghost", "server_workload": "payments", "credential_provider": "payments-jwt", "trust_providers": ["ci"]});

    let reply = put(&server, "/v1/access-policies/ghost-payments", policy).await;

    reply.assert_problem(400);
    assert_eq!(reply.body["value"], "ghost");
    assert!(
        reply.detail().contains("client_workload \"ghost\""),
        "{}",
        reply.body
    );
    let (status, _) = server.get("/v1/access-policies/ghost-payments").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn deleting_referenced_server_workload_is_conflict() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;

    let reply = server
        .admin_reply(Method::DELETE, "/v1/server-workloads/payments", None)
        .await;

    reply.assert_problem(409);
    assert_eq!(
        reply.body["referrers"],
        json!([{"kind": "access_policy", "name": "billing-payments"}])
    );
    assert!(
        reply.detail().contains("billing-payments"),
        "{}",
        reply.body
    );
    let (status, _) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn deleting_referenced_trust_provider_is_conflict() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;

    let reply = server
        .admin_reply(Method::DELETE, "/v1/trust-providers/ci", None)
        .await;

    reply.assert_problem(409);
    assert_eq!(
        reply.body["referrers"],
        json!([{"kind": "access_policy", "name": "billing-payments"}, {"kind": "client_workload", "name": "billing"}])
    );
}

#[tokio::test]
async fn deleting_missing_resource_is_not_found() {
    let server = TestServer::start().await;

    let reply = server
        .admin_reply(Method::DELETE, "/v1/client-workloads/ghost", None)
        .await;

    reply.assert_problem(404);
    assert!(reply.detail().contains("ghost"), "{}", reply.body);
}

// Validation: each rejected write is a problem document naming the field and the value.

#[tokio::test]
async fn duplicate_host_and_port_is_rejected() {
    let server = TestServer::start().await;
    put(
        &server,
        "/v1/server-workloads/payments",
        json!({"host": "payments.example", "port": 443}),
    )
    .await;

    let reply = put(
        &server,
        "/v1/server-workloads/payments-copy",
        json!({"host": "PAYMENTS.example", "port": 443}),
    )
    .await;

    reply.assert_problem(400);
    assert!(
        reply.detail().contains("payments.example:443"),
        "the host is compared normalized: {}",
        reply.body
    );
    assert!(reply.detail().contains("\"payments\""), "{}", reply.body);
    let (status, _) = server.get("/v1/server-workloads/payments-copy").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn second_policy_for_same_pair_is_rejected() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let policy = json!({"client_workload": "billing", "server_workload": "payments", "credential_provider": "payments-jwt", "trust_providers": ["ci"]});

    let reply = put(
        &server,
        "/v1/access-policies/billing-payments-again",
        policy,
    )
    .await;

    reply.assert_problem(400);
    assert!(
        reply.detail().contains("\"billing-payments\""),
        "{}",
        reply.body
    );
    assert!(
        reply.detail().contains("only one policy per pair"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn ttl_over_24_hours_is_rejected() {
    let server = TestServer::start().await;

    let reply = put(
        &server,
        "/v1/credential-providers/long",
        json!({"kind": "jwt_svid", "audience": ["payments"], "ttl": "25h"}),
    )
    .await;

    reply.assert_problem(400);
    assert_eq!(reply.body["field"], "ttl");
    assert_eq!(reply.body["value"], "25h");
    assert!(reply.detail().contains("ttl \"25h\""), "{}", reply.body);
}

#[tokio::test]
async fn oidc_provider_with_two_key_sources_is_rejected() {
    let server = TestServer::start().await;
    let provider = json!({"kind": "oidc", "issuer": "https://ci.example.com", "audience": "mayfly", "jwks_uri": "https://ci.example.com/keys", "discovery": true});

    let reply = put(&server, "/v1/trust-providers/ci", provider).await;

    reply.assert_problem(400);
    assert_eq!(reply.body["field"], "jwks");
    assert!(reply.detail().contains("jwks_uri"), "{}", reply.body);
    assert!(reply.detail().contains("discovery"), "{}", reply.body);
}

#[tokio::test]
async fn invalid_spiffe_id_is_rejected() {
    let server = TestServer::start().await;
    put(
        &server,
        "/v1/trust-providers/local",
        json!({"kind": "unix"}),
    )
    .await;
    let workload = json!({"spiffe_id": "https://mayfly.local/billing", "identities": [{"trust_provider": "local", "match": {"uid": 1000}}]});

    let reply = put(&server, "/v1/client-workloads/billing", workload).await;

    reply.assert_problem(400);
    assert!(reply.detail().contains("spiffe_id"), "{}", reply.body);
    assert!(
        reply.detail().contains("https://mayfly.local/billing"),
        "{}",
        reply.body
    );
}

#[tokio::test]

async fn invalid_cidr_is_rejected() {
    let server = TestServer::start().await;

    let reply = put(
        &server,
        "/v1/access-conditions/office",
        json!({"kind": "source_ip", "allow": ["10.0.0.0/33"]}),
    )
    .await;

    reply.assert_problem(400);
    assert!(reply.detail().contains("allow"), "{}", reply.body);
    assert!(reply.detail().contains("10.0.0.0/33"), "{}", reply.body);
}

#[tokio::test]
async fn unknown_time_zone_is_rejected() {
    let server = TestServer::start().await;
    let condition = json!({"kind": "time_window", "timezone": "Mars/Olympus_Mons", "schedule": [{"days": ["mon"], "start": "08:00", "end": "18:00"}]});

    let reply = put(&server, "/v1/access-conditions/hours", condition).await;

    reply.assert_problem(400);
    assert_eq!(reply.body["field"], "timezone");
    assert_eq!(reply.body["value"], "Mars/Olympus_Mons");
    assert!(
        reply.detail().contains("timezone \"Mars/Olympus_Mons\""),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn unknown_field_is_rejected() {
    let server = TestServer::start().await;

    let reply = put(
        &server,
        "/v1/server-workloads/payments",
        json!({"host": "payments.example", "port": 443, "colour": "blue"}),
    )
    .await;

    reply.assert_problem(400);
    assert!(reply.detail().contains("colour"), "{}", reply.body);
    let (status, _) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_field_in_apply_is_rejected() {
    let server = TestServer::start().await;
    let config = json!({"server_workloads": [{"name": "payments", "host": "payments.example", "port": 443, "colour": "blue"}]});

    let reply = server
        .admin_reply(Method::POST, "/v1/apply", Some(json!({"config": config})))
        .await;

    reply.assert_problem(400);
    assert!(reply.detail().contains("colour"), "{}", reply.body);
    assert!(
        reply.detail().contains("server_workloads[0]"),
        "{}",
        reply.body
    );
}

// The audit trail of configuration changes.

#[tokio::test]
async fn every_config_change_writes_audit_event() {
    let server = TestServer::start().await;
    let created = json!({"name": "payments", "host": "payments.example", "port": 443, "scheme": "https", "authentication": {"method": "bearer"}});
    let updated = json!({"name": "payments", "host": "payments.example", "port": 8443, "scheme": "https", "authentication": {"method": "bearer"}});

    put(&server, "/v1/server-workloads/payments", created.clone()).await;
    put(&server, "/v1/server-workloads/payments", updated.clone()).await;
    put(&server, "/v1/server-workloads/payments", updated.clone()).await;
    server
        .admin(Method::DELETE, "/v1/server-workloads/payments", None)
        .await;

    let events = config_change_events(&server).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let expected = [
        ("delete", Some(&updated), None),
        ("update", Some(&created), Some(&updated)),
        ("create", None, Some(&created)),
    ];
    for (event, (action, before, after)) in events.iter().zip(expected) {
        let detail = &event["detail"];
        assert_eq!(event["server_workload"], "payments", "{event}");
        assert_eq!(detail["actor"], "admin-token:bootstrap", "{event}");
        assert_eq!(detail["action"], action, "{event}");
        assert_eq!(detail["resource_kind"], "server_workload", "{event}");
        assert_eq!(detail["resource_name"], "payments", "{event}");
        assert_eq!(
            detail["before"],
            before.cloned().unwrap_or(Value::Null),
            "{event}"
        );
        assert_eq!(
            detail["after"],
            after.cloned().unwrap_or(Value::Null),
            "{event}"
        );
    }
}

#[tokio::test]
async fn apply_writes_one_audit_event_per_changed_resource() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;

    server.apply(&basic_config(&issuer)).await;

    let events = config_change_events(&server).await;
    let mut touched: Vec<(String, String)> = events
        .iter()
        .map(|event| {
            (
                event["detail"]["resource_kind"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                event["detail"]["resource_name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    touched.sort();
    let expected = [
        ("access_policy", "billing-payments"),
        ("client_workload", "billing"),
        ("credential_provider", "payments-jwt"),
        ("server_workload", "payments"),
        ("trust_provider", "ci"),
    ];
    assert_eq!(
        touched,
        expected.map(|(kind, name)| (kind.to_string(), name.to_string()))
    );
    for event in &events {
        assert_eq!(event["detail"]["action"], "create", "{event}");
        assert_eq!(event["detail"]["actor"], "admin-token:bootstrap", "{event}");
    }
}

// The server workload switch.

#[tokio::test]
async fn disabled_server_workload_gets_no_credential() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));

    let (status, body) = server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "payments", "enabled": false, "changed": true})
    );

    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["step"], "server_workload_enabled");
    assert_eq!(body.get("token"), None);
    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(events[0]["detail"]["step"], "server_workload_enabled");
    assert_eq!(events[0]["server_workload"], "payments");
}

#[tokio::test]
async fn enabling_server_workload_restores_credentials() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;

    let (status, body) = server
        .post("/v1/server-workloads/payments/enable", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "payments", "enabled": true, "changed": true})
    );

    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credential_type"], "jwt_svid");
    let (_, body) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(body["enabled"], true);
}

#[tokio::test]
async fn disable_and_enable_are_audited() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;

    server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    let (_, repeated) = server
        .post("/v1/server-workloads/payments/disable", json!({}))
        .await;
    server
        .post("/v1/server-workloads/payments/enable", json!({}))
        .await;

    assert_eq!(repeated["changed"], false);
    let events = config_change_events(&server).await;
    let switches: Vec<&Value> = events
        .iter()
        .filter(|event| event["detail"]["action"] != "create")
        .collect();
    assert_eq!(switches.len(), 2, "{switches:?}");
    let expected = [("enable", false, true), ("disable", true, false)];
    for (event, (action, before, after)) in switches.iter().zip(expected) {
        assert_eq!(event["detail"]["action"], action, "{event}");
        assert_eq!(event["detail"]["actor"], "admin-token:bootstrap", "{event}");
        assert_eq!(
            event["detail"]["resource_kind"], "server_workload",
            "{event}"
        );
        assert_eq!(event["detail"]["resource_name"], "payments", "{event}");
        assert_eq!(
            event["detail"]["before"],
            json!({"enabled": before}),
            "{event}"
        );
        assert_eq!(
            event["detail"]["after"],
            json!({"enabled": after}),
            "{event}"
        );
        assert_eq!(event["server_workload"], "payments", "{event}");
    }
}

#[tokio::test]
async fn disabling_missing_server_workload_is_not_found() {
    let server = TestServer::start().await;

    let reply = server
        .admin_reply(Method::POST, "/v1/server-workloads/ghost/disable", None)
        .await;

    reply.assert_problem(404);
    assert!(reply.detail().contains("ghost"), "{}", reply.body);
    let reply = server
        .admin_reply(Method::POST, "/v1/server-workloads/ghost/enable", None)
        .await;
    reply.assert_problem(404);
}
