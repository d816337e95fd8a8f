//! Test harness: a real server per test on 127.0.0.1 with its own data directory, an OIDC issuer
//! the test controls, and HTTP helpers for the API and the workload socket.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use mayfly_crypto::signing::{Algorithm, SigningKey};
use mayfly_server::RunningServer;
use mayfly_server::settings::Settings;
use serde_json::{Value, json};
use tempfile::TempDir;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: TempDir,
    pub base: String,
    pub admin_token: String,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a dev server after `adjust` changed its settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut settings = Settings {
            dev: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            ..Settings::default()
        };
        adjust(&mut settings);
        let server = mayfly_server::start(settings, None)
            .await
            .expect("server starts");
        let scheme = if server.state.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", server.addr);
        // A data directory that was used before keeps its first token in the token file.
        let admin_token = match &server.first_admin_token {
            Some(token) => token.clone(),
            None => {
                let path = server.state.settings.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .expect("admin token file is readable")
                    .trim()
                    .to_string()
            }
        };
        TestServer {
            server: Some(server),
            dir,
            base,
            admin_token,
            http: reqwest::Client::new(),
        }
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket_path(&self) -> std::path::PathBuf {
        self.running().socket_path.clone()
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends an admin request with the bootstrap token and returns status and JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.admin_as(&self.admin_token, method, path, body).await
    }

    pub async fn admin_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.admin(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    /// Applies a YAML configuration through `POST /v1/apply`; panics unless it succeeds.
    pub async fn apply(&self, yaml: &str) -> Value {
        let (status, body) = self.try_apply(yaml, false).await;
        assert_eq!(status, 200, "apply failed: {body}");
        body
    }

    pub async fn try_apply(&self, yaml: &str, prune: bool) -> (u16, Value) {
        self.apply_with(yaml, prune, false).await
    }

    /// Applies a YAML configuration with both apply options and returns status and JSON body.
    pub async fn apply_with(&self, yaml: &str, prune: bool, dry_run: bool) -> (u16, Value) {
        let config = mayfly_domain::config_file::parse("test.yaml", yaml)
            .expect("test configuration parses");
        self.post(
            "/v1/apply",
            json!({"config": config, "prune": prune, "dry_run": dry_run}),
        )
        .await
    }

    /// Sends an admin request with the bootstrap token and returns the whole response.
    pub async fn admin_reply(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request).await
    }

    /// Requests a credential over HTTP with a bearer evidence token.
    pub async fn credential_with_token(&self, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/v1/credentials"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request is sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Requests a credential over the workload socket.
    pub async fn credential_over_socket(&self, body: Value) -> (u16, Value) {
        unix_post(&self.socket_path(), "/v1/credentials", &body.to_string()).await
    }

    /// Returns audit events, newest first.
    pub async fn audit_events(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/audit/events?{query}")).await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

/// A response with its headers, for checks beyond status and body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
}

impl Reply {
    /// Sends `request` and reads the whole response.
    pub async fn from(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Returns a header's value, or `None` when it is missing or not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts that the response is an RFC 9457 problem document with `status`.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], json!(status), "{}", self.body);
    }

    /// Returns the problem's `detail`, or an empty string.
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

/// Sends a POST over a Unix socket with hyper and returns status and JSON body.
pub async fn unix_post(socket: &Path, path: &str, body: &str) -> (u16, Value) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("socket connects");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An OIDC issuer on 127.0.0.1 whose tokens the test mints: it serves discovery and a JWKS, like
/// a CI system or a Kubernetes API server would.
pub struct TestIssuer {
    pub url: String,
    pub key: Arc<SigningKey>,
    task: tokio::task::JoinHandle<()>,
}

impl TestIssuer {
    pub async fn start() -> TestIssuer {
        let key = Arc::new(SigningKey::generate(Algorithm::ES256, "issuer-key-1").unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = json!({"keys": [serde_json::to_value(key.public_jwk()).unwrap()]});
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/keys")});
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/keys", get(move || async move { Json(jwks) }));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestIssuer { url, key, task }
    }

    /// Signs `claims`, filling in `iss`, `aud: mayfly`, `iat` and `exp` (in 10 minutes) unless set.
    pub fn token(&self, claims: Value) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut full = json!({"iss": self.url, "aud": "mayfly", "iat": now, "exp": now + 600});
        for (key, value) in claims.as_object().unwrap() {
            full[key] = value.clone();
        }
        self.key.sign_compact(&full).unwrap()
    }

    /// A trust provider block for this issuer, using discovery.
    pub fn trust_provider_yaml(&self, name: &str) -> String {
        format!(
            "  - {{name: {name}, kind: oidc, issuer: \"{}\", audience: mayfly, discovery: true}}\n",
            self.url
        )
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decodes the claims of a JWT without verifying it.
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Decodes the header of a JWT without verifying it.
pub fn header_of(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A configuration with one OIDC-identified client allowed to reach one server workload.
pub fn basic_config(issuer: &TestIssuer) -> String {
    format!(
        "trust_providers:\n{}\
client_workloads:\n  - name: billing\n    identities:\n      - {{trust_provider: ci, match: {{sub: \"repo:acme/billing\"}}}}\n\
server_workloads:\n  - {{name: payments, host: payments.example, port: 443}}\n\
credential_providers:\n  - {{name: payments-jwt, kind: jwt_svid, audience: [payments], ttl: 5m}}\n\
access_policies:\n  - {{name: billing-payments, client_workload: billing, server_workload: payments, credential_provider: payments-jwt, trust_providers: [ci]}}\n",
        issuer.trust_provider_yaml("ci")
    )
}
