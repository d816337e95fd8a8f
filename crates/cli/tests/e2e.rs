//! The `mayfly` binary end to end: a dev server process started the way the README starts it,
//! driven by the CLI as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_mayfly");

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml")
}

/// A `mayfly server --dev` process on a free port of 127.0.0.1.
struct DevServer {
    child: Child,
    addr: String,
    data_dir: PathBuf,
    printed_token: Option<String>,
}

impl DevServer {
    fn start(data_dir: &Path, apply: Option<&Path>) -> DevServer {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(BINARY);
        command
            .args(["server", "--dev", "--listen", &addr, "--data-dir"])
            .arg(data_dir);
        if let Some(file) = apply {
            command.arg("--apply").arg(file);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");

        // The token line is printed once the server is ready; a restarted server prints nothing,
        // so readiness is also checked on /healthz.
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim_start().starts_with("mfy_admin_") {
                    let _ = sender.send(line.trim().to_string());
                }
            }
        });
        let mut server = DevServer {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            printed_token: None,
        };
        server.wait_healthy();
        server.printed_token = receiver.recv_timeout(Duration::from_millis(500)).ok();
        server
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server on {} did not start", self.addr);
    }

    /// Runs a CLI command against this server, as a user in the same directory would.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BINARY)
            .args(args)
            .env("MAYFLY_ADDR", format!("http://{}", self.addr))
            .env("MAYFLY_DATA_DIR", &self.data_dir)
            .env_remove("MAYFLY_TOKEN")
            .env_remove("MAYFLY_SOCKET")
            .output()
            .expect("cli runs")
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn first_start_prints_token_and_saves_it_privately() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = DevServer::start(&data_dir, None);

    let printed = server
        .printed_token
        .clone()
        .expect("the first start prints the admin token");
    let file = data_dir.join("admin-token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), printed);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(server.terminate().success());

    let restarted = DevServer::start(&data_dir, None);
    assert_eq!(restarted.printed_token, None);
    let listed = restarted.cli(&["admin-token", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
}

#[test]
fn quickstart_walk_fetch_disable_deny_enable() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("data"), Some(&quickstart()));

    let fetched = server.cli(&["credential", "get", "demo-api"]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let token = stdout(&fetched).trim().to_string();
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "spiffe://mayfly.local/demo-client");
    assert_eq!(claims["aud"], serde_json::json!(["demo-api"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );

    let disabled = server.cli(&["server-workload", "disable", "demo-api"]);
    assert!(disabled.status.success(), "{}", stderr(&disabled));
    let denied = server.cli(&["credential", "get", "demo-api"]);
    assert_eq!(denied.status.code(), Some(3));
    assert!(
        stderr(&denied).contains("server_workload_enabled"),
        "{}",
        stderr(&denied)
    );
    assert!(stdout(&denied).is_empty());

    let enabled = server.cli(&["server-workload", "enable", "demo-api"]);
    assert!(enabled.status.success(), "{}", stderr(&enabled));
    let again = server.cli(&["credential", "get", "demo-api"]);
    assert!(again.status.success(), "{}", stderr(&again));

    let failures = server.cli(&["audit", "list", "--outcome", "failure", "-o", "json"]);
    assert!(failures.status.success(), "{}", stderr(&failures));
    let body: serde_json::Value = serde_json::from_str(&stdout(&failures)).unwrap();
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["detail"]["step"], "server_workload_enabled");

    let verified = server.cli(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
}

#[test]
fn apply_reports_changes_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("data"), None);

    let first = server.cli(&["apply", "-f", quickstart().to_str().unwrap()]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("created server_workload \"demo-api\""),
        "{}",
        stdout(&first)
    );
    assert!(stdout(&first).contains("5 created"), "{}", stdout(&first));

    let second = server.cli(&["apply", "-f", quickstart().to_str().unwrap()]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("0 created, 0 updated, 0 deleted, 5 unchanged"),
        "{}",
        stdout(&second)
    );
}

