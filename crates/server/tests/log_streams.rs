//! Log streams against real receivers started by each test: a file, HTTP receivers for the
//! webhook and Splunk HEC forms, and fault cases (receiver down, hung receiver, restart, purge).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{TestIssuer, TestServer, basic_config};
use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_domain::duration::Seconds;
use serde_json::{Value, json};

/// Requests `count` credentials for `payments`, all granted.
async fn issue(server: &TestServer, issuer: &TestIssuer, count: usize) {
    for _ in 0..count {
        let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
        let (status, body) = server
            .credential_with_token(&evidence, json!({"server_workload": "payments"}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Requests one credential that is denied (unknown caller).
async fn deny_one(server: &TestServer, issuer: &TestIssuer) {
    let evidence = issuer.token(json!({"sub": "repo:acme/intruder"}));
    let (status, body) = server
        .credential_with_token(&evidence, json!({"server_workload": "payments"}))
        .await;
    assert_eq!(status, 403, "{body}");
}

/// Reads the JSON lines of a stream's file; a missing file has none.
fn file_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

fn credential_records(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .filter(|record| record["kind"] == "credential_request")
        .cloned()
        .collect()
}

/// Polls `check` every 50ms until it returns true or `limit` passes.
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

fn file_stream_yaml(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "log_streams:\n  - {{name: {name}, kind: file, path: \"{}\"{extra}}}\n",
        path.display()
    )
}

/// Polls the stream's status until its state is `state`, then returns the entry.
async fn wait_for_state(server: &TestServer, name: &str, state: &str) -> Value {
    for _ in 0..200 {
        let entry = stream_status(server, name).await;
        if entry["status"]["state"] == state {
            return entry;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream_status(server, name).await
}

/// Returns the stream's entry from `GET /v1/log-streams/NAME`.
async fn stream_status(server: &TestServer, name: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/log-streams/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

// ---------------------------------------------------------------------------------------------
// HTTP receiver

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

/// An HTTP receiver on 127.0.0.1 that records every POST and responds 200, or never responds
/// while `hang` is set.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(hang: bool) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener, hang)
    }

    fn serve(listener: tokio::net::TcpListener, hang: bool) -> Receiver {
        let url = format!("http://{}/ingest", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = requests.clone();
        let app = axum::Router::new().route(
            "/ingest",
            post(move |headers: HeaderMap, body: Bytes| {
                let recorded = recorded.clone();
                async move {
                    if hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let body = String::from_utf8_lossy(&body).into_owned();
                    recorded.lock().unwrap().push(Received { headers, body });
                    StatusCode::OK
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            requests,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Returns every webhook record received, in arrival order.
    fn webhook_records(&self) -> Vec<Value> {
        let mut records = Vec::new();
        for request in self.received() {
            let body: Value = serde_json::from_str(&request.body).unwrap();
            records.extend(body["records"].as_array().unwrap().iter().cloned());
        }
        records
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Splits a HEC batch body (JSON objects back to back) into its events.
fn hec_events(body: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// File streams

#[tokio::test]
async fn file_stream_delivers_events_in_order() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let path = server.dir.path().join("audit.jsonl");
    server
        .apply(&format!(
            "{}{}",
            basic_config(&issuer),
            file_stream_yaml("archive", &path, "")
        ))
        .await;

    issue(&server, &issuer, 5).await;
    deny_one(&server, &issuer).await;
    let delivered = wait_until(Duration::from_secs(10), || {
        credential_records(&file_records(&path)).len() == 6
    })
    .await;
    assert!(delivered, "{:?}", file_records(&path));

    let records = file_records(&path);
    let seqs: Vec<i64> = records
        .iter()
        .filter_map(|record| record["seq"].as_i64())
        .collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "in order: {seqs:?}"
    );
    let ids: BTreeSet<&str> = records
        .iter()
        .map(|record| record["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), records.len(), "every record once");
    let credentials = credential_records(&records);
    let outcomes: Vec<&str> = credentials
        .iter()
        .map(|record| record["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "success", "success", "success", "success", "success", "failure"
        ]
    );

    // The stored events and the shipped ones are the same, chain hashes included.
    let stored = server
        .audit_events("kind=credential_request&limit=100")
        .await;
    let stored_hashes: BTreeSet<&str> = stored
        .iter()
        .map(|event| event["hash"].as_str().unwrap())
        .collect();
    let shipped_hashes: BTreeSet<&str> = credentials
        .iter()
        .map(|record| record["hash"].as_str().unwrap())
        .collect();
    assert_eq!(stored_hashes, shipped_hashes);
}

#[tokio::test]
async fn checkpoints_reach_the_stream() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let path = server.dir.path().join("audit.jsonl");
    server
        .apply(&format!(
            "{}{}",
            basic_config(&issuer),
            file_stream_yaml("archive", &path, "")
        ))
        .await;
    issue(&server, &issuer, 2).await;

    let checkpoint = server
        .running()
        .state
        .checkpoints
        .checkpoint()
        .await
        .unwrap()
        .expect("a new checkpoint");
    let found = wait_until(Duration::from_secs(10), || {
        file_records(&path).iter().any(|record| {
            record["record_type"] == "checkpoint" && record["seq"] == json!(checkpoint.seq)
        })
    })
    .await;
    assert!(found, "{:?}", file_records(&path));

    let records = file_records(&path);
    let shipped = records
        .iter()
        .find(|record| record["record_type"] == "checkpoint")
        .unwrap();
    assert_eq!(shipped["signature"], json!(checkpoint.signature));
    assert_eq!(shipped["head_hash"], json!(checkpoint.head_hash));
    // The checkpoint comes right after the event it covers.
    let position = records
        .iter()
        .position(|record| record["record_type"] == "checkpoint")
        .unwrap();
    assert_eq!(records[position - 1]["seq"], json!(checkpoint.seq));
}

#[tokio::test]
async fn file_stream_reopens_after_rotation() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let path = server.dir.path().join("audit.jsonl");
    let rotated = server.dir.path().join("audit.jsonl.1");
    server
        .apply(&format!(
            "{}{}",
            basic_config(&issuer),
            file_stream_yaml("archive", &path, "")
        ))
        .await;

    issue(&server, &issuer, 2).await;
    assert!(
        wait_until(Duration::from_secs(10), || credential_records(
            &file_records(&path)
        )
        .len()
            == 2)
        .await
    );
    std::fs::rename(&path, &rotated).unwrap();

    issue(&server, &issuer, 3).await;
    assert!(
        wait_until(Duration::from_secs(10), || credential_records(
            &file_records(&path)
        )
        .len()
            == 3)
        .await
    );
    assert_eq!(
        credential_records(&file_records(&rotated)).len(),
        2,
        "the rotated file is left alone"
    );
}

#[tokio::test]
async fn filter_selects_kinds_outcomes_and_workloads() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let failures = server.dir.path().join("failures.jsonl");
    let ledger = server.dir.path().join("ledger.jsonl");
    let streams = format!(
        "{}{}",
        file_stream_yaml(
            "failures",
            &failures,
            ", filter: {kinds: [credential_request], outcomes: [failure]}"
        ),
        file_stream_yaml("ledger", &ledger, ", filter: {server_workloads: [ledger]}")
            .replace("log_streams:\n", ""),
    );
    server
        .apply(&format!("{}{streams}", basic_config(&issuer)))
        .await;

    issue(&server, &issuer, 3).await;
    deny_one(&server, &issuer).await;
    deny_one(&server, &issuer).await;
    assert!(
        wait_until(Duration::from_secs(10), || file_records(&failures).len()
            == 2)
        .await,
        "{:?}",
        file_records(&failures)
    );
    assert!(
        file_records(&failures)
            .iter()
            .all(|record| record["outcome"] == "failure")
    );

    // Both cursors moved past the skipped events, so neither stream reports a lag.
    for name in ["failures", "ledger"] {
        let mut entry = stream_status(&server, name).await;
        for _ in 0..100 {
            if entry["status"]["lag"] == json!(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            entry = stream_status(&server, name).await;
        }
        assert_eq!(entry["status"]["state"], "caught_up", "{entry}");
        assert_eq!(entry["status"]["lag"], json!(0), "{entry}");
    }
    assert!(
        file_records(&ledger).is_empty(),
        "no event concerns the ledger workload"
    );
}

#[tokio::test]
async fn stream_formats_are_ocsf_and_cef() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let ocsf = server.dir.path().join("ocsf.jsonl");
    let cef = server.dir.path().join("cef.log");
    let streams = format!(
        "log_streams:\n  - {{name: ocsf, kind: file, format: ocsf, path: \"{}\"}}\n  - {{name: cef, kind: file, format: cef, path: \"{}\"}}\n",
        ocsf.display(),
        cef.display()
    );
    server
        .apply(&format!("{}{streams}", basic_config(&issuer)))
        .await;
    issue(&server, &issuer, 1).await;

    let authentication = |records: &[Value]| {
        records
            .iter()
            .find(|record| record["class_uid"] == json!(3002))
            .cloned()
    };
    assert!(
        wait_until(Duration::from_secs(10), || authentication(&file_records(
            &ocsf
        ))
        .is_some())
        .await
    );
    let record = authentication(&file_records(&ocsf)).unwrap();
    assert_eq!(record["type_uid"], json!(300204));
    assert_eq!(record["user"]["name"], "billing");
    assert_eq!(record["service"]["name"], "payments");
    let changes: Vec<Value> = file_records(&ocsf)
        .into_iter()
        .filter(|record| record["class_uid"] == json!(3004))
        .collect();
    assert!(changes.iter().any(
        |record| record["entity"]["name"] == "payments" && record["type_uid"] == json!(300401)
    ));

    let has_cef = || {
        std::fs::read_to_string(&cef)
            .unwrap_or_default()
            .lines()
            .any(|line| line.contains("|credential_request|"))
    };
    assert!(wait_until(Duration::from_secs(10), has_cef).await);
    let text = std::fs::read_to_string(&cef).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("|credential_request|"))
        .unwrap();
    assert!(line.starts_with("CEF:0|Mayfly|Mayfly|"), "{line}");
    assert!(line.contains(" suser=billing "), "{line}");
    assert!(line.contains(" outcome=success "), "{line}");
}

// ---------------------------------------------------------------------------------------------
// HTTP streams and secrets

#[tokio::test]
async fn webhook_gets_batches_with_bearer_secret() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let receiver = Receiver::start(false).await;
    let stream = format!(
        "log_streams:\n  - {{name: hook, kind: webhook, url: \"{}\", secret: webhook-secret-1}}\n",
        receiver.url
    );
    server
        .apply(&format!("{}{stream}", basic_config(&issuer)))
        .await;

    issue(&server, &issuer, 3).await;
    assert!(
        wait_until(Duration::from_secs(10), || credential_records(
            &receiver.webhook_records()
        )
        .len()
            == 3)
        .await
    );
    for request in receiver.received() {
        assert_eq!(
            request.headers.get("authorization").unwrap(),
            "Bearer webhook-secret-1"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&request.body).unwrap()["stream"],
            "hook"
        );
    }
}

#[tokio::test]
async fn webhook_header_secret_and_hec_token_are_sent() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let hook = Receiver::start(false).await;
    let hec = Receiver::start(false).await;
    let streams = format!(
        "log_streams:\n  - {{name: hook, kind: webhook, url: \"{}\", auth: header, header: X-Api-Key, secret: header-secret-1}}\n  - {{name: splunk, kind: http_hec, format: ocsf, url: \"{}\", secret: hec-token-1}}\n",
        hook.url, hec.url
    );
    server
        .apply(&format!("{}{streams}", basic_config(&issuer)))
        .await;
    issue(&server, &issuer, 2).await;

    let hec_credentials = || {
        hec.received()
            .iter()
            .flat_map(|request| hec_events(&request.body))
            .filter(|event| event["event"]["class_uid"] == json!(3002))
            .count()
    };
    assert!(wait_until(Duration::from_secs(10), || hec_credentials() == 2).await);
    assert!(
        wait_until(Duration::from_secs(10), || credential_records(
            &hook.webhook_records()
        )
        .len()
            == 2)
        .await
    );

    assert_eq!(
        hook.received()[0].headers.get("x-api-key").unwrap(),
        "header-secret-1"
    );
    assert!(hook.received()[0].headers.get("authorization").is_none());
    let request = &hec.received()[0];
    assert_eq!(
        request.headers.get("authorization").unwrap(),
        "Splunk hec-token-1"
    );
    let event = &hec_events(&request.body)[0];
    assert_eq!(event["source"], "mayfly");
    assert_eq!(event["sourcetype"], "_json");
    assert_eq!(
        event["fields"]["record_id"],
        event["event"]["metadata"]["uid"]
    );
    assert!(event["time"].as_f64().unwrap() > 1.7e9);
}

#[tokio::test]
async fn stream_secret_sealed_and_write_only() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(false).await;
    let stream = format!(
        "log_streams:\n  - {{name: splunk, kind: http_hec, url: \"{}\", secret: hec-token-plain-77}}\n",
        receiver.url
    );
    server.apply(&stream).await;

    let read = stream_status(&server, "splunk").await;
    assert_eq!(read["secret"], "(redacted)");
    let (_, list) = server.get("/v1/log-streams").await;
    assert!(!list.to_string().contains("hec-token-plain-77"));
    let audit = server.audit_events("kind=config_change").await;
    assert!(
        !serde_json::to_string(&audit)
            .unwrap()
            .contains("hec-token-plain-77")
    );

    let database = std::fs::read(server.data_dir().join("mayfly.db")).unwrap();
    let wal = std::fs::read(server.data_dir().join("mayfly.db-wal")).unwrap_or_default();
    for bytes in [&database, &wal] {
        assert!(
            !bytes
                .windows(18)
                .any(|window| window == b"hec-token-plain-77"),
            "the plain secret is on disk"
        );
    }

    // Writing back what a read returned keeps the secret instead of sending "(redacted)".
    let mut body = read.clone();
    body["batch_size"] = json!(50);
    let (status, reply) = server
        .admin(reqwest::Method::PUT, "/v1/log-streams/splunk", Some(body))
        .await;
    assert_eq!(status, 200, "{reply}");
    let stored = server.running().state.config().config.log_streams["splunk"].clone();
    assert_eq!(stored.secret.unwrap().expose(), "hec-token-plain-77");
}

#[tokio::test]
async fn redacted_placeholder_cannot_become_secret() {
    let server = TestServer::start().await;
    let body =
        json!({"kind": "http_hec", "url": "http://127.0.0.1:9/collector", "secret": "(redacted)"});
    let (status, reply) = server
        .admin(reqwest::Method::PUT, "/v1/log-streams/splunk", Some(body))
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["field"], "secret", "{reply}");
}

#[tokio::test]
async fn invalid_stream_names_the_field() {
    let server = TestServer::start().await;
    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/log-streams/hook",
            Some(json!({"kind": "webhook", "url": "ftp://x"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "url", "{body}");
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn receiver_down_then_up_gets_every_event() {
    const COUNT: usize = 12;
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;

    // Reserve a port, then close it, so the receiver is down while credentials are issued.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{address}/ingest");
    let stream = format!(
        "log_streams:\n  - {{name: hook, kind: webhook, url: \"{url}\", secret: s1, batch_size: 5, timeout: 2s}}\n"
    );
    server
        .apply(&format!("{}{stream}", basic_config(&issuer)))
        .await;

    issue(&server, &issuer, COUNT).await;
    let failing = wait_for_state(&server, "hook", "failing").await;
    assert_eq!(failing["status"]["state"], "failing", "{failing}");
    assert!(
        failing["status"]["lag"].as_i64().unwrap() >= COUNT as i64,
        "{failing}"
    );
    assert!(
        failing["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{failing}"
    );

    let receiver = Receiver::serve(tokio::net::TcpListener::bind(address).await.unwrap(), false);
    let all = wait_until(Duration::from_secs(20), || {
        credential_records(&receiver.webhook_records()).len() >= COUNT
    })
    .await;
    assert!(all, "{} records", receiver.webhook_records().len());

    let records = credential_records(&receiver.webhook_records());
    let ids: BTreeSet<&str> = records
        .iter()
        .map(|record| record["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), COUNT, "exactly {COUNT} distinct events");
    assert_eq!(
        records.len(),
        COUNT,
        "no duplicates once the receiver is up"
    );
    assert!(receiver.received().iter().all(|request| {
        serde_json::from_str::<Value>(&request.body).unwrap()["records"]
            .as_array()
            .unwrap()
            .len()
            <= 5
    }));
}

#[tokio::test]
async fn hung_receiver_blocks_neither_issuance_nor_other_streams() {
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;
    let hung = Receiver::start(true).await;
    let path = server.dir.path().join("audit.jsonl");
    let streams = format!(
        "log_streams:\n  - {{name: hung, kind: webhook, url: \"{}\", secret: s1, timeout: 1s}}\n  - {{name: archive, kind: file, path: \"{}\"}}\n",
        hung.url,
        path.display()
    );
    server
        .apply(&format!("{}{streams}", basic_config(&issuer)))
        .await;

    let started = Instant::now();
    issue(&server, &issuer, 20).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "20 credentials took {elapsed:?}"
    );

    assert!(
        wait_until(Duration::from_secs(10), || credential_records(
            &file_records(&path)
        )
        .len()
            == 20)
        .await
    );
    let hung_status = wait_for_state(&server, "hung", "failing").await;
    assert_eq!(hung_status["status"]["state"], "failing", "{hung_status}");
    assert!(
        hung_status["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{hung_status}"
    );
    assert_eq!(
        stream_status(&server, "archive").await["status"]["state"],
        "caught_up"
    );
}

#[tokio::test]
async fn failing_stream_raises_one_alert() {
    let server = TestServer::start_with(|settings| {
        settings.log_stream_max_backoff = Seconds(1);
        settings.log_stream_alert_after = Seconds(1);
    })
    .await;
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", reserved.local_addr().unwrap());
    drop(reserved);
    server
        .apply(&format!(
            "log_streams:\n  - {{name: hook, kind: webhook, url: \"{url}\", secret: s1}}\n"
        ))
        .await;

    let mut alerts = Vec::new();
    for _ in 0..100 {
        alerts = server.get("/v1/alerts").await.1["alerts"]
            .as_array()
            .unwrap()
            .clone();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["key"], "log_stream=hook");
    assert!(
        alerts[0]["message"].as_str().unwrap().contains("failing"),
        "{}",
        alerts[0]
    );

    // The failure goes on, but one run of failures raises one alert.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.get("/v1/alerts").await.1["alerts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (_, metrics) = server.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("mayfly_log_stream_failures_total{stream=\"hook\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mayfly_log_stream_lag_events{stream=\"hook\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn restart_resumes_from_cursor() {
    let mut first =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;
    let path = first.dir.path().join("audit.jsonl");
    first
        .apply(&format!(
            "{}{}",
            basic_config(&issuer),
            file_stream_yaml("archive", &path, "")
        ))
        .await;
    issue(&first, &issuer, 4).await;
    assert!(
        wait_until(Duration::from_secs(10), || credential_records(
            &file_records(&path)
        )
        .len()
            == 4)
        .await
    );

    // Events issued right before the stop may not be shipped yet; the next run must ship them.
    issue(&first, &issuer, 3).await;
    let data_dir = first.data_dir();
    first.stop().await;

    let second = TestServer::start_with(|settings| settings.data_dir = data_dir).await;
    issue(&second, &issuer, 2).await;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let ids: BTreeSet<String> = credential_records(&file_records(&path))
                .iter()
                .map(|record| record["id"].as_str().unwrap().to_string())
                .collect();
            ids.len() == 9
        })
        .await
    );

    // Nothing lost, and a record seen twice is the very same event.
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in file_records(&path) {
        by_id
            .entry(record["id"].as_str().unwrap().to_string())
            .or_default()
            .push(record);
    }
    for (id, copies) in &by_id {
        assert!(
            copies.windows(2).all(|pair| pair[0] == pair[1]),
            "copies of {id} differ"
        );
    }
    let stored = second
        .audit_events("kind=credential_request&limit=100")
        .await;
    assert_eq!(stored.len(), 9);
    for event in stored {
        assert!(
            by_id.contains_key(event["id"].as_str().unwrap()),
            "event {} was lost",
            event["seq"]
        );
    }
}

#[tokio::test]
async fn purge_spares_events_a_stream_has_not_delivered() {
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let state = server.running().state.clone();

    // Old events and a checkpoint over them, older than a one-day retention.
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72);
    let events: Vec<NewAuditEvent> = (0..5)
        .map(|i| {
            NewAuditEvent::new(
                uuid_like(i),
                old,
                AuditKind::ConfigChange,
                json!({"actor": "test", "note": "old"}),
            )
        })
        .collect();
    state.store.append_audit(events).await.unwrap();
    state.checkpoints.checkpoint().await.unwrap();

    // A stream whose receiver is down has delivered nothing, so nothing may be purged.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", reserved.local_addr().unwrap());
    drop(reserved);
    server
        .apply(&format!(
            "log_streams:\n  - {{name: hook, kind: webhook, url: \"{url}\", secret: s1}}\n"
        ))
        .await;
    let outcome = mayfly_server::audit_log::purge_once(&state, 1)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, 0, "{outcome:?}");

    // Once the stream is gone, the old events go.
    let (status, body) = server
        .admin(reqwest::Method::DELETE, "/v1/log-streams/hook", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let outcome = mayfly_server::audit_log::purge_once(&state, 1)
        .await
        .unwrap();
    assert!(outcome.deleted >= 5, "{outcome:?}");
}

fn uuid_like(index: u32) -> String {
    format!("00000000-0000-7000-8000-{index:012}")
}
