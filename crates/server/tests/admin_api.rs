//! The admin API's edges: bearer tokens and roles, request limits, hostile input, health,
//! metrics and request ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Reply, TestIssuer, TestServer, basic_config};
use mayfly_crypto::token::hash_token;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Creates an admin token through the API and returns its value.
async fn create_token(server: &TestServer, name: &str, role: &str) -> String {
    let (status, body) = server
        .post("/v1/admin-tokens", json!({"name": name, "role": role}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// Sends a request without going through the JSON helpers, so any body and header can be sent.
async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut request = server
        .http
        .request(method, server.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::from(request).await
}

// Authentication.

#[tokio::test]
async fn request_without_admin_token_is_unauthorized() {
    let server = TestServer::start().await;

    let reply = Reply::from(server.http.get(server.url("/v1/server-workloads"))).await;

    reply.assert_problem(401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert!(reply.detail().contains("Authorization"), "{}", reply.body);
}

#[tokio::test]
async fn unknown_admin_token_is_unauthorized() {
    let server = TestServer::start().await;
    let guessed = format!("mfy_admin_{}", "A".repeat(43));

    let reply = Reply::from(
        server
            .http
            .get(server.url("/v1/server-workloads"))
            .bearer_auth(&guessed),
    )
    .await;

    reply.assert_problem(401);
    assert!(
        reply.detail().contains("unknown or revoked"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn non_bearer_authorization_is_unauthorized() {
    let server = TestServer::start().await;
    let basic = format!("Basic {}", server.admin_token);

    let reply = Reply::from(
        server
            .http
            .get(server.url("/v1/server-workloads"))
            .header("authorization", basic),
    )
    .await;

    reply.assert_problem(401);
}

#[tokio::test]
async fn revoked_admin_token_is_unauthorized() {
    let server = TestServer::start().await;
    let token = create_token(&server, "ops", "admin").await;
    let (status, _) = server
        .admin_as(&token, Method::GET, "/v1/server-workloads", None)
        .await;
    assert_eq!(status, 200);

    let (status, body) = server
        .admin(Method::DELETE, "/v1/admin-tokens/ops", None)
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"name": "ops", "revoked": true}));
    let reply = Reply::from(
        server
            .http
            .get(server.url("/v1/server-workloads"))
            .bearer_auth(&token),
    )
    .await;
    reply.assert_problem(401);
    let (_, body) = server.get("/v1/admin-tokens").await;
    let ops = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == "ops")
        .cloned()
        .unwrap();
    assert!(ops["revoked_at"].is_string(), "{ops}");
}

#[tokio::test]
async fn revoking_missing_admin_token_is_not_found() {
    let server = TestServer::start().await;

    let reply = server
        .admin_reply(Method::DELETE, "/v1/admin-tokens/ghost", None)
        .await;

    reply.assert_problem(404);
}

// Tokens and roles.

#[tokio::test]
async fn created_token_is_returned_once() {
    let server = TestServer::start().await;

    let (status, body) = server
        .post(
            "/v1/admin-tokens",
            json!({"name": "audit", "role": "auditor"}),
        )
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "audit");
    assert_eq!(body["role"], "auditor");
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("mfy_admin_"), "{token}");
    let (_, list) = server.get("/v1/admin-tokens").await;
    assert!(!list.to_string().contains(token), "{list}");
    let reply = server
        .admin_reply(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "audit", "role": "auditor"})),
        )
        .await;
    reply.assert_problem(409);
    assert!(reply.body.get("token").is_none(), "{}", reply.body);
}

#[tokio::test]
async fn admin_token_with_unknown_role_is_rejected() {
    let server = TestServer::start().await;

    let reply = server
        .admin_reply(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "root", "role": "superuser"})),
        )
        .await;

    reply.assert_problem(400);
    assert_eq!(reply.body["field"], "role");
    assert_eq!(reply.body["value"], "superuser");
}

#[tokio::test]
async fn token_list_never_shows_token_or_hash() {
    let server = TestServer::start().await;
    let auditor = create_token(&server, "audit", "auditor").await;

    let (status, body) = server.get("/v1/admin-tokens").await;

    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    for token in [&server.admin_token, &auditor] {
        assert!(!text.contains(token.as_str()), "{text}");
        assert!(!text.contains(&hash_token(token)), "{text}");
    }
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bootstrap", "audit"]);
    for item in body["items"].as_array().unwrap() {
        let mut fields: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            vec!["created_at", "name", "revoked_at", "role"],
            "{item}"
        );
    }
}

