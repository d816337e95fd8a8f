//! X.509-SVIDs through a real agent and a real server: py-spiffe with independent chain checks,
//! renewal and CA rotation pushed on an open stream, denials, and CSRs the server must reject.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::{Relay, TestServer, client, current_uid, request, socket_path, start_agent};
use mayfly_agent::proto::{X509BundlesRequest, X509svidRequest, X509svidResponse};
use mayfly_domain::duration::Seconds;
use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    SanType,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const CONFIG: &str = r#"
trust_providers:
  - {name: local, kind: unix}
client_workloads:
  - name: web
    identities:
      - {trust_provider: local, match: {uid: "${UID}", agent: web-1}}
server_workloads:
  - {name: mesh, host: mesh.example, port: 443}
credential_providers:
  - {name: mesh-svid, kind: x509_svid, ttl: 20s}
access_policies:
  - {name: web-mesh, client_workload: web, server_workload: mesh, credential_provider: mesh-svid, trust_providers: [local]}
"#;

/// The same client workload, but its only policy yields JWT-SVIDs.
const JWT_ONLY_CONFIG: &str = r#"
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

/// Upper bound on waiting for a pushed message, so a broken push fails the test instead of
/// hanging it.
const PUSH_WAIT: Duration = Duration::from_secs(60);

async fn server_with_fast_rotation() -> TestServer {
    TestServer::start_with(|settings, _| {
        settings.x509_ca_publish_ahead = Seconds(1);
    })
    .await
}

fn leaf_of(message: &X509svidResponse) -> X509Certificate<'_> {
    assert_eq!(message.svids.len(), 1);
    let (rest, leaf) = X509Certificate::from_der(&message.svids[0].x509_svid).unwrap();
    assert!(rest.is_empty(), "the chain contains only the leaf");
    leaf
}

fn issuer_and_serial(message: &X509svidResponse) -> (String, String) {
    let leaf = leaf_of(message);
    (leaf.issuer().to_string(), leaf.raw_serial_as_string())
}

