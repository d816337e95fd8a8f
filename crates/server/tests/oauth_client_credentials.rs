//! The `oauth_client_credentials` credential provider against a real authorization server
//! (oidc-provider): each client authentication method, the token cache and its single flight,
//! renewal ahead of expiry, and the upstream failures that become denials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod oauth_server;

use std::time::Duration;

use common::{TestIssuer, TestServer, claims_of, header_of};
use oauth_server::{AuthServer, BASIC_SECRET, Options, POST_SECRET};
use serde_json::{Value, json};

const BILLING_SUB: &str = "repo:acme/billing";

struct Setup {
    server: TestServer,
    issuer: TestIssuer,
    auth: AuthServer,
}

/// Starts Mayfly, an evidence issuer and an authorization server whose `private_key_jwt` client
/// trusts Mayfly's JWKS.
async fn setup(access_token_ttl: u64, token_delay_ms: u64) -> Setup {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let jwks_uri = server.url("/.well-known/jwks.json");
    let auth = AuthServer::start(Options {
        jwks_uri,
        access_token_ttl,
        token_delay_ms,
    })
    .await;
    Setup {
        server,
        issuer,
        auth,
    }
}

impl Setup {
    /// Applies a configuration in which `billing` reaches `reports` through the OAuth provider
    /// `reports-oauth`, whose fields after `name` and `kind` are `fields`.
    async fn apply(&self, fields: &str) {
        let yaml = format!(
            "trust_providers:\n{}\
client_workloads:\n  - name: billing\n    identities:\n      - {{trust_provider: ci, match: {{sub: \"{BILLING_SUB}\"}}}}\n\
server_workloads:\n  - {{name: reports, host: reports.example, port: 443}}\n\
credential_providers:\n  - {{name: reports-oauth, kind: oauth_client_credentials, {fields}}}\n\
access_policies:\n  - {{name: billing-reports, client_workload: billing, server_workload: reports, credential_provider: reports-oauth, trust_providers: [ci]}}\n",
            self.issuer.trust_provider_yaml("ci")
        );
        self.server.apply(&yaml).await;
    }

    fn basic_fields(&self, secret: &str) -> String {
        format!(
            "token_url: \"{}\", client_id: reports-basic, client_auth: client_secret_basic, client_secret: \"{secret}\", scopes: [\"reports:read\"]",
            self.auth.token_url()
        )
    }

    fn jwt_fields(&self, scopes: &str) -> String {
        format!(
            "token_url: \"{}\", client_id: reports-jwt, client_auth: private_key_jwt, scopes: {scopes}",
            self.auth.token_url()
        )
    }

    async fn request(&self) -> (u16, Value) {
        let token = self.issuer.token(json!({"sub": BILLING_SUB}));
        self.server
            .credential_with_token(&token, json!({"server_workload": "reports"}))
            .await
    }

    async fn last_request_event(&self) -> Value {
        let events = self
            .server
            .audit_events("kind=credential_request&limit=1")
            .await;
        events[0].clone()
    }
}

fn assert_access_token(body: &Value, client_id: &str) -> Value {
    assert_eq!(body["credential_type"], "access_token", "{body}");
    let token = body["token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(claims["client_id"], client_id, "{claims}");
    assert_eq!(claims["scope"], "reports:read", "{claims}");
    assert_eq!(claims["aud"], "reports-api", "{claims}");
    assert_eq!(
        body["presentation"]["headers"]["Authorization"],
        format!("Bearer {token}")
    );
    let expires_at: jiff::Timestamp = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (expires_at.as_second() - claims["exp"].as_i64().unwrap()).abs() <= 2,
        "{body} {claims}"
    );
    claims
}

#[tokio::test]
async fn client_secret_basic_gets_access_token() {
    let setup = setup(3600, 0).await;
    setup.apply(&setup.basic_fields(BASIC_SECRET)).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    assert_access_token(&body, "reports-basic");
    let event = setup.last_request_event().await;
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["detail"]["credential_type"], "access_token");
    assert_eq!(event["detail"]["expires_at"], body["expires_at"]);
    assert_eq!(event["detail"]["cached"], false);
    assert!(!event.to_string().contains(BASIC_SECRET));
    assert!(!event.to_string().contains(body["token"].as_str().unwrap()));
}

#[tokio::test]
async fn client_secret_post_gets_access_token() {
    let setup = setup(3600, 0).await;
    let fields = format!(
        "token_url: \"{}\", client_id: reports-post, client_auth: client_secret_post, client_secret: {POST_SECRET}, scopes: [\"reports:read\"]",
        setup.auth.token_url()
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    assert_access_token(&body, "reports-post");
}

#[tokio::test]
async fn private_key_jwt_assertion_verifies_through_mayfly_jwks() {
    let setup = setup(3600, 0).await;
    setup.apply(&setup.jwt_fields("[\"reports:read\"]")).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    assert_access_token(&body, "reports-jwt");
    let stats = setup.auth.stats().await;
    let assertion = stats["assertions"][0].as_str().unwrap();
    let claims = claims_of(assertion);
    assert_eq!(claims["iss"], "reports-jwt");
    assert_eq!(claims["sub"], "reports-jwt");
    assert_eq!(claims["aud"], setup.auth.token_url());
    assert!(claims["jti"].as_str().unwrap().len() >= 16, "{claims}");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    let (_, keys) = setup.server.get("/v1/keys").await;
    let active = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["state"] == "active")
        .unwrap();
    assert_eq!(header_of(assertion)["kid"], active["kid"]);
}

