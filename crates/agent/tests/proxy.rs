//! The agent's credential-injecting proxy against real processes. curl and Python `requests`
//! are the clients. Python HTTPS and HTTP servers (with the test's own CA) are the destinations,
//! and they check injected JWT-SVIDs with PyJWT against Mayfly's JWKS. openssl judges the
//! interception CA's name constraints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Relay, TestServer, agent_settings};
use mayfly_agent::RunningAgent;
use mayfly_agent::proxy::ProxySettings;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::Value;
use tokio::process::{Child, Command};

const JWT_VALUE_MARKER: &str = "eyJ";
const HEADER_SECRET: &str = "hdr-secret-7c1f";
const BASIC_PASSWORD: &str = "basic-secret-2b9e";
const QUERY_SECRET: &str = "query-secret-91d4";

/// Destination servers run by `tests/proxy/upstream.py`.
struct Upstreams {
    /// Kept so that the servers stop with the test.
    _child: Child,
    https: Vec<u16>,
    http: Vec<u16>,
    log: PathBuf,
}

impl Upstreams {
    async fn start(dir: &Path, jwks: &str) -> Upstreams {
        let ports_file = dir.join("ports.json");
        let log = dir.join("upstream.log");
        let child = Command::new("python3")
            .arg(script("upstream.py"))
            .args(["--cert", &path_text(&dir.join("upstream-cert.pem"))])
            .args(["--key", &path_text(&dir.join("upstream-key.pem"))])
            .args(["--jwks", jwks])
            .args(["--https", "6", "--http", "2"])
            .args(["--ports-file", &path_text(&ports_file)])
            .args(["--log-file", &path_text(&log)])
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the upstream servers");
        let ports = wait_for_file(&ports_file).await;
        let ports: Value = serde_json::from_str(&ports).unwrap();
        let list = |name: &str| -> Vec<u16> {
            ports[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|port| port.as_u64().unwrap() as u16)
                .collect()
        };
        Upstreams {
            https: list("https"),
            http: list("http"),
            _child: child,
            log,
        }
    }

    /// Returns the reports of the requests that reached `listener` (such as `https-5`).
    fn received(&self, listener: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|report| report["listener"] == listener)
            .collect()
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/proxy")
        .join(name)
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} was not written", path.display());
}

/// Writes a test CA and a certificate for localhost and 127.0.0.1 signed by it, for the
/// destination servers; returns the CA file.
fn upstream_certificates(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "proxy test upstream CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("upstream-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("upstream-key.pem"), leaf_key.serialize_pem()).unwrap();
    let ca_file = dir.join("upstream-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    ca_file
}

fn config(upstreams: &Upstreams) -> String {
    let https = &upstreams.https;
    let http = &upstreams.http;
    format!(
        r#"
trust_providers:
  - {{name: local, kind: unix}}
client_workloads:
  - name: web
    identities:
      - {{trust_provider: local, match: {{uid: "${{UID}}", agent: web-1}}}}
  - name: nobody
    identities:
      - {{trust_provider: local, match: {{uid: "4000000", agent: web-1}}}}
server_workloads:
  - {{name: jwt-api, host: localhost, port: {jwt}}}
  - {{name: header-api, host: localhost, port: {header}, authentication: {{method: header, header: X-Api-Key}}}}
  - {{name: basic-api, host: localhost, port: {basic}, authentication: {{method: basic}}}}
  - {{name: query-api, host: localhost, port: {query}, authentication: {{method: query, parameter: api_key}}}}
  - {{name: locked-api, host: localhost, port: {locked}}}
  - {{name: plain-api, host: 127.0.0.1, port: {plain}, scheme: http}}
credential_providers:
  - {{name: jwt-api-svid, kind: jwt_svid, audience: [jwt-api]}}
  - {{name: plain-api-svid, kind: jwt_svid, audience: [plain-api]}}
  - {{name: header-key, kind: static_secret, value: "{HEADER_SECRET}"}}
  - {{name: basic-login, kind: static_secret, username: svc-web, value: "{BASIC_PASSWORD}"}}
  - {{name: query-key, kind: static_secret, value: "{QUERY_SECRET}"}}
access_policies:
  - {{name: web-jwt, client_workload: web, server_workload: jwt-api, credential_provider: jwt-api-svid, trust_providers: [local]}}
  - {{name: web-plain, client_workload: web, server_workload: plain-api, credential_provider: plain-api-svid, trust_providers: [local]}}
  - {{name: web-header, client_workload: web, server_workload: header-api, credential_provider: header-key, trust_providers: [local]}}
  - {{name: web-basic, client_workload: web, server_workload: basic-api, credential_provider: basic-login, trust_providers: [local]}}
  - {{name: web-query, client_workload: web, server_workload: query-api, credential_provider: query-key, trust_providers: [local]}}
  - {{name: nobody-locked, client_workload: nobody, server_workload: locked-api, credential_provider: jwt-api-svid, trust_providers: [local]}}
"#,
        jwt = https[0],
        header = https[1],
        basic = https[2],
        query = https[3],
        locked = https[4],
        plain = http[0],
    )
}

