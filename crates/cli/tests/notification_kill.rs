//! A notification target across a server killed with SIGKILL while alerts wait to be
//! delivered: the `mayfly` binary runs as a dev server whose target's receiver is down while
//! alerts fire, the receiver comes up, the server is killed in the middle of delivering, and is
//! started again on the same data directory. Every stored alert must arrive, an alert received
//! twice must carry the same id and document, and the target's secret must appear in no read,
//! audit event or log line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_mayfly");
/// The target's bearer secret.
const SECRET: &str = "kill-test-secret-5d1e";
/// Server workload switches made while the receiver is down; each raises one alert.
const SWITCHES: usize = 8;

/// A `mayfly server --dev` process on a free port of 127.0.0.1, logging to a file.
struct DevServer {
    child: Child,
    addr: String,
    data_dir: PathBuf,
}

impl DevServer {
    fn start(data_dir: &Path, apply: Option<&Path>, log: &Path) -> DevServer {
        let port = TcpListener::bind("127.0.0.1:0")
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
        let log_file = std::fs::File::create(log).unwrap();
        let child = command
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        // The listening socket accepts connections before the server has written its admin
        // token file, and the CLI reads that file.
        let token = data_dir.join("admin-token");
        while TcpStream::connect(&addr).is_err()
            || std::fs::metadata(&token).map_or(true, |meta| meta.len() == 0)
        {
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

    /// Runs the CLI and returns its standard output, failing the test when it fails.
    fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "mayfly {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
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

    /// Returns the ids of the stored alerts.
    fn alert_ids(&self) -> BTreeSet<String> {
        let body: Value =
            serde_json::from_str(&self.cli_ok(&["alerts", "list", "-o", "json"])).unwrap();
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["id"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the receiver got: its header block and its body.
#[derive(Debug, Clone)]
struct Received {
    headers: String,
    document: Value,
}

/// Starts a minimal HTTP/1.1 receiver. It records each request as soon as its body has arrived
/// and waits `delay` before responding 200, so a server killed during the wait has sent an alert
/// without seeing it accepted.
fn start_receiver(address: SocketAddr, delay: Duration) -> Arc<Mutex<Vec<Received>>> {
    let listener = TcpListener::bind(address).unwrap();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let recorded = received.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(stream) = connection else { continue };
            let recorded = recorded.clone();
            std::thread::spawn(move || serve_connection(stream, &recorded, delay));
        }
    });
    received
}

fn serve_connection(stream: TcpStream, recorded: &Mutex<Vec<Received>>, delay: Duration) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            headers.push_str(&line);
        }
        let length: usize = headers
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|value| value.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let document = serde_json::from_slice(&body).unwrap_or(Value::Null);
        recorded
            .lock()
            .unwrap()
            .push(Received { headers, document });
        std::thread::sleep(delay);
        let mut writer = &stream;
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// Groups the received documents by alert id.
fn by_alert_id(received: &[Received]) -> BTreeMap<String, Vec<Value>> {
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for request in received {
        grouped
            .entry(request.document["alert_id"].as_str().unwrap().to_string())
            .or_default()
            .push(request.document.clone());
    }
    grouped
}

#[test]
fn sigkill_with_undelivered_alerts_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let quickstart = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml"),
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{quickstart}\nnotification_targets:\n  - {{name: pager, kind: webhook, url: \"http://{address}/alerts\", auth: bearer, secret: {SECRET}, timeout: 2s}}\n\
             alert_rules:\n  - {{name: workload-changes, kind: config_change, notify: [pager]}}\n"
        ),
    )
    .unwrap();

    // The receiver is down while the alerts fire.
    let first_log = dir.path().join("first.log");
    let mut first = DevServer::start(&data_dir, Some(&config), &first_log);
    for index in 0..SWITCHES {
        let action = if index % 2 == 0 { "disable" } else { "enable" };
        first.cli_ok(&["server-workload", action, "demo-api"]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.alert_ids().len() < SWITCHES {
        assert!(Instant::now() < deadline, "the alerts did not fire");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let table = first.cli_ok(&["get", "notification-targets"]);
        if table
            .lines()
            .any(|line| line.starts_with("pager") && line.contains("failing"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the target never reported failing: {table}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The receiver comes up, and the server is killed once delivery has begun.
    let received = start_receiver(address, Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "delivery did not resume");
        std::thread::sleep(Duration::from_millis(2));
    }
    first.kill();
    let before_kill = by_alert_id(&received.lock().unwrap()).len();

    let second_log = dir.path().join("second.log");
    let second = DevServer::start(&data_dir, None, &second_log);
    let stored = second.alert_ids();
    assert!(stored.len() >= SWITCHES, "{stored:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stored
        .iter()
        .all(|id| by_alert_id(&received.lock().unwrap()).contains_key(id))
    {
        assert!(
            Instant::now() < deadline,
            "not every stored alert was delivered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = received.lock().unwrap().clone();
    let grouped = by_alert_id(&received);
    assert!(
        before_kill < stored.len(),
        "the kill came after every alert was delivered"
    );
    assert_eq!(
        grouped.keys().cloned().collect::<BTreeSet<String>>(),
        stored,
        "exactly the stored alerts, nothing else"
    );
    for (id, copies) in &grouped {
        assert!(
            copies.windows(2).all(|pair| pair[0] == pair[1]),
            "copies of {id} differ"
        );
    }
    for request in &received {
        let authorization = format!("authorization: bearer {SECRET}");
        assert!(
            request
                .headers
                .to_ascii_lowercase()
                .contains(&authorization.to_ascii_lowercase()),
            "{}",
            request.headers
        );
    }

    // The last alert arrived, and the target catches up once the receiver accepts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let table = second.cli_ok(&["get", "notification-targets"]);
        if table
            .lines()
            .any(|line| line.starts_with("pager") && line.contains("caught_up"))
        {
            break table;
        }
        assert!(
            Instant::now() < deadline,
            "the target did not catch up: {table}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Reads, audit events and logs never show the secret.
    let json_read = second.cli_ok(&["get", "notification-targets", "pager", "-o", "json"]);
    let audit = second.cli_ok(&["audit", "list", "--limit", "1000", "-o", "json"]);
    let logs = format!(
        "{}{}",
        std::fs::read_to_string(&first_log).unwrap(),
        std::fs::read_to_string(&second_log).unwrap()
    );
    for (what, text) in [
        ("get", &table),
        ("get -o json", &json_read),
        ("audit list", &audit),
        ("server logs", &logs),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the secret");
    }
    assert!(json_read.contains("fingerprint"), "{json_read}");
}
