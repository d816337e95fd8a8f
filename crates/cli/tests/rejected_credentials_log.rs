//! A `mayfly server --dev` process logs one warning for each request with a rejected admin token,
//! join token or agent credential: the route, the source address and the reason, never the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_mayfly");

struct DevServer {
    child: Child,
    addr: String,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> DevServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let stderr = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = Command::new(BINARY)
        .args(["server", "--dev", "--listen", &addr, "--data-dir"])
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("server starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server on {addr} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    DevServer { child, addr }
}

/// Sends one request with a bearer token and returns the status line.
fn send(addr: &str, method: &str, path: &str, token: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[test]
fn rejected_tokens_logged_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let requests = [
        ("GET", "/v1/admin-tokens", "mfy_admin_guessAAA"),
        ("POST", "/v1/agents/join", "mfy_join_guessBBB"),
        ("POST", "/v1/agents/jwt-svids", "mfy_agent_guessCCC"),
    ];
    for (method, path, token) in requests {
        let status = send(&server.addr, method, path, token);
        assert!(status.contains(" 401 "), "{path}: {status}");
    }

    let log_path = dir.path().join("server.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let warnings = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        let warnings: Vec<String> = log
            .lines()
            .filter(|line| line.contains("request with a rejected credential"))
            .map(str::to_string)
            .collect();
        if warnings.len() >= 3 || Instant::now() > deadline {
            break warnings;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    for ((_, path, token), line) in requests.iter().zip(&warnings) {
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(path), "the route is logged: {line}");
        assert!(
            line.contains("127.0.0.1"),
            "the source address is logged: {line}"
        );
        assert!(line.contains("reason="), "the reason is logged: {line}");
        assert!(
            !line.contains(token),
            "the token must never be logged: {line}"
        );
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    for (_, _, token) in requests {
        assert!(!log.contains(token), "no line of the log contains {token}");
    }
}