struct Setup {
    server: TestServer,
    dir: tempfile::TempDir,
    upstreams: Upstreams,
    upstream_ca: PathBuf,
    agent: RunningAgent,
}

impl Setup {
    async fn start() -> Setup {
        let server = TestServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let upstream_ca = upstream_certificates(dir.path());
        let jwks = format!("{}/.well-known/jwks.json", server.base);
        let upstreams = Upstreams::start(dir.path(), &jwks).await;
        server.apply(&config(&upstreams)).await;
        let token = server.join_token("web-1").await;
        let agent = start_proxy_agent(&server.base, dir.path(), Some(token), &upstream_ca).await;
        Setup {
            server,
            dir,
            upstreams,
            upstream_ca,
            agent,
        }
    }

    fn proxy_url(&self) -> String {
        format!("http://{}", self.agent.proxy.as_ref().unwrap().address)
    }

    fn ca_bundle(&self) -> PathBuf {
        self.agent.proxy.as_ref().unwrap().ca_bundle.clone()
    }
}

async fn start_proxy_agent(
    server_url: &str,
    dir: &Path,
    join_token: Option<String>,
    upstream_ca: &Path,
) -> RunningAgent {
    let mut settings = agent_settings(server_url, dir, join_token);
    let mut proxy = ProxySettings::new("127.0.0.1:0".parse().unwrap(), &settings.data_dir);
    proxy.upstream_ca = Some(upstream_ca.to_path_buf());
    proxy.ca_bundle = dir.join("proxy-ca.pem");
    settings.proxy = Some(proxy);
    mayfly_agent::start(settings).await.expect("agent starts")
}