#[tokio::test]
async fn assertion_audience_can_be_the_issuer() {
    let setup = setup(3600, 0).await;
    let fields = format!(
        "{}, assertion_audience: \"{}\"",
        setup.jwt_fields("[\"reports:read\"]"),
        setup.auth.issuer
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    let stats = setup.auth.stats().await;
    assert_eq!(
        claims_of(stats["assertions"][0].as_str().unwrap())["aud"],
        setup.auth.issuer
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_upstream_call() {
    let setup = setup(3600, 400).await;
    setup.apply(&setup.basic_fields(BASIC_SECRET)).await;

    let requests = (0..16).map(|_| setup.request());
    let answers = futures_join_all(requests).await;

    let first = answers[0].1["token"].clone();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["token"], first);
    }
    assert_eq!(setup.auth.token_requests().await, 1);
    let (status, again) = setup.request().await;
    assert_eq!(status, 200);
    assert_eq!(again["token"], first);
    assert_eq!(setup.auth.token_requests().await, 1);
    assert_eq!(setup.last_request_event().await["detail"]["cached"], true);
}

#[tokio::test]
async fn token_renews_ahead_of_expiry() {
    let setup = setup(8, 0).await;
    setup.apply(&setup.basic_fields(BASIC_SECRET)).await;
    let (_, first) = setup.request().await;

    // Past three quarters of the 8s lifetime the cached token is still returned, and a renewal
    // starts in the background.
    tokio::time::sleep(Duration::from_millis(6300)).await;
    let (status, during) = setup.request().await;
    assert_eq!(status, 200, "{during}");
    assert_eq!(during["token"], first["token"]);

    let mut renewed = false;
    for _ in 0..50 {
        if setup.auth.token_requests().await == 2 {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renewed, "no renewal reached the token endpoint");

    // The renewed token replaces the cached one once its response has arrived; the old token is
    // still valid for about a second and a half, so the new one must show up before that.
    let mut after = first.clone();
    for _ in 0..25 {
        let (status, reply) = setup.request().await;
        assert_eq!(status, 200, "{reply}");
        after = reply;
        if after["token"] != first["token"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_ne!(after["token"], first["token"]);
    assert!(after["expires_at"].as_str().unwrap() > first["expires_at"].as_str().unwrap());
    assert_eq!(setup.auth.token_requests().await, 2);
}

#[tokio::test]
async fn failed_renewal_keeps_cached_token() {
    let mut setup = setup(8, 0).await;
    setup.apply(&setup.basic_fields(BASIC_SECRET)).await;
    let (_, first) = setup.request().await;

    // The authorization server goes away; the renewal started past three quarters of the
    // lifetime fails, and workloads keep receiving the token that is still valid.
    setup.auth.stop().await;
    tokio::time::sleep(Duration::from_millis(6300)).await;
    let (status, during) = setup.request().await;
    assert_eq!(status, 200, "{during}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, after) = setup.request().await;

    assert_eq!(status, 200, "{after}");
    assert_eq!(after["token"], first["token"]);
}

#[tokio::test]
async fn wrong_client_secret_is_denied_with_upstream_error() {
    let setup = setup(3600, 0).await;
    setup.apply(&setup.basic_fields("not-the-secret")).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 403, "{body}");
    assert_eq!(body["step"], "credential_provider");
    let event = setup.last_request_event().await;
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["detail"]["upstream_error"], "invalid_client");
    assert_eq!(event["detail"]["upstream_status"], 401);
    assert!(
        event["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{event}"
    );
    assert!(!event.to_string().contains("not-the-secret"), "{event}");
    // oidc-provider's error_description must not reach the audit log.
    assert!(!event.to_string().contains("error_description"), "{event}");
}

#[tokio::test]
async fn forbidden_scope_is_denied_with_invalid_scope() {
    let setup = setup(3600, 0).await;
    setup.apply(&setup.jwt_fields("[\"reports:admin\"]")).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 403, "{body}");
    assert_eq!(
        setup.last_request_event().await["detail"]["upstream_error"],
        "invalid_scope"
    );
}

#[tokio::test]
async fn replayed_assertion_is_rejected() {
    let setup = setup(3600, 0).await;
    setup.apply(&setup.jwt_fields("[\"reports:read\"]")).await;
    let (status, _) = setup.request().await;
    assert_eq!(status, 200);
    let captured = setup.auth.stats().await["assertions"][0]
        .as_str()
        .unwrap()
        .to_string();

    let (status, body) = setup
        .auth
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "reports-jwt"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &captured),
            ("scope", "reports:read"),
        ])
        .await;

    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    // Mayfly's next assertion carries a fresh jti, so the server accepts it.
    setup
        .apply(&setup.jwt_fields("[\"reports:read\", \"reports:write\"]"))
        .await;
    let (status, body) = setup.request().await;
    assert_eq!(status, 200, "{body}");
    let assertions = setup.auth.stats().await["assertions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(assertions.len(), 3);
    assert_ne!(
        claims_of(assertions[2].as_str().unwrap())["jti"],
        claims_of(&captured)["jti"]
    );
}

#[tokio::test]
async fn signing_key_rotation_right_before_assertion() {
    let setup = setup(3600, 0).await;
    // A rotation publishes the next key at once, before it signs anything.
    let (status, prepared) = setup.server.post("/v1/keys/rotate", json!({})).await;
    assert_eq!(status, 200, "{prepared}");
    setup.apply(&setup.jwt_fields("[\"reports:read\"]")).await;
    let (status, _) = setup.request().await;
    assert_eq!(status, 200);
    let old_kid =
        header_of(setup.auth.stats().await["assertions"][0].as_str().unwrap())["kid"].clone();

    // Tainting the active key makes the prepared key sign from now on. The authorization server
    // keeps the key set it fetched (Mayfly serves it with max-age=300), and that set already has
    // the new key, so the very next assertion verifies without a new fetch.
    let (status, body) = setup
        .server
        .post(
            &format!("/v1/keys/{}/taint", old_kid.as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    setup
        .apply(&setup.jwt_fields("[\"reports:read\", \"reports:write\"]"))
        .await;
    let (status, body) = setup.request().await;

    assert_eq!(status, 200, "{body}");
    let assertions = setup.auth.stats().await["assertions"]
        .as_array()
        .unwrap()
        .clone();
    let new_kid = header_of(assertions.last().unwrap().as_str().unwrap())["kid"].clone();
    assert_ne!(new_kid, old_kid);
    assert_eq!(new_kid, prepared["key"]["kid"]);
}

#[tokio::test]
async fn unreachable_token_endpoint_is_denied() {
    let setup = setup(3600, 0).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let fields = format!(
        "token_url: \"http://127.0.0.1:{port}/token\", client_id: reports-basic, client_auth: client_secret_basic, client_secret: {BASIC_SECRET}"
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 403, "{body}");
    let event = setup.last_request_event().await;
    assert_eq!(event["detail"]["upstream_error"], "unreachable");
    assert!(
        event["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{event}"
    );
}

#[tokio::test]
async fn silent_token_endpoint_times_out() {
    let setup = setup(3600, 0).await;
    // Accepts connections and never responds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent_server = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let fields = format!(
        "token_url: \"http://127.0.0.1:{port}/token\", client_id: reports-basic, client_auth: client_secret_basic, client_secret: {BASIC_SECRET}, timeout: 1s"
    );
    setup.apply(&fields).await;

    let started = std::time::Instant::now();
    let (status, body) = setup.request().await;

    assert_eq!(status, 403, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let event = setup.last_request_event().await;
    assert_eq!(event["detail"]["upstream_error"], "timeout");
    assert!(
        event["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{event}"
    );
    silent_server.abort();
}

#[tokio::test]
async fn server_error_is_denied_without_body() {
    let setup = setup(3600, 0).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let failing = axum::Router::new().route(
        "/token",
        axum::routing::post(|| async {
            let body = json!({"error": "temporarily_unavailable", "error_description": "db-password=hunter2 in stack trace"});
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
        }),
    );
    let task = tokio::spawn(async move { axum::serve(listener, failing).await.unwrap() });
    let fields = format!(
        "token_url: \"http://127.0.0.1:{port}/token\", client_id: reports-basic, client_auth: client_secret_basic, client_secret: {BASIC_SECRET}"
    );
    setup.apply(&fields).await;

    let (status, body) = setup.request().await;

    assert_eq!(status, 403, "{body}");
    let event = setup.last_request_event().await;
    assert_eq!(event["detail"]["upstream_status"], 503);
    assert_eq!(event["detail"]["upstream_error"], "temporarily_unavailable");
    assert!(!event.to_string().contains("hunter2"), "{event}");
    task.abort();
}

#[tokio::test]
async fn client_secret_is_write_only() {
    let setup = setup(3600, 0).await;
    setup.apply(&setup.basic_fields(BASIC_SECRET)).await;

    let (status, body) = setup
        .server
        .get("/v1/credential-providers/reports-oauth")
        .await;

    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(BASIC_SECRET), "{body}");
    assert_eq!(body["client_secret"]["set"], true, "{body}");
    assert_eq!(body["credential_type"], "access_token");
    assert_eq!(body["typical_lifetime"], json!({"kind": "set_by_target"}));
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs = Vec::new();
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|context| {
        for (index, slot) in pending.iter_mut().enumerate() {
            if let Some(future) = slot
                && let std::task::Poll::Ready(output) = future.as_mut().poll(context)
            {
                results[index] = Some(output);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.extend(results.into_iter().map(Option::unwrap));
    outputs
}