#[tokio::test]
async fn auditor_can_read_config_and_audit() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let auditor = create_token(&server, "audit", "auditor").await;

    for path in [
        "/v1/server-workloads",
        "/v1/server-workloads/payments",
        "/v1/access-policies/billing-payments",
        "/v1/audit/events?kind=config_change",
        "/v1/audit/verify",
        "/v1/keys",
        "/v1/admin-tokens",
    ] {
        let (status, body) = server.admin_as(&auditor, Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}

#[tokio::test]
async fn auditor_cannot_write() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let auditor = create_token(&server, "audit", "auditor").await;
    let (_, keys) = server.get("/v1/keys").await;
    let kid = keys["keys"][0]["kid"].as_str().unwrap().to_string();
    let (_, tokens_before) = server.get("/v1/admin-tokens").await;
    let events_before = server.audit_events("limit=1000").await.len();

    let writes = [
        (
            Method::PUT,
            "/v1/server-workloads/ledger".to_string(),
            Some(json!({"host": "ledger.example", "port": 443})),
        ),
        (
            Method::DELETE,
            "/v1/access-policies/billing-payments".to_string(),
            None,
        ),
        (
            Method::POST,
            "/v1/apply".to_string(),
            Some(json!({"config": {}, "prune": true})),
        ),
        (
            Method::POST,
            "/v1/server-workloads/payments/disable".to_string(),
            None,
        ),
        (
            Method::POST,
            "/v1/server-workloads/payments/enable".to_string(),
            None,
        ),
        (Method::POST, "/v1/keys/rotate".to_string(), None),
        (Method::POST, format!("/v1/keys/{kid}/taint"), None),
        (Method::POST, format!("/v1/keys/{kid}/revoke"), None),
        (
            Method::POST,
            "/v1/admin-tokens".to_string(),
            Some(json!({"name": "escalated", "role": "admin"})),
        ),
        (
            Method::DELETE,
            "/v1/admin-tokens/bootstrap".to_string(),
            None,
        ),
    ];
    for (method, path, body) in writes {
        let mut request = server
            .http
            .request(method.clone(), server.url(&path))
            .bearer_auth(&auditor);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = Reply::from(request).await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{method} {path}"
        );
        assert!(
            reply.detail().contains("auditor"),
            "{method} {path}: {}",
            reply.body
        );
    }

    let (status, _) = server.get("/v1/server-workloads/ledger").await;
    assert_eq!(status, 404);
    let (status, _) = server.get("/v1/access-policies/billing-payments").await;
    assert_eq!(status, 200);
    let (_, payments) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(payments["enabled"], true);
    let (_, keys_after) = server.get("/v1/keys").await;
    assert_eq!(keys_after, keys);
    let (_, tokens_after) = server.get("/v1/admin-tokens").await;
    assert_eq!(tokens_after, tokens_before);
    assert_eq!(server.audit_events("limit=1000").await.len(), events_before);
}

#[tokio::test]
async fn admin_tokens_are_stored_only_as_hashes() {
    let mut server = TestServer::start().await;
    let auditor = create_token(&server, "audit", "auditor").await;
    let bootstrap = server.admin_token.clone();
    server.stop().await;

    let database = server.data_dir().join("mayfly.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&database)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT token_hash FROM admin_tokens ORDER BY created_at_us")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(hashes, vec![hash_token(&bootstrap), hash_token(&auditor)]);

    let mut database_files = 0;
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("mayfly.db")
        {
            continue;
        }
        database_files += 1;
        let bytes = std::fs::read(&path).unwrap();
        for token in [&bootstrap, &auditor] {
            let found = bytes
                .windows(token.len())
                .any(|window| window == token.as_bytes());
            assert!(!found, "{} contains an admin token", path.display());
        }
    }
    assert!(database_files >= 1);
}

#[tokio::test]
async fn admin_token_file_mode_and_content() {
    let server = TestServer::start().await;
    let path = server.data_dir().join("admin-token");

    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;

    assert_eq!(mode, 0o600, "mode {mode:o}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", server.admin_token)
    );
}