/// Runs curl through the proxy and returns its exit code, the response status and body.
async fn curl(proxy: &str, cacert: &Path, url: &str, headers: &[&str]) -> (i32, u16, Value) {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--noproxy", ""])
        .args(["--proxy", proxy])
        .args(["--cacert", &path_text(cacert)])
        .args(["--write-out", "\n%{http_code}"])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for header in headers {
        command.args(["--header", header]);
    }
    let output = command.arg(url).output().await.expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        output.status.code().unwrap_or(-1),
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Runs `tests/proxy/requests_client.py` with HTTP_PROXY and HTTPS_PROXY set to the proxy.
async fn python_requests(
    proxy: &str,
    ca: &Path,
    url: &str,
    headers: &[&str],
    count: u32,
) -> Vec<Value> {
    let mut command = requests_command(proxy, ca, url, headers, count);
    finish_requests(command.output().await.expect("python3 runs"))
}

fn requests_command(proxy: &str, ca: &Path, url: &str, headers: &[&str], count: u32) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(script("requests_client.py"))
        .args(["--ca", &path_text(ca)])
        .args(["--url", url])
        .args(["--count", &count.to_string()])
        .env("HTTP_PROXY", proxy)
        .env("HTTPS_PROXY", proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for header in headers {
        command.args(["--header", header]);
    }
    command.kill_on_drop(true);
    command
}

fn finish_requests(output: std::process::Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_jwt_svid_injected_over_https() {
    let setup = Setup::start().await;
    let url = format!("https://localhost:{}/hello?x=1", setup.upstreams.https[0]);
    let (code, status, body) = curl(
        &setup.proxy_url(),
        &setup.ca_bundle(),
        &url,
        &["Authorization: Bearer placeholder"],
    )
    .await;
    assert_eq!(code, 0, "curl failed: {body}");
    assert_eq!(status, 200, "{body}");
    let authorization = body["headers"]["authorization"].as_str().unwrap();
    assert!(
        authorization.starts_with(&format!("Bearer {JWT_VALUE_MARKER}")),
        "{authorization}"
    );
    assert_eq!(body["jwt"]["valid"], true, "{body}");
    assert_eq!(body["jwt"]["aud"], serde_json::json!(["jwt-api"]));
    assert!(
        body["jwt"]["sub"]
            .as_str()
            .unwrap()
            .starts_with("spiffe://"),
        "{body}"
    );
    assert_eq!(body["query"], "x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_reuses_connection_with_jwt() {
    let setup = Setup::start().await;
    let url = format!("https://localhost:{}/items", setup.upstreams.https[0]);
    let results = python_requests(&setup.proxy_url(), &setup.ca_bundle(), &url, &[], 3).await;
    assert_eq!(results.len(), 3);
    for result in &results {
        assert_eq!(result["status"], 200, "{result}");
        assert_eq!(result["body"]["jwt"]["valid"], true, "{result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_secrets_injected_each_way() {
    let setup = Setup::start().await;
    let proxy = setup.proxy_url();
    let bundle = setup.ca_bundle();

    let header_url = format!("https://localhost:{}/h", setup.upstreams.https[1]);
    let (code, status, body) =
        curl(&proxy, &bundle, &header_url, &["X-Api-Key: placeholder"]).await;
    assert_eq!((code, status), (0, 200), "{body}");
    assert_eq!(body["headers"]["x-api-key"], HEADER_SECRET);

    let basic_url = format!("https://localhost:{}/b", setup.upstreams.https[2]);
    let (code, status, body) = curl(
        &proxy,
        &bundle,
        &basic_url,
        &["Authorization: Basic cGxhY2Vob2xkZXI6eA=="],
    )
    .await;
    assert_eq!((code, status), (0, 200), "{body}");
    use base64::Engine;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("svc-web:{BASIC_PASSWORD}"));
    assert_eq!(
        body["headers"]["authorization"],
        format!("Basic {expected}")
    );

    let query_url = format!(
        "https://localhost:{}/q?keep=1&api_key=PLACEHOLDER",
        setup.upstreams.https[3]
    );
    let results = python_requests(&proxy, &bundle, &query_url, &[], 1).await;
    assert_eq!(results[0]["status"], 200, "{}", results[0]);
    assert_eq!(
        results[0]["body"]["query"],
        format!("keep=1&api_key={QUERY_SECRET}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_server_workload_gets_jwt() {
    let setup = Setup::start().await;
    let url = format!("http://127.0.0.1:{}/plain", setup.upstreams.http[0]);
    let (code, status, body) = curl(&setup.proxy_url(), &setup.ca_bundle(), &url, &[]).await;
    assert_eq!((code, status), (0, 200), "{body}");
    assert_eq!(body["jwt"]["valid"], true, "{body}");
    assert_eq!(body["jwt"]["aud"], serde_json::json!(["plain-api"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_destinations_pass_through() {
    let setup = Setup::start().await;
    let proxy = setup.proxy_url();

    // The destination's own certificate reaches the client: curl trusts only the test CA.
    let tunnelled = format!("https://localhost:{}/t", setup.upstreams.https[5]);
    let (code, status, body) = curl(&proxy, &setup.upstream_ca, &tunnelled, &[]).await;
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body["headers"].get("authorization").is_none(), "{body}");
    // The interception CA is not in play, so trusting only it fails (curl exit 60).
    let (code, _, _) = curl(&proxy, &setup.ca_bundle(), &tunnelled, &[]).await;
    assert_eq!(code, 60);

    let plain = format!("http://127.0.0.1:{}/p", setup.upstreams.http[1]);
    let (code, status, body) = curl(&proxy, &setup.ca_bundle(), &plain, &["X-Keep: 1"]).await;
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body["headers"].get("authorization").is_none(), "{body}");
    assert_eq!(body["headers"]["x-keep"], "1");
    assert_eq!(body["path"], "/p");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_caller_gets_403_and_nothing_forwarded() {
    let setup = Setup::start().await;
    let url = format!("https://localhost:{}/secret", setup.upstreams.https[4]);
    let (code, status, body) = curl(&setup.proxy_url(), &setup.ca_bundle(), &url, &[]).await;
    assert_eq!(code, 0);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "urn:mayfly:problem:credential-denied");
    let request_id = body["request_id"].as_str().unwrap().to_string();
    assert!(setup.upstreams.received("https-4").is_empty());

    let denials = setup
        .server
        .audit_events("kind=credential_request&outcome=failure")
        .await;
    let denial = denials
        .iter()
        .find(|event| event["detail"]["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no audited denial with request id {request_id}: {denials:?}"));
    assert_eq!(denial["server_workload"], "locked-api");
    assert_eq!(denial["detail"]["delivery"], "proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_events_reach_audit_without_secrets() {
    let setup = Setup::start().await;
    let proxy = setup.proxy_url();
    let bundle = setup.ca_bundle();
    let jwt_url = format!(
        "https://localhost:{}/orders/7?token=abc",
        setup.upstreams.https[0]
    );
    let (_, status, body) = curl(&proxy, &bundle, &jwt_url, &[]).await;
    assert_eq!(status, 200, "{body}");
    let injected_jwt = body["headers"]["authorization"]
        .as_str()
        .unwrap()
        .to_string();
    let query_url = format!("https://localhost:{}/q?api_key=x", setup.upstreams.https[3]);
    let (_, status, body) = curl(&proxy, &bundle, &query_url, &[]).await;
    assert_eq!(status, 200, "{body}");

    let events = wait_for_events(&setup.server, 2).await;
    let jwt_event = events
        .iter()
        .find(|event| event["server_workload"] == "jwt-api")
        .unwrap();
    let detail = &jwt_event["detail"];
    assert_eq!(detail["agent"], "web-1");
    assert_eq!(detail["host"], "localhost");
    assert_eq!(detail["port"], setup.upstreams.https[0]);
    assert_eq!(detail["method"], "GET");
    assert_eq!(detail["path"], "/orders/7");
    assert_eq!(detail["mode"], "headers");
    assert_eq!(detail["attributes"]["path"][0], "/usr/bin/curl");
    assert_eq!(detail["attributes"]["agent"][0], "web-1");
    assert!(!detail["credential_request_id"].as_str().unwrap().is_empty());
    assert_eq!(jwt_event["outcome"], "success");

    let query_event = events
        .iter()
        .find(|event| event["server_workload"] == "query-api")
        .unwrap();
    assert_eq!(query_event["detail"]["mode"], "query");
    assert_eq!(query_event["detail"]["path"], "/q");

    let text = serde_json::to_string(&events).unwrap();
    let token = injected_jwt.trim_start_matches("Bearer ");
    assert!(!text.contains(token), "an event contains the JWT-SVID");
    assert!(
        !text.contains(QUERY_SECRET),
        "an event contains the query secret"
    );
    assert!(
        !text.contains("token=abc"),
        "an event contains a query value"
    );
}

async fn wait_for_events(server: &TestServer, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let events = server.audit_events("kind=credential_injection").await;
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {count} injection events reached the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_after_server_outage_and_restart() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = upstream_certificates(dir.path());
    let jwks = format!("{}/.well-known/jwks.json", server.base);
    let upstreams = Upstreams::start(dir.path(), &jwks).await;
    server.apply(&config(&upstreams)).await;
    let relay = Relay::start(server.server.addr).await;
    let token = server.join_token("web-1").await;
    let agent = start_proxy_agent(&relay.url, dir.path(), Some(token), &upstream_ca).await;
    let proxy = format!("http://{}", agent.proxy.as_ref().unwrap().address);
    let bundle = agent.proxy.as_ref().unwrap().ca_bundle.clone();

    // One process sends two requests: the first caches its credential while the server is
    // reachable, the second is sent once the server hangs. Credentials are cached per process.
    let url = format!("http://127.0.0.1:{}/during-outage", upstreams.http[0]);
    let go = dir.path().join("go");
    let mut command = requests_command(&proxy, &bundle, &url, &[], 2);
    command
        .args(["--wait-for", &path_text(&go)])
        .stdout(Stdio::piped());
    let client = command.spawn().expect("python3 runs");
    wait_for_events(&server, 1).await;
    relay.hang();
    std::fs::write(&go, "").unwrap();
    let results = finish_requests(client.wait_with_output().await.unwrap());
    assert_eq!(
        results[1]["status"], 200,
        "the cached credential serves while the server hangs: {}",
        results[1]
    );
    assert_eq!(results[1]["body"]["jwt"]["valid"], true, "{}", results[1]);
    let events = &agent.proxy.as_ref().unwrap().events;
    assert_eq!(events.pending().await, 1);
    agent.shutdown();

    // A new agent on the same data directory sends what the first one spooled.
    relay.resume();
    let restarted = start_proxy_agent(&relay.url, dir.path(), None, &upstream_ca).await;
    let mut found = false;
    for _ in 0..300 {
        let events = server.audit_events("kind=credential_injection").await;
        if events.len() == 2 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        found,
        "the spooled injection event never reached the audit log"
    );
    restarted.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_outside_name_constraints_rejected() {
    let setup = Setup::start().await;
    let ca_dir = setup.dir.path().join("agent").join("proxy-ca");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(ca_dir.join("state.json")).unwrap()).unwrap();
    let ca_cert = setup.dir.path().join("active-ca.pem");
    std::fs::write(&ca_cert, state["active"]["cert_pem"].as_str().unwrap()).unwrap();

    for (name, allowed) in [
        ("localhost", true),
        ("outside.example", false),
        ("127.0.0.1", false),
    ] {
        let leaf = setup.dir.path().join(format!("leaf-{name}.pem"));
        let issued = Command::new("python3")
            .arg(script("issue_leaf.py"))
            .args(["--ca-cert", &path_text(&ca_cert)])
            .args(["--ca-key", &path_text(&ca_dir.join("key.pem"))])
            .args(["--name", name])
            .args(["--out", &path_text(&leaf)])
            .output()
            .await
            .unwrap();
        assert!(
            issued.status.success(),
            "{}",
            String::from_utf8_lossy(&issued.stderr)
        );
        let verified = Command::new("openssl")
            .args(["verify", "-CAfile", &path_text(&setup.ca_bundle())])
            .arg(&leaf)
            .output()
            .await
            .unwrap();
        let output = String::from_utf8_lossy(&verified.stdout).into_owned()
            + &String::from_utf8_lossy(&verified.stderr);
        assert_eq!(verified.status.success(), allowed, "{name}: {output}");
        if !allowed {
            assert!(output.contains("subtree violation"), "{name}: {output}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_listen_rejected() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = server.join_token("web-1").await;
    let mut settings = agent_settings(&server.base, dir.path(), Some(token));
    settings.proxy = Some(ProxySettings::new(
        "0.0.0.0:0".parse().unwrap(),
        &settings.data_dir,
    ));
    let error = mayfly_agent::start(settings).await.err().unwrap();
    assert!(
        error.to_string().contains("proxy_listen 0.0.0.0:0"),
        "{error}"
    );
}

/// Runs `tests/proxy/shared_socket.py`, which sends one plain HTTP request through the proxy,
/// with its socket also held by a `sleep` child when `share` is set.
async fn shared_socket_request(proxy_port: u16, url: &str, share: bool) -> Value {
    let mut command = Command::new("python3");
    command
        .arg(script("shared_socket.py"))
        .args(["--proxy-port", &proxy_port.to_string()])
        .args(["--url", url]);
    if share {
        command.arg("--share");
    }
    let output = command.output().await.expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_shared_with_other_executable_denied() {
    let setup = Setup::start().await;
    let port = setup.agent.proxy.as_ref().unwrap().address.port();
    let url = format!("http://127.0.0.1:{}/shared", setup.upstreams.http[0]);

    let alone = shared_socket_request(port, &url, false).await;
    assert_eq!(alone["status"], 200, "{alone}");
    assert_eq!(alone["body"]["jwt"]["valid"], true, "{alone}");

    let shared = shared_socket_request(port, &url, true).await;
    assert_eq!(shared["status"], 403, "{shared}");
    let detail = shared["body"]["detail"].as_str().unwrap();
    assert!(detail.contains("ambiguous"), "{detail}");
    assert_eq!(setup.upstreams.received("http-0").len(), 1);
}
