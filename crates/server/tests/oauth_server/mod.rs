//! A real OAuth authorization server for tests: oidc-provider, run by node from `tests/oauth`,
//! on 127.0.0.1 with a free port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Client secrets that `tests/oauth/server.mjs` registers.
pub const BASIC_SECRET: &str = "reports-secret-basic";
pub const POST_SECRET: &str = "reports-secret-post";

/// Options of one authorization server.
pub struct Options {
    /// Where the `private_key_jwt` client's keys are: Mayfly's JWKS.
    pub jwks_uri: String,
    /// Lifetime of access tokens in seconds.
    pub access_token_ttl: u64,
    /// Delay of every token response, so that concurrent requests overlap.
    pub token_delay_ms: u64,
}

pub struct AuthServer {
    pub issuer: String,
    child: Child,
    http: reqwest::Client,
}

impl AuthServer {
    /// Starts the server and waits until it listens. Panics with what to install when node or the
    /// npm packages are missing.
    pub async fn start(options: Options) -> AuthServer {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oauth");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run `npm ci --prefix tests/oauth` (needs node 20.19 or later)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .env("PORT", "0")
            .env("MAYFLY_JWKS_URI", &options.jwks_uri)
            .env("ACCESS_TOKEN_TTL", options.access_token_ttl.to_string())
            .env("TOKEN_DELAY_MS", options.token_delay_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run node for the OAuth test server: {error}; install node 20.19 or later"));
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the OAuth test server starts within 30s")
            .unwrap()
            .expect("the OAuth test server prints its address");
        let ready: Value = serde_json::from_str(&line).unwrap();
        let issuer = ready["issuer"].as_str().unwrap().to_string();
        AuthServer {
            issuer,
            child,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the server; its port then refuses connections.
    pub async fn stop(&mut self) {
        self.child.kill().await.unwrap();
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Returns the server's counters: `token_requests`, `successes`, `errors` (error codes) and
    /// `assertions` (every `client_assertion` received).
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/__stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn token_requests(&self) -> u64 {
        self.stats().await["token_requests"].as_u64().unwrap()
    }

    /// Sends a token request with a form the test chooses, as an attacker holding a captured
    /// assertion would; returns status and JSON body.
    pub async fn post_token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.token_url())
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
