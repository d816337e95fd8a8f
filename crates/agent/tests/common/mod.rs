//! Test harness: a real server and a real agent per test, a gRPC client on the agent socket,
//! and a TCP relay between agent and server that can be made to hang.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mayfly_agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use mayfly_agent::{AgentSettings, RunningAgent};
use mayfly_crypto::token::SecretString;
use mayfly_server::RunningServer;
use mayfly_server::settings::Settings;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

pub struct TestServer {
    pub server: RunningServer,
    pub dir: TempDir,
    pub base: String,
    pub admin_token: String,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_, _| {}).await
    }

    /// Starts a dev server after `adjust` changed its settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings, &Path)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            dev: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("server"),
            ..Settings::default()
        };
        adjust(&mut settings, dir.path());
        let mut http = reqwest::Client::builder();
        let mut scheme = "http";
        if let Some(tls) = &settings.tls {
            let pem = std::fs::read(&tls.cert_file).unwrap();
            http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
            scheme = "https";
        }
        let server = mayfly_server::start(settings, None)
            .await
            .expect("server starts");
        let base = format!("{scheme}://{}", server.addr);
        let admin_token = server
            .first_admin_token
            .clone()
            .expect("a new server prints its admin token");
        TestServer {
            server,
            dir,
            base,
            admin_token,
            http: http.build().unwrap(),
        }
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Applies `yaml` after replacing `${UID}` with the test process's uid.
    pub async fn apply(&self, yaml: &str) {
        let yaml = yaml.replace("${UID}", &current_uid());
        let config = mayfly_domain::config_file::parse("agent-test.yaml", &yaml)
            .expect("test configuration parses");
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/v1/apply",
                Some(json!({"config": config})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn join_token(&self, agent: &str) -> String {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/v1/agent-tokens",
                Some(json!({"agent": agent})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn audit_events(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("/v1/audit/events?{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

pub fn current_uid() -> String {
    rustix::process::getuid().as_raw().to_string()
}

/// Starts an agent against `server_url` with its data and socket under `dir`.
pub async fn start_agent(server_url: &str, dir: &Path, join_token: Option<String>) -> RunningAgent {
    let settings = agent_settings(server_url, dir, join_token);
    mayfly_agent::start(settings).await.expect("agent starts")
}

/// Returns the test settings of an agent against `server_url` with its data and socket under
/// `dir`.
pub fn agent_settings(server_url: &str, dir: &Path, join_token: Option<String>) -> AgentSettings {
    let mut settings =
        AgentSettings::new(server_url.to_string(), dir.join("agent"), socket_path(dir));
    settings.join_token = join_token.map(SecretString::new);
    settings.server_timeout = Duration::from_secs(5);
    settings.bundle_refresh = Duration::from_millis(200);
    settings
}

/// Writes a self-signed certificate for 127.0.0.1 into `dir` and returns the server's TLS
/// settings and the certificate's file, which is also the CA file for clients.
pub fn self_signed_tls(dir: &Path) -> (mayfly_server::settings::TlsSettings, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let tls = mayfly_server::settings::TlsSettings {
        cert_file: cert_file.clone(),
        key_file,
    };
    (tls, cert_file)
}

pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("agent.sock")
}

/// Connects a Workload API client to the agent socket.
pub async fn client(socket: &Path) -> SpiffeWorkloadApiClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .expect("agent socket accepts");
    SpiffeWorkloadApiClient::new(channel)
}

/// Wraps `message` in a request with the Workload API's required metadata.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// A TCP relay to `target` that stops forwarding, without closing connections, once `hang` is
/// set.
pub struct Relay {
    pub url: String,
    hang: watch::Sender<bool>,
}

impl Relay {
    pub async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (hang, hang_receiver) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut hang_receiver = hang_receiver.clone();
                tokio::spawn(async move {
                    let hanging = *hang_receiver.borrow();
                    if hanging {
                        std::future::pending::<()>().await;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async { hang_receiver.wait_for(|hang| *hang).await.is_ok() } => {
                            drop(outbound);
                            // Keep the agent's connection open and silent.
                            let _inbound = inbound;
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Relay { url, hang }
    }

    pub fn hang(&self) {
        self.hang.send_replace(true);
    }

    /// Forwards new connections again; connections accepted while hanging stay silent.
    pub fn resume(&self) {
        self.hang.send_replace(false);
    }
}