#[tokio::test]
async fn restart_creates_no_new_admin_token() {
    let mut first = TestServer::start().await;
    let token = first.admin_token.clone();
    first.stop().await;
    let data_dir = first.data_dir();

    let second = TestServer::start_with(|settings| settings.data_dir = data_dir).await;

    assert!(second.running().first_admin_token.is_none());
    assert_eq!(
        std::fs::read_to_string(first.data_dir().join("admin-token")).unwrap(),
        format!("{token}\n")
    );
    let (status, body) = second
        .admin_as(&token, Method::GET, "/v1/admin-tokens", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
}

// Bodies the server must reject without harm.

#[tokio::test]
async fn oversized_body_is_rejected() {
    let server = TestServer::start_with(|settings| settings.max_body_bytes = 2048).await;
    let padding = "a".repeat(4096);
    let token = server.admin_token.clone();
    let routes = [
        (
            Method::PUT,
            "/v1/server-workloads/payments",
            json!({"host": padding, "port": 443}),
        ),
        (
            Method::POST,
            "/v1/apply",
            json!({"config": {"server_workloads": [{"name": "payments", "host": padding, "port": 443}]}}),
        ),
        (
            Method::POST,
            "/v1/admin-tokens",
            json!({"name": padding, "role": "admin"}),
        ),
        (
            Method::POST,
            "/v1/keys/rotate",
            json!({"algorithm": padding}),
        ),
        (
            Method::POST,
            "/v1/credentials",
            json!({"server_workload": padding}),
        ),
    ];

    for (method, path, body) in routes {
        let reply = raw(
            &server,
            method.clone(),
            path,
            Some(&token),
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(reply.status, 413, "{method} {path}: {}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{method} {path}"
        );
        assert!(
            reply.detail().contains("2048"),
            "{method} {path}: {}",
            reply.body
        );
    }
    let (status, _) = server.get("/v1/server-workloads/payments").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn malformed_json_is_rejected() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    let routes = [
        (Method::PUT, "/v1/server-workloads/payments"),
        (Method::POST, "/v1/apply"),
        (Method::POST, "/v1/admin-tokens"),
        (Method::POST, "/v1/keys/rotate"),
        (Method::POST, "/v1/credentials"),
    ];

    for (method, path) in routes {
        let reply = raw(
            &server,
            method.clone(),
            path,
            Some(&token),
            b"{\"host\": \"payments.example\", \"port\": 44".to_vec(),
        )
        .await;
        reply.assert_problem(400);
        assert!(
            reply.detail().contains("JSON"),
            "{method} {path}: {}",
            reply.body
        );
    }
}

/// Bodies built to break parsers: deep nesting, huge values, invalid UTF-8, wrong types.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = vec![
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(20_000), "}".repeat(20_000)).into_bytes(),
        json!({"name": "a".repeat(900_000), "host": "h", "port": 1})
            .to_string()
            .into_bytes(),
        format!("{{\"port\": {}}}", "9".repeat(500_000)).into_bytes(),
        b"{\"name\": \"\xff\xfe\xfd\", \"host\": \"\xc0\xaf\"}".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"\x00\x01\x02\x03".to_vec(),
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        b"1e400".to_vec(),
        b"{\"name\": \"a\", \"name\": \"b\"}".to_vec(),
        b"{\"name\": \"a\\u0000b\", \"host\": \"h\\ud800\", \"port\": 1}".to_vec(),
    ];
    let many_keys: serde_json::Map<String, Value> = (0..50_000)
        .map(|index| (format!("k{index}"), json!(index)))
        .collect();
    bodies.push(Value::Object(many_keys).to_string().into_bytes());
    for wrong in [
        json!({"name": 5, "host": [], "port": "x"}),
        json!({"name": "x", "kind": "oidc", "issuer": {"a": 1}, "audience": null, "jwks": {"keys": "not a list"}}),
        json!({"name": "x", "kind": "jwt_svid", "audience": "payments", "ttl": "-5m"}),
        json!({"name": "x", "kind": "jwt_svid", "audience": ["payments"], "ttl": "18446744073709551615d"}),
        json!({"name": "x", "kind": "time_window", "timezone": "../../../../etc/passwd", "schedule": [{"days": ["mon"], "start": "99:99", "end": "24:01"}]}),
        json!({"name": "x", "kind": "source_ip", "allow": ["::ffff:1.2.3.4/129", "1.2.3.4/-1"]}),
        json!({"name": "x", "host": "h", "port": 70_000}),
        json!({"name": "\u{202e}evil", "host": "h\r\nX-Injected: 1", "port": 1}),
        json!({"name": "x", "identities": [{"trust_provider": "nope", "match": {"a": {"b": "c"}}}]}),
        json!({"config": {"server_workloads": [{"name": "a", "host": "h", "port": 0}]}, "prune": "yes"}),
        json!({"config": null}),
        json!({"config": {"trust_providers": [{"name": "x", "kind": "oidc", "issuer": "https://x", "audience": "a", "jwks": {"keys": [{"kty": "EC"}]}, "leeway": "1d"}]}}),
        json!({"name": "x", "role": ["admin"]}),
        json!({"algorithm": "none"}),
        json!({"server_workload": "", "target": {"host": "", "port": 0}}),
        json!({"target": {"host": "a".repeat(100_000), "port": 65_535}}),
    ] {
        bodies.push(wrong.to_string().into_bytes());
    }
    bodies
}

