//! The SPIFFE Workload API on the agent socket, against a real server: JWT-SVIDs, bundles,
//! validation, denials, the cache under a hung server, eviction and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Relay, TestServer, client, request, socket_path, start_agent};
use mayfly_agent::proto::{JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest};
use serde_json::Value;
use tonic::Code;

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
  - {name: payments-jwt, kind: jwt_svid, audience: [payments, ledger], ttl: 16s}
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

fn svid_request(audience: &[&str]) -> JwtsvidRequest {
    JwtsvidRequest {
        audience: audience
            .iter()
            .map(|audience| audience.to_string())
            .collect(),
        spiffe_id: String::new(),
    }
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn setup(config: &str) -> (TestServer, tempfile::TempDir, mayfly_agent::RunningAgent) {
    let server = TestServer::start().await;
    server.apply(config).await;
    let dir = tempfile::tempdir().unwrap();
    let token = server.join_token("web-1").await;
    let agent = start_agent(&server.base, dir.path(), Some(token)).await;
    (server, dir, agent)
}

#[tokio::test]
async fn fetch_jwt_svid_through_agent() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let response = api
        .fetch_jwtsvid(request(svid_request(&["ledger"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.svids.len(), 1);
    let svid = &response.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://mayfly.local/web");
    let claims = claims_of(&svid.svid);
    assert_eq!(claims["aud"], serde_json::json!(["ledger"]));
    assert_eq!(claims["sub"], "spiffe://mayfly.local/web");

    let events = server
        .audit_events("kind=credential_request&outcome=success")
        .await;
    let attributes = &events[0]["detail"]["evidence"]["attributes"];
    assert_eq!(attributes["agent"], serde_json::json!(["web-1"]));
    assert_eq!(
        attributes["uid"],
        serde_json::json!([common::current_uid()])
    );
    assert_eq!(
        attributes["pid"],
        serde_json::json!([std::process::id().to_string()])
    );
    assert!(
        attributes["sha256"][0]
            .as_str()
            .is_some_and(|hash| hash.len() == 64)
    );
}

#[tokio::test]
async fn missing_workload_header_is_invalid_argument() {
    let (_server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let status = api
        .fetch_jwtsvid(tonic::Request::new(svid_request(&["payments"])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn empty_audience_is_invalid_argument() {
    let (_server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let status = api
        .fetch_jwtsvid(request(svid_request(&[])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn invalid_audiences_never_reach_server() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let long = "a".repeat(256);
    let many: Vec<String> = (0..33).map(|index| format!("aud-{index}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let cases: [(&[&str], &str); 4] = [
        (&["payments", ""], "audience[1] is empty"),
        (
            &["payments", long.as_str()],
            "audience[1] is 256 bytes long",
        ),
        (
            &["pay\nments"],
            "audience[0] \"pay\\nments\" contains a control character",
        ),
        (&many, "audience has 33 entries"),
    ];
    for (audience, expected) in cases {
        let status = api
            .fetch_jwtsvid(request(svid_request(audience)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(expected), "{status:?}");
    }
    assert!(
        server
            .audit_events("kind=credential_request")
            .await
            .is_empty(),
        "no invalid request reached the server"
    );
}

#[tokio::test]
async fn audience_no_policy_allows_is_permission_denied() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let status = api
        .fetch_jwtsvid(request(svid_request(&["vault"])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let denials = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(denials.len(), 1);
    assert_eq!(denials[0]["detail"]["step"], "access_policy");
    assert_eq!(
        denials[0]["detail"]["audience"],
        serde_json::json!(["vault"])
    );
}

#[tokio::test]
async fn rule_without_agent_is_permission_denied() {
    let (server, dir, _agent) = setup(CONFIG_WITHOUT_AGENT).await;
    let mut api = client(&socket_path(dir.path())).await;
    let status = api
        .fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let denials = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(denials[0]["detail"]["step"], "client_workload");
}

#[tokio::test]
async fn evicted_agent_gets_no_new_svid() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap();

    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/agents/web-1/evict", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let status = api
        .fetch_jwtsvid(request(svid_request(&["ledger"])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        server.audit_events("kind=credential_request").await.len(),
        1,
        "the evicted agent reached no decision"
    );
}

#[tokio::test]
async fn split_audiences_get_separate_svids() {
    let server = TestServer::start().await;
    server
        .apply(&CONFIG.replace("[payments, ledger]", "[ab, cd, a, bcd]"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &server.base,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let mut api = client(&socket_path(dir.path())).await;

    let first = api
        .fetch_jwtsvid(request(svid_request(&["ab", "cd"])))
        .await
        .unwrap()
        .into_inner();
    let second = api
        .fetch_jwtsvid(request(svid_request(&["a", "bcd"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        claims_of(&first.svids[0].svid)["aud"],
        serde_json::json!(["ab", "cd"])
    );
    assert_eq!(
        claims_of(&second.svids[0].svid)["aud"],
        serde_json::json!(["a", "bcd"])
    );
}

#[tokio::test]
async fn cached_svid_served_while_server_hangs() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let relay = Relay::start(server.server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        &relay.url,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let mut api = client(&socket_path(dir.path())).await;

    let first = api
        .fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(agent.cache.len(), 1);
    relay.hang();
    // Past the refresh point (40 to 60 percent of the 16 s lifetime), before expiry.
    tokio::time::sleep(Duration::from_millis(9_700)).await;

    let started = Instant::now();
    let cached = api
        .fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap()
        .into_inner();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(cached.svids[0].svid, first.svids[0].svid);

    let started = Instant::now();
    let uncached = api
        .fetch_jwtsvid(request(svid_request(&["ledger"])))
        .await
        .unwrap_err();
    assert_eq!(uncached.code(), Code::Unavailable);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "a miss waits for the server timeout"
    );
}

#[tokio::test]
async fn bundle_stream_and_validation() {
    let (_server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let mut stream = api
        .fetch_jwt_bundles(request(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let jwks: Value = serde_json::from_slice(&first.bundles["spiffe://mayfly.local"]).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|key| key["kid"].is_string() && key.get("use").is_none())
    );

    let svid = api
        .fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap()
        .into_inner()
        .svids
        .remove(0);
    let validated = api
        .validate_jwtsvid(request(ValidateJwtsvidRequest {
            audience: "payments".into(),
            svid: svid.svid.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(validated.spiffe_id, "spiffe://mayfly.local/web");
    assert!(validated.claims.unwrap().fields.contains_key("exp"));

    let wrong = api
        .validate_jwtsvid(request(ValidateJwtsvidRequest {
            audience: "ledger".into(),
            svid: svid.svid,
        }))
        .await;
    assert_eq!(wrong.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bundle_stream_updates_on_rotation() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let mut stream = api
        .fetch_jwt_bundles(request(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let (status, body) = server
        .admin(
            reqwest::Method::POST,
            "/v1/keys/rotate",
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let second = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(first.bundles, second.bundles);
}

#[tokio::test]
async fn revoked_key_drops_cached_svid() {
    let (server, dir, _agent) = setup(CONFIG).await;
    let mut api = client(&socket_path(dir.path())).await;
    let first = payments_token(&mut api).await;
    assert_eq!(
        payments_token(&mut api).await,
        first,
        "the second fetch is a cache hit"
    );
    let revoked_kid = kid_of(&first);

    let mut stream = api
        .fetch_jwt_bundles(request(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let (status, body) = server
        .admin(
            reqwest::Method::POST,
            &format!("/v1/keys/{revoked_kid}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The agent drops the SVIDs of a removed key before it publishes the bundle without it.
    loop {
        let update = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a bundle update arrives")
            .unwrap()
            .unwrap();
        let jwks: Value = serde_json::from_slice(&update.bundles["spiffe://mayfly.local"]).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|key| key["kid"].as_str())
            .collect();
        if !kids.contains(&revoked_kid.as_str()) {
            break;
        }
    }

    let second = payments_token(&mut api).await;
    assert_ne!(second, first);
    assert_ne!(kid_of(&second), revoked_kid);
}

async fn payments_token(
    api: &mut mayfly_agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient<
        tonic::transport::Channel,
    >,
) -> String {
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap()
        .into_inner()
        .svids
        .remove(0)
        .svid
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn restarted_agent_keeps_its_credential() {
    let (_server, dir, agent) = setup(CONFIG).await;
    let server_url = _server.base.clone();
    agent.shutdown();
    let credential_file = dir
        .path()
        .join("agent")
        .join(mayfly_agent::identity::CREDENTIAL_FILE);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&credential_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let _restarted = start_agent(&server_url, dir.path(), None).await;
    let mut api = client(&socket_path(dir.path())).await;
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap();
}

#[tokio::test]
async fn evicted_agent_rejoins_with_new_token() {
    let (server, dir, agent) = setup(CONFIG).await;
    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/agents/web-1/evict", None)
        .await;
    assert_eq!(status, 200, "{body}");
    agent.shutdown();

    let token = server.join_token("web-1").await;
    let _restarted = start_agent(&server.base, dir.path(), Some(token)).await;
    let mut api = client(&socket_path(dir.path())).await;
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .expect("the agent joined with the new token");
}

#[tokio::test]
async fn evicted_agent_without_token_stops() {
    let (server, dir, agent) = setup(CONFIG).await;
    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/agents/web-1/evict", None)
        .await;
    assert_eq!(status, 200, "{body}");
    agent.shutdown();

    let started = mayfly_agent::start(common::agent_settings(&server.base, dir.path(), None)).await;
    let Err(error) = started else {
        panic!("an agent whose stored credential is rejected must not start");
    };
    let message = error.to_string();
    assert!(
        message.contains("rejected the stored credential"),
        "{message}"
    );
    assert!(
        message.contains("mayfly agent-token create web-1"),
        "{message}"
    );
}

#[tokio::test]
async fn restart_with_spare_token_keeps_credential() {
    let (server, dir, agent) = setup(CONFIG).await;
    agent.shutdown();

    let spare = server.join_token("web-1").await;
    let _restarted = start_agent(&server.base, dir.path(), Some(spare.clone())).await;
    let mut api = client(&socket_path(dir.path())).await;
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap();
    let response = server
        .http
        .post(format!("{}/v1/agents/join", server.base))
        .bearer_auth(&spare)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "the agent kept its accepted credential and left the join token unused"
    );
}

#[tokio::test]
async fn rejected_running_agent_joins_with_spare_token() {
    let (server, dir, agent) = setup(CONFIG).await;
    agent.shutdown();
    let spare = server.join_token("web-1").await;
    let restarted = start_agent(&server.base, dir.path(), Some(spare)).await;

    // Renewing behind the agent's back replaces its credential on the server, so the server
    // rejects the one the agent holds.
    let server_client =
        mayfly_agent::client::ServerClient::new(&server.base, Duration::from_secs(5), None)
            .unwrap();
    let (held, _) = restarted.identity.credential().await;
    server_client.renew(&held).await.unwrap();

    let mut api = client(&socket_path(dir.path())).await;
    let status = api
        .fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .expect("the agent joined with the spare token after the rejection");
}

#[tokio::test]
async fn file_at_socket_path_is_kept() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let token = server.join_token("web-1").await;
    let cases = [
        ("--socket", socket_path(dir.path())),
        ("--http-socket", dir.path().join("credential.sock")),
    ];
    for (setting, path) in cases {
        std::fs::write(&path, "important data").unwrap();
        let mut settings = common::agent_settings(&server.base, dir.path(), Some(token.clone()));
        settings.http_socket = dir.path().join("credential.sock");
        let Err(error) = mayfly_agent::start(settings).await else {
            panic!("the agent must not start with a regular file at {setting}");
        };
        let message = error.to_string();
        assert!(message.contains(setting), "{message}");
        assert!(message.contains("not a socket"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "important data");
        std::fs::remove_file(&path).unwrap();
    }

    let _agent = start_agent(&server.base, dir.path(), Some(token)).await;
    let mut api = client(&socket_path(dir.path())).await;
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .expect("the join token was not spent by the failed starts");
}

#[tokio::test]
async fn agent_renews_its_credential() {
    let (_server, _dir, agent) = setup(CONFIG).await;
    let before = agent.identity.credential().await.0.expose().to_string();
    let client =
        mayfly_agent::client::ServerClient::new(&_server.base, Duration::from_secs(5), None)
            .unwrap();
    agent.identity.renew(&client).await.unwrap();
    let after = agent.identity.credential().await.0.expose().to_string();
    assert_ne!(before, after);
}

#[tokio::test]
async fn agent_reaches_tls_server_with_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (tls, ca_file) = common::self_signed_tls(certs.path());
    let server = TestServer::start_with(|settings, _| settings.tls = Some(tls)).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    server.apply(CONFIG).await;

    let dir = tempfile::tempdir().unwrap();
    let token = server.join_token("web-1").await;
    let without_ca = mayfly_agent::start(common::agent_settings(
        &server.base,
        dir.path(),
        Some(token.clone()),
    ))
    .await;
    let Err(error) = without_ca else {
        panic!("a certificate outside the system roots must be rejected");
    };
    let message = error.to_string();
    assert!(message.contains("--server-ca"), "{message}");

    let mut settings = common::agent_settings(&server.base, dir.path(), Some(token));
    settings.server_ca = Some(ca_file);
    let _agent = mayfly_agent::start(settings)
        .await
        .expect("agent starts with the server's CA");
    let mut api = client(&socket_path(dir.path())).await;
    api.fetch_jwtsvid(request(svid_request(&["payments"])))
        .await
        .unwrap();
}