#[test]
fn x509_ca_list_rotate_and_provider_summary() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("data"), None);
    let file = dir.path().join("x509.yaml");
    std::fs::write(
        &file,
        "credential_providers:\n  - {name: mesh-identity, kind: x509_svid, ttl: 30m}\n",
    )
    .unwrap();

    let applied = server.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let providers = server.cli(&["get", "credential-providers"]);
    assert!(providers.status.success(), "{}", stderr(&providers));
    let row = stdout(&providers)
        .lines()
        .find(|line| line.starts_with("mesh-identity"))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("x509_svid"), "{}", stdout(&providers));
    assert!(
        row.contains("X.509-SVID (agents only)"),
        "{}",
        stdout(&providers)
    );

    let listed = server.cli(&["x509-ca", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(
        stdout(&listed)
            .lines()
            .filter(|line| line.starts_with("ca-"))
            .count(),
        1,
        "{}",
        stdout(&listed)
    );
    assert!(stdout(&listed).contains("active"), "{}", stdout(&listed));

    let rotated = server.cli(&["x509-ca", "rotate"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(
        stdout(&rotated).contains("state is now prepared"),
        "{}",
        stdout(&rotated)
    );
    let again = server.cli(&["x509-ca", "rotate"]);
    assert!(!again.status.success(), "a second prepared CA is rejected");
    assert!(
        stderr(&again).contains("prepared CA already exists"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn apply_rejects_unset_variable_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("data"), None);
    let file = dir.path().join("vars.yaml");
    std::fs::write(
        &file,
        "server_workloads:\n  - {name: api, host: \"${MAYFLY_TEST_UNSET_HOST}\", port: 443}\n",
    )
    .unwrap();

    let output = server.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("MAYFLY_TEST_UNSET_HOST"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn sigterm_stops_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = DevServer::start(&data_dir, Some(&quickstart()));
    let fetched = server.cli(&["credential", "get", "demo-api"]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(!data_dir.join("workload.sock").exists());
}

#[test]
fn settings_file_with_unknown_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("mayfly.toml");
    std::fs::write(&settings, "listen = \"127.0.0.1:0\"\nlisten_port = 8750\n").unwrap();

    let output = Command::new(BINARY)
        .args(["server", "--config"])
        .arg(&settings)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("listen_port"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn agent_joins_lists_and_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("data"), None);

    let created = server.cli(&["agent-token", "create", "web-1", "--ttl", "5m"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let join_token = stdout(&created).trim().to_string();
    assert!(join_token.starts_with("mfy_join_"), "{join_token}");

    let socket = dir.path().join("agent.sock");
    let token_file = dir.path().join("join-token");
    std::fs::write(&token_file, format!("{join_token}\n")).unwrap();
    let settings = dir.path().join("agent.toml");
    let settings_text = format!(
        "server = \"http://{}\"\njoin_token_file = {:?}\ndata_dir = {:?}\nsocket = {:?}\n",
        server.addr,
        token_file,
        dir.path().join("agent"),
        socket,
    );
    std::fs::write(&settings, settings_text).unwrap();
    let mut agent = Command::new(BINARY)
        .arg("agent")
        .arg("--config")
        .arg(&settings)
        .env_remove("MAYFLY_ADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(socket.exists(), "the agent socket appears");

    let listed = server.cli(&["get", "agents"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("web-1"), "{}", stdout(&listed));
    assert!(stdout(&listed).contains("active"), "{}", stdout(&listed));

    let evicted = server.cli(&["agents", "evict", "web-1"]);
    assert!(evicted.status.success(), "{}", stderr(&evicted));
    let listed = server.cli(&["agents", "list", "-o", "json"]);
    let body: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(body["items"][0]["state"], "evicted");

    let replayed = server.cli(&["agents", "evict", "web-1"]);
    assert!(
        !replayed.status.success(),
        "evicting twice reports not found"
    );

    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[test]
fn credential_get_through_agent_http_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent-rules.yaml");
    std::fs::write(
        &config,
        "trust_providers:\n  - {name: local, kind: unix}\n\
         client_workloads:\n  - name: on-agent\n    identities:\n      - {trust_provider: local, match: {path: \"*/mayfly\", agent: web-1}}\n\
         server_workloads:\n  - {name: agent-api, host: agent-api.local, port: 8443}\n\
         credential_providers:\n  - {name: agent-jwt, kind: jwt_svid, audience: [agent-api]}\n\
         access_policies:\n  - {name: on-agent-api, client_workload: on-agent, server_workload: agent-api, credential_provider: agent-jwt, trust_providers: [local]}\n",
    )
    .unwrap();
    let server = DevServer::start(&dir.path().join("data"), Some(&config));
    let created = server.cli(&["agent-token", "create", "web-1", "--ttl", "5m"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let join_token = stdout(&created).trim().to_string();

    let http_socket = dir.path().join("credential.sock");
    let mut agent = Command::new(BINARY)
        .args([
            "agent",
            "--server",
            &format!("http://{}", server.addr),
            "--data-dir",
        ])
        .arg(dir.path().join("agent"))
        .arg("--socket")
        .arg(dir.path().join("agent.sock"))
        .arg("--http-socket")
        .arg(&http_socket)
        .env("MAYFLY_JOIN_TOKEN", &join_token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http_socket.exists(), "the agent's HTTP socket appears");

    let socket_arg = http_socket.to_str().unwrap();
    let fetched = server.cli(&["credential", "get", "agent-api", "--socket", socket_arg]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let claims = claims_of(stdout(&fetched).trim());
    assert!(
        claims["sub"].as_str().unwrap().ends_with("/on-agent"),
        "{claims}"
    );
    assert_eq!(claims["aud"], serde_json::json!(["agent-api"]));

    // The server's own workload socket does not match a rule that names an agent.
    let local = server.cli(&["credential", "get", "agent-api"]);
    assert_eq!(local.status.code(), Some(3), "{}", stderr(&local));

    let evicted = server.cli(&["agents", "evict", "web-1"]);
    assert!(evicted.status.success(), "{}", stderr(&evicted));
    let refused = server.cli(&["credential", "get", "agent-api", "--socket", socket_arg]);
    assert!(
        !refused.status.success(),
        "an evicted agent gets no credential"
    );
    assert!(stdout(&refused).is_empty());

    agent.kill().unwrap();
    agent.wait().unwrap();
}
