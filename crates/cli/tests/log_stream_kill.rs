//! A log stream across a server killed with SIGKILL in the middle of shipping: the `mayfly`
//! binary runs as a dev server with a file stream, is killed, and is started again on the same
//! data directory. Nothing may be lost, and a record delivered twice must be the same event.
//! The restarted server then raises an alert that `mayfly alerts list` shows and `mayfly
//! alerts ack` acknowledges, and `mayfly alerts test` replays the rule over the past hour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_mayfly");

/// A `mayfly server --dev` process on a free port of 127.0.0.1.
struct DevServer {
    child: Child,
    addr: String,
    data_dir: PathBuf,
}

impl DevServer {
    fn start(data_dir: &Path, apply: Option<&Path>) -> DevServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(BINARY);
        command
            .args(["server", "--dev", "--listen", &addr, "--data-dir"])
            .arg(data_dir);
        if let Some(file) = apply {
            command.arg("--apply").arg(file);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "server on {addr} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        DevServer {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

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

    fn kill(&mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap();
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get_credentials(server: &DevServer, count: usize) {
    for _ in 0..count {
        let output = server.cli(&["credential", "get", "demo-api"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Returns the credential events the server stored, by id.
fn stored_credential_ids(server: &DevServer) -> Vec<String> {
    let output = server.cli(&[
        "audit",
        "list",
        "--kind",
        "credential_request",
        "--limit",
        "1000",
        "-o",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_string())
        .collect()
}

/// Returns every record of the stream's file, grouped by id.
fn shipped_by_id(path: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        // A line cut short by the kill is not a delivered record; its event is sent again.
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        by_id
            .entry(record["id"].as_str().unwrap().to_string())
            .or_default()
            .push(record);
    }
    by_id
}

/// Credentials issued before the kill. Each is one record to ship, so the backlog takes long
/// enough to ship that the kill lands in the middle of it.
const FIRST_RUN: usize = 30;

#[test]
fn sigkill_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // The stream's directory is missing at first, so a backlog builds up while credentials are
    // issued; the server is killed once shipping of that backlog has started.
    let stream_dir = dir.path().join("streams");
    let stream_file = stream_dir.join("audit.jsonl");
    let quickstart = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml"),
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{quickstart}\nlog_streams:\n  - {{name: archive, kind: file, path: \"{}\", batch_size: 1}}\nalert_rules:\n  - {{name: workload-changes, kind: config_change}}\n",
            stream_file.display()
        ),
    )
    .unwrap();

    let mut first = DevServer::start(&data_dir, Some(&config));
    get_credentials(&first, FIRST_RUN);
    std::fs::create_dir(&stream_dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shipped_by_id(&stream_file).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stream did not start shipping"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    first.kill();
    let credentials_before_kill = shipped_by_id(&stream_file)
        .values()
        .filter(|copies| copies[0]["kind"] == "credential_request")
        .count();

    let second = DevServer::start(&data_dir, None);
    get_credentials(&second, 5);
    let stored = stored_credential_ids(&second);
    assert_eq!(stored.len(), FIRST_RUN + 5);

    let deadline = Instant::now() + Duration::from_secs(20);
    while !stored
        .iter()
        .all(|id| shipped_by_id(&stream_file).contains_key(id))
    {
        assert!(
            Instant::now() < deadline,
            "not every stored event was shipped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        credentials_before_kill < FIRST_RUN,
        "the kill came after the backlog was shipped"
    );
    for (id, copies) in shipped_by_id(&stream_file) {
        assert!(
            copies.windows(2).all(|pair| pair[0] == pair[1]),
            "copies of {id} differ"
        );
    }

    let listed = second.cli(&["get", "log-streams"]);
    let table = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(table.contains("STATE"), "{table}");
    assert!(table.contains("LAG"), "{table}");
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("archive") && line.contains("caught_up")),
        "{table}"
    );

    // An alert rule's alert is listed by `mayfly alerts list`.
    let disabled = second.cli(&["server-workload", "disable", "demo-api"]);
    assert!(
        disabled.status.success(),
        "{}",
        String::from_utf8_lossy(&disabled.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = second.cli(&["alerts", "list"]);
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        if text.contains("workload-changes") && text.contains("server_workload=demo-api") {
            break;
        }
        assert!(Instant::now() < deadline, "no alert listed: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The alert can be acknowledged by its id.
    let listed = second.cli(&["alerts", "list", "-o", "json"]);
    let body: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = body["alerts"][0]["id"].as_str().unwrap().to_string();
    let acknowledged = second.cli(&["alerts", "ack", &id]);
    assert!(
        acknowledged.status.success(),
        "{}",
        String::from_utf8_lossy(&acknowledged.stderr)
    );
    assert!(String::from_utf8_lossy(&acknowledged.stdout).contains("acknowledged"));
    let listed = second.cli(&["alerts", "list", "-o", "json"]);
    let body: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(body["alerts"][0]["acknowledged"], Value::Bool(true));

    // The incident report of demo-api names demo-client, the disable and the alert.
    let report = second.cli(&[
        "incident",
        "report",
        "--server-workload",
        "demo-api",
        "--since",
        "1h",
    ]);
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        text.lines().any(|line| line.starts_with("demo-client")
            && line.contains(&format!(" {} ", FIRST_RUN + 5))),
        "{text}"
    );
    assert!(text.contains("disable"), "{text}");
    assert!(text.contains("workload-changes"), "{text}");

    // Replaying the past hour through the rule finds the creation and the disable of demo-api.
    let tested = second.cli(&[
        "alerts",
        "test",
        "workload-changes",
        "--since",
        "1h",
        "-o",
        "json",
    ]);
    assert!(
        tested.status.success(),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    let body: Value = serde_json::from_slice(&tested.stdout).unwrap();
    let messages: Vec<&str> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("create"), "{messages:?}");
    assert!(messages[1].contains("disable"), "{messages:?}");
}