/// Routes that take a body. Names in paths are arbitrary: hostile paths come separately.
const WRITE_ROUTES: [(&str, &str); 13] = [
    ("PUT", "/v1/trust-providers/x"),
    ("PUT", "/v1/client-workloads/x"),
    ("PUT", "/v1/server-workloads/x"),
    ("PUT", "/v1/credential-providers/x"),
    ("PUT", "/v1/access-conditions/x"),
    ("PUT", "/v1/access-policies/x"),
    ("POST", "/v1/apply"),
    ("POST", "/v1/credentials"),
    ("POST", "/v1/server-workloads/x/disable"),
    ("POST", "/v1/server-workloads/x/enable"),
    ("POST", "/v1/keys/rotate"),
    ("POST", "/v1/keys/x/taint"),
    ("POST", "/v1/admin-tokens"),
];

#[tokio::test]
async fn hostile_input_never_crashes_server() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();

    for (method, path) in WRITE_ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for (index, body) in hostile_bodies().into_iter().enumerate() {
            if path == "/v1/keys/rotate" && (body.is_empty() || body == b"[]") {
                // Both ask for a rotation with the default algorithm: serde reads a struct whose
                // fields all have defaults from an empty array too.
                continue;
            }
            let reply = raw(&server, method.clone(), path, Some(&token), body).await;
            assert!(
                (400..500).contains(&reply.status),
                "{method} {path} body {index}: {} {}",
                reply.status,
                reply.body
            );
        }
    }

    let hostile_paths = [
        "/v1/client-workloads/%FF%FE",
        "/v1/client-workloads/..%2F..%2Fetc%2Fpasswd",
        "/v1/client-workloads/a%00b",
        "/v1/%00/x",
        "/v1/server-workloads/%C0%AF/disable",
        "/v1/keys/%2e%2e/revoke",
        "/v1/admin-tokens/%FF",
    ];
    let long_name = format!("/v1/server-workloads/{}", "a".repeat(10_000));
    for path in hostile_paths.iter().copied().chain([long_name.as_str()]) {
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            let reply = raw(&server, method.clone(), path, Some(&token), b"{}".to_vec()).await;
            assert!(
                (400..500).contains(&reply.status),
                "{method} {path}: {} {}",
                reply.status,
                reply.body
            );
        }
    }

    for (index, body) in ["{\"server_workload\": [[[[]]]]}", "{", "null"]
        .into_iter()
        .enumerate()
    {
        let (status, _) = common::unix_post(&server.socket_path(), "/v1/credentials", body).await;
        assert!(
            (400..500).contains(&status),
            "socket body {index}: {status}"
        );
    }

    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/apply HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut stream = tokio::net::TcpStream::connect(server.running().addr)
            .await
            .unwrap();
        stream.write_all(garbage).await.unwrap();
        let mut response = Vec::new();
        // The server replies to garbage with an error status or closes the connection.
        let _ =
            tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response)).await;
        assert!(
            !response.starts_with(b"HTTP/1.1 2"),
            "{}",
            String::from_utf8_lossy(&response)
        );
    }

    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get("/v1/server-workloads").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([]));
}

#[tokio::test]

async fn malformed_path_gets_problem_document() {
    let server = TestServer::start().await;
    let requests = [
        (Method::GET, "/v1/client-workloads/%FF%FE"),
        (Method::DELETE, "/v1/admin-tokens/%FF"),
        (Method::POST, "/v1/client-workloads/x"),
        (Method::GET, "/v1/apply"),
    ];

    for (method, path) in requests {
        let reply = server.admin_reply(method.clone(), path, None).await;
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{method} {path}: {} {}",
            reply.status,
            reply.body
        );
    }
}

