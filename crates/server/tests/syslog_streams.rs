//! Syslog log streams against a real rsyslog (Debian package `rsyslog`, with `rsyslog-gnutls`
//! for TLS), started by each test with its own configuration on a free port of 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestIssuer, TestServer, basic_config};
use mayfly_domain::duration::Seconds;
use serde_json::{Value, json};

/// A private rsyslogd that writes each received message as `MSGID SD MSG`, one per line, so
/// the test checks what rsyslog's own RFC 5424 parser made of it.
struct Rsyslog {
    address: String,
    output: PathBuf,
    child: tokio::process::Child,
}

impl Rsyslog {
    /// Starts rsyslogd listening on plain TCP, or on TLS with `tls` = (certificate, key) files.
    async fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Rsyslog {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Rsyslog::start_on(dir, tls, port).await
    }

    async fn start_on(dir: &Path, tls: Option<(&Path, &Path)>, port: u16) -> Rsyslog {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let instance = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let work = dir.join(format!("rsyslog-{port}-{instance}"));
        std::fs::create_dir_all(&work).unwrap();
        let output = work.join("received.log");
        let (global_tls, module_tls) = match tls {
            Some((cert, key)) => (
                format!(
                    " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{cert}\" defaultNetstreamDriverCertFile=\"{cert}\" defaultNetstreamDriverKeyFile=\"{key}\"",
                    cert = cert.display(),
                    key = key.display()
                ),
                " StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\"".to_string(),
            ),
            None => (String::new(), String::new()),
        };
        let config = format!(
            "global(workDirectory=\"{work}\"{global_tls})\n\
             module(load=\"imtcp\"{module_tls})\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
             template(name=\"fields\" type=\"string\" string=\"%msgid% %structured-data% %msg%\\n\")\n\
             action(type=\"omfile\" file=\"{output}\" template=\"fields\")\n",
            work = work.display(),
            output = output.display(),
        );
        let config_file = work.join("rsyslog.conf");
        std::fs::write(&config_file, config).unwrap();

        let child = tokio::process::Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config_file)
            .arg("-i")
            .arg(work.join("rsyslogd.pid"))
            .kill_on_drop(true)
            .spawn()
            .expect("rsyslogd runs; install the Debian packages rsyslog and rsyslog-gnutls");

        let address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "rsyslogd did not listen on {address}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Rsyslog {
            address,
            output,
            child,
        }
    }

    /// Returns the received messages as (MSGID, structured data, MSG).
    fn messages(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        text.lines()
            .map(|line| {
                let (msgid, rest) = line.split_once(' ').unwrap();
                let end = rest.find("] ").map_or(rest.len(), |index| index + 1);
                (
                    msgid.to_string(),
                    rest[..end].to_string(),
                    rest[end..].trim().to_string(),
                )
            })
            .collect()
    }

    /// Returns the credential events received, parsed from MSG.
    fn credential_events(&self) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|(msgid, _, _)| msgid == "credential_request")
            .map(|(_, _, msg)| {
                serde_json::from_str(&msg).unwrap_or_else(|_| panic!("MSG is not JSON: {msg}"))
            })
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn issue(server: &TestServer, issuer: &TestIssuer, count: usize) {
    for _ in 0..count {
        let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
        let (status, body) = server
            .credential_with_token(&evidence, json!({"server_workload": "payments"}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test]
async fn rsyslog_receives_over_tcp() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let rsyslog = Rsyslog::start(server.dir.path(), None).await;
    let stream = format!(
        "log_streams:\n  - {{name: siem, kind: syslog, address: \"{}\", transport: tcp}}\n",
        rsyslog.address
    );
    server
        .apply(&format!("{}{stream}", basic_config(&issuer)))
        .await;

    issue(&server, &issuer, 5).await;
    assert!(
        wait_until(Duration::from_secs(10), || rsyslog
            .credential_events()
            .len()
            == 5)
        .await,
        "{:?}",
        rsyslog.messages()
    );

    let messages = rsyslog.messages();
    let (_, structured, _) = messages
        .iter()
        .find(|(msgid, _, _)| msgid == "credential_request")
        .unwrap();
    assert!(
        structured.starts_with("[mayfly@32473 id=\""),
        "{structured}"
    );
    assert!(
        structured.contains("server_workload=\"payments\""),
        "{structured}"
    );
    assert!(
        structured.contains("client_workload=\"billing\""),
        "{structured}"
    );
    let ids: BTreeSet<String> = rsyslog
        .credential_events()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    rsyslog.stop().await;
}

#[tokio::test]
async fn rsyslog_receives_over_tls() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = server.dir.path().join("syslog-cert.pem");
    let key = server.dir.path().join("syslog-key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let rsyslog = Rsyslog::start(server.dir.path(), Some((&cert, &key))).await;

    let stream = format!(
        "log_streams:\n  - {{name: siem, kind: syslog, format: cef, address: \"{}\", transport: tls, ca_file: \"{}\", server_name: localhost}}\n",
        rsyslog.address,
        cert.display()
    );
    server
        .apply(&format!("{}{stream}", basic_config(&issuer)))
        .await;
    issue(&server, &issuer, 3).await;

    let received = || {
        rsyslog
            .messages()
            .into_iter()
            .filter(|(msgid, _, _)| msgid == "credential_request")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || received() == 3).await,
        "{:?}",
        rsyslog.messages()
    );
    let messages = rsyslog.messages();
    let (_, _, msg) = messages
        .iter()
        .find(|(msgid, _, _)| msgid == "credential_request")
        .unwrap();
    assert!(msg.starts_with("CEF:0|Mayfly|Mayfly|"), "{msg}");
    rsyslog.stop().await;
}

#[tokio::test]
async fn tls_stream_rejects_untrusted_receiver() {
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let receiver_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = server.dir.path().join("receiver-cert.pem");
    let key = server.dir.path().join("receiver-key.pem");
    let trusted = server.dir.path().join("other-ca.pem");
    std::fs::write(&cert, receiver_cert.cert.pem()).unwrap();
    std::fs::write(&key, receiver_cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&trusted, other_ca.cert.pem()).unwrap();
    let rsyslog = Rsyslog::start(server.dir.path(), Some((&cert, &key))).await;

    let stream = format!(
        "log_streams:\n  - {{name: siem, kind: syslog, address: \"{}\", transport: tls, ca_file: \"{}\", server_name: localhost}}\n",
        rsyslog.address,
        trusted.display()
    );
    server.apply(&stream).await;

    let mut entry = Value::Null;
    for _ in 0..100 {
        let (_, body) = server.get("/v1/log-streams/siem").await;
        entry = body;
        if entry["status"]["state"] == "failing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entry["status"]["state"], "failing", "{entry}");
    assert!(
        entry["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("TLS handshake"),
        "{entry}"
    );
    assert!(rsyslog.messages().is_empty());
    rsyslog.stop().await;
}

#[tokio::test]
async fn restarted_rsyslog_gets_every_event() {
    const COUNT: usize = 8;
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;
    let first = Rsyslog::start(server.dir.path(), None).await;
    let port: u16 = first.address.rsplit_once(':').unwrap().1.parse().unwrap();
    let stream = format!(
        "log_streams:\n  - {{name: siem, kind: syslog, address: \"{}\", timeout: 2s}}\n",
        first.address
    );
    server
        .apply(&format!("{}{stream}", basic_config(&issuer)))
        .await;
    issue(&server, &issuer, 1).await;
    assert!(
        wait_until(Duration::from_secs(10), || first.credential_events().len()
            == 1)
        .await
    );
    first.stop().await;

    // The receiver is down while credentials are issued, then comes back on the same port.
    issue(&server, &issuer, COUNT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Rsyslog::start_on(server.dir.path(), None, port).await;
    let all = || {
        let ids: BTreeSet<String> = second
            .credential_events()
            .iter()
            .map(|event| event["id"].as_str().unwrap().to_string())
            .collect();
        ids.len() == COUNT
    };
    assert!(
        wait_until(Duration::from_secs(20), all).await,
        "{:?}",
        second.messages()
    );
    second.stop().await;
}
