//! Notification targets against a real HTTP receiver started by each test: the alert document
//! and its secret, references between rules and targets, a receiver that is down and then up,
//! a target created after alerts fired, and a hung receiver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{TestIssuer, TestServer, basic_config};
use mayfly_domain::audit::{AuditKind, NewAuditEvent};
use mayfly_domain::duration::Seconds;
use serde_json::{Value, json};

/// The secret every test target sends; no read, audit event or stored row may contain it.
const SECRET: &str = "pager-secret-7f3a9c";

// ---------------------------------------------------------------------------------------------
// HTTP receiver

/// One alert a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    document: Value,
}

/// An HTTP receiver on 127.0.0.1 that records every POST to `/alerts` and responds 200, or, when
/// `hang` is set, counts the request as in flight and never responds.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(hang: bool) -> Receiver {
        Receiver::serve(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            hang,
        )
    }

    fn serve(listener: tokio::net::TcpListener, hang: bool) -> Receiver {
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (recorded, counted) = (received.clone(), in_flight.clone());
        let app = axum::Router::new().route(
            "/alerts",
            post(move |headers: HeaderMap, body: Bytes| {
                let (recorded, counted) = (recorded.clone(), counted.clone());
                async move {
                    if hang {
                        counted.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let document = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    recorded
                        .lock()
                        .unwrap()
                        .push(Received { headers, document });
                    StatusCode::OK
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            received,
            in_flight,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn alert_ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|request| request.document["alert_id"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Returns a URL on 127.0.0.1 where nothing listens yet, and the address to listen on later.
fn closed_port_url() -> (String, std::net::SocketAddr) {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    (format!("http://{address}/alerts"), address)
}

// ---------------------------------------------------------------------------------------------
// Helpers

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

fn target_yaml(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, kind: webhook, url: \"{url}\", auth: bearer, secret: {SECRET}{extra}}}\n"
    )
}

/// Returns a configuration with the basic workloads, the given targets, and a `config_change`
/// rule that notifies `notify`.
fn config(issuer: &TestIssuer, targets: &str, notify: &str) -> String {
    let mut yaml = basic_config(issuer);
    if !targets.is_empty() {
        yaml.push_str(&format!("notification_targets:\n{targets}"));
    }
    yaml.push_str(&format!(
        "alert_rules:\n  - {{name: workload-changes, kind: config_change, notify: [{notify}]}}\n"
    ));
    yaml
}

/// Applies the basic workloads and waits until the alert evaluator has read their creation.
/// Then it applies `yaml`, whose rule so judges only later changes.
async fn apply_after_workloads(server: &TestServer, issuer: &TestIssuer, yaml: &str) {
    server.apply(&basic_config(issuer)).await;
    assert!(settled_alerts(server).await.is_empty());
    server.apply(yaml).await;
    assert!(
        settled_alerts(server).await.is_empty(),
        "adding the rule changed no server workload"
    );
}

/// Fires `count` alerts of the `config_change` rule by switching `payments` off and on.
async fn fire_alerts(server: &TestServer, count: usize) {
    for _ in 0..count {
        let (status, workload) = server.get("/v1/server-workloads/payments").await;
        assert_eq!(status, 200, "{workload}");
        let action = if workload["enabled"] == json!(true) {
            "disable"
        } else {
            "enable"
        };
        let (status, body) = server
            .post(
                &format!("/v1/server-workloads/payments/{action}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Waits until the alert evaluator has read every stored event, then returns the alerts.
async fn settled_alerts(server: &TestServer) -> Vec<Value> {
    let store = server.running().state.store.clone();
    let started = Instant::now();
    loop {
        let head = store.audit_head().await.unwrap().map_or(0, |(seq, _)| seq);
        let cursor = store
            .get_stream_cursor("@alert-rules")
            .await
            .unwrap()
            .map_or(-1, |cursor| cursor.delivered_seq);
        if cursor >= head {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the evaluator did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = server.get("/v1/alerts").await;
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

async fn target_entry(server: &TestServer, name: &str) -> Value {
    let (status, body) = server
        .get(&format!("/v1/notification-targets/{name}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls the target until its state is `state`, then returns its entry.
async fn wait_for_state(server: &TestServer, name: &str, state: &str) -> Value {
    for _ in 0..200 {
        let entry = target_entry(server, name).await;
        if entry["status"]["state"] == state {
            return entry;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    target_entry(server, name).await
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn alert_document_reaches_target_with_secret() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let receiver = Receiver::start(false).await;
    apply_after_workloads(
        &server,
        &issuer,
        &config(
            &issuer,
            &target_yaml("doc-pager", &receiver.url, ""),
            "doc-pager",
        ),
    )
    .await;

    fire_alerts(&server, 1).await;
    let alerts = settled_alerts(&server).await;
    assert_eq!(alerts.len(), 1);
    assert!(
        wait_until(Duration::from_secs(10), || receiver.received().len() == 1).await,
        "no alert arrived"
    );

    let request = &receiver.received()[0];
    let document = &request.document;
    assert_eq!(document["alert_id"], alerts[0]["id"]);
    assert_eq!(document["rule"], "workload-changes");
    assert_eq!(document["rule_kind"], "config_change");
    assert_eq!(document["severity"], "medium");
    assert_eq!(document["subject"], "server_workload=payments");
    assert!(
        document["summary"].as_str().unwrap().contains("disable"),
        "{document}"
    );
    assert_eq!(document["server_workload"], "payments");
    assert_eq!(document["target"], "doc-pager");
    assert!(
        document["seq"].as_i64().unwrap() > document["trigger"]["seq"].as_i64().unwrap(),
        "{document}"
    );
    assert!(document["trigger"]["event_id"].is_string(), "{document}");
    assert!(
        document["time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok(),
        "{document}"
    );
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {SECRET}").as_str()
    );
    assert_eq!(
        request.headers["x-mayfly-alert-id"],
        alerts[0]["id"].as_str().unwrap()
    );

    let entry = wait_for_state(&server, "doc-pager", "caught_up").await;
    assert_eq!(entry["status"]["lag"], json!(0), "{entry}");
    assert_eq!(entry["status"]["delivered_alerts"], json!(1), "{entry}");
    assert_eq!(entry["secret"]["set"], json!(true), "{entry}");
    assert!(
        entry["secret"]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"),
        "{entry}"
    );
    // The metrics registry is shared by every server in this test process, so the target's
    // name is unique to this test.
    let (_, metrics) = server.get("/metrics").await;
    let metrics = metrics
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| metrics.to_string());
    assert!(
        metrics.contains("mayfly_notifications_delivered_total{target=\"doc-pager\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn target_secret_never_shown_or_stored_plain() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let receiver = Receiver::start(false).await;
    let target = format!(
        "  - {{name: pager, kind: webhook, url: \"{}\", auth: header, header: X-Pager-Key, secret: {SECRET}}}\n",
        receiver.url
    );
    apply_after_workloads(&server, &issuer, &config(&issuer, &target, "pager")).await;
    fire_alerts(&server, 1).await;
    assert!(
        wait_until(Duration::from_secs(10), || receiver.received().len() == 1).await,
        "no alert arrived"
    );
    assert_eq!(receiver.received()[0].headers["x-pager-key"], SECRET);
    assert!(
        receiver.received()[0]
            .headers
            .get("authorization")
            .is_none()
    );

    let (_, listed) = server.get("/v1/notification-targets").await;
    let (_, one) = server.get("/v1/notification-targets/pager").await;
    let audit = server.audit_events("limit=1000").await;
    for (what, text) in [
        ("list", listed.to_string()),
        ("get", one.to_string()),
        ("audit", serde_json::to_string(&audit).unwrap()),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    }
    assert!(
        !listed["items"][0]["secret"]["fingerprint"].is_null(),
        "{listed}"
    );
    let created = audit
        .iter()
        .find(|event| event["detail"]["resource_kind"] == "notification_target")
        .unwrap();
    assert_eq!(
        created["detail"]["after"]["secret"]["set"],
        json!(true),
        "{created}"
    );

    let database = std::fs::read(server.data_dir().join("mayfly.db")).unwrap();
    let wal = std::fs::read(server.data_dir().join("mayfly.db-wal")).unwrap_or_default();
    for bytes in [database, wal] {
        assert!(
            !bytes
                .windows(SECRET.len())
                .any(|window| window == SECRET.as_bytes()),
            "the store contains the plain secret"
        );
    }

    // A read written back keeps the secret.
    let mut body = one.clone();
    body["timeout"] = json!("5s");
    let (status, written) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/notification-targets/pager",
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(
        written["resource"]["secret"]["fingerprint"],
        one["secret"]["fingerprint"]
    );
    fire_alerts(&server, 1).await;
    assert!(
        wait_until(Duration::from_secs(10), || receiver.received().len() == 2).await,
        "no second alert"
    );
    assert_eq!(receiver.received()[1].headers["x-pager-key"], SECRET);
}

#[tokio::test]
async fn rule_and_target_references_are_checked() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let receiver = Receiver::start(false).await;

    let (status, body) = server
        .try_apply(&config(&issuer, "", "missing-target"), false)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("missing-target"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("notify"),
        "{body}"
    );

    server
        .apply(&config(
            &issuer,
            &target_yaml("pager", &receiver.url, ""),
            "pager",
        ))
        .await;
    let (status, body) = server
        .admin(
            reqwest::Method::DELETE,
            "/v1/notification-targets/pager",
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("workload-changes"), "{body}");

    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/alert-rules/workload-changes",
            Some(json!({"kind": "config_change"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changes = server.audit_events("kind=config_change").await;
    let update = changes
        .iter()
        .find(|event| {
            event["detail"]["resource_name"] == "workload-changes"
                && event["detail"]["action"] == "update"
        })
        .unwrap();
    assert_eq!(
        update["detail"]["before"]["notify"],
        json!(["pager"]),
        "{update}"
    );
    assert!(update["detail"]["after"]["notify"].is_null(), "{update}");

    let (status, body) = server
        .admin(
            reqwest::Method::DELETE,
            "/v1/notification-targets/pager",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/notification-targets/bad",
            Some(json!({"kind": "webhook", "url": "ftp://x.example"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "url", "{body}");
    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/notification-targets/bad",
            Some(json!({"kind": "webhook", "url": "http://127.0.0.1:9/x", "auth": "bearer"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "secret", "{body}");
}

#[tokio::test]
async fn receiver_down_then_up_gets_every_alert_once() {
    const COUNT: usize = 6;
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;
    let (url, address) = closed_port_url();
    apply_after_workloads(
        &server,
        &issuer,
        &config(
            &issuer,
            &target_yaml("pager", &url, ", timeout: 2s"),
            "pager",
        ),
    )
    .await;

    fire_alerts(&server, COUNT).await;
    let alerts = settled_alerts(&server).await;
    assert_eq!(alerts.len(), COUNT);
    let failing = wait_for_state(&server, "pager", "failing").await;
    assert_eq!(failing["status"]["state"], "failing", "{failing}");
    assert_eq!(failing["status"]["lag"], json!(COUNT), "{failing}");
    assert!(
        failing["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{failing}"
    );
    assert!(!failing.to_string().contains(SECRET), "{failing}");

    let receiver = Receiver::serve(tokio::net::TcpListener::bind(address).await.unwrap(), false);
    assert!(
        wait_until(Duration::from_secs(20), || receiver.received().len()
            >= COUNT)
        .await,
        "{:?}",
        receiver.alert_ids()
    );
    let caught_up = wait_for_state(&server, "pager", "caught_up").await;
    assert_eq!(caught_up["status"]["lag"], json!(0), "{caught_up}");

    let received = receiver.alert_ids();
    let distinct: BTreeSet<&String> = received.iter().collect();
    let expected: BTreeSet<String> = alerts
        .iter()
        .map(|alert| alert["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        received.len(),
        COUNT,
        "no duplicates: every failed send was refused before it reached the receiver"
    );
    assert_eq!(distinct.len(), COUNT);
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<String>>(),
        expected
    );
    // Delivered oldest first.
    let seqs: Vec<i64> = receiver
        .received()
        .iter()
        .map(|request| request.document["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
}

#[tokio::test]
async fn alerts_before_target_are_not_replayed() {
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;
    let (url, address) = closed_port_url();
    apply_after_workloads(
        &server,
        &issuer,
        &config(&issuer, &target_yaml("pager", &url, ""), "pager"),
    )
    .await;
    fire_alerts(&server, 2).await;
    assert_eq!(settled_alerts(&server).await.len(), 2);
    assert_eq!(
        wait_for_state(&server, "pager", "failing").await["status"]["lag"],
        json!(2)
    );

    // The target is removed with both alerts undelivered, then created again.
    let (status, body) = server
        .admin(
            reqwest::Method::PUT,
            "/v1/alert-rules/workload-changes",
            Some(json!({"kind": "config_change"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .admin(
            reqwest::Method::DELETE,
            "/v1/notification-targets/pager",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let receiver = Receiver::serve(tokio::net::TcpListener::bind(address).await.unwrap(), false);
    server
        .apply(&config(&issuer, &target_yaml("pager", &url, ""), "pager"))
        .await;
    assert_eq!(
        wait_for_state(&server, "pager", "caught_up").await["status"]["lag"],
        json!(0)
    );

    fire_alerts(&server, 1).await;
    let alerts = settled_alerts(&server).await;
    assert_eq!(alerts.len(), 3);
    assert!(
        wait_until(Duration::from_secs(10), || !receiver.received().is_empty()).await,
        "no alert arrived"
    );
    // Give a wrongly replayed alert the time to arrive after the new one.
    let _ = wait_until(Duration::from_secs(2), || receiver.received().len() > 1).await;
    let newest = alerts
        .iter()
        .max_by_key(|alert| alert["seq"].as_i64().unwrap())
        .unwrap();
    assert_eq!(
        receiver.alert_ids(),
        [newest["id"].as_str().unwrap().to_string()]
    );
}

#[tokio::test]
async fn hung_receiver_delays_neither_issuance_nor_streams() {
    let server = TestServer::start().await;
    let issuer = TestIssuer::start().await;
    let hung = Receiver::start(true).await;
    let path = server.dir.path().join("audit.jsonl");
    // The send timeout outlasts the test, so the send stays in flight throughout.
    let mut yaml = config(
        &issuer,
        &target_yaml("pager", &hung.url, ", timeout: 5m"),
        "pager",
    );
    yaml.push_str(&format!(
        "log_streams:\n  - {{name: archive, kind: file, path: \"{}\"}}\n",
        path.display()
    ));
    apply_after_workloads(&server, &issuer, &yaml).await;

    fire_alerts(&server, 1).await;
    assert!(
        wait_until(Duration::from_secs(10), || hung
            .in_flight
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "the alert was not sent"
    );

    for _ in 0..20 {
        let evidence = issuer.token(json!({"sub": "repo:acme/billing"}));
        let (status, body) = server
            .credential_with_token(&evidence, json!({"server_workload": "payments"}))
            .await;
        assert!(status == 200 || status == 403, "{body}");
    }
    let issued = server
        .audit_events("kind=credential_request&limit=1000")
        .await;
    assert_eq!(
        issued.len(),
        20,
        "every request was decided and audited while the send hung"
    );

    let shipped = || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .filter(|line| line.contains("\"credential_request\""))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || shipped() == 20).await,
        "the log stream stalled: {}",
        shipped()
    );
    assert_eq!(
        hung.in_flight.load(Ordering::SeqCst),
        1,
        "one send in flight"
    );
    assert!(
        hung.received().is_empty(),
        "the hung receiver never completed a request"
    );
    let entry = target_entry(&server, "pager").await;
    assert_eq!(entry["status"]["lag"], json!(1), "{entry}");
    assert_eq!(entry["status"]["state"], "delivering", "{entry}");
}

#[tokio::test]
async fn purge_spares_alerts_a_target_has_not_delivered() {
    let server =
        TestServer::start_with(|settings| settings.log_stream_max_backoff = Seconds(1)).await;
    let issuer = TestIssuer::start().await;
    let state = server.running().state.clone();
    let (url, address) = closed_port_url();
    apply_after_workloads(
        &server,
        &issuer,
        &config(&issuer, &target_yaml("pager", &url, ""), "pager"),
    )
    .await;

    // An alert for the target and other events, all older than a one-day retention, with a
    // checkpoint over them.
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72);
    let alert_id = "00000000-0000-7000-8000-00000000a1e7";
    let detail = json!({"rule": "workload-changes", "rule_kind": "config_change", "severity": "medium", "key": "server_workload=payments", "message": "old alert", "notify": ["pager"]});
    let mut events = vec![NewAuditEvent::new(
        alert_id.to_string(),
        old,
        AuditKind::Alert,
        detail,
    )];
    events.extend((0..3).map(|i| {
        NewAuditEvent::new(
            format!("00000000-0000-7000-8000-00000000000{i}"),
            old,
            AuditKind::ConfigChange,
            json!({"actor": "test"}),
        )
    }));
    state.store.append_audit(events).await.unwrap();
    state.checkpoints.checkpoint().await.unwrap();
    assert_eq!(
        wait_for_state(&server, "pager", "failing").await["status"]["lag"],
        json!(1)
    );

    let outcome = mayfly_server::audit_log::purge_once(&state, 1)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, 0, "{outcome:?}");
    assert_eq!(server.audit_events("kind=alert").await.len(), 1);

    let receiver = Receiver::serve(tokio::net::TcpListener::bind(address).await.unwrap(), false);
    assert!(
        wait_until(Duration::from_secs(20), || receiver.received().len() == 1).await,
        "the old alert was not delivered"
    );
    assert_eq!(receiver.alert_ids(), [alert_id.to_string()]);
    wait_for_state(&server, "pager", "caught_up").await;
    let outcome = mayfly_server::audit_log::purge_once(&state, 1)
        .await
        .unwrap();
    assert!(outcome.deleted >= 4, "{outcome:?}");
}