// Health, metrics and request ids.

#[tokio::test]
async fn health_and_readiness_report_ok() {
    let server = TestServer::start().await;

    let health = Reply::from(server.http.get(server.url("/healthz"))).await;
    let ready = Reply::from(server.http.get(server.url("/readyz"))).await;

    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok"}));
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.body,
        json!({"ready": true, "store": true, "signing_key": true})
    );
}

/// Returns the value of the sample whose line starts with `name{` and contains every label.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn metrics_count_grants_and_denials() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    // A server workload name no other test uses, because the metrics recorder is process-wide.
    let config = basic_config(&issuer)
        .replace("name: payments,", "name: metered,")
        .replace("server_workload: payments,", "server_workload: metered,");
    server.apply(&config).await;
    let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
    let (status, _) = server
        .credential_with_token(&evidence, json!({"server_workload": "metered"}))
        .await;
    assert_eq!(status, 200);
    server
        .post("/v1/server-workloads/metered/disable", json!({}))
        .await;
    let (status, _) = server
        .credential_with_token(&evidence, json!({"server_workload": "metered"}))
        .await;
    assert_eq!(status, 403);

    let reply = Reply::from(server.http.get(server.url("/metrics"))).await;

    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let metrics = reply.body.as_str().unwrap();
    let issued = sample(
        metrics,
        "mayfly_credentials_issued_total",
        &["server_workload=\"metered\""],
    );
    assert_eq!(issued, Some(1.0), "{metrics}");
    let denied = sample(
        metrics,
        "mayfly_credentials_denied_total",
        &[
            "server_workload=\"metered\"",
            "reason=\"server_workload_enabled\"",
        ],
    );
    assert_eq!(denied, Some(1.0), "{metrics}");
    assert!(
        metrics.contains("# TYPE mayfly_credential_issuance_seconds histogram"),
        "{metrics}"
    );
    assert!(
        sample(
            metrics,
            "mayfly_credential_issuance_seconds_bucket",
            &["le=\"+Inf\""]
        )
        .is_some(),
        "{metrics}"
    );
    // Other tests of this binary record into the same histogram, so only a lower bound holds.
    let observed =
        sample(metrics, "mayfly_credential_issuance_seconds_count", &[]).unwrap_or_default();
    assert!(observed >= 2.0, "{metrics}");
}

#[tokio::test]
async fn every_response_carries_request_id() {
    let server = TestServer::start().await;
    let requests = [
        server.http.get(server.url("/healthz")),
        server.http.get(server.url("/readyz")),
        server.http.get(server.url("/metrics")),
        server
            .http
            .get(server.url("/.well-known/openid-configuration")),
        server.http.get(server.url("/.well-known/jwks.json")),
        server.http.get(server.url("/no/such/route")),
        server.http.get(server.url("/v1/server-workloads")),
        server
            .http
            .get(server.url("/v1/server-workloads"))
            .bearer_auth(&server.admin_token),
        server
            .http
            .put(server.url("/v1/server-workloads/x"))
            .bearer_auth(&server.admin_token)
            .body("{"),
        server
            .http
            .post(server.url("/v1/credentials"))
            .json(&json!({"server_workload": "payments"})),
    ];

    let mut ids = Vec::new();
    for request in requests {
        let reply = Reply::from(request).await;
        let id = reply.header("x-request-id").map(str::to_string);
        assert!(
            id.as_ref().is_some_and(|id| id.len() == 32),
            "status {}: {:?}",
            reply.status,
            reply.headers
        );
        ids.push(id.unwrap());
    }
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "request ids repeat: {ids:?}");
}

#[tokio::test]
async fn denial_request_id_matches_audit_event() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    server.apply(&basic_config(&issuer)).await;
    let stranger = issuer.token(json!({"sub": "repo:acme/stranger"}));

    let reply = Reply::from(
        server
            .http
            .post(server.url("/v1/credentials"))
            .bearer_auth(&stranger)
            .json(&json!({"server_workload": "payments"})),
    )
    .await;

    reply.assert_problem(403);
    assert_eq!(reply.body["step"], "client_workload");
    let request_id = reply.header("x-request-id").unwrap();
    assert_eq!(reply.body["request_id"], request_id);
    let events = server.audit_events("kind=credential_request").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"]["request_id"], request_id);
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(events[0]["detail"]["step"], "client_workload");
    assert!(!reply.detail().contains("stranger"), "{}", reply.body);
}