async fn agent_credential(server: &TestServer) -> String {
    let token = server.join_token("web-1").await;
    let response = server
        .http
        .post(format!("{}/v1/agents/join", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["credential"].as_str().unwrap().to_string()
}

async fn post_csr(server: &TestServer, credential: &str, csr: &[u8]) -> (u16, Value) {
    let body = json!({
        "attributes": {"uid": [current_uid()]},
        "csr": base64::engine::general_purpose::STANDARD.encode(csr),
    });
    let response = server
        .http
        .post(format!("{}/v1/agents/x509-svids", server.base))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn csr(key: &KeyPair, sans: Vec<SanType>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(key).unwrap().der().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_fetches_and_verifies_x509_svid() {
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
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/independent/py_spiffe_x509.py");

    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
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
    assert_eq!(result["chain_length"], 1);
    assert_eq!(result["uri_sans"], json!(["spiffe://mayfly.local/web"]));
    assert_eq!(result["leaf_is_ca"], false);
    assert_eq!(result["digital_signature"], true);
    assert_eq!(result["key_cert_sign"], false);
    assert_eq!(result["server_auth"], true);
    assert_eq!(result["client_auth"], true);
    assert_eq!(result["key_matches"], true);
    assert_eq!(result["key_curve"], "secp256r1");
    assert_eq!(result["bundle_trust_domain"], "mayfly.local");
    assert_eq!(result["bundle_authorities"], 1);
    assert_eq!(result["cryptography_verified"], true);
    assert_eq!(
        result["openssl_verify"], true,
        "{}",
        result["openssl_output"]
    );

    let grants = server
        .audit_events("kind=credential_request&outcome=success")
        .await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["detail"]["credential_type"], "x509_svid");
    assert_eq!(grants[0]["detail"]["policy"], "web-mesh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_pushes_renewal_and_rotation() {
    let server = server_with_fast_rotation().await;
    server.apply(CONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &server.base,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let mut workload = client(&socket_path(dir.path())).await;

    let mut stream = workload
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let (first_issuer, first_serial) = issuer_and_serial(&first);
    assert_eq!(first.svids[0].spiffe_id, "spiffe://mayfly.local/web");

    // A 20 s SVID is renewed after 8 to 12 s by the same CA.
    let renewed = tokio::time::timeout(PUSH_WAIT, stream.next())
        .await
        .expect("a renewal is pushed")
        .unwrap()
        .unwrap();
    let (renewed_issuer, renewed_serial) = issuer_and_serial(&renewed);
    assert_eq!(renewed_issuer, first_issuer);
    assert_ne!(renewed_serial, first_serial);
    assert_ne!(
        renewed.svids[0].x509_svid_key, first.svids[0].x509_svid_key,
        "each renewal has a new key pair"
    );

    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/x509-authorities/rotate", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["x509_authority"]["state"], "prepared");

    // The prepared CA reaches the bundle first, then signs: the stream gets a leaf from it.
    let rotated = tokio::time::timeout(PUSH_WAIT, async {
        loop {
            let message = stream.next().await.unwrap().unwrap();
            if issuer_and_serial(&message).0 != first_issuer {
                return message;
            }
        }
    })
    .await
    .expect("a leaf from the new CA is pushed");
    let leaf = leaf_of(&rotated);
    let bundle = &rotated.svids[0].bundle;
    let mut authorities = Vec::new();
    let mut rest: &[u8] = bundle;
    while !rest.is_empty() {
        let (next, certificate) = X509Certificate::from_der(rest).unwrap();
        authorities.push(certificate);
        rest = next;
    }
    assert_eq!(authorities.len(), 2, "the retired CA stays in the bundle");
    let signer = authorities
        .iter()
        .find(|ca| ca.subject() == leaf.issuer())
        .expect("the new CA is in the bundle");
    assert!(leaf.verify_signature(Some(signer.public_key())).is_ok());

    let (status, body) = server
        .admin(reqwest::Method::GET, "/v1/x509-authorities", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let states: Vec<&str> = body["x509_authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ca| ca["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["retired", "active"]);
    let changes = server.audit_events("kind=key_change").await;
    let actions: Vec<&str> = changes
        .iter()
        .filter(|event| event["detail"]["resource_kind"] == "x509_authority")
        .map(|event| event["detail"]["action"].as_str().unwrap())
        .collect();
    for action in ["generate", "retire", "activate"] {
        assert!(
            actions.contains(&action),
            "{action} is audited: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_x509_svid_served_while_server_hangs() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let relay = Relay::start(server.server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &relay.url,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let mut workload = client(&socket_path(dir.path())).await;

    let mut stream = workload
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    drop(stream);
    relay.hang();

    // Were the agent to ask the hung server, the call would end in Unavailable after the
    // server timeout instead of returning the cached SVID.
    let mut again = tokio::time::timeout(
        PUSH_WAIT,
        workload.fetch_x509svid(request(X509svidRequest {})),
    )
    .await
    .expect("the call returns")
    .expect("the cached SVID is served")
    .into_inner();
    let cached = again.next().await.unwrap().unwrap();
    assert_eq!(cached.svids[0].x509_svid, first.svids[0].x509_svid);
    assert_eq!(cached.svids[0].x509_svid_key, first.svids[0].x509_svid_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_bundles_stream_updates_on_rotation() {
    let server = server_with_fast_rotation().await;
    server.apply(CONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &server.base,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let mut workload = client(&socket_path(dir.path())).await;

    let mut stream = workload
        .fetch_x509_bundles(request(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let first_bundle = first
        .bundles
        .get("spiffe://mayfly.local")
        .expect("the trust domain's bundle");
    let (rest, _) = X509Certificate::from_der(first_bundle).unwrap();
    assert!(rest.is_empty(), "one CA before the rotation");

    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/x509-authorities/rotate", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let second = tokio::time::timeout(PUSH_WAIT, stream.next())
        .await
        .expect("an update is pushed")
        .unwrap()
        .unwrap();
    let bundle = second.bundles.get("spiffe://mayfly.local").unwrap();
    let (rest, _) = X509Certificate::from_der(bundle).unwrap();
    let (rest, _) = X509Certificate::from_der(rest).unwrap();
    assert!(rest.is_empty(), "two CAs after the rotation");
    assert!(
        bundle.starts_with(first_bundle),
        "the first CA is still published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_without_x509_policy_denied() {
    let server = TestServer::start().await;
    server.apply(JWT_ONLY_CONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &server.base,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let mut workload = client(&socket_path(dir.path())).await;

    let status = workload
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .expect_err("no X.509-SVID is allowed");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let denials = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(denials.len(), 1);
    assert_eq!(denials[0]["client_workload"], "web");
    assert_eq!(denials[0]["detail"]["step"], "access_policy");
    assert_eq!(denials[0]["detail"]["requested"], "x509_svid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_requires_workload_metadata() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(
        &server.base,
        dir.path(),
        Some(server.join_token("web-1").await),
    )
    .await;
    let mut workload = client(&socket_path(dir.path())).await;

    let svid = workload
        .fetch_x509svid(X509svidRequest {})
        .await
        .expect_err("rejected");
    assert_eq!(svid.code(), tonic::Code::InvalidArgument);
    let bundles = workload
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .expect_err("rejected");
    assert_eq!(bundles.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rejects_bad_csrs() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let credential = agent_credential(&server).await;

    let mut forged = csr(
        &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        Vec::new(),
    );
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let (status, body) = post_csr(&server, &credential, &forged).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "csr", "{body}");

    let p384 = csr(
        &KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap(),
        Vec::new(),
    );
    let (status, body) = post_csr(&server, &credential, &p384).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("P-256"), "{body}");

    let other = SanType::URI(
        "spiffe://mayfly.local/admin"
            .to_string()
            .try_into()
            .unwrap(),
    );
    let impostor = csr(
        &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        vec![other],
    );
    let (status, body) = post_csr(&server, &credential, &impostor).await;
    assert_eq!(status, 403, "{body}");
    let denials = server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    assert_eq!(denials.len(), 1);
    assert_eq!(denials[0]["detail"]["step"], "credential_provider");
    let reason = denials[0]["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("spiffe://mayfly.local/admin"), "{reason}");

    let honest = csr(
        &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        Vec::new(),
    );
    let (status, body) = post_csr(&server, &credential, &honest).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spiffe_id"], "spiffe://mayfly.local/web");
    let leaf = base64::engine::general_purpose::STANDARD
        .decode(body["certificates"][0].as_str().unwrap())
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf).unwrap();
    let uris: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => (*uri).to_string(),
            other => panic!("unexpected SAN {other}"),
        })
        .collect();
    assert_eq!(uris, vec!["spiffe://mayfly.local/web".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_route_rejects_x509_policy() {
    let server = TestServer::start().await;
    server.apply(CONFIG).await;
    let credential = agent_credential(&server).await;

    let response = server
        .http
        .post(format!("{}/v1/agents/credentials", server.base))
        .bearer_auth(&credential)
        .json(&json!({"attributes": {"uid": [current_uid()]}, "request": {"server_workload": "mesh"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "server_workload", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("x509_svid"),
        "{body}"
    );
    assert!(body.get("token").is_none(), "no credential in the response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_bundle_lists_x509_and_jwt_keys() {
    // The default publication period of an hour keeps the new CA prepared during the test.
    let server = TestServer::start().await;
    let bundle_url = format!("{}/.well-known/spiffe-bundle", server.base);

    let response = server.http.get(&bundle_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "max-age=300");
    let first: Value = response.json().await.unwrap();
    let keys = first["keys"].as_array().unwrap();
    let x509_keys: Vec<&Value> = keys
        .iter()
        .filter(|key| key["use"] == "x509-svid")
        .collect();
    let jwt_keys: Vec<&Value> = keys.iter().filter(|key| key["use"] == "jwt-svid").collect();
    assert_eq!(x509_keys.len(), 1);
    assert_eq!(x509_keys[0]["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(x509_keys[0]["kty"], "EC");
    assert!(!jwt_keys.is_empty());
    assert!(jwt_keys.iter().all(|key| key["kid"].is_string()));
    assert_eq!(
        keys.len(),
        x509_keys.len() + jwt_keys.len(),
        "every key has a SPIFFE use"
    );
    let first_sequence = first["spiffe_sequence"]
        .as_u64()
        .expect("an integer sequence");
    assert_eq!(first["spiffe_refresh_hint"], 300);

    let again: Value = server
        .http
        .get(&bundle_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["spiffe_sequence"].as_u64(),
        Some(first_sequence),
        "unchanged keys keep the sequence"
    );

    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/x509-authorities/rotate", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .admin(reqwest::Method::POST, "/v1/x509-authorities/rotate", None)
        .await;
    assert_eq!(status, 409, "a second prepared CA is rejected: {body}");

    let rotated: Value = server
        .http
        .get(&bundle_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x509_count = rotated["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["use"] == "x509-svid")
        .count();
    assert_eq!(
        x509_count, 2,
        "the prepared CA is published before it signs"
    );
    assert!(rotated["spiffe_sequence"].as_u64().unwrap() > first_sequence);
}
